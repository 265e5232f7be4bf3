"""R-PLT-4: auditors query the log directly in SQL: the view ``audit.events`` and nothing else (issue 2 §5)."""
from __future__ import annotations

import os

import psycopg
import pytest

from contracts.events import Actor, Metadata, NewEvent
from services.eventstore import NO_STREAM
from tests.conftest import unique

REQUIRED = ("global_position", "stream_name", "stream_version", "event_id", "event_type",
            "schema_version", "recorded_at", "actor", "correlation_id", "data", "metadata")


@pytest.fixture(scope="module")
def audited(store):
    """One sealed event in the session database, and an auditor connection to it."""
    stream = f"acct-{unique()}"
    meta = Metadata(actor=Actor("operator", "op-1"), correlation_id=unique("corr"), service="test")
    event = NewEvent("audited_thing", {"amount": 3})
    store.append(stream, [event], NO_STREAM, meta)
    store.seal_all()
    with psycopg.connect(os.environ["AUDITOR_DATABASE_URL"], autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "auditor"
        # Read-only by default; switched off here so that the privileges themselves are tested.
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        conn.execute("SET default_transaction_read_only = off")
        yield conn, stream, event, meta


def test_auditor_reads_audit_events_with_the_required_columns(audited):
    conn, stream, event, meta = audited
    cur = conn.execute(f"SELECT {', '.join(REQUIRED)} FROM audit.events WHERE event_id = %s",
                       (event.event_id,))
    row = dict(zip(REQUIRED, cur.fetchone()))
    assert row["global_position"] > 0
    assert (row["stream_name"], row["stream_version"], row["event_type"], row["schema_version"]) == \
        (stream, 1, "audited_thing", 1)
    assert row["actor"] == {"kind": "operator", "id": "op-1"}
    assert row["correlation_id"] == meta.correlation_id
    assert row["data"] == {"amount": 3}
    assert row["metadata"]["service"] == "test"
    assert row["recorded_at"].tzinfo is not None


@pytest.mark.parametrize("statement", [
    "SELECT * FROM eventstore.events LIMIT 1",
    "SELECT * FROM eventstore.log LIMIT 1",
    "SELECT * FROM eventstore.subject_keys LIMIT 1",
    "SELECT * FROM chassis.checkpoints LIMIT 1",
    "SELECT * FROM chassis.handled_events LIMIT 1",
    "SELECT eventstore.seal()",
    "INSERT INTO audit.events (stream_name) VALUES ('acct-x')",    # (also not an updatable view)
    "UPDATE audit.events SET event_type = 'x'",
    "DELETE FROM audit.events",
    "TRUNCATE audit.events",
    "INSERT INTO eventstore.log (global_position, event_seq, tx_id, link) VALUES (1, 1, '1', '')",
    "INSERT INTO eventstore.events (event_id, stream_name, stream_version, event_type, data) "
    "VALUES (gen_random_uuid(), 'acct-x', 1, 'forged', '{}')",
    "INSERT INTO chassis.checkpoints (name, position) VALUES ('x', 1)",
    "CREATE TABLE audit.mine (x int)",
    "CREATE TABLE public.mine (x int)",
    "CREATE TEMP TABLE mine (x int)",
    "CREATE SCHEMA mine",
    "CREATE VIEW audit.mine AS SELECT 1",
])
def test_auditor_can_do_nothing_else(audited, statement):
    conn = audited[0]
    refused = (psycopg.errors.InsufficientPrivilege,)
    if "audit.events" in statement:   # a join view: not updatable for anyone
        refused += (psycopg.errors.ObjectNotInPrerequisiteState, psycopg.errors.WrongObjectType)
    with pytest.raises(refused):
        with conn.transaction(force_rollback=True):
            conn.execute(statement)


def test_auditor_sees_no_other_schema(audited):
    """Beyond the system catalogs, the only schema the auditor may use is ``audit``."""
    conn = audited[0]
    usable = {r[0] for r in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(oid, 'USAGE') "
        "AND nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg_toast%'"
        " AND nspname NOT LIKE 'pg_temp%'")}
    assert usable <= {"audit", "public"}
    tables = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND has_table_privilege(c.oid, 'SELECT')").fetchall()
    assert {ns for ns, _ in tables} == {"audit"}
