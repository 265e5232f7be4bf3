"""`tsunagi replay` (issue 6 item 1, R-PLT-4): rebuild read models from the log into fresh
tables, switch atomically; `--check` reports differences without switching."""
from __future__ import annotations

import json
import uuid

import psycopg

from contracts.events import Actor, Metadata, NewEvent
from services import db
from services.eventstore import ANY
from tests.integration.test_cli import tsunagi

META = Metadata(actor=Actor("system", "test"), correlation_id=str(uuid.uuid4()), service="test")


def _fill(store, n: int = 5) -> list[str]:
    numbers = [str(1000000000 + i) for i in range(n)]
    for i, number in enumerate(numbers):
        store.append(f"customer-{number}", [
            NewEvent("legacy_customer_imported", {"customer_number": number, "record_digest": f"d{i}",
                                                  "email": f"c{i}@example.jp"}),
            NewEvent("login_challenged", {"challenge_id": str(uuid.uuid4()),
                                          "expires_at": "2026-01-01T00:00:00+00:00"}),
        ], ANY, META)
    store.seal_all()
    return numbers


def _snapshot(url: str) -> dict:
    with psycopg.connect(url) as c:
        return {t: sorted(json.dumps(r[0], sort_keys=True) for r in c.execute(
                    f"SELECT to_jsonb(x) - 'imported_at' - 'updated_at' FROM {t} x"))
                for t in ("identity.legacy_imports", "identity.login_challenges", "notifier.addresses")}


def _admin(settings, scratch_db):
    return db.admin_url_for(settings, db.dbname_of(scratch_db))


def test_replay_rebuilds_identical_read_models_and_keeps_tables_usable_R_PLT_4(settings, scratch_db, scratch_store):
    _fill(scratch_store)
    env = {"DATABASE_URL": scratch_db}
    first = tsunagi("replay", "--all", "--json", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    out = json.loads(first.stdout)
    assert all(p["switched"] for p in out["projections"])
    before = _snapshot(_admin(settings, scratch_db))
    assert len(before["identity.legacy_imports"]) == 5 and len(before["identity.login_challenges"]) == 5
    with psycopg.connect(_admin(settings, scratch_db)) as c:
        indexes_before = sorted(r[0] for r in c.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname IN ('identity', 'otp', 'notifier')"))
    again = tsunagi("replay", "identity", "notifier_addresses", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "identity: rebuilt and switched" in again.stdout
    assert _snapshot(_admin(settings, scratch_db)) == before
    with psycopg.connect(_admin(settings, scratch_db)) as c:
        indexes_after = sorted(r[0] for r in c.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname IN ('identity', 'otp', 'notifier')"))
        assert not c.execute("SELECT 1 FROM pg_tables WHERE tablename LIKE '%%__replay_old'").fetchall()
    assert indexes_after == indexes_before
    # The services' role keeps its privileges on the switched-in tables.
    with psycopg.connect(scratch_db) as c:
        c.execute("INSERT INTO identity.legacy_imports (customer_number, record_digest) VALUES ('9999999999', 'x')")


def test_check_finds_a_corrupted_read_model_row_and_switches_nothing_R_PLT_4(settings, scratch_db, scratch_store):
    numbers = _fill(scratch_store, 3)
    env = {"DATABASE_URL": scratch_db}
    assert tsunagi("replay", "--all", env=env).returncode == 0
    clean = tsunagi("replay", "--all", "--check", env=env)
    assert clean.returncode == 0 and "no differences" in clean.stdout, clean.stdout + clean.stderr
    with psycopg.connect(_admin(settings, scratch_db)) as c:
        c.execute("UPDATE identity.legacy_imports SET record_digest = 'tampered' WHERE customer_number = %s",
                  (numbers[1],))
    check = tsunagi("replay", "identity", "--check", "--json", env=env)
    assert check.returncode == 1
    diffs = json.loads(check.stdout)["projections"][0]["differences"]
    assert {(d["table"], d["side"], d["row"]["record_digest"]) for d in diffs} == {
        ("identity.legacy_imports", "only_in_live", "tampered"),
        ("identity.legacy_imports", "only_in_rebuild", "d1")}
    with psycopg.connect(_admin(settings, scratch_db)) as c:   # --check switched nothing
        assert c.execute("SELECT record_digest FROM identity.legacy_imports WHERE customer_number = %s",
                         (numbers[1],)).fetchone()[0] == "tampered"
    assert tsunagi("replay", "identity", env=env).returncode == 0
    assert tsunagi("replay", "identity", "--check", env=env).returncode == 0


def test_replay_needs_projections_or_all():
    assert tsunagi("replay").returncode == 2
    bad = tsunagi("replay", "nonsense")
    assert bad.returncode == 2 and "unknown projection" in bad.stderr


# -- every read model is rebuildable (phone_auth, mail OTP) ------------------------------------

def _fill_phone_and_mail_otp(store) -> tuple[str, str]:
    """One phone verification (started, a failed call, verified) and one customer's mail OTP
    (issued, superseded by a second code, one wrong entry) — shaped as the services write them."""
    number = str(1100000000 + uuid.uuid4().int % 10**8)
    vid, app = str(uuid.uuid4()), str(uuid.uuid4())
    store.append(f"phoneverif-{vid}", [
        NewEvent("phone_verification_started", {
            "verification_id": vid, "application_id": app, "customer_number": number,
            "caller": "+819012345678", "call_to": "+81120111222", "call_to_display": "0120-111-222",
            "window_seconds": 300, "started_at": "2026-01-01T00:00:00+00:00",
            "expires_at": "2026-01-01T00:05:00+00:00"}),
        NewEvent("phone_verification_attempt_failed", {
            "verification_id": vid, "application_id": app, "customer_number": number,
            "reason": "wrong_number", "call_key": str(uuid.uuid4()), "at": "2026-01-01T00:01:00+00:00"}),
        NewEvent("phone_verification_succeeded", {
            "verification_id": vid, "application_id": app, "customer_number": number,
            "call_key": str(uuid.uuid4()), "at": "2026-01-01T00:02:00+00:00"}),
    ], ANY, META, subject=number)
    issued = []
    for i in range(2):
        issue = str(uuid.uuid4())
        issued.append(issue)
        events = [NewEvent("mail_otp_superseded", {"issue_id": issued[0], "customer_number": number,
                                                   "by_issue_id": issue, "at": "2026-01-01T00:03:00+00:00"})] if i else []
        events.append(NewEvent("mail_otp_issued", {
            "issue_id": issue, "customer_number": number, "purpose": "transfer",
            "operation": {"type": "transfer", "amount": 1000 + i}, "operation_digest": f"digest{i}",
            "verifier": {"alg": "HMAC-SHA256", "kid": "k1", "mac": f"mac{i}"},
            "destination": "mail_otp_destinations", "key_subject": f"mailotp:{issue}",
            "ttl_seconds": 600, "expires_at": "2026-01-01T00:13:00+00:00",
            "issued_at": "2026-01-01T00:03:00+00:00"}))
        store.append(f"mailotp-{number}", events, ANY, META, subject=number)
    store.append(f"mailotp-{number}", [NewEvent("mail_otp_verification_failed", {
        "issue_id": issued[1], "customer_number": number, "reason": "mismatch", "counted": True,
        "failures_on_code": 1, "consecutive_failures": 1, "at": "2026-01-01T00:04:00+00:00"})],
        ANY, META, subject=number)
    store.seal_all()
    return vid, number


def test_phone_auth_and_mail_otp_read_models_are_rebuilt_and_checked_R_PLT_4(settings, scratch_db, scratch_store):
    vid, number = _fill_phone_and_mail_otp(scratch_store)
    env = {"DATABASE_URL": scratch_db}
    done = tsunagi("replay", "phone_auth", "mail_otp", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p["projection"]: p["events"] for p in json.loads(done.stdout)["projections"]} == {
        "phone_auth": 3, "mail_otp": 4}
    admin = _admin(settings, scratch_db)
    with psycopg.connect(admin) as c:
        status, attempts, masked = c.execute(
            "SELECT status, attempts, caller_masked FROM phone_auth.verifications "
            "WHERE verification_id = %s", (vid,)).fetchone()
        assert (status, attempts, masked) == ("verified", ["wrong_number"], "*****5678")
        current, previous, failures, version = c.execute(
            "SELECT current, previous, consecutive_failures, stream_version "
            "FROM otp.mail_otp_customers WHERE customer_number = %s", (number,)).fetchone()
        assert (current["mac"], current["failures"], [p["status"] for p in previous], failures, version) == (
            "mac1", 1, ["superseded"], 1, 4)
    clean = tsunagi("replay", "--all", "--check", env=env)
    assert clean.returncode == 0 and "no differences" in clean.stdout, clean.stdout + clean.stderr
    with psycopg.connect(admin) as c:   # one deliberately corrupted row in each
        c.execute("UPDATE phone_auth.verifications SET status = 'expired' WHERE verification_id = %s", (vid,))
        c.execute("UPDATE otp.mail_otp_customers SET locked = true WHERE customer_number = %s", (number,))
    check = tsunagi("replay", "--all", "--check", "--json", env=env)
    assert check.returncode == 1, check.stdout + check.stderr
    diffs = [d for p in json.loads(check.stdout)["projections"] for d in p["differences"]]
    assert sorted((d["table"], d["side"]) for d in diffs) == [
        ("otp.mail_otp_customers", "only_in_live"), ("otp.mail_otp_customers", "only_in_rebuild"),
        ("phone_auth.verifications", "only_in_live"), ("phone_auth.verifications", "only_in_rebuild")]
    live = {d["table"]: d["row"] for d in diffs if d["side"] == "only_in_live"}
    assert live["phone_auth.verifications"]["status"] == "expired"
    assert live["otp.mail_otp_customers"]["locked"] is True
    assert tsunagi("replay", "phone_auth", "mail_otp", env=env).returncode == 0
    assert tsunagi("replay", "--all", "--check", env=env).returncode == 0


def test_every_service_table_is_a_projection_or_says_why_not_R_PLT_4(settings):
    """A new read model that `tsunagi replay` does not know of fails here: register it in
    services/projections.py, or name it in NOT_READ_MODELS with the reason."""
    from services.projections import NOT_READ_MODELS, PROJECTIONS
    covered = {t for p in PROJECTIONS.values() for t in p.tables}
    assert not covered & set(NOT_READ_MODELS)
    with psycopg.connect(db.admin_url_for(settings, settings.database_name)) as c:
        tables = {f"{s}.{t}" for s, t in c.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema', 'public')")}
    assert covered <= tables, covered - tables
    assert tables - covered - set(NOT_READ_MODELS) == set()
