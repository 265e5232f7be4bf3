"""Per-run RabbitMQ virtual hosts, made with rabbitmqctl (the management API may be off)."""
from __future__ import annotations

import shutil
import subprocess
from urllib.parse import quote, urlsplit, urlunsplit


def _ctl(*args: str) -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60).returncode == 0


def create(name: str) -> bool:
    return _ctl("add_vhost", name) and _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def delete(name: str) -> bool:
    return _ctl("delete_vhost", name)


def uri_for(uri: str, vhost: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))
