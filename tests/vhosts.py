"""Per-run RabbitMQ virtual hosts, made with rabbitmqctl (the management API may be off)."""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from contextlib import contextmanager
from typing import Iterator
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


@contextmanager
def own(amqp_uri: str, prefix: str) -> Iterator[str]:
    """A vhost of the caller's own for as long as the block runs; yields its AMQP URI.

    Fails the test where no vhost can be made: services sharing the session's vhost would be
    competing consumers of another module's queues."""
    import pytest  # here, not at the top: the benchmarks import this module too

    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    # rabbitmqctl can fail while other test runs use it at the same moment: try again.
    if not any(create(name) or time.sleep(1) for _ in range(3)):
        pytest.fail("could not create a RabbitMQ vhost with rabbitmqctl")
    try:
        yield uri_for(amqp_uri, name)
    finally:
        delete(name)
