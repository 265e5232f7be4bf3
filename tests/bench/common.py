"""Small helpers the benchmarks share."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0–100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process and all its threads (tpool's argon2 threads too),
    or of its thread ``tid`` alone (the main thread, ``tid == pid``, runs the eventlet hub).
    A process that has gone raises: a benchmark must not report a crashed service as idle."""
    with open(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_processes(procs: list[subprocess.Popen], grace: float = 20.0) -> None:
    """SIGTERM every child, then SIGKILL whatever has not exited after ``grace`` seconds."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def whole_system(name: str, **env: str):
    """A whole running system (tests/e2e's System: every service, the gateway, the relay) on a
    database and a RabbitMQ vhost of its own, with ``env`` on top of this process's
    environment. Yields the system; stops it and removes the database and the vhost
    afterwards, whatever the benchmark did."""
    from services import db
    from services.config import Settings
    from tests import vhosts
    from tests.e2e.conftest import start_system

    settings = Settings()
    dbname = vhost = f"tsunagi_bench_{name}_{uuid.uuid4().hex[:8]}"
    db.setup(settings, dbname, log=lambda *_: None)
    vhost_made = vhosts.create(vhost)
    overrides = {"DATABASE_URL": db.url_for(settings.database_url, dbname),
                 "AUDITOR_DATABASE_URL": db.url_for(settings.auditor_database_url, dbname),
                 "AMQP_URI": vhosts.uri_for(settings.amqp_uri, vhost) if vhost_made else settings.amqp_uri,
                 **env}
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)                       # System passes os.environ to its children
    system = None
    try:
        system = start_system(Path(tempfile.mkdtemp(prefix=f"bench_{name}_")))
        yield system
    finally:
        if system is not None:
            system.terminate()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if vhost_made:
            vhosts.delete(vhost)
        try:
            db.drop_database(settings, dbname)
        except Exception as exc:  # noqa: BLE001 - leave a note, never hide the figures
            print(f"(could not drop {dbname}: {exc})")
