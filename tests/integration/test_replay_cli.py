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
