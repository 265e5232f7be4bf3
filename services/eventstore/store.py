"""The event store on PostgreSQL (see deploy/sql/010_eventstore.sql for the guarantees)."""
from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, Sequence

import orjson
import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from contracts.errors import ConcurrencyConflict
from contracts.events import REGISTRY, Metadata, NewEvent, RecordedEvent, Registry
from services import crypto
from services.eventstore import direct
from services.eventstore.keyring import KeyRing

ANY = None          # expected_version: append whatever the stream's version
NO_STREAM = 0       # expected_version: the stream must not exist yet
_ANY_ATTEMPTS = 50
_STREAM_CHUNK = 100  # rows per chunk when read_all streams a page (see read_all)

# data and metadata come as text and are parsed by orjson: psycopg's jsonb loader copies each
# value to bytes and runs the standard library's json.loads, ~3x the cost per row (_decode).
_COLUMNS = ("e.stream_name, e.stream_version, e.event_id, e.event_type, e.schema_version, "
            "e.data::text, e.metadata::text, e.recorded_at")

# One statement, one round trip: the stream's current version is read and checked in the
# same INSERT, so a wrong expectation inserts nothing and a concurrent winner trips the
# unique (stream_name, stream_version) constraint.
_APPEND = """
INSERT INTO eventstore.events
       (event_id, stream_name, stream_version, event_type, schema_version, data, metadata)
SELECT u.event_id, %(stream)s, cur.v + u.ord, u.event_type, u.schema_version, u.data, %(metadata)s
  FROM (SELECT coalesce(max(stream_version), 0) AS v
          FROM eventstore.events WHERE stream_name = %(stream)s) AS cur,
       unnest(%(ids)b::uuid[], %(types)b::text[], %(versions)b::int[], %(datas)b::jsonb[])
           WITH ORDINALITY AS u(event_id, event_type, schema_version, data, ord)
 WHERE %(expected)s::bigint IS NULL OR cur.v = %(expected)s::bigint
RETURNING stream_version
"""
# The array parameters go in binary (%b): as text, psycopg escapes every quote inside every
# JSON document with a regex, which was 2/3 of the client's time on a batch of 100.
# One event, the common case, takes the same statement without arrays (same check, same
# constraint): four one-element arrays made a single append ~40% slower. Its parameters are
# positional: (event id, stream, type, schema version, data, metadata, stream[, expected]).
_APPEND_ONE_HEAD = """
INSERT INTO eventstore.events
       (event_id, stream_name, stream_version, event_type, schema_version, data, metadata)
SELECT %s, %s, cur.v + 1, %s, %s, %s, %s
  FROM (SELECT coalesce(max(stream_version), 0) AS v
          FROM eventstore.events WHERE stream_name = %s) AS cur
"""
_APPEND_ONE = _APPEND_ONE_HEAD + "RETURNING stream_version\n"
# With an expected version the new version is known (expected + 1): no RETURNING, whose
# result row cost ~5% of a single append here; rowcount says whether the row went in.
_APPEND_ONE_KNOWN = _APPEND_ONE_HEAD + " WHERE cur.v = %s::bigint\n"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    head_position: int
    head_link: str
    first_broken: int | None = None
    reason: str | None = None


def canonical_bytes(pos: int, event_id, stream_name: str, stream_version: int, event_type: str,
                    schema_version: int, data_text: str, metadata_text: str,
                    recorded_at: datetime) -> bytes:
    """Mirror of eventstore.canonical() in SQL, computed independently for verification."""
    micros = (recorded_at - _EPOCH) // timedelta(microseconds=1)
    return "\x1f".join((str(pos), str(event_id), stream_name, str(stream_version), event_type,
                        str(schema_version), data_text, metadata_text, str(micros))).encode()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# What orjson would write differently from json.dumps (psycopg's default) goes to json.dumps:
# types json.dumps refuses (datetimes, dataclasses, subclasses) still raise TypeError there.
_ORJSON_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                   | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS)


def _json_bytes(value) -> bytes:
    """JSON for a jsonb parameter, ~5x faster than json.dumps. orjson refuses integers beyond
    64 bits and writes NaN and infinities as null, so those (and any float) take json.dumps."""
    if _has_float(value):
        return json.dumps(value).encode()
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:
        return json.dumps(value).encode()


def _jsonb(value) -> Jsonb:
    return Jsonb(value, _json_bytes)


def _json_value(text: str):
    """Parse a jsonb column read as text, exactly as json.loads would.

    orjson reads an integer beyond 64 bits as a float; so a document with any float in it
    is parsed again by the standard library (floats are rare in events: amounts are yen)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if type(value) is dict:
        for v in value.values():
            t = type(v)
            if t is float or ((t is dict or t is list) and _has_float(v)):
                return json.loads(text)
    elif _has_float(value):
        return json.loads(text)
    return value


def _metadata_value(text: str):
    """Metadata is only ever written from ``Metadata.as_dict()``: strings, no numbers, so
    orjson's reading of big integers cannot matter; anything it refuses goes to json.loads."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _has_float(value) -> bool:
    # Leaves are looked at in the loop, containers recursed into: one call per container,
    # not one per value (a third of the JSON dump of a small event went to these calls).
    t = type(value)
    if t is dict:
        value = value.values()
    elif t is not list:
        return t is float
    for v in value:
        t = type(v)
        if t is float or ((t is dict or t is list) and _has_float(v)):
            return True
    return False


# RecordedEvent is a frozen dataclass: its __init__ sets every field through
# object.__setattr__, which was a fifth of the decoding time of a page. _decode gives a new
# instance its __dict__ in one step instead: same fields, same values, an equal object
# (it falls back to the constructor if the class ever gets __slots__).
_RECORDED_FAST = "__slots__" not in RecordedEvent.__dict__
_new_object = object.__new__
_set_attribute = object.__setattr__


def _cursor(conn: psycopg.Connection) -> psycopg.Cursor:
    """The connection's own cursor for appends, made once and kept on the connection.

    A new cursor per statement (``conn.execute``) also builds a new adapter context that
    looks up the dumper of every parameter again: ~30% of an append's client time. A
    connection is used by one caller at a time (the pool's rule), so one cursor is enough;
    the cycle connection <-> cursor goes when the pool drops the connection."""
    try:
        return conn._eventstore_cursor
    except AttributeError:
        cur = conn._eventstore_cursor = conn.cursor(row_factory=tuple_row)
        return cur


class EventStore:
    def __init__(self, pool: ConnectionPool, keyring: KeyRing, registry: Registry = REGISTRY):
        self.pool = pool
        self.keyring = keyring
        self.registry = registry

    # -- connections ---------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection inside one transaction: appends and read-model writes commit together."""
        with self.pool.connection() as conn:
            with conn.transaction():
                yield conn

    @contextmanager
    def _conn(self, conn: psycopg.Connection | None):
        if conn is not None:
            yield conn
        else:
            with self.pool.connection() as c:
                yield c

    # -- writing -------------------------------------------------------------------------

    def append(self, stream_name: str, events: Sequence[NewEvent], expected_version: int | None,
               metadata: Metadata, *, subject: str | None = None,
               conn: psycopg.Connection | None = None) -> int:
        """Append ``events`` to a stream; returns the stream's new version.

        Raises ConcurrencyConflict when the stream is not at ``expected_version``.
        Personal fields (per the registry) are encrypted with the subject's data key; the
        subject defaults to the stream id (customer streams are named ``customer-<number>``).
        """
        if not events:
            raise ValueError("nothing to append")
        subject = subject or stream_name.split("-", 1)[1]
        meta_dict = metadata.as_dict()
        # The pool's connection() context also runs a commit and bookkeeping on the way
        # out; with autocommit connections getconn/putconn do the same job for less.
        c = conn if conn is not None else self.pool.getconn()
        try:
            if len(events) == 1:
                ev = events[0]
                et = self.registry.get(ev.type)
                data = ev.data
                if et is not None and et.personal_fields:
                    data = self._seal_personal(c, subject, et.personal_fields, data)
                schema_version = et.version if et is not None else 1
                if (expected_version is not ANY and conn is None
                        and direct.usable(c, stream_name, ev.type)):
                    # The common case: our own idle connection, one round trip (direct.py).
                    try:
                        inserted = direct.append_one(c, [
                            str(ev.event_id).encode(), stream_name.encode(), ev.type.encode(),
                            str(schema_version).encode(), _json_bytes(data),
                            _json_bytes(meta_dict), str(expected_version).encode()])
                    except psycopg.errors.UniqueViolation as exc:
                        if "event_id" in str(exc.diag.constraint_name or ""):
                            raise
                        inserted = 0
                    if inserted == 1:
                        return expected_version + 1
                    raise ConcurrencyConflict(stream=stream_name, expected=expected_version)
                params = (ev.event_id, stream_name, ev.type, schema_version, _jsonb(data),
                          _jsonb(meta_dict), stream_name)
                if expected_version is ANY:
                    sql = _APPEND_ONE
                else:
                    sql, params = _APPEND_ONE_KNOWN, params + (expected_version,)
            else:
                ids, types, versions, datas = [], [], [], []
                for ev in events:
                    et = self.registry.get(ev.type)
                    data = ev.data
                    if et is not None and et.personal_fields:
                        data = self._seal_personal(c, subject, et.personal_fields, data)
                    ids.append(ev.event_id)
                    types.append(ev.type)
                    versions.append(et.version if et is not None else 1)
                    datas.append(_jsonb(data))
                sql = _APPEND
                params = {"stream": stream_name, "metadata": _jsonb(meta_dict), "ids": ids,
                          "types": types, "versions": versions, "datas": datas,
                          "expected": expected_version}
            # ANY promises "whatever the version": when a concurrent writer took the next
            # version first, number again (each lost race means another writer won, so this
            # ends). Only on a connection of our own, where the failed statement aborted
            # nothing else; inside the caller's transaction the caller retries.
            attempts = _ANY_ATTEMPTS if expected_version is ANY and conn is None else 1
            cur = _cursor(c)
            for attempt in range(1, attempts + 1):
                try:
                    cur.execute(sql, params)
                    if sql is _APPEND_ONE_KNOWN:
                        if cur.rowcount == 1:
                            return expected_version + 1
                        rows = ()
                    else:
                        rows = cur.fetchall()
                    break
                except psycopg.errors.UniqueViolation as exc:
                    if "event_id" in str(exc.diag.constraint_name or ""):
                        raise
                    if attempt == attempts:
                        raise ConcurrencyConflict(stream=stream_name) from None
                    if attempt > 2:
                        time.sleep(random.uniform(0, 0.001 * attempt))
        finally:
            if conn is None:
                self.pool.putconn(c)
        if not rows:
            raise ConcurrencyConflict(stream=stream_name, expected=expected_version)
        return max(r[0] for r in rows)

    def _seal_personal(self, conn, subject: str, fields: Iterable[str], data: dict) -> dict:
        present = [f for f in fields if data.get(f) is not None]
        if not present:
            return data
        key = self.keyring.data_key(conn, subject, create=True)
        sealed = dict(data)
        for f in present:
            sealed[f] = crypto.seal_value(key, subject, f, data[f])
        return sealed

    # -- reading -------------------------------------------------------------------------

    def read_stream(self, stream_name: str, from_version: int = 1, *,
                    conn: psycopg.Connection | None = None) -> list[RecordedEvent]:
        """Every committed event of one stream in version order (sealed or not yet)."""
        sql = (f"SELECT {_COLUMNS}, l.global_position FROM eventstore.events e "
               "LEFT JOIN eventstore.log l ON l.event_seq = e.id "
               "WHERE e.stream_name = %s AND e.stream_version >= %s ORDER BY e.stream_version")
        with self._conn(conn) as c:
            rows = c.cursor(binary=True).execute(sql, (stream_name, from_version)).fetchall()
            return self._decode(c, rows)

    def read_all(self, after_position: int = 0, limit: int = 1000, *, category: str | None = None,
                 conn: psycopg.Connection | None = None, reveal: bool = True) -> list[RecordedEvent]:
        """The sealed global log after ``after_position``, in order, gap-free.

        ``reveal=False`` leaves personal fields sealed (the relay: nothing personal travels
        over the bus in clear; a consumer opens them with ``open_personal``)."""
        where = "l.global_position > %s" + (" AND e.category = %s" if category else "")
        args: tuple = (after_position, category, limit) if category else (after_position, limit)
        sql = (f"SELECT {_COLUMNS}, l.global_position FROM eventstore.log l "
               f"JOIN eventstore.events e ON e.id = l.event_seq WHERE {where} "
               "ORDER BY l.global_position LIMIT %s")
        with self._conn(conn) as c:
            # Binary rows: uuid, timestamptz and bigint load faster than from text.
            cur = c.cursor(binary=True)
            if limit < 2 * _STREAM_CHUNK or c.pgconn.pipeline_status:
                return self._decode(c, cur.execute(sql, args).fetchall(), reveal=reveal)
            # A page in chunks: the client decodes the first rows while the server still
            # reads and sends the rest (two cores, both busy), instead of one after the other.
            return self._decode(c, cur.stream(sql, args, size=_STREAM_CHUNK), reveal=reveal)

    def read_category(self, category: str, after_position: int = 0, limit: int = 1000,
                      **kw) -> list[RecordedEvent]:
        return self.read_all(after_position, limit, category=category, **kw)

    def stream_version(self, stream_name: str, *, conn=None) -> int:
        with self._conn(conn) as c:
            row = c.execute("SELECT coalesce(max(stream_version), 0) FROM eventstore.events "
                            "WHERE stream_name = %s", (stream_name,)).fetchone()
            return row[0]

    def open_personal(self, data: dict, *, conn: psycopg.Connection | None = None,
                      _keys: dict | None = None) -> dict:
        """``data`` with its sealed personal fields opened (REDACTED where the key is gone)."""
        if not any(crypto.is_sealed(v) for v in data.values()):
            return data
        keys = {} if _keys is None else _keys
        opened = dict(data)
        with self._conn(conn) as c:
            for name, value in data.items():
                if crypto.is_sealed(value):
                    subj = value["s"]
                    if subj not in keys:
                        keys[subj] = self.keyring.data_key(c, subj, create=False)
                    opened[name] = crypto.open_value(keys[subj], name, value)
        return opened

    def _decode(self, conn, rows, *, reveal: bool = True) -> list[RecordedEvent]:
        """Rows (a list, or a stream still arriving on ``conn``) to RecordedEvents."""
        out: list = []
        sealed = []     # opened after the last row: a streaming conn takes no other query
        append, registry, loads, meta_loads = (out.append, self.registry.get, _json_value,
                                               _metadata_value)
        cls, new, set_dict = RecordedEvent, _new_object, _set_attribute
        for (stream, version, event_id, etype, sv, data_text, meta_text, recorded_at, pos) in rows:
            data = loads(data_text)
            # A sealed value is a dict with the key crypto.MARK, so its text is in the row;
            # without it there is nothing to open (a false hit just takes the longer way).
            if reveal and crypto.MARK in data_text:
                sealed.append((len(out), data, stream, version, event_id, etype, sv, meta_text,
                               recorded_at, pos))
                append(None)
                continue
            et = registry(etype)
            if et is not None and sv < et.version:
                # The data now has the current shape, so the event says that version.
                data = et.upcast(sv, data)
                sv = et.version
            if _RECORDED_FAST:
                ev = new(cls)
                set_dict(ev, "__dict__", {
                    "stream_name": stream, "stream_version": version, "event_id": event_id,
                    "type": etype, "schema_version": sv, "data": data,
                    "metadata": meta_loads(meta_text), "recorded_at": recorded_at,
                    "global_position": pos})
            else:
                ev = cls(stream, version, event_id, etype, sv, data, meta_loads(meta_text),
                         recorded_at, pos)
            append(ev)
        keys: dict[str, bytes | None] = {}
        for i, data, stream, version, event_id, etype, sv, meta_text, recorded_at, pos in sealed:
            data = self.open_personal(data, conn=conn, _keys=keys)
            et = registry(etype)
            if et is not None and sv < et.version:
                data = et.upcast(sv, data)
                sv = et.version
            out[i] = cls(stream, version, event_id, etype, sv, data, meta_loads(meta_text),
                         recorded_at, pos)
        return out

    # -- sealing, the chain, shredding -----------------------------------------------------

    def seal(self, max_batch: int = 10000) -> int:
        """Give committed events their global position and chain link. -1: another sealer ran."""
        with self.pool.connection() as c:
            return c.execute("SELECT eventstore.seal(%s)", (max_batch,)).fetchone()[0]

    def seal_all(self, timeout: float = 10.0) -> int:
        """Seal until nothing committed is left unsealed (tests, tools)."""
        deadline = time.monotonic() + timeout
        total = 0
        while True:
            n = self.seal()
            if n > 0:
                total += n
                continue
            with self.pool.connection() as c:
                pending = c.execute(
                    "SELECT count(*) FROM eventstore.events e WHERE NOT EXISTS "
                    "(SELECT 1 FROM eventstore.log l WHERE l.event_seq = e.id)").fetchone()[0]
            if pending == 0:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pending} events still unsealed")
            time.sleep(0.01)

    def head(self) -> tuple[int, str]:
        with self.pool.connection() as c:
            row = c.execute("SELECT global_position, encode(link, 'hex') FROM eventstore.log "
                            "ORDER BY global_position DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, "")

    def verify(self, from_position: int = 1, batch: int = 5000) -> VerifyResult:
        """Recompute the hash chain from ``from_position``; name the first broken position."""
        with self.pool.connection() as c:
            prev = b""
            if from_position > 1:
                row = c.execute("SELECT link FROM eventstore.log WHERE global_position = %s",
                                (from_position - 1,)).fetchone()
                if row is None:
                    return VerifyResult(False, 0, 0, "", from_position - 1, "position missing")
                prev = bytes(row[0])
            expected_pos = from_position
            checked = 0
            with c.transaction():
                cur = c.cursor(name=f"verify_{uuid.uuid4().hex}")
                cur.itersize = batch
                cur.execute(
                    "SELECT l.global_position, l.link, e.event_id, e.stream_name, e.stream_version, "
                    "e.event_type, e.schema_version, e.data::text, e.metadata::text, e.recorded_at "
                    "FROM eventstore.log l LEFT JOIN eventstore.events e ON e.id = l.event_seq "
                    "WHERE l.global_position >= %s ORDER BY l.global_position", (from_position,))
                for (pos, link, eid, stream, ver, etype, sv, dtext, mtext, rec) in cur:
                    if pos != expected_pos:
                        return VerifyResult(False, checked, pos, "", expected_pos, "position missing")
                    if eid is None:
                        return VerifyResult(False, checked, pos, "", pos, "event row missing")
                    want = hashlib.sha256(prev + canonical_bytes(
                        pos, eid, stream, ver, etype, sv, dtext, mtext, rec)).digest()
                    if want != bytes(link):
                        return VerifyResult(False, checked, pos, "", pos, "link does not match event")
                    prev = want
                    expected_pos += 1
                    checked += 1
        return VerifyResult(True, checked, expected_pos - 1, prev.hex())

    def shred(self, subject: str, metadata: Metadata) -> None:
        """Destroy a subject's data key: its personal fields read as redacted from now on."""
        with self.transaction() as c:
            self.keyring.destroy(c, subject)
            self.append(f"subject-{subject}", [NewEvent("subject_key_shredded", {"subject": subject})],
                        ANY, metadata, conn=c)


def new_event_id() -> uuid.UUID:
    return uuid.uuid4()
