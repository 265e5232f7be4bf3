"""Mail benchmark (issue 5, "Benchmark"): how long from asking for a mail notification password
to the SMTP server accepting the mail, and how many mails per second the notifier sustains.

What runs: otp_service, the notifier and the gateway as `nameko run` processes and the relay as
`tsunagi relay` (exactly as `tsunagi run` starts them), on a database and a RabbitMQ vhost of
their own, mailing to an aiosmtpd server on loopback in a process of its own that stamps the
moment it accepts each mail (end of DATA). Customers are seeded the way identity publishes
them (``legacy_customer_imported`` with a registered address).

1. Latency: one PC customer after the other, ``POST /api/v1/mail-otp`` (a transfer) → the
   SMTP server accepts the mail: gateway → notifier (destinations) → otp_service (HMAC, events,
   sealed request) → relay → notifier (recipients, outbox, SMTP). p50 / p99 over 200 codes.
   Closed loop: the next code is asked for once the previous mail arrived, so each figure is
   the path's own latency, not a queue's.
2. Throughput: a burst of ``operation_authorized`` events appended at once (one 取引受付メール
   each); mails/s is counted between the first and the last acceptance at the SMTP server —
   what the notifier sustains when it is the bottleneck (one notifier process, one SMTP
   connection per mail, as in production).

    python -m tests.bench --only mail [--quick]
"""
from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services import db
from services import runner as runner_mod
from services.config import Settings
from tests.bench.common import free_port, percentile, stop_processes

console = Console(highlight=False)
ROOT = Path(__file__).resolve().parents[2]
MODULES = ("otp_service.service", "notifier.service", "gateway.service")
TARGET_P99_SECONDS = 2.0          # a customer waits for the mail while the form is open
TARGET_MAILS_PER_SECOND = 20.0

# aiosmtpd in its own process (asyncio); one line per accepted mail: "<epoch> <rcpt>".
_SINK = r'''
import sys, time
from aiosmtpd.controller import Controller

class Sink:
    async def handle_DATA(self, server, session, envelope):
        stamp = time.time()
        for rcpt in envelope.rcpt_tos:
            sys.stdout.write("%.6f %s\n" % (stamp, rcpt))
        sys.stdout.flush()
        return "250 Message accepted for delivery"

controller = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("READY", flush=True)
sys.stdin.read()
controller.stop()
'''


class Mailbox:
    """The SMTP server's acceptance stamps, by recipient."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", _SINK, str(self.port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "READY", "SMTP sink did not start"
        self.accepted: dict[str, list[float]] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            stamp, rcpt = line.split()
            with self.cond:
                self.accepted.setdefault(rcpt, []).append(float(stamp))
                self.cond.notify_all()

    def wait(self, rcpt: str, count: int = 1, timeout: float = 30.0) -> list[float]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.accepted.get(rcpt, ())) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no mail for {rcpt} within {timeout} s")
                self.cond.wait(left)
            return list(self.accepted[rcpt])

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class System:
    def __init__(self, settings: Settings, mailbox: Mailbox):
        self.settings, self.mailbox = settings, mailbox
        tag = uuid.uuid4().hex[:8]
        self.dbname = self.vhost = f"tsunagi_bench_mail_{tag}"
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.vhost_made = False
        self.log_dir = ROOT / ".run" / "bench_mail"
        self.store = None

    def start(self):
        from tests import vhosts
        db.setup(self.settings, self.dbname, log=lambda *_: None)
        self.vhost_made = vhosts.create(self.vhost)
        amqp = vhosts.uri_for(self.settings.amqp_uri, self.vhost) if self.vhost_made else self.settings.amqp_uri
        self.database_url = db.url_for(self.settings.database_url, self.dbname)
        env = runner_mod.child_env(
            DATABASE_URL=self.database_url, AMQP_URI=amqp, GATEWAY_ADDRESS=f"127.0.0.1:{self.port}",
            LOG_LEVEL="WARNING", SMTP_HOST="127.0.0.1", SMTP_PORT=str(self.mailbox.port),
            AUDITOR_DATABASE_URL=db.url_for(self.settings.auditor_database_url, self.dbname))
        env["PSYCOPG_WAIT_FUNC"] = "wait_selector"     # the services run on eventlet
        self.log_dir.mkdir(parents=True, exist_ok=True)
        children = [(m, runner_mod.service_argv(m)) for m in MODULES] + [("relay", runner_mod.tsunagi_argv("relay"))]
        for name, argv in children:
            log = open(self.log_dir / f"{name}.log", "wb")
            self.procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        from services.eventstore import open_store
        self.store = open_store(self.settings, database_url=self.database_url, max_size=4)

    def wait_ready(self, token: str, customers: int, timeout: float = 90):
        """Every service answers and the notifier knows every seeded registered address."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[-1]} exited with {p.returncode}; see {self.log_dir}")
            try:
                with self.store.pool.connection() as conn:
                    known = conn.execute("SELECT count(*) FROM notifier.addresses WHERE slot = 'registered'"
                                         ).fetchone()[0]
                status, body = request(self.port, "GET", "/api/v1/me/authorization-method", token=token)
                if status == 200 and known >= customers:
                    return
                last = (status, body, known)
            except OSError as exc:
                last = exc
            time.sleep(0.3)
        raise RuntimeError(f"services not ready after {timeout}s (last: {last}); see {self.log_dir}")

    def stop(self):
        stop_processes(self.procs)
        if self.store is not None:
            self.store.pool.close()
        if self.vhost_made:
            from tests import vhosts
            vhosts.delete(self.vhost)
        try:
            db.drop_database(self.settings, self.dbname)
        except Exception as exc:  # leave a note, never hide the figures
            console.print(f"[yellow]could not drop {self.dbname}: {exc}[/yellow]")


def request(port: int, method: str, path: str, body=None, token: str | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, (json.loads(payload) if payload else {})
    finally:
        conn.close()


def seed(system: System, count: int) -> list[tuple[str, str, str]]:
    """``count`` customers with a registered address: (number, session token, address)."""
    from contracts.events import Actor, Metadata, NewEvent
    from gateway.sessions import SessionStore
    from services.eventstore import NO_STREAM

    base = int(time.time() * 1000) % 10**6
    customers = []
    metadata = Metadata(actor=Actor("system", "identity"), service="identity")
    sessions = SessionStore(system.store.pool)
    with system.store.transaction() as conn:
        for i in range(count):
            number = f"{(base * 10000 + i) % 10**10:010d}"
            address = f"bench{i}.{uuid.uuid4().hex[:6]}@example.jp"
            system.store.append(f"customer-{number}", [NewEvent("legacy_customer_imported", {
                "customer_number": number, "login_password_verifier": "x", "confirmation_pin_verifier": "x",
                "phones": ["+819012345678"], "email": address, "record_digest": uuid.uuid4().hex})],
                NO_STREAM, metadata, subject=number, conn=conn)
            customers.append((number, address))
    return [(number, sessions.create(number, "customer"), address) for number, address in customers]


TRANSFER = {"type": "transfer", "amount": 50000, "payee": {"bank_code": "0117", "branch_code": "123",
                                                           "account_type": "ordinary",
                                                           "account_number": "1234567", "name": "ﾔﾏﾀﾞ ﾀﾛｳ"}}


def measure_latency(system: System, customers) -> list[float]:
    latencies = []
    for number, token, address in customers:
        seen = len(system.mailbox.accepted.get(address, ()))
        t0 = time.time()
        status, body = request(system.port, "POST", "/api/v1/mail-otp",
                               {"purpose": "transfer", "operation": TRANSFER}, token)
        if status != 202:
            raise RuntimeError(f"issue failed: {status} {body}")
        accepted = system.mailbox.wait(address, seen + 1)[-1]
        latencies.append(accepted - t0)
    return latencies


def measure_throughput(system: System, customers) -> tuple[float, float, int]:
    """A burst of operation_authorized events → (mails/s sustained, seconds to drain, mails)."""
    from contracts.events import Actor, Metadata, NewEvent
    from services.eventstore import NO_STREAM

    before = {address: len(system.mailbox.accepted.get(address, ())) for _, _, address in customers}
    metadata = Metadata(actor=Actor("system", "otp_service"), service="otp_service")
    t0 = time.time()
    with system.store.transaction() as conn:
        for number, _, _ in customers:
            authorization_id = str(uuid.uuid4())
            system.store.append(f"authorization-{authorization_id}", [NewEvent("operation_authorized", {
                "authorization_id": authorization_id, "customer_number": number, "purpose": "transfer",
                "operation": {**TRANSFER, "payee": {**TRANSFER["payee"], "name": "ヤマダ タロウ"}},
                "operation_digest": "bench", "method": "mail_otp", "mail_otp_issue_id": None,
                "token_serial": None, "authorized_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})],
                NO_STREAM, metadata, subject=number, conn=conn)
    stamps = [system.mailbox.wait(address, before[address] + 1, timeout=120)[-1] for _, _, address in customers]
    first, last = min(stamps), max(stamps)
    return (len(stamps) - 1) / max(last - first, 1e-6), last - t0, len(stamps)


def main(args) -> list[tuple[str, bool]]:
    quick = bool(getattr(args, "quick", False))
    codes, burst = 200, (150 if quick else 600)
    console.print(f"[bold]mail[/bold]: {codes} mail notification passwords one after the other, then a burst "
                  f"of {burst} 取引受付メール; otp_service, notifier, gateway and relay as processes")
    mailbox = Mailbox()
    system = System(Settings(), mailbox)
    started = time.perf_counter()
    try:
        system.start()
        customers = seed(system, max(codes, burst) + 5)
        system.wait_ready(customers[0][1], len(customers))
        console.print(f"system up and {len(customers)} customers seeded in {time.perf_counter() - started:.1f} s")
        measure_latency(system, customers[-5:])                          # warm-up (pools, first queues)
        latencies = measure_latency(system, customers[:codes])
        assert min(latencies) > 0, "a mail accepted before it was asked for"
        rate, drain, mails = measure_throughput(system, customers[:burst])
    finally:
        system.stop()
        mailbox.stop()

    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    table = Table(title="Mail notification password: POST /api/v1/mail-otp → accepted by the SMTP server")
    for col in ("codes", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"):
        table.add_column(col, justify="right")
    table.add_row(str(len(latencies)), f"{p50 * 1000:.0f}", f"{percentile(latencies, 90) * 1000:.0f}",
                  f"{p99 * 1000:.0f}", f"{max(latencies) * 1000:.0f}", f"{statistics.mean(latencies) * 1000:.0f}")
    console.print(table)
    table = Table(title="Notifier throughput to a local SMTP server (burst of 取引受付メール)")
    for col in ("mails", "mails/s (first → last accepted)", "burst appended → last accepted s"):
        table.add_column(col, justify="right")
    table.add_row(str(mails), f"{rate:.1f}", f"{drain:.1f}")
    console.print(table)
    return [(f"mail OTP issue → SMTP accepted p99 ≤ {TARGET_P99_SECONDS:g} s ({p99:.3f} s)", p99 <= TARGET_P99_SECONDS),
            (f"notifier ≥ {TARGET_MAILS_PER_SECOND:g} mails/s ({rate:.1f})", rate >= TARGET_MAILS_PER_SECOND)]


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args())
