"""No secret in the logs, no plaintext secret in the database (issue 7 item 5; SPEC R-PLT-2
personal data encrypted, DESIGN.md logging: never log secrets or full personal data).

Runs last among the e2e tests (``zz``), on the session's `system` (the same `tsunagi run`
every e2e test used). It first drives a few complete initial operations of its own through
the load generator (tests/soak/loadgen.py), so the secrets of at least those flows are known
exactly — passwords, secret answers, the OTP codes typed, the TOTP secrets received, e-mail
addresses, phone numbers — then adds what the other e2e tests used: their password and answer
constants, and every e-mail address, phone number and TOTP secret recorded in the log (read
with the keys). Then:

(a) the system's log (every line every process wrote) holds none of them
    (tests/soak/secrets_scan.py; tests/security/test_secrets_scanner.py proves it finds a
    planted leak);
(b) the database, read raw as the superuser (every table of every schema as text: events,
    read models, OTP tables, sessions…), holds none of the e-mail addresses, phone numbers,
    TOTP secrets, secret answers or passwords in plaintext.
"""
from __future__ import annotations

import re

import psycopg
from psycopg import sql

from otp_service.config import DEV_TOTP_KEYS
from otp_service.totp import SecretBox
from services import crypto, db
from services.config import Settings
from tests.e2e.conftest import ROOT
from tests.e2e.test_initial_operation_full import ACTIVATION_PASSWORD
from tests.e2e.test_initial_operation_steps_2_4 import (ANSWERS, LEGACY_PASSWORD, LEGACY_PIN, NEW_CONFIRMATION,
                                                        NEW_LOGIN, PHONE)
from tests.soak.loadgen import LoadGenerator, seed_customers
from tests.soak.secrets_scan import SecretSet, scan, scan_file

EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
IP_RE = re.compile(r"@\d+(?:\.\d+){3}$")
# E.164, national with hyphens, or a mobile's 11 digits (10 bare digits are a customer number)
PHONE_RE = re.compile(r"\+81\d{9,10}|0\d{1,4}-\d{1,4}-\d{4}|0[5789]0\d{8}")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def secrets_from_the_log(store, into: SecretSet) -> None:
    """E-mail addresses, phone numbers and TOTP secrets every e2e test caused, from the event
    log opened with the keys (what the tests typed is in there, encrypted)."""
    import os
    box = SecretBox(os.environ.get("TOTP_KEYS") or DEV_TOTP_KEYS)
    after = 0
    while True:
        batch = store.read_all(after, 1000)
        if not batch:
            return
        for e in batch:
            for s in _strings(e.data):
                if s == crypto.REDACTED:
                    continue
                # (a SIP Call-ID "x@127.0.0.1" is no address)
                if EMAIL_RE.fullmatch(s) and not s.startswith("no-reply@") and not IP_RE.search(s):
                    into.emails.add(s)
                elif PHONE_RE.fullmatch(s) and not s.startswith(("0120", "+81120")):
                    into.phones.add(s)
            if e.type == "token_activated" and isinstance(e.data.get("secret"), dict):
                into.totp_secrets.add(box.open(e.data["token_serial"], e.data["secret"]))
        after = batch[-1].global_position


def test_r_plt_2_no_secret_in_the_logs_and_none_readable_in_the_database(system, store, settings, tmp_path):
    gen = LoadGenerator(system.base_url, system.mailbox, clients=3, flow_timeout=240,
                        auth_token=system.env.get("TELEPHONY_AUTH_TOKEN"), monitor_every=60)
    customers = seed_customers(3, tmp_path, system.env, ROOT)
    stats = gen.run(customers)
    assert stats.completed == 3, (stats.failed, stats.unclear)

    secrets = SecretSet.from_loadgen(gen.secrets)
    assert len(secrets.totp_secrets) == 3 and len(secrets.short_codes) >= 4
    secrets.passwords |= {LEGACY_PASSWORD, LEGACY_PIN, NEW_LOGIN, NEW_CONFIRMATION}
    secrets.answers |= {a["answer"] for a in ANSWERS}
    secrets.short_codes.add(ACTIVATION_PASSWORD)
    secrets.phones.add(PHONE)
    recorded = SecretSet()
    secrets_from_the_log(store, recorded)
    # Reading the log with the keys finds what our flows typed (and the other tests' values).
    assert secrets.emails <= recorded.emails and secrets.totp_secrets <= recorded.totp_secrets
    assert any(p.endswith(c.e164[-8:]) for p in recorded.phones for c in customers)
    for kind in ("emails", "phones", "totp_secrets"):
        getattr(secrets, kind).update(getattr(recorded, kind))

    # (a) every line the system wrote.
    findings = scan_file(system.log.path, secrets)
    assert not findings, "\n".join(f"{f.line_no} {f.kind}: {f.excerpt}" for f in findings[:20])

    # (b) the raw database, every table as text (OTP codes excluded: any 6 digits would match).
    raw = SecretSet(passwords=secrets.passwords, answers=secrets.answers, totp_secrets=secrets.totp_secrets,
                    emails=secrets.emails, phones=secrets.phones)
    url = db.url_for(Settings().admin_database_url, settings.database_name)
    rows_seen = 0
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
        assert {"events", "subject_keys"} <= {t for _, t in tables}
        leaks = []
        for schema, table in tables:
            lines = [r[0] for r in conn.execute(sql.SQL("SELECT t::text FROM {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table)))]
            rows_seen += len(lines)
            leaks += [(f"{schema}.{table}", f.kind, f.excerpt) for f in scan(lines, raw, limit=5)]
    assert rows_seen > 100
    assert not leaks, leaks[:20]
