"""Operator and auditor benchmark (issue 6, "Benchmark"): with 2,000,000 generated events,
`tsunagi replay --all` rate (target ≥ 20,000 events/s), `tsunagi audit journey` for one
customer (target < 100 ms), `tsunagi verify` rate, and `tsunagi report migration` time.

The log: a fresh database of its own (`services.db.setup`, dropped at the end) filled with
realistic customer journeys through every service — legacy import, legacy login (some
failing and locked, then unlocked by an operator), secret questions, password change, OTP
application, the verifying call (sometimes a wrong one first), token mail, token activation
and display name, logins with challenges and OTPs, mail notification passwords with their
mails and authorisations, select addresses — with the step funnel thinning out as real
cut-over weeks do (some customers stop at each step). Each customer starts on one of 30 days.

Events are valid log rows: personal fields sealed under each customer's data key
(`services.crypto`, keys wrapped by FIELD_KEYS into `eventstore.subject_keys`), written by
COPY in transactions of ~50,000 rows, then sealed into the chain by the store's own sealer
(`EventStore.seal`), so `verify` checks a real chain and `replay` decrypts real ciphertext.
`--quick` uses 200,000 events.

What is timed:
- replay: `tsunagi replay --all --json` as a subprocess (what an operator runs); the rate is
  the events the projections read over the seconds they took (from the command's JSON), and
  the wall time with the process start is printed beside it;
- audit journey: the command's own query (`services.cli.audit.build_query` + `iter_events`
  on the auditor role) for customers chosen at random, median and p95 over the runs, in
  process — a Python process start alone is ~0.3 s, which says nothing about the query; the
  subprocess wall time of one `tsunagi audit journey` is printed for information;
- verify: `tsunagi verify --json` (subprocess), checked events over wall time;
- report: `tsunagi report migration --json` (subprocess), wall time.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from contracts.events import REGISTRY, Actor, Metadata
from services import crypto, db
from services.config import Settings
from services.eventstore import open_store
from tests.bench.common import percentile

ROOT = Path(__file__).resolve().parents[2]
TSUNAGI = Path(sys.executable).with_name("tsunagi")
FULL_EVENTS, QUICK_EVENTS = 2_000_000, 200_000
CHUNK_CUSTOMERS = 1000           # customers per COPY transaction (~30,000–50,000 events)
DAYS = 30
START = datetime(2026, 10, 1, 0, 0, tzinfo=timezone.utc)
JOURNEY_RUNS = 50
READ_SAMPLE = 200_000

console = Console(highlight=False, width=None if os.isatty(1) else 120)


# -- the generator -------------------------------------------------------------------------

def _personal_fields() -> dict[str, tuple[str, ...]]:
    import importlib
    import pkgutil

    import contracts
    for m in pkgutil.iter_modules(contracts.__path__):
        importlib.import_module(f"contracts.{m.name}")
    return {et.name: et.personal_fields for et in REGISTRY if et.personal_fields}


def _iso(t: datetime) -> str:
    return t.isoformat()


class Journey:
    """One customer's events, each stream numbered, times strictly increasing."""

    def __init__(self, number: str, start: datetime, rng: random.Random):
        self.number, self.t, self.rng = number, start, rng
        self.versions: dict[str, int] = {}
        self.rows: list[tuple] = []       # (at, stream, version, type, data, metadata)
        self.customer = Metadata(actor=Actor("customer", number), service="gateway",
                                 client_address=f"203.0.113.{rng.randrange(1, 255)}").as_dict()

    def later(self, seconds: float) -> datetime:
        self.t += timedelta(seconds=seconds * (0.5 + self.rng.random()))
        return self.t

    def add(self, stream: str, etype: str, data: dict, meta: dict | None = None, after: float = 20) -> dict:
        at = self.later(after)
        version = self.versions.get(stream, 0) + 1
        self.versions[stream] = version
        meta = dict(meta or self.customer)
        meta["correlation_id"] = str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.rows.append((at, stream, version, etype, data, meta))
        return data

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


SYSTEM = {"actor": {"kind": "system", "id": "tsunagi"}}


def _mail(j: Journey, template: str, to: str, source: str, after: float = 2) -> None:
    mail_id = j.uid()
    stream = f"mail-{mail_id}"
    meta = {**SYSTEM, "service": "notifier"}
    j.add(stream, "mail_queued", {
        "mail_id": mail_id, "template": template, "customer_number": j.number, "to": [to],
        "params": {"name": "顧客"}, "sender": {"address": "info@otp-auth.net", "display_name": "青森みちのく銀行"},
        "message_id": f"<{mail_id}@otp-auth.net>", "source_event_id": source,
        "source_event_type": template, "queued_at": _iso(j.t)}, meta, after)
    if j.rng.random() < 0.05:
        j.add(stream, "mail_deferred", {"mail_id": mail_id, "attempt": 1, "error": "421 try later",
                                        "next_attempt_at": _iso(j.t + timedelta(seconds=60))}, meta, 60)
    j.add(stream, "mail_sent", {"mail_id": mail_id, "attempt": 1, "message_id": f"<{mail_id}@otp-auth.net>",
                                "sent_at": _iso(j.t)}, meta, 3)


def journey(number: str, start: datetime, rng: random.Random) -> Journey:
    j = Journey(number, start, rng)
    cust, sq = f"customer-{number}", f"secretq-{number}"
    email = f"c{number}@example.jp"
    j.add(cust, "legacy_customer_imported", {
        "customer_number": number, "login_password_verifier": "pbkdf2_sha256$1000$c2FsdA$" + "x" * 43,
        "confirmation_pin_verifier": "pbkdf2_sha256$1000$c2FsdA$" + "y" * 43,
        "phones": [f"090-{rng.randrange(1000, 9999)}-{rng.randrange(1000, 9999)}"], "email": email,
        "record_digest": f"{rng.getrandbits(128):032x}"}, {**SYSTEM, "service": "identity"})
    j.t += timedelta(hours=rng.uniform(1, 72))
    # Legacy login; some customers mistype, a few get locked and call the bank.
    if rng.random() < 0.08:
        fails = 5 if rng.random() < 0.3 else rng.randrange(1, 4)
        for k in range(1, fails + 1):
            j.add(cust, "legacy_login_failed", {"customer_number": number, "consecutive_failures": k})
        if fails == 5:
            j.add(cust, "credential_locked", {"customer_number": number, "credential": "login_password",
                                              "consecutive_failures": 5, "locked_at": _iso(j.t)}, after=1)
            op = {"actor": {"kind": "operator", "id": f"op{rng.randrange(1, 20):03d}"},
                  "service": "identity", "reason": "本人確認済み（電話）"}
            j.add(cust, "credential_unlocked", {"customer_number": number, "credential": "login_password",
                                                "release": "operator"}, op, after=3600 * 4)
    if rng.random() > 0.92:
        return j
    j.add(cust, "legacy_login_succeeded", {"customer_number": number}, after=60)
    if rng.random() > 0.95:
        return j
    verifiers = {str(q): "$argon2id$v=19$m=65536,t=3,p=4$" + "z" * 60 for q in rng.sample(range(1, 21), 3)}
    j.add(sq, "secret_questions_registered", {"customer_number": number, "question_ids": list(map(int, verifiers)),
                                               "answer_verifiers": verifiers, "confirmed": True}, after=90)
    if rng.random() > 0.95:
        return j
    j.add(cust, "passwords_changed", {"customer_number": number,
                                      "login_password_hash": "$argon2id$v=19$m=65536,t=3,p=4$" + "a" * 60,
                                      "confirmation_password_hash": "$argon2id$v=19$m=65536,t=3,p=4$" + "b" * 60},
          after=60)
    if rng.random() > 0.88:
        return j
    app, vid = j.uid(), j.uid()
    appstream, vstream = f"otpapp-{app}", f"phoneverif-{vid}"
    phone = f"+8190{rng.randrange(10**7, 10**8)}"
    call_to = "+81120" + f"{rng.randrange(100000, 999999)}"
    j.add(appstream, "otp_application_submitted", {
        "application_id": app, "customer_number": number, "email": email,
        "activation_password_verifier": "$argon2id$v=19$m=65536,t=3,p=4$" + "c" * 60, "phone_id": "p1",
        "verification_id": vid, "call_from_masked": "*****" + phone[-4:], "call_to": call_to,
        "expires_at": _iso(j.t + timedelta(minutes=5)), "submitted_at": _iso(j.t)}, after=120)
    j.add(vstream, "phone_verification_started", {
        "verification_id": vid, "application_id": app, "customer_number": number, "caller": phone,
        "call_to": call_to, "call_to_display": "0120-" + call_to[6:9] + "-" + call_to[9:],
        "window_seconds": 300, "started_at": _iso(j.t), "expires_at": _iso(j.t + timedelta(minutes=5))},
          {**SYSTEM, "service": "phone_auth"}, after=1)
    calls = [("+8180" + f"{rng.randrange(10**7, 10**8)}", "unknown_caller")] if rng.random() < 0.1 else []
    if rng.random() > 0.93:      # never called: the window closes
        j.add(vstream, "phone_verification_expired", {"verification_id": vid, "application_id": app,
                                                      "customer_number": number,
                                                      "expires_at": _iso(j.t + timedelta(minutes=5))},
              {**SYSTEM, "service": "phone_auth"}, after=300)
        j.add(appstream, "otp_application_expired", {"application_id": app, "customer_number": number,
                                                     "verification_id": vid, "reason": "not_called"},
              {**SYSTEM, "service": "otp_service"}, after=1)
        return j
    for caller, reason in calls + [(phone, None)]:
        key = j.uid()
        j.add(f"inboundcall-{key}", "inbound_call_received", {
            "call_key": key, "call_id": "CA" + key.replace("-", ""), "edge": "twilio", "caller": caller,
            "withheld": False, "called": call_to, "received_at": _iso(j.t), "verification_ids": [vid]},
              {**SYSTEM, "service": "phone_auth"}, after=40)
        if reason:
            j.add(vstream, "phone_verification_attempt_failed", {
                "verification_id": vid, "application_id": app, "customer_number": number, "reason": reason,
                "call_key": key, "at": _iso(j.t)}, {**SYSTEM, "service": "phone_auth"}, after=1)
        else:
            j.add(vstream, "phone_verification_succeeded", {
                "verification_id": vid, "application_id": app, "customer_number": number, "call_key": key,
                "at": _iso(j.t)}, {**SYSTEM, "service": "phone_auth"}, after=1)
    j.add(appstream, "otp_application_verified", {"application_id": app, "customer_number": number,
                                                  "verification_id": vid, "verified_at": _iso(j.t)},
          {**SYSTEM, "service": "otp_service"}, after=1)
    service_id, user_id = f"{rng.randrange(10**7, 10**8)}", f"{rng.getrandbits(64):016x}"
    issued = j.add(appstream, "token_issued", {"application_id": app, "customer_number": number,
                                               "service_id": service_id, "user_id": user_id, "email": email,
                                               "issued_at": _iso(j.t)}, {**SYSTEM, "service": "otp_service"}, 1)
    _mail(j, "token_issued", email, app)
    del issued
    if rng.random() > 0.9:
        return j
    serial = f"{rng.getrandbits(48):012X}"
    instance = f"app-{j.uid()}"
    j.add(appstream, "otp_application_activated", {"application_id": app, "customer_number": number,
                                                   "token_serial": serial, "at": _iso(j.t)}, after=3600)
    j.add(f"otptoken-{serial}", "token_activated", {
        "token_serial": serial, "customer_number": number, "application_id": app, "app_instance_id": instance,
        "display_name": "青森みちのく銀行", "secret": {"kid": "t1", "ct": "QUJD" * 16}, "algorithm": "SHA1",
        "digits": 6, "period": 30, "activated_at": _iso(j.t)}, after=1)
    j.add(f"otptoken-{serial}", "token_display_name_set", {
        "token_serial": serial, "customer_number": number, "suffix": "スマホ",
        "display_name": "青森みちのく銀行スマホ"}, after=30)
    # Everyday use: logins with the OTP, sometimes a challenge, sometimes a mistyped code.
    otpcust, step = f"otpcust-{number}", int(j.t.timestamp()) // 30
    for n in range(rng.randrange(0, 11)):
        j.t += timedelta(hours=rng.uniform(2, 30))
        if n == 0 or rng.random() < 0.1:
            challenge = j.uid()
            j.add(cust, "login_challenged", {"customer_number": number, "challenge_id": challenge,
                                             "question_id": 1, "expires_at": _iso(j.t + timedelta(minutes=5))})
            j.add(sq, "secret_answer_verified", {"customer_number": number, "question_id": 1})
            j.add(cust, "challenge_passed", {"customer_number": number, "challenge_id": challenge})
            j.add(cust, "environment_recognised", {"customer_number": number, "environment": f"{j.uid()}"})
        if rng.random() < 0.05:
            j.add(otpcust, "otp_verification_failed", {"customer_number": number, "token_serial": serial,
                                                       "purpose": "login", "reason": "mismatch",
                                                       "consecutive_failures": 1, "at": _iso(j.t)})
        step = max(step + 1, int(j.t.timestamp()) // 30)
        j.add(otpcust, "otp_verified", {"customer_number": number, "token_serial": serial, "time_step": step,
                                        "purpose": "login", "at": _iso(j.t)})
        j.add(cust, "login_succeeded", {"customer_number": number}, after=1)
    # Mail notification passwords (a select address for some) with their mails.
    if rng.random() < 0.3:
        j.add(f"notifyaddr-{number}", "select_address_set", {
            "customer_number": number, "slot": "select1", "address": f"s{number}@example.jp", "enabled": True,
            "receives_mail_otp": False, "authorization_id": j.uid(), "at": _iso(j.t)}, after=600)
    mo = f"mailotp-{number}"
    for _ in range(rng.randrange(0, 3)):
        issue = j.uid()
        op = {"type": "transfer", "amount": rng.randrange(1000, 10**6), "to": "0012345"}
        j.add(mo, "mail_otp_issued", {
            "issue_id": issue, "customer_number": number, "purpose": "transfer", "operation": op,
            "operation_digest": f"{rng.getrandbits(128):032x}",
            "verifier": {"alg": "HMAC-SHA256", "kid": "m1", "mac": f"{rng.getrandbits(128):032x}"},
            "destination": "mail_otp_destinations", "key_subject": f"mailotp:{issue}", "ttl_seconds": 600,
            "expires_at": _iso(j.t + timedelta(minutes=10)), "issued_at": _iso(j.t)}, after=3600 * 5)
        j.add(f"mailotpmail-{issue}", "mail_otp_mail_requested", {
            "issue_id": issue, "customer_number": number, "purpose": "transfer", "operation": op,
            "code": f"{rng.randrange(10**6):06d}", "destination": "mail_otp_destinations",
            "key_subject": f"mailotp:{issue}", "ttl_seconds": 600,
            "expires_at": _iso(j.t + timedelta(minutes=10))}, after=1)
        _mail(j, "mail_otp", email, issue)
        auth = j.uid()
        j.add(mo, "mail_otp_verified", {"issue_id": issue, "customer_number": number, "purpose": "transfer",
                                        "operation_digest": "d", "at": _iso(j.t)}, after=45)
        j.add(f"authorization-{auth}", "operation_authorized", {
            "authorization_id": auth, "customer_number": number, "purpose": "transfer", "operation": op,
            "operation_digest": "d", "method": "mail_otp", "mail_otp_issue_id": issue, "token_serial": None,
            "authorized_at": _iso(j.t)}, after=1)
        _mail(j, "operation_authorized", email, auth)
    return j


class Generator:
    def __init__(self, settings: Settings, url: str, seed: int = 6):
        self.settings, self.url = settings, url
        self.master = crypto.MasterKeys(settings.field_keys)
        self.personal = _personal_fields()
        self.rng = random.Random(seed)

    def _row(self, key: bytes, subject: str, row: tuple) -> str:
        at, stream, version, etype, data, meta = row
        fields = self.personal.get(etype)
        if fields:
            data = dict(data)
            for f in fields:
                if data.get(f) is not None:
                    data[f] = crypto.seal_value(key, subject, f, data[f])
        et = REGISTRY.get(etype)
        d = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("\\", "\\\\")
        m = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).replace("\\", "\\\\")
        eid = uuid.UUID(int=self.rng.getrandbits(128), version=4)
        return f"{eid}\t{stream}\t{version}\t{etype}\t{et.version if et else 1}\t{d}\t{m}\t{at.isoformat()}\n"

    def fill(self, target: int) -> tuple[int, int, list[str]]:
        """Write about ``target`` events; returns (events, customers, customer numbers)."""
        expected_customers = max(1, target // 30)
        written, customers, numbers = 0, 0, []
        with psycopg.connect(self.url) as conn:
            while written < target:
                rows, keys = [], []
                for _ in range(CHUNK_CUSTOMERS):
                    number = f"{3000000000 + customers:010d}"
                    day = min(DAYS - 1, customers * DAYS // expected_customers)
                    start = START + timedelta(days=day, seconds=self.rng.uniform(0, 86400))
                    j = journey(number, start, self.rng)
                    key = crypto.new_data_key()
                    wk = self.master.wrap(number, key)
                    keys.append((number, wk.master_kid, wk.wrapped))
                    rows += [(r[0], self._row(key, number, r)) for r in j.rows]
                    numbers.append(number)
                    customers += 1
                rows.sort(key=lambda r: r[0])      # the chunk's customers interleave in time
                with conn.transaction():
                    with conn.cursor().copy("COPY eventstore.subject_keys (subject, master_kid, wrapped_key) "
                                            "FROM STDIN") as cp:
                        for k in keys:
                            cp.write_row(k)
                    with conn.cursor().copy(
                            "COPY eventstore.events (event_id, stream_name, stream_version, event_type, "
                            "schema_version, data, metadata, recorded_at) FROM STDIN") as cp:
                        buf = []
                        for _, line in rows:
                            buf.append(line)
                            if len(buf) >= 2000:
                                cp.write("".join(buf))
                                buf.clear()
                        if buf:
                            cp.write("".join(buf))
                written += len(rows)
        return written, customers, numbers


# -- the commands ----------------------------------------------------------------------------

def run_cli(env: dict, *args: str, timeout: float = 3600) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run([str(TSUNAGI), *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **env}, cwd=ROOT)
    return result, time.perf_counter() - started


def journey_query_ms(auditor_url: str, numbers: list[str], runs: int) -> tuple[list[float], list[float], list[int]]:
    """(query ms on an open auditor connection, ms of the command's path with its connect,
    events per customer). The query is the command's own (build_query), run the way
    iter_events runs it: a named (server-side) cursor inside a transaction."""
    from services.cli.audit import build_query, iter_events, mask
    rng = random.Random(66)
    query_ms, command_ms, counts = [], [], []
    with psycopg.connect(auditor_url) as conn:
        for number in [rng.choice(numbers) for _ in range(runs)]:
            sql, params = build_query(customer=number)
            started = time.perf_counter()
            with conn.transaction():
                cur = conn.cursor(name=f"bench_{uuid.uuid4().hex}")
                cur.itersize = 2000
                cur.execute(sql, params)
                rows = [mask(r[-1]) for r in cur]
            query_ms.append((time.perf_counter() - started) * 1000)
            counts.append(len(rows))
            started = time.perf_counter()
            again = [mask(r["data"]) for r in iter_events(auditor_url, sql, params)]
            command_ms.append((time.perf_counter() - started) * 1000)
            assert len(again) == len(rows)
    return query_ms, command_ms, counts


def main(args) -> list[tuple[str, bool]]:
    settings = Settings()
    target = QUICK_EVENTS if args.quick else FULL_EVENTS
    name = f"tsunagi_bench_operator_{uuid.uuid4().hex[:8]}"
    db.setup(settings, name, log=lambda *_: None)
    admin_url = db.admin_url_for(settings, name)
    env = {"DATABASE_URL": db.url_for(settings.database_url, name),
           "AUDITOR_DATABASE_URL": db.url_for(settings.auditor_database_url, name)}
    figures: list[tuple[str, str, str]] = []
    try:
        started = time.perf_counter()
        events, customers, numbers = Generator(settings, admin_url).fill(target)
        gen_s = time.perf_counter() - started
        figures.append(("generate + COPY", f"{events:,} events, {customers:,} customers in {gen_s:.1f} s",
                        f"{events / gen_s:,.0f} events/s"))
        store = open_store(settings, database_url=admin_url, max_size=2)
        try:
            started = time.perf_counter()
            sealed = 0
            while True:
                n = store.seal(50_000)
                if n <= 0:
                    break
                sealed += n
            seal_s = time.perf_counter() - started
        finally:
            store.pool.close()
        assert sealed == events, (sealed, events)
        figures.append(("seal (chain links)", f"{sealed:,} events in {seal_s:.1f} s", f"{sealed / seal_s:,.0f} events/s"))
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute("VACUUM ANALYZE eventstore.events")
            c.execute("VACUUM ANALYZE eventstore.log")

        # Reference in the same run (the machine's load moves every figure): the store's own
        # decoded read of the global log, no projection, on the first READ_SAMPLE events.
        store = open_store(settings, database_url=admin_url, max_size=1)
        try:
            started, position, read = time.perf_counter(), 0, 0
            while read < READ_SAMPLE:
                page = store.read_all(position, 10_000)
                if not page:
                    break
                read += len(page)
                position = page[-1].global_position
            read_rate = read / (time.perf_counter() - started)
        finally:
            store.pool.close()
        figures.append(("reference: read_all", f"first {read:,} events of the log, decoded, pages of 10,000",
                        f"{read_rate:,.0f} events/s"))

        result, wall = run_cli(env, "replay", "--all", "--json", "--no-progress")
        if result.returncode != 0:
            raise RuntimeError(f"replay failed: {result.stdout[-2000:]} {result.stderr[-4000:]}")
        out = json.loads(result.stdout)
        replayed, seconds = out["events"], out["seconds"]
        replay_rate = replayed / seconds
        per = ", ".join(f"{p['projection']} {p['events'] / p['seconds']:,.0f}/s" for p in out["projections"])
        figures.append(("replay --all", f"{replayed:,} events replayed by the projections in {seconds:.1f} s "
                        f"(wall {wall:.1f} s incl. process start); {replay_rate / read_rate:.2f}× the "
                        "reference read", f"{replay_rate:,.0f} events/s"))
        figures.append(("  per projection", per, ""))
        if out.get("log_events"):
            # The same seconds over the log's length: each event counted once, whether two
            # projections read its category (customer) or none (inbound calls, secret questions).
            figures.append(("  per event of the log", f"{out['log_events']:,} events in the log",
                            f"{out['log_events'] / seconds:,.0f} events/s"))
        with psycopg.connect(admin_url) as c:
            rows = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (
                "identity.legacy_imports", "otp.applications", "otp.tokens", "notifier.outbox",
                "phone_auth.verifications", "otp.mail_otp_customers", "notifier.addresses")}
        figures.append(("  rows rebuilt", ", ".join(f"{t} {n:,}" for t, n in rows.items()), ""))

        times, command, counts = journey_query_ms(env["AUDITOR_DATABASE_URL"], numbers, JOURNEY_RUNS)
        j_med, j_p95 = statistics.median(times), percentile(times, 95)
        figures.append(("audit journey (query)", f"{JOURNEY_RUNS} random customers, {statistics.mean(counts):.0f} "
                        f"events each on average (max {max(counts)}); p95 {j_p95:.1f} ms, max {max(times):.1f} ms",
                        f"median {j_med:.1f} ms"))
        figures.append(("  with the connect (iter_events)", f"p95 {percentile(command, 95):.1f} ms",
                        f"median {statistics.median(command):.1f} ms"))
        one, wall = run_cli(env, "audit", "journey", numbers[len(numbers) // 2], "--json")
        if one.returncode != 0:
            raise RuntimeError(f"audit journey failed: {one.stderr[-2000:]}")
        figures.append(("  tsunagi audit journey (process)", f"{len(one.stdout.splitlines())} events",
                        f"{wall * 1000:,.0f} ms wall"))

        result, wall = run_cli(env, "verify", "--json")
        ver = json.loads(result.stdout)
        if not ver["ok"]:
            raise RuntimeError(f"verify failed on the generated log: {ver}")
        figures.append(("verify", f"{ver['checked']:,} events in {wall:.1f} s (wall)", f"{ver['checked'] / wall:,.0f} events/s"))

        result, wall = run_cli(env, "report", "migration", "--json", "--as-of",
                               (START + timedelta(days=DAYS + 5)).isoformat())
        if result.returncode != 0:
            raise RuntimeError(f"report failed: {result.stderr[-2000:]}")
        rep = json.loads(result.stdout)
        funnel = " → ".join(f"{s['reached']:,}" for s in rep["funnel"])
        figures.append(("report migration", f"funnel {funnel}; {len(rep['daily'])} days",
                        f"{wall:.2f} s wall"))
    finally:
        db.drop_database(settings, name)

    table = Table(title=f"bench_operator ({events:,} events; load average {os.getloadavg()[0]:.1f} at the end)")
    for col in ("what", "detail", "figure"):
        table.add_column(col)
    for row in figures:
        table.add_row(*row)
    console.print(table)
    targets = [(f"replay ≥ 20,000 events/s (measured {replay_rate:,.0f})", replay_rate >= 20_000),
               (f"audit journey < 100 ms (median {j_med:.1f} ms, p95 {j_p95:.1f} ms)", j_p95 < 100)]
    for text, ok in targets:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return targets
