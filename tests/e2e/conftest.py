"""The whole system, started exactly as `make run` starts it, for end-to-end tests.

`system` (session scope) runs `tsunagi db setup` and then `tsunagi run` as a subprocess against
the pytest session database on a free gateway port. SMTP_HOST/SMTP_PORT point at a test SMTP
server (aiosmtpd, `tsunagi smtp-sink` in a process of its own so the eventlet-patched test
process never hosts an asyncio loop), so the runner starts no sink of its own; `system.mailbox`
reads what arrived. RabbitMQ's default vhost is shared with anything else running on the
machine: tests assert only on their own customers, correlation ids and queues.

    def test_x(system):
        requests.get(system.base_url + "/health")
        mail = system.mailbox.wait_for(lambda m: m["To"] == addr, timeout=30)
        system.stop_service("identity")    # SIGKILL that process
        system.start_service("identity")   # a fresh process of the same service
"""
from __future__ import annotations

import email.message
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from services import runner as runner_mod
from services import topology
from services.smtp_sink import read_mail_dir, wait_for_port
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = float(os.environ.get("E2E_START_TIMEOUT", "120"))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"   # a zombie is gone for our purposes
    except FileNotFoundError:
        return False


class Mailbox:
    """Mail received by the test SMTP server (every message as an EmailMessage)."""

    def __init__(self, directory: Path):
        self.directory = directory

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return read_mail_dir(self.directory)

    def wait_for(self, predicate, timeout: float = 30.0) -> email.message.EmailMessage:
        """The first message for which ``predicate(msg)`` is true; AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages:
                if predicate(msg):
                    return msg
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching mail within {timeout}s "
                                     f"({len(self.messages)} messages received)")
            time.sleep(0.1)


class LogTail:
    """Keeps the system's prefixed output (for failure messages) and mirrors it to a file."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def pump(self, stream) -> threading.Thread:
        def _run():
            with open(self.path, "ab") as f:
                for raw in iter(stream.readline, b""):
                    f.write(raw)
                    f.flush()
                    with self.lock:
                        self.lines.append(raw.decode("utf-8", "replace").rstrip())
            stream.close()
        t = threading.Thread(target=_run, daemon=True)
        t.start()
        return t

    def tail(self, n: int = 60) -> str:
        with self.lock:
            return "\n".join(self.lines[-n:])


class System:
    """A running `tsunagi run` and its test SMTP server. Every process started here dies with
    the test process (PR_SET_PDEATHSIG), so a crashed test run leaves nothing behind."""

    def __init__(self, workdir: Path, *, keep_going: bool = True, env: dict | None = None,
                 instances: int = 1):
        self.workdir = workdir
        self.run_dir = workdir / "run"
        self.mail_dir = workdir / "mail"
        self.gateway_port = free_port()
        self.smtp_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.gateway_port}"
        self.mailbox = Mailbox(self.mail_dir)
        self.log = LogTail(workdir / "system.log")
        self.keep_going = keep_going
        # Several systems can run at once (the session's, an isolated one, the soak's) on a
        # PostgreSQL with 100 connections: small pools keep them all below that.
        self.env = runner_mod.child_env(GATEWAY_ADDRESS=f"127.0.0.1:{self.gateway_port}",
                                        SMTP_HOST="127.0.0.1", SMTP_PORT=str(self.smtp_port),
                                        **{"DATABASE_POOL_SIZE": os.environ.get("DATABASE_POOL_SIZE", "4"),
                                           **(env or {})})
        self.instances = instances
        self.proc: subprocess.Popen | None = None
        self.smtp: subprocess.Popen | None = None
        self.extra: dict[str, subprocess.Popen] = {}   # services restarted by start_service
        self.returncode: int | None = None

    # -- start / stop -----------------------------------------------------------------------

    def _tsunagi(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "services.cli", *args]

    def start(self) -> "System":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.smtp = subprocess.Popen(
            self._tsunagi("smtp-sink", "--port", str(self.smtp_port), "--dir", str(self.mail_dir)),
            env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=runner_mod._die_with_parent)
        self.log.pump(self.smtp.stdout)
        if not wait_for_port("127.0.0.1", self.smtp_port, timeout=30):
            raise RuntimeError("test SMTP server did not start:\n" + self.log.tail())
        # `make run` = `tsunagi db setup` then `tsunagi run`.
        subprocess.run(self._tsunagi("db", "setup"), env=self.env, cwd=ROOT, check=True,
                       capture_output=True, timeout=120)
        args = ["run", "--run-dir", str(self.run_dir), "--grace", "30"]
        if self.keep_going:
            args.append("--keep-going")
        if self.instances != 1:
            args += ["--instances", str(self.instances)]
        self.proc = subprocess.Popen(self._tsunagi(*args), env=self.env, cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=runner_mod._die_with_parent)
        self.log.pump(self.proc.stdout)
        self.wait_healthy()
        return self

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=5) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> dict:
        """Start-up wait (not an assertion on speed): until /health answers 200."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tsunagi run exited with {self.proc.returncode}:\n{self.log.tail()}")
            try:
                status, body = self.health()
                if status == 200:
                    return body
                last = (status, body)
            except OSError as exc:
                last = exc
            time.sleep(0.5)
        raise RuntimeError(f"system not healthy after {timeout}s (last: {last}):\n{self.log.tail()}")

    def state(self) -> dict:
        return json.loads((self.run_dir / runner_mod.STATE_FILE).read_text())

    def child_pids(self) -> dict[str, int]:
        pids = {name: c["pid"] for name, c in self.state()["children"].items()}
        pids.update({f"{name}(restarted)": p.pid for name, p in self.extra.items()})
        return pids

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM the runner, as an operator would; returns its exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.returncode = self.proc.returncode if self.proc else None
        for p in [*self.extra.values(), self.smtp]:
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        return self.returncode

    # -- one service at a time (reliability tests) ------------------------------------------

    def stop_service(self, name: str) -> None:
        """SIGKILL every process of service ``name`` (a crash, not a graceful stop)."""
        topology.module_for(name)
        targets = [c["pid"] for n, c in self.state()["children"].items()
                   if c["running"] and (n == name or n.startswith(name + "."))]
        if name in self.extra:
            targets.append(self.extra.pop(name).pid)
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in targets) and time.monotonic() < deadline:
            time.sleep(0.05)

    def start_service(self, name: str, wait: bool = True) -> None:
        """Start a fresh process of service ``name`` (the runner restarts nothing itself);
        with ``wait``, until /health is 200 again."""
        module = topology.module_for(name)
        if name in self.extra and self.extra[name].poll() is None:
            raise RuntimeError(f"{name} is already running (restarted)")
        proc = subprocess.Popen(runner_mod.service_argv(module), env=self.env, cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=runner_mod._die_with_parent)
        self.log.pump(proc.stdout)
        self.extra[name] = proc
        if wait:
            self.wait_healthy()


def start_system(workdir: Path, **kw) -> System:
    system = System(workdir, **kw)
    try:
        return system.start()
    except BaseException:
        system.terminate()
        raise


@pytest.fixture(scope="session")
def system(settings, tmp_path_factory):
    """The whole system on the session database (see the module docstring)."""
    s = start_system(tmp_path_factory.mktemp("system"))
    yield s
    pids = s.child_pids()
    code = s.terminate()
    left = [n for n, pid in pids.items() if _alive(pid)]
    assert code == 0 and not left, f"unclean stop: exit {code}, still running {left}\n{s.log.tail()}"
