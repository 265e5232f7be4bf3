"""R-PLT-2: the event store's fast paths (issue 2, "Benchmark") return exactly what the plain
paths returned: JSON read as text and parsed by orjson, RecordedEvent built without its
frozen __init__, JSON written by orjson, single-event append without a pooled context.

Each test compares against an independent reading of the same row (psycopg's own jsonb
loader, i.e. the standard library's json.loads) or against the values that were written.
"""
from __future__ import annotations

import dataclasses
import math
import uuid

import psycopg
import pytest

from contracts.errors import ConcurrencyConflict
from contracts.events import Actor, Metadata, NewEvent, RecordedEvent, register
from services.eventstore import ANY, NO_STREAM
from tests.conftest import unique

META = Metadata(actor=Actor("customer", "0123456789"), service="test", client_address="203.0.113.7")
PERSONAL = register("fast_path_personal_recorded", "test", personal_fields=("email",),
                    description="Test event with a personal field.")

AWKWARD = {
    "big": 123456789012345678901234567890,          # beyond 64 bits: orjson would make it a float
    "negative_big": -98765432109876543210,
    "max_u64": 18446744073709551615,
    "float": 1.5,
    "tiny": 1e-300,
    "nested": {"list": [1, 2.25, {"deep": 2**80}], "empty": {}},
    "text": "振込限度額の変更 \"quoted\" \\ back\nslash \u2028",
    "none": None,
    "bool": True,
}


def _plain_rows(store, stream: str) -> list[tuple]:
    """The stored data and metadata read by psycopg's jsonb loader (json.loads)."""
    with store.pool.connection() as c:
        return c.execute("SELECT data, metadata FROM eventstore.events WHERE stream_name = %s "
                         "ORDER BY stream_version", (stream,)).fetchall()


def test_awkward_json_reads_back_exactly_as_json_loads_reads_it(store):
    stream = f"fastpath-{unique()}"
    plain = {"customer_number": "0123456789", "limit_yen": 1_000_000, "note": "日本語"}
    store.append(stream, [NewEvent("test_happened", AWKWARD), NewEvent("test_happened", plain)],
                 NO_STREAM, META)
    events = store.read_stream(stream)
    expected = _plain_rows(store, stream)
    assert [(e.data, e.metadata) for e in events] == expected
    assert events[0].data["big"] == AWKWARD["big"] and isinstance(events[0].data["big"], int)
    assert events[0].data["nested"]["list"][2]["deep"] == 2**80
    assert events[1].data == plain
    assert events[0].metadata == META.as_dict()
    store.seal_all()
    by_id = {e.event_id: e for e in store.read_all(events[0].global_position or 0, 100000)
             if e.stream_name == stream}
    # Sealed now: the global read decodes to the same values, with its position.
    assert [by_id[e.event_id].data for e in events] == [e.data for e in events]


def test_recorded_events_are_ordinary_equal_frozen_instances(store):
    stream = f"fastpath-{unique()}"
    store.append(stream, [NewEvent("test_happened", {"n": 1})], NO_STREAM, META)
    store.seal_all()
    (ev,) = store.read_stream(stream)
    again = RecordedEvent(ev.stream_name, ev.stream_version, ev.event_id, ev.type,
                          ev.schema_version, ev.data, ev.metadata, ev.recorded_at,
                          ev.global_position)
    assert type(ev) is RecordedEvent and ev == again and repr(ev) == repr(again)
    assert dataclasses.asdict(ev) == dataclasses.asdict(again)
    assert ev.global_position is not None and ev.category == "fastpath"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.data = {}
    assert dataclasses.replace(ev, stream_version=9).stream_version == 9


def test_values_json_dumps_refuses_are_still_refused(store):
    stream = f"fastpath-{unique()}"
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):   # the NaN json.dumps writes
        store.append(stream, [NewEvent("test_happened", {"x": math.nan})], NO_STREAM, META)
    with pytest.raises(TypeError):
        store.append(stream, [NewEvent("test_happened", {"when": object()})], NO_STREAM, META)
    assert store.stream_version(stream) == 0


def test_personal_fields_sealed_in_the_row_and_opened_on_read(store):
    number = unique("c")
    stream = f"customer-{number}"
    store.append(stream, [NewEvent(PERSONAL.name, {"email": "taro@example.jp", "n": 1})],
                 NO_STREAM, META)
    (stored, _meta), = _plain_rows(store, stream)
    assert "taro" not in str(stored) and stored["email"]["$pii"] == 1
    (ev,) = store.read_stream(stream)
    assert ev.data == {"email": "taro@example.jp", "n": 1}
    store.seal_all()
    sealed = [e for e in store.read_all(0, 100000, reveal=False) if e.stream_name == stream]
    assert sealed[0].data["email"] == stored["email"]


def test_single_event_append_keeps_expected_version_semantics(store):
    stream = f"fastpath-{unique()}"
    assert store.append(stream, [NewEvent("test_happened", {"n": 1})], NO_STREAM, META) == 1
    assert store.append(stream, [NewEvent("test_happened", {"n": 2})], 1, META) == 2
    with pytest.raises(ConcurrencyConflict):
        store.append(stream, [NewEvent("test_happened", {"n": 3})], 1, META)     # stale
    with pytest.raises(ConcurrencyConflict):
        store.append(stream, [NewEvent("test_happened", {"n": 3})], 5, META)     # ahead
    assert store.append(stream, [NewEvent("test_happened", {"n": 3})], ANY, META) == 3
    # The pool got every connection back (none leaked by the failed appends).
    stats = store.pool.get_stats()
    assert stats.get("pool_available", 0) == stats.get("pool_size", 0)
    same_id = uuid.uuid4()
    store.append(stream, [NewEvent("test_happened", {"n": 4}, same_id)], 3, META)
    with pytest.raises(Exception) as err:
        store.append(f"fastpath-{unique()}", [NewEvent("test_happened", {}, same_id)], NO_STREAM, META)
    assert "event_id" in str(getattr(err.value.diag, "constraint_name", "") or err.value)
    assert [e.data["n"] for e in store.read_stream(stream)] == [1, 2, 3, 4]
