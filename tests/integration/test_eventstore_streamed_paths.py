"""R-PLT-2: the third pass's fast paths (issue 2, "Benchmark") return exactly what the plain
paths return.

- ``read_all`` streams a large page in chunks and opens personal fields after the last row
  (the streaming connection takes no other query meanwhile): a page read in one go must
  equal the same events read in small pages (fetched whole), sealed, opened, shredded and
  upcast alike.
- ``append`` keeps one cursor per connection: it must work on a caller's connection whatever
  its row factory, and after a conflict rolled the caller's transaction back.
- the single-event append with a known version on the store's own connection goes through
  ``direct.py`` (a statement prepared at the libpq level): it must survive psycopg's
  DEALLOCATE ALL after a rollback and refuse what psycopg's cursor refuses.
"""
from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from contracts.errors import ConcurrencyConflict
from contracts.events import Actor, Metadata, NewEvent, register
from services import crypto
from services.eventstore import ANY, NO_STREAM
from services.eventstore import direct
from services.eventstore import store as store_module
from tests.conftest import unique

META = Metadata(actor=Actor("customer", "0123456789"), service="test")
PERSONAL = register("streamed_read_personal_recorded", "test", personal_fields=("email",),
                    description="Test event with a personal field.")
UPCAST = register("streamed_read_upcast_recorded", "test", version=2,
                  upcasters={1: lambda d: {**d, "channel": d.get("channel", "web")}},
                  description="Test event at schema version 2 with an upcaster from 1.")


def _fill(store, n_subjects: int = 3, per_subject: int = 90) -> tuple[list[str], str]:
    """Personal, plain and old-version events interleaved across streams; one subject shredded."""
    numbers = [unique("c") for _ in range(n_subjects)]
    for i in range(per_subject):
        for number in numbers:
            stream = f"customer-{number}"
            store.append(stream, [NewEvent(PERSONAL.name, {"email": f"{number}.{i}@example.jp", "i": i})],
                         ANY, META)
        store.append(f"streamread-{numbers[0]}", [NewEvent("test_happened", {"i": i})], ANY, META)
    with store.transaction() as c:   # an event written at schema version 1, before its upcaster
        c.execute("INSERT INTO eventstore.events (event_id, stream_name, stream_version, "
                  "event_type, schema_version, data, metadata) VALUES (gen_random_uuid(), %s, 1, "
                  "%s, 1, '{\"i\": 0}', '{}')", (f"streamread-{unique()}", UPCAST.name))
    store.shred(numbers[-1], META)
    store.seal_all()
    return numbers, numbers[-1]


def test_a_streamed_page_equals_the_same_events_read_in_small_pages(scratch_store):
    store = scratch_store      # a log of its own: every position below is one of these events
    numbers, shredded = _fill(store)
    first = 0
    big_limit = 20 * store_module._STREAM_CHUNK
    assert big_limit >= 2 * store_module._STREAM_CHUNK      # this read takes the streamed path
    whole = store.read_all(first, big_limit)
    small, after = [], first
    while len(small) < len(whole):
        page = store.read_all(after, 50)                      # below 2 chunks: fetched whole
        small.extend(page)
        after = page[-1].global_position
    assert whole == small[:len(whole)]
    positions = [e.global_position for e in whole]
    assert positions == list(range(first + 1, first + 1 + len(whole)))

    mine = [e for e in whole if e.type == PERSONAL.name]
    assert len(mine) >= 200                                   # many sealed rows opened after the stream
    for ev in mine:
        number = ev.stream_name.split("-", 1)[1]
        if number == shredded:
            assert ev.data["email"] == crypto.REDACTED
        else:
            assert ev.data["email"] == f"{number}.{ev.data['i']}@example.jp"
    upcast = [e for e in store.read_all(first, 100000) if e.type == UPCAST.name]
    assert upcast and all(e.schema_version == 2 and e.data["channel"] == "web" for e in upcast)

    closed = store.read_all(first, big_limit, reveal=False)
    assert [e.event_id for e in closed] == [e.event_id for e in whole]
    assert all(crypto.is_sealed(e.data["email"]) for e in closed if e.type == PERSONAL.name)


def test_streamed_read_on_a_callers_connection_leaves_it_usable(scratch_store):
    store = scratch_store
    _fill(store, n_subjects=1, per_subject=150)
    with store.transaction() as c:
        page = store.read_all(0, 100000, conn=c)
        assert len(page) == 150 * 2 + 2        # personal, plain, the old-version event, the shred
        assert page[0].data["email"] == crypto.REDACTED     # its only subject was shredded
        # The connection answers the next query: the stream was read to its end.
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_append_on_a_callers_connection_with_another_row_factory(store):
    stream = f"streamread-{unique()}"
    with store.pool.connection() as c:
        c.row_factory = dict_row
        try:
            assert store.append(stream, [NewEvent("test_happened", {"n": 1})], ANY, META, conn=c) == 1
            assert store.append(stream, [NewEvent("test_happened", {"n": 2})], 1, META, conn=c) == 2
            assert store.append(stream, [NewEvent("test_happened", {"n": 3}),
                                         NewEvent("test_happened", {"n": 4})], ANY, META, conn=c) == 4
        finally:
            c.row_factory = psycopg.rows.tuple_row
    assert [e.data["n"] for e in store.read_stream(stream)] == [1, 2, 3, 4]


def test_append_after_a_conflict_rolled_the_callers_transaction_back(store):
    stream = f"streamread-{unique()}"
    store.append(stream, [NewEvent("test_happened", {"n": 1})], NO_STREAM, META)
    with store.pool.connection() as c:
        with pytest.raises(ConcurrencyConflict):
            with c.transaction():
                store.append(stream, [NewEvent("test_happened", {"n": 2})], 1, META, conn=c)
                # A second writer took version 3 meanwhile? No: this one is simply stale.
                store.append(stream, [NewEvent("test_happened", {"n": 3})], 1, META, conn=c)
        # Same connection, same kept cursor: the rolled-back transaction left nothing behind.
        with c.transaction():
            assert store.append(stream, [NewEvent("test_happened", {"n": 2})], 1, META, conn=c) == 2
    assert [e.data["n"] for e in store.read_stream(stream)] == [1, 2]


def test_direct_append_survives_psycopgs_deallocate_all_after_a_rollback(settings, scratch_db):
    """psycopg sends DEALLOCATE ALL after a ROLLBACK on a connection that has prepared
    statements; the direct append (services/eventstore/direct.py) prepares again."""
    from services.eventstore import open_store
    one = open_store(settings, database_url=scratch_db, max_size=1)    # one connection
    try:
        stream = f"streamread-{unique()}"
        assert one.append(stream, [NewEvent("test_happened", {"n": 1})], NO_STREAM, META) == 1
        with one.pool.connection() as c:
            assert c.execute(_PREPARED, (direct.NAME.decode(),)).fetchone() == (1,)
            for _ in range(6):             # psycopg prepares a statement after 5 runs
                c.execute("SELECT 1").fetchone()
            with pytest.raises(ZeroDivisionError):
                with c.transaction():
                    c.execute("SELECT 1")
                    raise ZeroDivisionError
            assert c.execute(_PREPARED, (direct.NAME.decode(),)).fetchone() == (0,)
        assert one.append(stream, [NewEvent("test_happened", {"n": 2})], 1, META) == 2
        with pytest.raises(ConcurrencyConflict):
            one.append(stream, [NewEvent("test_happened", {"n": 3})], 1, META)
        assert one.append(stream, [NewEvent("test_happened", {"n": 3})], 2, META) == 3
        assert [e.data["n"] for e in one.read_stream(stream)] == [1, 2, 3]
    finally:
        one.pool.close()


_PREPARED = "SELECT count(*) FROM pg_prepared_statements WHERE name = %s"


def test_direct_append_refuses_what_the_cursor_path_refuses(store):
    with pytest.raises(psycopg.DataError):    # libpq would cut the text at the NUL
        store.append(f"streamread-{unique()}\x00x", [NewEvent("test_happened", {})], NO_STREAM, META)
    stream = f"streamread-{unique()}"
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        store.append(stream, [NewEvent("test_happened", {}, "not-a-uuid")], NO_STREAM, META)
    assert store.stream_version(stream) == 0
    assert store.append(stream, [NewEvent("test_happened", {"n": 1})], NO_STREAM, META) == 1
