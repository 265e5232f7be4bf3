"""Fault injection against a running system (``tests.e2e.conftest.System``).

The broker and the database server are shared with every other test run on the machine, so
the default faults touch only this system's own RabbitMQ virtual host and its own database:

- ``rabbitmq_cut``: ``rabbitmqctl close_all_connections -p <our vhost>`` — every service, the
  relay and the gateway lose their AMQP connections at once (what a broker restart does to
  them). ``rabbitmq_restart`` (``stop_app``/``start_app``) is done only when asked for and only
  when no connection outside our vhost is open; otherwise it falls back to the cut.
- ``service_kill``: SIGKILL one process (a Nameko service, or the relay) and start a fresh one.
- ``postgres_terminate``: ``pg_terminate_backend`` for every backend of our database (every
  pooled connection dies mid-use). ``postgres_restart`` (``pg_ctlcluster 15 main restart``)
  restarts the whole server: slow soak only, since it breaks every other run on the machine.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from services import topology

ADMIN_URL = os.environ.get("ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_CLUSTER = os.environ.get("SOAK_PG_CLUSTER", "15 main").split()


def vhost_of(amqp_uri: str) -> str:
    path = urlsplit(amqp_uri).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def database_of(url: str) -> str:
    return conninfo_to_dict(url)["dbname"]


def _ctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout)


class FaultInjector:
    def __init__(self, system, *, kinds: list[str], seed: int | None = None, log=print):
        self.system = system
        self.kinds = kinds
        self.vhost = vhost_of(system.env["AMQP_URI"])
        self.database = database_of(system.env["DATABASE_URL"])
        self.done: Counter = Counter()
        self.notes: list[str] = []
        self.rng = random.Random(seed)
        self.log = log
        self.relay_extra: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the faults ---------------------------------------------------------------------------

    def rabbitmq_cut(self) -> str:
        r = _ctl("close_all_connections", "-p", self.vhost, "soak fault injection")
        if r.returncode != 0:
            raise RuntimeError(f"close_all_connections: {r.stderr}")
        self.notes.append(f"cut the connections of vhost {self.vhost}")
        return "rabbitmq_cut"

    def rabbitmq_restart(self) -> str:
        r = _ctl("list_connections", "vhost")
        foreign = [v for v in r.stdout.split() if v and v != self.vhost and v != "vhost"]
        if r.returncode != 0 or foreign:
            self.notes.append(f"rabbitmq_restart skipped ({len(foreign)} connections of other vhosts): cut instead")
            return self.rabbitmq_cut()
        for cmd in (("stop_app",), ("start_app",)):
            r = _ctl(*cmd)
            if r.returncode != 0:
                raise RuntimeError(f"rabbitmqctl {cmd[0]}: {r.stderr}")
        self.notes.append("restarted RabbitMQ (stop_app, start_app)")
        return "rabbitmq_restart"

    def service_kill(self) -> str:
        name = self.rng.choice([*topology.service_names(), "relay"])
        if name == "relay":
            self._kill_relay()
        else:
            self.system.stop_service(name)
            self.system.start_service(name, wait=False)
        self.notes.append(f"killed {name}")
        return "service_kill"

    def _kill_relay(self) -> None:
        pids = [c["pid"] for n, c in self.system.state()["children"].items() if n == "relay" and c["running"]]
        if self.relay_extra is not None:
            pids.append(self.relay_extra.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.relay_extra is not None:
            self.relay_extra.wait()
        from services import runner as runner_mod
        self.relay_extra = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "relay"], env=self.system.env, cwd=self.system_root(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=runner_mod._die_with_parent)
        self.system.log.pump(self.relay_extra.stdout)

    @staticmethod
    def system_root():
        from tests.e2e.conftest import ROOT
        return ROOT

    def postgres_terminate(self) -> str:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            n = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE datname = %s AND pid <> pg_backend_pid()", (self.database,)).fetchone()[0]
        self.notes.append(f"terminated {n} backends")
        return "postgres_terminate"

    def postgres_restart(self) -> str:
        r = subprocess.run(["pg_ctlcluster", *PG_CLUSTER, "restart"], capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctlcluster restart: {r.stderr}")
        self.notes.append("restarted the PostgreSQL server")
        return "postgres_restart"

    # -- scheduling ----------------------------------------------------------------------------

    def inject(self, kind: str) -> None:
        before = len(self.notes)
        done = getattr(self, kind)()
        self.done[done] += 1
        # Only what this fault noted: an earlier fault's note would misname what happened.
        self.log(f"[soak] fault: {done} ({'; '.join(self.notes[before:])})")

    def start(self, schedule: list[tuple[float, str]], progress) -> None:
        """``schedule``: (progress 0…1 of the load, kind), run in order on a thread of its own;
        ``progress()`` says how far the load is (so faults land while it runs, however fast)."""
        def _run():
            for at, kind in sorted(schedule):
                while progress() < at:
                    if self._stop.wait(0.1):
                        return
                try:
                    self.inject(kind)
                except Exception as exc:   # a fault that could not be injected is a finding too
                    self.notes.append(f"{kind} failed: {exc}")
        self._thread = threading.Thread(target=_run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=300)

    def close(self) -> None:
        if self.relay_extra is not None and self.relay_extra.poll() is None:
            self.relay_extra.terminate()
            try:
                self.relay_extra.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.relay_extra.kill()
