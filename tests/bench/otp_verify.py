"""OTP verification through the gateway at 20 concurrent clients, next to a bare Nameko
``@http``→RPC round trip in the same run (issue 4, "Benchmark"; part of ``--only otp``).

The route: ``POST /api/v1/otp/verify`` (step-up check: the current code alone, purpose
``step_up``). Login and ``/transactions/authorize`` each add an argon2id verify of a password,
which would measure argon2 (bench_login does that), not the OTP path. This path is HTTP →
session lookup → RPC to otp_service → the customer's OTP state and active token from the read
model → open the sealed TOTP secret → match ±1 step → append ``otp_verified`` with the
customer stream's expected version → project → answer.

The load: 20 client threads, one keep-alive connection each, each with customers of its own
(disjoint sets). A code is accepted once and nothing older than the newest accepted step is
accepted again (RFC 6238 §5.2), so one customer yields at most three codes (steps s-1, s, s+1)
and then one more per 30 s: the clients cycle through many customers, always sending the
code of the next unused step inside the ±1 window (pyotp, from the customer's secret). Codes
refused anyway (a step boundary passed in flight) are counted apart, never as throughput.

Seeding (not measured): the active tokens are written with otp_service's own event shape
(``token_activated``, the secret sealed with the configured ``TOTP_KEYS``) and projection,
and the sessions with the gateway's ``SessionStore`` — the HTTP initial operation costs eight
argon2id runs a customer, which would make seeding thousands of customers take minutes.

The reference: ``tests.bench.bare_http`` (a plain ``@http`` entrypoint) calling
``tests.bench.bare_rpc`` (a trivial ``@rpc``), two processes started by the same launcher
with the same ``deploy/nameko.yml`` on the same broker and vhost, driven by the same clients.
Rounds alternate (bare, gateway, …); the ratio is the median of the per-round ratios.
"""
from __future__ import annotations

import random
import statistics
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

import pyotp

from services import runner as runner_mod
from tests.bench.bench_login import Client
from tests.bench.common import cpu_seconds, free_port, percentile, stop_processes

CLIENTS = 20
TARGET = 0.6
PATH = "/api/v1/otp/verify"
BARE_PATH = "/bare/verify"
PERIOD = 30
MARGIN = 2.0        # seconds: a step-(s-1) code is not sent this close to the next boundary


@dataclass
class Holder:
    """A customer with an active token and a customer session."""
    number: str
    secret: str
    session: str
    last_step: int = -1


@dataclass
class Round:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    rejected: dict = field(default_factory=dict)
    starved: int = 0          # moments a client had no customer with an unused step left
    cpu: dict = field(default_factory=dict)      # process name -> CPU seconds during the round

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def seed(settings, count: int) -> list[Holder]:
    """``count`` customers, each with an active token (otp_service's event and projection)
    and a customer session (the gateway's SessionStore)."""
    from contracts import otp as contract
    from contracts.events import Metadata, NewEvent
    from gateway.sessions import SessionStore
    from otp_service import projection, totp
    from otp_service.config import OtpSettings
    from otp_service.service import new_token_serial
    from services.eventstore import NO_STREAM, open_store

    box = totp.SecretBox(OtpSettings.load().totp_keys)
    store = open_store(settings, max_size=4)
    sessions = SessionStore(store.pool)
    holders: list[Holder] = []
    try:
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        for number in (f"{n:010d}" for n in random.sample(range(10**9, 10**10), count)):
            serial, secret = new_token_serial(), totp.new_secret()
            event = NewEvent(contract.TOKEN_ACTIVATED.name, {
                "token_serial": serial, "customer_number": number, "application_id": str(uuid.uuid4()),
                "app_instance_id": f"bench-app-{number}", "display_name": contract.TOKEN_ISSUER,
                "secret": box.seal(serial, secret), "algorithm": totp.ALGORITHM, "digits": totp.DIGITS,
                "period": totp.PERIOD, "activated_at": now})
            stream = contract.token_stream(serial)
            with store.transaction() as conn:
                version = store.append(stream, [event], NO_STREAM, Metadata(service="bench"),
                                       subject=number, conn=conn)
                projection.project_all(conn, stream, version, [event])
            holders.append(Holder(number, secret, sessions.create(number, "customer")))
    finally:
        store.pool.close()
    return holders


def start_bare(env: dict, log_dir) -> tuple[list[subprocess.Popen], int]:
    """The bare @http and @rpc services, each in its own process; returns them and the port."""
    port = free_port()
    env = runner_mod.child_env(env, GATEWAY_ADDRESS=f"127.0.0.1:{port}", LOG_LEVEL="WARNING")
    procs = []
    for module in ("tests.bench.bare_rpc", "tests.bench.bare_http"):
        log = open(log_dir / f"{module}.log", "wb")
        procs.append(subprocess.Popen(runner_mod.service_argv(module), env=env, cwd=runner_mod.ROOT,
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[-1]} exited with {p.returncode}; see {log_dir}")
        c = Client(port)
        try:
            status, body = c.post(BARE_PATH, {"customer_number": "0", "otp": "000000"})
            if status == 200 and body.get("ok"):
                return procs, port
        except OSError:
            pass
        finally:
            c.close()
        time.sleep(0.3)
    stop_processes(procs)
    raise RuntimeError(f"bare services not ready; see {log_dir}")


def _next_code(h: Holder, now: float) -> str | None:
    """The code of the customer's next unused step inside the server's ±1 window, or None."""
    step = int(now // PERIOD)
    low = step - 1 if now - step * PERIOD < PERIOD - MARGIN else step
    use = max(h.last_step + 1, low)
    if use > step + 1:
        return None
    h.last_step = use
    return pyotp.TOTP(h.secret, interval=PERIOD).generate_otp(use)


def _drive(port: int, seconds: float, request, pids: dict[str, int] | None = None) -> Round:
    """CLIENTS threads call ``request(i, client) -> (status, body) | None`` back to back;
    ``pids`` (name -> pid): processes whose CPU time during the round is recorded."""
    clients = [Client(port) for _ in range(CLIENTS)]
    stop = threading.Event()
    gate = threading.Barrier(CLIENTS + 1)
    lat: list[list[float]] = [[] for _ in range(CLIENTS)]
    rejected: dict = {}
    starved = [0]
    lock = threading.Lock()

    def run(i: int):
        gate.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            answer = request(i, clients[i])
            if answer is None:
                with lock:
                    starved[0] += 1
                time.sleep(0.05)
                continue
            status, body = answer
            elapsed = time.perf_counter() - t0
            if status == 200 and body.get("token_serial"):
                if not stop.is_set():
                    lat[i].append(elapsed)
            else:
                with lock:
                    key = f"{status} {body.get('code')}"
                    rejected[key] = rejected.get(key, 0) + 1

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    pids = pids or {}
    gate.wait()
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - t0
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    for t in threads:
        t.join(timeout=60)
    for c in clients:
        c.close()
    return Round(elapsed, [x for xs in lat for x in xs], rejected, starved[0], cpu)


def measure_gateway(port: int, holders: list[Holder], seconds: float, pids: dict | None = None) -> Round:
    mine = [holders[i::CLIENTS] for i in range(CLIENTS)]
    cursor = [0] * CLIENTS

    def request(i: int, client: Client):
        pool = mine[i]
        for _ in range(len(pool)):
            h = pool[cursor[i] % len(pool)]
            cursor[i] += 1
            code = _next_code(h, time.time())
            if code is not None:
                return client.post(PATH, {"otp": code}, token=h.session)
        return None

    return _drive(port, seconds, request, pids)


def measure_bare(port: int, seconds: float, pids: dict | None = None) -> Round:
    return _drive(port, seconds, lambda i, client: client.post(
        BARE_PATH, {"customer_number": f"{i:010d}", "otp": "123456"}), pids)


def _cpu_table(console, gw: list[Round], bare: list[Round]) -> None:
    """CPU milliseconds per request, per process (PostgreSQL and RabbitMQ are shared with
    everything on the machine and not counted): where the gateway path's cost goes."""
    from rich.table import Table
    table = Table(title="CPU ms per request, all rounds (PostgreSQL/RabbitMQ not counted)")
    table.add_column("path")
    table.add_column("per process", justify="left")
    table.add_column("total", justify="right")
    totals = []
    for label, rounds in (("gateway OTP verify", gw), ("bare @http→RPC", bare)):
        n = sum(len(r.latencies) for r in rounds) or 1
        per = {name: sum(r.cpu.get(name, 0.0) for r in rounds) / n * 1000 for name in rounds[0].cpu}
        shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        table.add_row(label, shown, f"{sum(per.values()):.2f}")
        totals.append(sum(per.values()))
    console.print(table)
    if totals[0] > 0:
        console.print(f"CPU-bound ceiling of the ratio on an otherwise idle machine ≈ {totals[1] / totals[0]:.2f}× "
                      f"(our processes only; the gateway path's PostgreSQL work would lower it further)")


def customers_needed(rounds: int, seconds: float) -> int:
    """Enough customers that the clients never run dry at up to ~400 verifications/s."""
    per_customer = 2 + rounds * seconds * 2 / PERIOD   # s, s+1 at once, one more per 30 s
    return max(CLIENTS * 10, int(400 * rounds * seconds / per_customer))


def run(system_base_port: int, settings, env: dict, log_dir, *, quick: bool, console,
        system_pids: dict[str, int] | None = None) -> tuple[dict, bool]:
    """Seed, start the bare services, alternate the rounds; print and return the figures."""
    from rich.table import Table

    rounds, seconds = (2, 4.0) if quick else (3, 10.0)
    count = customers_needed(rounds, seconds)
    t0 = time.perf_counter()
    holders = seed(settings, count)
    console.print(f"OTP verify: {count} customers with an active token and a session seeded in "
                  f"{time.perf_counter() - t0:.1f} s")
    procs, bare_port = start_bare(env, log_dir)
    try:
        measure_bare(bare_port, 1.0)                            # warm-up, not counted
        measure_gateway(system_base_port, holders, 1.0)
        bare: list[Round] = []
        gw: list[Round] = []
        bare_pids = {p.args[-1].rsplit(".", 1)[-1]: p.pid for p in procs}
        for _ in range(rounds):
            bare.append(measure_bare(bare_port, seconds, bare_pids))
            time.sleep(0.5)                                     # let the relay catch up
            gw.append(measure_gateway(system_base_port, holders, seconds, system_pids))
            time.sleep(0.5)
    finally:
        stop_processes(procs)
    ratios = [g.rate / b.rate if b.rate else 0.0 for g, b in zip(gw, bare)]
    table = Table(title=f"OTP verification through the gateway ({PATH}) vs bare @http→RPC, "
                        f"{CLIENTS} clients, {rounds} × {seconds:g} s")
    for col in ("round", "gateway verifies/s", "p50 ms", "p99 ms", "bare req/s", "p50 ms ", "p99 ms ",
                "ratio"):
        table.add_column(col, justify="right")

    def ms(xs, p):
        return f"{percentile(xs, p) * 1000:.1f}"

    for i, (g, b, r) in enumerate(zip(gw, bare, ratios), 1):
        table.add_row(str(i), f"{g.rate:.1f}", ms(g.latencies, 50), ms(g.latencies, 99), f"{b.rate:.1f}",
                      ms(b.latencies, 50), ms(b.latencies, 99), f"{r:.2f}")
    all_g = [x for g in gw for x in g.latencies]
    all_b = [x for b in bare for x in b.latencies]
    ratio = statistics.median(ratios)
    table.add_row("median", f"{statistics.median(g.rate for g in gw):.1f}", ms(all_g, 50), ms(all_g, 99),
                  f"{statistics.median(b.rate for b in bare):.1f}", ms(all_b, 50), ms(all_b, 99),
                  f"{ratio:.2f}")
    console.print(table)
    rejected: dict = {}
    for g in gw:
        for k, v in g.rejected.items():
            rejected[k] = rejected.get(k, 0) + v
    bare_errors: dict = {}
    for b in bare:
        for k, v in b.rejected.items():
            bare_errors[k] = bare_errors.get(k, 0) + v
    starved = sum(g.starved for g in gw)
    console.print(f"accepted codes: {len(all_g)}; refused codes (counted apart): {rejected or 'none'}; "
                  f"bare errors: {bare_errors or 'none'}; client waits for a fresh step: {starved}")
    _cpu_table(console, gw, bare)
    ok = ratio >= TARGET and not bare_errors
    console.print(f"target: gateway OTP verifies/s ≥ {TARGET} × bare @http→RPC req/s — "
                  f"{'[green]met[/green]' if ok else '[red]missed[/red]'} ({ratio:.2f}×)")
    figures = {"gateway_rate": statistics.median(g.rate for g in gw), "gateway_p99_ms": percentile(all_g, 99) * 1000,
               "bare_rate": statistics.median(b.rate for b in bare), "bare_p99_ms": percentile(all_b, 99) * 1000,
               "ratio": ratio, "accepted": len(all_g), "refused": rejected}
    return figures, ok
