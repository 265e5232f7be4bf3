"""`tsunagi run`: the whole system in the foreground, one child process per part.

Every Nameko service of `services.topology` (`nameko run --config deploy/nameko.yml MODULE`,
``--instances`` of each), the relay, and — only when SMTP_HOST/SMTP_PORT are not given — a
local SMTP sink that the services are pointed at. Each line a child prints is prefixed with
its name. Nothing is restarted behind the operator's back: a child that exits is reported,
and (unless ``--keep-going``) the rest are stopped and the runner exits 1. Ctrl-C / SIGTERM
stops every child (SIGTERM, a grace period, then SIGKILL) and exits 0.

Children run in sessions of their own so a terminal's Ctrl-C reaches only the runner, which
then stops them in order; and each child asks the kernel for SIGTERM should the runner die
without stopping it (PR_SET_PDEATHSIG), so a killed runner leaves no orphans behind.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services import topology
from services.config import Settings

ROOT = Path(__file__).resolve().parents[1]
NAMEKO_CONFIG = ROOT / "deploy" / "nameko.yml"
DEFAULT_RUN_DIR = Path(".run")
STATE_FILE = "processes.json"

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: no parent-death signal, the runner's own stop still works
    _libc = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def service_argv(module: str, config: Path = NAMEKO_CONFIG) -> list[str]:
    """The command that runs one Nameko service (what `tsunagi service NAME` execs): `nameko
    run --config deploy/nameko.yml MODULE`, through `services.cli._launch` (see why there)."""
    return [sys.executable, "-m", "services.cli._launch", "--config", str(config), module]


def tsunagi_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


def child_env(base: dict[str, str] | None = None, **overrides: str) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"           # line-by-line output, prefixed as it happens
    env.setdefault("PSYCOPG_WAIT_FUNC", "wait_selector")
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    module: str | None = None
    cwd: Path = ROOT


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen
    pump: threading.Thread
    reported: bool = False
    stop_requested: bool = False
    forced: bool = False
    started_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.spec.name


_COLOURS = ["36", "32", "33", "35", "34", "96", "92", "93", "95", "94"]


class Output:
    """Serialises the children's lines onto one stream, each with its name in front."""

    def __init__(self, stream=None, width: int = 16, colour: bool | None = None):
        self.stream = stream or sys.stdout
        self.buffer = getattr(self.stream, "buffer", None)
        self.width = width
        self.colour = self.stream.isatty() if colour is None else colour
        self.lock = threading.Lock()
        self._colours: dict[str, str] = {}

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<{self.width}}|"
        if self.colour:
            code = self._colours.setdefault(name, _COLOURS[len(self._colours) % len(_COLOURS)])
            prefix = f"\x1b[{code}m{prefix}\x1b[0m"
        data = f"{prefix} {text.rstrip()}\n"
        with self.lock:
            try:
                if self.buffer is not None:
                    self.buffer.write(data.encode("utf-8", "replace"))
                else:
                    self.stream.write(data)
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                # Nobody reads our output any more (e.g. piped into `head`): keep draining the
                # children's pipes so they never block on a full one.
                pass


class Runner:
    def __init__(self, specs: list[ChildSpec], *, output: Output | None = None, grace: float = 20.0,
                 keep_going: bool = False, run_dir: Path = DEFAULT_RUN_DIR,
                 health_url: str | None = None, extra_state: dict | None = None):
        self.specs = specs
        self.out = output or Output(width=max([len("runner")] + [len(s.name) for s in specs]) + 1)
        self.grace = grace
        self.keep_going = keep_going
        self.run_dir = Path(run_dir).resolve()
        self.health_url = health_url
        self.extra_state = extra_state or {}
        self.children: dict[str, Child] = {}
        self.stopping = threading.Event()
        self.failed: list[str] = []
        self._signals = 0

    # -- output and state ------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.out.line("runner", text)

    def _pump(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.out.line(name, raw.decode("utf-8", "replace"))
        stream.close()

    def write_state(self) -> None:
        """processes.json: what runs under which pid (tests and operators read it)."""
        state = {
            "runner_pid": os.getpid(),
            "stopping": self.stopping.is_set(),
            **self.extra_state,
            "children": {
                c.name: {"pid": c.proc.pid, "module": c.spec.module, "argv": c.spec.argv,
                         "running": c.proc.poll() is None, "returncode": c.proc.returncode,
                         "forced": c.forced}
                for c in self.children.values()
            },
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.run_dir / STATE_FILE)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> Child:
        proc = subprocess.Popen(spec.argv, env=spec.env, cwd=spec.cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
        pump = threading.Thread(target=self._pump, args=(spec.name, proc.stdout),
                                name=f"pump-{spec.name}", daemon=True)
        pump.start()
        child = Child(spec, proc, pump)
        self.children[spec.name] = child
        self.say(f"started {spec.name} (pid {proc.pid})")
        return child

    def _on_signal(self, signum, _frame) -> None:
        self._signals += 1
        if self._signals == 1:
            self.stopping.set()
        elif self._signals == 2 and signum == signal.SIGINT:
            self.say("second interrupt: killing every child now")
            for c in self.children.values():
                if c.proc.poll() is None:
                    c.forced = True
                    self._kill(c, signal.SIGKILL)

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _kill(self, child: Child, sig: int) -> None:
        if child.proc.poll() is None:
            try:
                os.kill(child.proc.pid, sig)
            except ProcessLookupError:
                pass

    def _check_children(self) -> None:
        for child in self.children.values():
            code = child.proc.poll()
            if code is None or child.reported:
                continue
            child.reported = True
            if not child.stop_requested:
                self.failed.append(child.name)
                how = f"signal {-code}" if code < 0 else f"status {code}"
                self.say(f"{child.name} exited with {how}; it is NOT restarted")
            self.write_state()

    def _watch_health(self) -> None:
        while not self.stopping.is_set():
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as r:
                    if r.status == 200:
                        self.say(f"ready: GET {self.health_url} -> 200")
                        return
            except Exception:  # not up yet: the gateway or a service is still starting
                pass
            self.stopping.wait(1.0)

    def run(self) -> int:
        self.install_signal_handlers()
        self.say(f"starting {len(self.specs)} processes; state in {self.run_dir / STATE_FILE}")
        try:
            for spec in self.specs:
                if self.stopping.is_set():
                    break
                self.start(spec)
                if spec.name == "smtp-sink":
                    host, port = self.extra_state["smtp"]["host"], self.extra_state["smtp"]["port"]
                    from services.smtp_sink import wait_for_port
                    if not wait_for_port(host, port, timeout=10):
                        self.say(f"the SMTP sink did not open {host}:{port}")
            self.write_state()
            if self.health_url:
                threading.Thread(target=self._watch_health, name="health", daemon=True).start()
            while not self.stopping.wait(0.2):
                self._check_children()
                if self.failed and not self.keep_going:
                    self.say("stopping everything because a process exited (use --keep-going to keep the rest)")
                    break
            self._check_children()
        finally:
            self.stop_all()
        if self.failed and not self.keep_going:
            return 1
        return 0

    def stop_all(self) -> None:
        self.stopping.set()
        alive = [c for c in self.children.values() if c.proc.poll() is None]
        if alive:
            self.say(f"stopping {len(alive)} processes (SIGTERM, {self.grace:g}s grace)")
        # The gateway first so no new request arrives, then the services, relay, sink.
        for child in sorted(alive, key=lambda c: 0 if c.spec.module == "gateway.service" else 1):
            child.stop_requested = True
            self._kill(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in alive:
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop within {self.grace:g}s: SIGKILL")
                child.forced = True
                self._kill(child, signal.SIGKILL)
                child.proc.wait()
        for child in self.children.values():
            child.pump.join(timeout=2)
            child.reported = True
        self.write_state()
        codes = {c.name: c.proc.returncode for c in self.children.values()}
        unclean = {n: rc for n, rc in codes.items() if rc not in (0, None)}
        self.say("all processes stopped" + (f" (non-zero: {unclean})" if unclean else " cleanly"))


def smtp_settings(settings: Settings, sink_host: str, sink_port: int) -> tuple[str, int, bool]:
    """Where the services send mail, and whether the runner must start its own sink."""
    if settings.smtp_host or settings.smtp_port:
        return settings.smtp_host or "127.0.0.1", settings.smtp_port or 25, False
    return sink_host, sink_port, True


def build(settings: Settings, *, instances: int = 1, run_dir: Path = DEFAULT_RUN_DIR,
          sink_host: str = "127.0.0.1", sink_port: int = 8025,
          modules: list[str] | None = None) -> tuple[list[ChildSpec], dict]:
    run_dir = Path(run_dir).resolve()
    smtp_host, smtp_port, start_sink = smtp_settings(settings, sink_host, sink_port)
    env = child_env(SMTP_HOST=smtp_host, SMTP_PORT=str(smtp_port))
    specs: list[ChildSpec] = []
    if start_sink:
        specs.append(ChildSpec("smtp-sink", tsunagi_argv("smtp-sink", "--host", sink_host, "--port",
                                                         str(sink_port), "--dir", str(run_dir / "mail")),
                               env))
    specs.append(ChildSpec("relay", tsunagi_argv("relay"), env))
    for module in modules or topology.SERVICE_MODULES:
        base = topology.service_name(module)
        for i in range(1, instances + 1):
            name = base if instances == 1 else f"{base}.{i}"
            specs.append(ChildSpec(name, service_argv(module), env, module=module))
    state = {"smtp": {"host": smtp_host, "port": smtp_port, "sink": start_sink,
                      "mail_dir": str(run_dir / "mail") if start_sink else None},
             "gateway": settings.gateway_address}
    return specs, state


def run(*, instances: int = 1, run_dir: Path = DEFAULT_RUN_DIR, grace: float = 20.0,
        keep_going: bool = False, sink_port: int = 8025) -> int:
    settings = Settings()
    specs, state = build(settings, instances=instances, run_dir=run_dir, sink_port=sink_port)
    host = settings.gateway_address
    if host.startswith("0.0.0.0:"):
        host = "127.0.0.1:" + host.split(":", 1)[1]
    runner = Runner(specs, grace=grace, keep_going=keep_going, run_dir=run_dir,
                    health_url=f"http://{host}/health", extra_state=state)
    smtp = state["smtp"]
    if smtp["sink"]:
        runner.say(f"SMTP_HOST/SMTP_PORT not given: local sink on {smtp['host']}:{smtp['port']}, "
                   f"mail saved in {smtp['mail_dir']}")
    else:
        runner.say(f"mail goes to {smtp['host']}:{smtp['port']} (no local sink)")
    return runner.run()
