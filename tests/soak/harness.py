"""Soak under faults: a whole system of its own, the load generator, the fault injector, and
the checks afterwards (issue 7 item 1).

The system gets a database and a RabbitMQ virtual host of its own, so the faults (cutting the
vhost's connections, terminating the database's backends) hit nothing else on the machine.

Checks after the load:
- every flow completed (a flow that met an error retried until done; ``failed`` must be empty),
  and no answer was *unclear* (a 5xx without problem+json);
- `tsunagi replay --all --check`: every read model equals a rebuild from the log;
- `tsunagi verify`: the hash chain holds;
- every ``token_issued`` has exactly one token mail (distinct Message-ID) carrying its User ID
  ("lost" = none, "duplicates" = more than one); an SMTP re-delivery after a crash keeps the
  Message-ID (notifier), so it is the same mail, counted separately as ``redelivered``;
- no effect twice: one ``mail_queued`` per source event, at most one ``mail_sent`` per mail,
  one ``token_issued`` per application, one ``token_activated`` per customer.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from services import db
from services.config import Settings
from tests import vhosts
from tests.e2e.conftest import ROOT, start_system
from tests.soak.faults import FaultInjector
from tests.soak.loadgen import TOKEN_SUBJECT, USER_ID_RE, LoadGenerator, seed_customers


@dataclass
class SoakReport:
    flows: int
    completed: int = 0
    failed: list = field(default_factory=list)
    unclear: list = field(default_factory=list)
    retries: Counter = field(default_factory=Counter)
    resumes: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    fault_notes: list = field(default_factory=list)
    events: int = 0
    token_issued: int = 0
    mails: int = 0
    redelivered: int = 0
    duplicates: int = 0
    lost: int = 0
    duplicate_effects: list = field(default_factory=list)
    replay_check: tuple = (None, "")
    verify: tuple = (None, "")
    seconds: float = 0.0
    log_path: Path | None = None
    secrets: object = None

    def summary(self) -> str:
        return "\n".join([
            f"soak: {self.flows} flows in {self.seconds:.0f} s",
            f"  flows completed     {self.completed} / {self.flows} (failed {len(self.failed)}, unclear answers {len(self.unclear)})",
            f"  retries needed      {sum(self.retries.values())} {dict(self.retries.most_common(8))}",
            f"  lost answers resumed {sum(self.resumes.values())} {dict(self.resumes)}",
            f"  faults injected     {sum(self.faults.values())} {dict(self.faults)}",
            f"  events              {self.events}",
            f"  token_issued        {self.token_issued}",
            f"  mails (token)       {self.mails} (+{self.redelivered} SMTP re-deliveries of the same Message-ID)",
            f"  duplicates          {self.duplicates + len(self.duplicate_effects)}",
            f"  lost                {self.lost}",
            f"  replay --check      exit {self.replay_check[0]}",
            f"  verify              exit {self.verify[0]}",
        ])


def _cli(env: dict, *args: str, timeout: float = 600, attempts: int = 6) -> tuple[int, str]:
    """Run a tsunagi command; when it could not even connect (the PostgreSQL server is shared
    and its connection slots can run out), try again a little later — that is no finding."""
    for attempt in range(attempts):
        r = subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
        out = (r.stdout + r.stderr)[-4000:]
        if r.returncode == 0 or "cannot connect to the database" not in out and "connection failed" not in out:
            return r.returncode, out
        time.sleep(5 * (attempt + 1))
    return r.returncode, out


def default_schedule(kinds: list[str]) -> list[tuple[float, str]]:
    """Each kind once, at random moments (as a fraction of the load) between 10 % and 70 %."""
    import random
    slots = sorted(random.uniform(0.1, 0.7) for _ in kinds)
    order = list(kinds)
    random.shuffle(order)
    return list(zip(slots, order))


def repeating_schedule(count: int, kinds: list[str], once: tuple[str, ...] = ()):
    """``count`` faults of random kinds spread over the load (jittered), plus each of ``once``
    exactly once between 20 % and 60 %."""
    import random
    step = 0.85 / max(1, count)
    schedule = [(0.05 + i * step + random.uniform(0, step * 0.8), random.choice(kinds)) for i in range(count)]
    for kind in once:
        schedule.append((random.uniform(0.2, 0.6), kind))
    return schedule


def run_soak(workdir: Path, *, flows: int, clients: int, schedule_for, log=print,
             extra_env: dict | None = None, flow_timeout: float = 600.0) -> SoakReport:
    """Start a system of its own, import ``flows`` customers, drive them with ``clients``
    concurrent clients while ``schedule_for(system)`` faults are injected, then check."""
    base = Settings()
    name = f"tsunagi_soak_{uuid.uuid4().hex[:10]}"
    vhost_made = vhosts.create(name)
    env = {"DATABASE_URL": db.url_for(base.database_url, name),
           "AUDITOR_DATABASE_URL": db.url_for(base.auditor_database_url, name),
           "TELEPHONY_RING_DELAY_SECONDS": "0.2", "MAIL_RETRY_BASE_SECONDS": "1",
           "RPC_TIMEOUT": "8", **(extra_env or {})}
    if vhost_made:
        env["AMQP_URI"] = vhosts.uri_for(base.amqp_uri, name)
    report = SoakReport(flows=flows)
    system = start_system(workdir / "system", **{"env": env})
    report.log_path = system.log.path
    injector = FaultInjector(system, kinds=[], log=log)
    try:
        customers = seed_customers(flows, workdir, system.env, ROOT)
        gen = LoadGenerator(system.base_url, system.mailbox, clients=clients, flow_timeout=flow_timeout, log=log,
                            auth_token=system.env.get("TELEPHONY_AUTH_TOKEN"))
        report.secrets = gen.secrets
        injector.start(schedule_for(system), gen.progress)
        t0 = time.monotonic()
        stats = gen.run(customers)
        report.seconds = time.monotonic() - t0
        injector.stop()
        report.completed, report.failed, report.unclear = stats.completed, stats.failed, stats.unclear
        report.retries, report.resumes = stats.retries, stats.resumes
        report.faults, report.fault_notes = injector.done, injector.notes
        system.wait_healthy()
        _settle(system, env, report)
        report.replay_check = _cli(system.env, "replay", "--all", "--check", "--no-progress")
        report.verify = _cli(system.env, "verify")
    finally:
        injector.stop()
        injector.close()
        system.terminate()
        if os.environ.get("SOAK_KEEP_DB"):
            log(f"[soak] kept database {name}")
        else:
            db.drop_database(base, name)
        if vhost_made:
            vhosts.delete(name)
    return report


def _settle(system, env, report: SoakReport, timeout: float = 120.0) -> None:
    """Wait until the relay has published everything and the notifier has mailed what it
    queued (both asynchronous), then count."""
    url = db.url_for(Settings().admin_database_url, db_name(env))
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url) as conn:
            pending = conn.execute(
                "SELECT count(*) FROM eventstore.events q WHERE q.event_type = 'mail_queued' AND NOT EXISTS ("
                " SELECT 1 FROM eventstore.events s WHERE s.event_type IN ('mail_sent', 'mail_failed')"
                " AND s.data->>'mail_id' = q.data->>'mail_id')").fetchone()[0]
            issued_unqueued = conn.execute(
                "SELECT count(*) FROM eventstore.events i WHERE i.event_type = 'token_issued' AND NOT EXISTS ("
                " SELECT 1 FROM eventstore.events q WHERE q.event_type = 'mail_queued'"
                " AND q.data->>'source_event_id' = i.event_id::text)").fetchone()[0]
        if (pending == 0 and issued_unqueued == 0) or time.monotonic() > deadline:
            break
        time.sleep(1)
    _count(system, url, report)


def db_name(env: dict) -> str:
    return conninfo_to_dict(env["DATABASE_URL"])["dbname"]


def _count(system, url: str, report: SoakReport) -> None:
    with psycopg.connect(url) as conn:
        report.events = conn.execute("SELECT count(*) FROM eventstore.events").fetchone()[0]
        issued = conn.execute("SELECT stream_name, data->>'user_id', event_id FROM eventstore.events "
                              "WHERE event_type = 'token_issued'").fetchall()
        rows = conn.execute(
            "SELECT event_type, data->>'mail_id', data->>'source_event_id', stream_name, "
            "data->>'customer_number' FROM eventstore.events "
            "WHERE event_type IN ('mail_queued', 'mail_sent', 'token_issued', 'token_activated')").fetchall()
    report.token_issued = len(issued)
    per_type: dict[str, Counter] = defaultdict(Counter)
    for etype, mail_id, source, stream, customer in rows:
        key = {"mail_queued": source, "mail_sent": mail_id, "token_issued": stream,
               "token_activated": customer}[etype]
        per_type[etype][key] += 1
    for etype, counts in per_type.items():
        for key, n in counts.items():
            if n > 1:
                report.duplicate_effects.append(f"{etype} ×{n} for {key}")

    # The mailbox: token mails by the User ID in their text, distinct Message-IDs.
    by_user: dict[str, set] = defaultdict(set)
    deliveries = 0
    for msg in system.mailbox.messages:
        if TOKEN_SUBJECT not in str(msg["Subject"]):
            continue
        deliveries += 1
        m = USER_ID_RE.search(msg.get_body(("plain",)).get_content())
        by_user[m.group(1) if m else "?"].add(str(msg["Message-ID"]))
    report.mails = sum(len(ids) for ids in by_user.values())
    report.redelivered = deliveries - report.mails
    issued_users = {user for _, user, _ in issued}
    report.lost = sum(1 for u in issued_users if not by_user.get(u))
    report.duplicates = sum(len(ids) - 1 for u, ids in by_user.items() if len(ids) > 1)
    report.duplicates += sum(len(ids) for u, ids in by_user.items() if u not in issued_users)


def to_json(report: SoakReport) -> str:
    return json.dumps({k: (dict(v) if isinstance(v, Counter) else v) for k, v in report.__dict__.items()
                       if k not in ("secrets", "log_path")}, default=str, ensure_ascii=False, indent=1)

