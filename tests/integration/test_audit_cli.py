"""Auditor commands of `tsunagi` (issue 6, R-PLT-4): signed checkpoints of the log's head.

`verify --checkpoint` signs the head; `verify --against FILE` proves the log still extends it,
so a cut tail (rows deleted at the end, leaving a shorter but consistent chain) is caught.
Tampering is done as the superuser with the append-only triggers off, on a scratch database.
"""
from __future__ import annotations

import json

import psycopg

from services import db
from tests.integration.test_cli import _append_and_seal, tsunagi

KEY = {"AUDIT_CHECKPOINT_KEY": "0123456789abcdef0123456789abcdef"}


def _checkpoint(scratch_db: str, tmp_path, name="head.json", *, as_json=False):
    args = ["verify", "--checkpoint"] + (["--json"] if as_json else [])
    result = tsunagi(*args, env={"DATABASE_URL": scratch_db, **KEY})
    assert result.returncode == 0, result.stdout + result.stderr
    path = tmp_path / name
    path.write_text(result.stdout)
    return path, json.loads(result.stdout)


def _cut_tail(settings, scratch_db: str, keep: int) -> None:
    with psycopg.connect(db.admin_url_for(settings, db.dbname_of(scratch_db)), autocommit=True) as c:
        c.execute("SET session_replication_role = replica")
        seqs = [r[0] for r in c.execute("SELECT event_seq FROM eventstore.log WHERE global_position > %s",
                                        (keep,))]
        c.execute("DELETE FROM eventstore.log WHERE global_position > %s", (keep,))
        c.execute("DELETE FROM eventstore.events WHERE id = ANY(%s)", (seqs,))


def test_checkpoint_is_signed_and_a_longer_log_extends_it_R_PLT_4(settings, scratch_db, scratch_store, tmp_path):
    _append_and_seal(scratch_store, 4)
    path, head = _checkpoint(scratch_db, tmp_path)
    assert head["position"] == 4 and len(head["link"]) == 64 and head["alg"] == "HMAC-SHA256"
    _append_and_seal(scratch_store, 3)
    result = tsunagi("verify", "--against", str(path), "--json", env={"DATABASE_URL": scratch_db, **KEY})
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["ok"] is True and out["head_position"] == 7
    assert out["against"] == {"position": 4, "link": head["link"], "extends": True, "reason": None}
    # The --json form of the checkpoint is accepted as well.
    path2, _ = _checkpoint(scratch_db, tmp_path, "head2.json", as_json=True)
    assert tsunagi("verify", "--against", str(path2), env={"DATABASE_URL": scratch_db, **KEY}).returncode == 0


def test_cut_tail_passes_plain_verify_but_fails_against_checkpoint_R_PLT_4(settings, scratch_db, scratch_store, tmp_path):
    _append_and_seal(scratch_store, 6)
    path, _ = _checkpoint(scratch_db, tmp_path)
    _cut_tail(settings, scratch_db, keep=4)
    # The shorter chain is internally consistent: verify alone cannot tell.
    assert tsunagi("verify", env={"DATABASE_URL": scratch_db}).returncode == 0
    text = tsunagi("verify", "--against", str(path), env={"DATABASE_URL": scratch_db, **KEY})
    assert text.returncode == 1
    assert "checkpoint NOT extended" in text.stdout and "tail cut" in text.stdout
    out = json.loads(tsunagi("verify", "--against", str(path), "--json",
                             env={"DATABASE_URL": scratch_db, **KEY}).stdout)
    assert out["ok"] is False and out["against"]["extends"] is False


def test_rewritten_tail_fails_against_checkpoint_R_PLT_4(settings, scratch_db, scratch_store, tmp_path):
    _append_and_seal(scratch_store, 5)
    path, _ = _checkpoint(scratch_db, tmp_path)
    _cut_tail(settings, scratch_db, keep=3)
    _append_and_seal(scratch_store, 4)        # new events sealed at positions 4.. with new links
    out = tsunagi("verify", "--against", str(path), "--json", env={"DATABASE_URL": scratch_db, **KEY})
    assert out.returncode == 1
    assert "rewritten" in json.loads(out.stdout)["against"]["reason"]


def test_edited_checkpoint_or_wrong_key_is_refused(settings, scratch_db, scratch_store, tmp_path):
    _append_and_seal(scratch_store, 3)
    path, head = _checkpoint(scratch_db, tmp_path)
    wrong = tsunagi("verify", "--against", str(path),
                    env={"DATABASE_URL": scratch_db, "AUDIT_CHECKPOINT_KEY": "another key"})
    assert wrong.returncode == 1 and "signature does not match" in wrong.stderr
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({**head, "position": 2}))
    assert tsunagi("verify", "--against", str(edited), env={"DATABASE_URL": scratch_db, **KEY}).returncode == 1
    no_key = tsunagi("verify", "--checkpoint", env={"DATABASE_URL": scratch_db, "AUDIT_CHECKPOINT_KEY": ""})
    assert no_key.returncode == 2 and "AUDIT_CHECKPOINT_KEY" in no_key.stderr


# -- audit events / journey (auditor role, R-PLT-4) ------------------------------------------

import csv as _csv  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

from contracts.events import Actor, Metadata, NewEvent, register  # noqa: E402
from services.eventstore import ANY  # noqa: E402
from tests.conftest import unique  # noqa: E402

register("audit_test_contacted", "test", personal_fields=("email",),
         description="Test only: an event with a personal field.")


@pytest.fixture(scope="module")
def journey(store):
    """Two customers' events spread over several services' streams, sealed in the session DB."""
    number = str(uuid.uuid4().int)[:10]
    other = str(uuid.uuid4().int)[:10]
    corr = unique("corr")
    op = Metadata(actor=Actor("operator", unique("op")), correlation_id=corr, service="test", reason="paper form")
    cust = Metadata(actor=Actor("customer", number), correlation_id=unique("c"), service="test")
    plan = [  # (stream, type, data, metadata) in the order they are appended (= global order)
        (f"customer-{number}", "audit_test_imported", {"customer_number": number}, cust),
        (f"customer-{other}", "audit_test_imported", {"customer_number": other}, cust),
        (f"secretq-{number}", "audit_test_questions", {"question_ids": [1, 2, 3]}, cust),
        (f"otpapp-{uuid.uuid4()}", "audit_test_applied", {"customer_number": number}, cust),
        (f"mail-{uuid.uuid4()}", "audit_test_contacted",
         {"customer_number": number, "email": "taro@example.jp"}, cust),
        (f"phoneverif-{uuid.uuid4()}", "audit_test_called", {"customer_number": other}, cust),
        (f"customer-{number}", "audit_test_unlocked", {"customer_number": number}, op),
    ]
    for stream, etype, data, meta in plan:
        store.append(stream, [NewEvent(etype, data)], ANY, meta, subject=number)
        store.seal_all()
    return {"number": number, "other": other, "plan": plan, "operator": op.actor.id, "corr": corr}


def _jsonl(*args, env=None):
    result = tsunagi("audit", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_journey_lists_one_customers_events_across_services_in_global_order_R_PLT_4(journey):
    rows = _jsonl("journey", journey["number"], "--json")
    mine = [p for p in journey["plan"] if p[0].endswith(journey["number"])
            or p[2].get("customer_number") == journey["number"]]
    assert [(r["stream_name"], r["event_type"]) for r in rows] == [(p[0], p[1]) for p in mine]
    positions = [r["global_position"] for r in rows]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    # Personal fields are ciphertext in the log and shown masked.
    contacted = next(r for r in rows if r["event_type"] == "audit_test_contacted")
    assert contacted["data"]["email"] == "***"
    assert "taro" not in json.dumps(rows)


@pytest.mark.parametrize("args, expected_types", [
    (["--category", "otpapp"], ["audit_test_applied"]),
    (["--category", "mail", "--category", "secretq"], ["audit_test_questions", "audit_test_contacted"]),
    (["--type", "audit_test_unlocked"], ["audit_test_unlocked"]),
])
def test_events_filters_by_category_and_type(journey, args, expected_types):
    rows = _jsonl("events", "--customer", journey["number"], *args, "--json")
    assert [r["event_type"] for r in rows] == expected_types


def test_events_filters_by_stream_actor_correlation_and_time(journey):
    number, op = journey["number"], journey["operator"]
    by_stream = _jsonl("events", "--stream", f"customer-{number}", "--json")
    assert [r["event_type"] for r in by_stream] == ["audit_test_imported", "audit_test_unlocked"]
    by_actor = _jsonl("events", "--actor", f"operator:{op}", "--json")
    assert [r["event_type"] for r in by_actor] == ["audit_test_unlocked"]
    assert _jsonl("events", "--actor", f"customer:{op}", "--json") == []
    by_corr = _jsonl("events", "--correlation-id", journey["corr"], "--json")
    assert [r["stream_name"] for r in by_corr] == [f"customer-{number}"]
    all_rows = _jsonl("journey", number, "--json")
    cut = all_rows[2]["recorded_at"]
    since = _jsonl("journey", number, "--since", cut, "--json")
    until = _jsonl("journey", number, "--until", cut, "--json")
    assert since == all_rows[2:] and until == all_rows[:2]


def test_keyset_paging_and_csv_and_table_output(journey):
    number = journey["number"]
    everything = _jsonl("journey", number, "--json")
    page1 = _jsonl("journey", number, "--limit", "2", "--json")
    page2 = _jsonl("journey", number, "--after", str(page1[-1]["global_position"]), "--limit", "2", "--json")
    assert page1 + page2 == everything[:4]
    text = tsunagi("audit", "events", "--customer", number, "--format", "csv")
    rows = list(_csv.DictReader(io.StringIO(text.stdout)))
    assert [int(r["global_position"]) for r in rows] == [r["global_position"] for r in everything]
    table = tsunagi("audit", "journey", number)
    assert table.returncode == 0 and "audit_test_unlocked" in table.stdout
    assert f"{len(everything)} events" in table.stderr


def test_reveal_needs_an_auditor_and_is_itself_recorded_R_PLT_4(journey, store):
    number = journey["number"]
    refused = tsunagi("audit", "journey", number, "--reveal")
    assert refused.returncode == 2 and "--auditor" in refused.stderr
    auditor = unique("auditor")
    rows = _jsonl("journey", number, "--reveal", "--auditor", auditor, "--reason", "case 42", "--json")
    contacted = next(r for r in rows if r["event_type"] == "audit_test_contacted")
    assert contacted["data"]["email"] == "taro@example.jp"
    store.seal_all()   # (the relay does this in a running system)
    recorded = _jsonl("events", "--type", "audit_reveal", "--actor", f"auditor:{auditor}", "--json")
    assert len(recorded) == 1
    assert recorded[0]["data"]["command"] == "journey"
    assert recorded[0]["data"]["filters"]["customer"] == number
    assert recorded[0]["data"]["reason"] == "case 42"


def test_auditor_connection_used_by_the_cli_cannot_write(journey):
    """Issue 6 item 6: the audit commands' role is read-only (see also test_audit_role.py)."""
    url = os.environ["AUDITOR_DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "auditor"
        c.execute("SET default_transaction_read_only = off")   # the privileges alone must refuse
        for statement in ("DELETE FROM audit.events",
                          "INSERT INTO eventstore.events (event_id, stream_name, stream_version, "
                          "event_type, data) VALUES (gen_random_uuid(), 'x-1', 1, 't', '{}')"):
            with pytest.raises(psycopg.errors.Error):
                c.execute(statement)


# -- report migration (issue 6 item 5) ---------------------------------------------------------

def test_migration_report_counts_steps_stuck_locks_and_failures(settings, scratch_db, scratch_store, tmp_path):
    """Three customers at different steps, on a scratch log, read through the auditor role."""
    meta = Metadata(actor=Actor("customer", "c"), correlation_id=unique("c"), service="test")
    a, b, c = "1111111111", "2222222222", "3333333333"
    for n in (a, b, c):
        scratch_store.append(f"customer-{n}", [NewEvent("legacy_customer_imported", {"customer_number": n})], ANY, meta)
    for n in (a, b):
        scratch_store.append(f"customer-{n}", [NewEvent("legacy_login_succeeded", {})], ANY, meta)
    scratch_store.append(f"secretq-{a}", [NewEvent("audit_test_other", {})], ANY, meta)
    scratch_store.append(f"customer-{a}", [NewEvent("passwords_changed", {})], ANY, meta)
    scratch_store.append(f"otpapp-{uuid.uuid4()}", [NewEvent("otp_application_submitted", {"customer_number": a})], ANY, meta)
    scratch_store.append(f"customer-{c}", [NewEvent("legacy_login_failed", {}), NewEvent("legacy_login_failed", {}),
                                           NewEvent("credential_locked", {"credential": "legacy_password"})], ANY, meta)
    scratch_store.seal_all()
    env = {"DATABASE_URL": scratch_db,
           "AUDITOR_DATABASE_URL": db.url_for(settings.auditor_database_url, db.dbname_of(scratch_db))}
    html_file = tmp_path / "report.html"
    result = tsunagi("report", "migration", "--json", "--stuck-days", "1", "--as-of", "2999-01-01T00:00:00+00:00",
                     "--html", str(html_file), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    funnel = {s["step"]: s for s in report["funnel"]}
    assert [funnel[s]["reached"] for s in ("imported", "legacy_login", "questions", "passwords", "otp_applied",
                                           "activated")] == [3, 2, 0, 1, 1, 0]
    assert funnel["imported"]["stuck"] == 1 and funnel["legacy_login"]["stuck"] == 1
    assert funnel["otp_applied"]["stuck"] == 1 and funnel["passwords"]["at_step"] == 0
    [day] = report["daily"]
    assert (day["locks"], day["failures"], day["activated"]) == (1, 2, 0)
    page = html_file.read_text()
    assert page.count("<svg") == 2 and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    not_yet = tsunagi("report", "migration", "--stuck-days", "1", env=env)   # as of now: nobody stuck yet
    assert not_yet.returncode == 0 and "imported" in not_yet.stdout


# -- the remaining audit filters of issue 6 item 2 -----------------------------------------------

def test_events_time_range_combines_with_other_filters_R_PLT_4(journey):
    """`audit events --since/--until` (not only `journey`), alone and with --category."""
    number = journey["number"]
    every = _jsonl("events", "--customer", number, "--json")
    assert len(every) == 5   # imported, questions, applied, contacted, unlocked
    since, until = every[1]["recorded_at"], every[4]["recorded_at"]
    window = _jsonl("events", "--customer", number, "--since", since, "--until", until, "--json")
    assert window == every[1:4]
    in_window_customer = _jsonl("events", "--customer", number, "--category", "customer",
                                "--since", since, "--until", until, "--json")
    assert in_window_customer == [r for r in every[1:4] if r["stream_name"].startswith("customer-")] == []
    late_customer = _jsonl("events", "--customer", number, "--category", "customer", "--since", since, "--json")
    assert [r["event_type"] for r in late_customer] == ["audit_test_unlocked"]


def test_events_actor_by_id_alone_and_jsonl_format_R_PLT_4(journey):
    op = journey["operator"]
    by_id = _jsonl("events", "--actor", op, "--format", "jsonl")
    assert [(r["event_type"], r["actor"]) for r in by_id] == [
        ("audit_test_unlocked", {"kind": "operator", "id": op})]
    assert by_id == _jsonl("events", "--actor", op, "--json")


def test_events_stream_from_a_server_side_cursor_in_batches_R_PLT_4(journey, settings):
    """Paging over millions of events without loading them all: rows come from a named cursor
    fetched a batch at a time (here 2), so after the first row the server has sent only 2."""
    from services.cli.audit import build_query, iter_events
    sql, params = build_query(customer=journey["number"])
    rows = iter_events(os.environ["AUDITOR_DATABASE_URL"], sql, params, batch=2)
    first = next(rows)
    try:
        with psycopg.connect(db.admin_url_for(settings, settings.database_name)) as admin:
            queries = [q for (q,) in admin.execute(
                "SELECT query FROM pg_stat_activity WHERE usename = 'auditor' AND datname = current_database()")]
        assert any(q.startswith("FETCH FORWARD 2 FROM") for q in queries), queries
    finally:
        rest = list(rows)
    assert [first["event_type"]] + [r["event_type"] for r in rest] == [
        r["event_type"] for r in _jsonl("journey", journey["number"], "--json")]


def test_operator_reason_is_shown_in_every_format_R_LEG_4_R_PLT_4(journey):
    """Every operator action names the operator and the reason (R-LEG-4): the reason (metadata)
    is a column of `audit journey` / `audit events` in JSON lines, CSV and the table."""
    number = journey["number"]
    rows = _jsonl("journey", number, "--json")
    assert [(r["event_type"], r["reason"]) for r in rows if r["reason"] is not None] == [
        ("audit_test_unlocked", "paper form")]
    assert all("reason" in r for r in rows)
    text = tsunagi("audit", "events", "--customer", number, "--format", "csv")
    assert text.returncode == 0, text.stderr
    csv_rows = list(_csv.DictReader(io.StringIO(text.stdout)))
    assert [(r["event_type"], r["reason"]) for r in csv_rows] == [(r["event_type"], r["reason"] or "") for r in rows]
    # Piped (no terminal): every column is there, not an 80-column cut.
    table = tsunagi("audit", "events", "--stream", f"customer-{number}", env={"COLUMNS": ""})
    assert table.returncode == 0, table.stderr
    header, unlocked = table.stdout.splitlines()[0], table.stdout.splitlines()[-1]
    assert "actor" in header and "reason" in header and "data" in header
    assert "audit_test_unlocked" in unlocked and "paper form" in unlocked and "operator:" in unlocked
