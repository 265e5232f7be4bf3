"""The single-event append with a known expected version, one level below psycopg's cursor.

Why: psycopg's cursor machinery (query conversion, adapter lookups, result bookkeeping) was
about 70 us of the ~155 us of client CPU of such an append here (tests/bench/RESULTS.md,
third pass), more than the gap between our append and a raw INSERT. This module sends the
same statement, prepared once per connection, with text parameters through psycopg's own
libpq wrapper (``psycopg.pq``) and psycopg's wait function (so eventlet's green wait applies
as everywhere else), and raises psycopg's own exception classes.

Only for the store's own pooled connections while idle in autocommit (``usable``): a
statement that fails there aborts nothing, so a prepared statement that vanished (psycopg
sends DEALLOCATE ALL after any ROLLBACK on a connection) is prepared again and re-sent.
Everything else (a caller's connection or transaction, pipeline mode) takes the cursor path.
"""
from __future__ import annotations

import psycopg
from psycopg import generators, pq
from psycopg.errors import error_from_result

NAME = b"tsunagi_eventstore_append_one"
# The same check as store._APPEND_ONE_KNOWN: the stream must be at exactly $7; a concurrent
# winner trips the unique (stream_name, stream_version) constraint.
SQL = b"""
INSERT INTO eventstore.events
       (event_id, stream_name, stream_version, event_type, schema_version, data, metadata)
SELECT $1::uuid, $2::text, cur.v + 1, $3::text, $4::integer, $5::jsonb, $6::jsonb
  FROM (SELECT coalesce(max(stream_version), 0) AS v
          FROM eventstore.events WHERE stream_name = $2::text) AS cur
 WHERE cur.v = $7::bigint
"""

_OK = pq.ExecStatus.COMMAND_OK
_FATAL = pq.ExecStatus.FATAL_ERROR
_IDLE = pq.TransactionStatus.IDLE
_SQLSTATE = pq.DiagnosticField.SQLSTATE
_NO_SUCH_STATEMENT = b"26000"     # invalid_sql_statement_name
_FLAG = "_tsunagi_append_prepared"


def usable(conn: psycopg.Connection, *texts: str) -> bool:
    """Idle autocommit, not in pipeline mode, UTF-8 on the wire, and no NUL in the text
    parameters (libpq's text parameters end at a NUL; psycopg refuses them with DataError,
    which the cursor path still does)."""
    pg = conn.pgconn
    return (conn.autocommit and pg.transaction_status == _IDLE and not pg.pipeline_status
            and pg.parameter_status(b"client_encoding") == b"UTF8"
            and not any("\x00" in t for t in texts))


def append_one(conn: psycopg.Connection, params: list[bytes]) -> int:
    """Run the prepared INSERT with (event id, stream, type, schema version, data JSON,
    metadata JSON, expected version) as text; returns the rows inserted: 1, or 0 when the
    stream was not at the expected version."""
    with conn.lock:
        if not getattr(conn, _FLAG, False):
            _prepare(conn)
        result = _execute(conn, params)
        if result.status == _FATAL and result.error_field(_SQLSTATE) == _NO_SUCH_STATEMENT:
            _prepare(conn)
            result = _execute(conn, params)
    if result.status != _OK:
        raise error_from_result(result, encoding="utf-8")
    return result.command_tuples


def _prepare(conn: psycopg.Connection) -> None:
    pg = conn.pgconn
    pg.send_prepare(NAME, SQL)
    result = conn.wait(generators.execute(pg))[-1]
    if result.status != _OK:
        raise error_from_result(result, encoding="utf-8")
    setattr(conn, _FLAG, True)


def _execute(conn: psycopg.Connection, params: list[bytes]) -> pq.PGresult:
    pg = conn.pgconn
    pg.send_query_prepared(NAME, params)
    return conn.wait(generators.execute(pg))[-1]
