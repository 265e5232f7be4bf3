"""contracts: the event registry (versions, upcasters) and typed errors crossing Nameko RPC."""
from __future__ import annotations

import json
import pickle
import uuid
from datetime import datetime, timezone

import pytest
from nameko.exceptions import RemoteError, deserialize, serialize

from contracts import errors
from contracts.errors import ConcurrencyConflict, DomainError, Locked, ValidationFailed
from contracts.events import EventType, Metadata, RecordedEvent, Registry
from contracts.subscriptions import Subscription


def _v1_to_v2(d):
    return {**d, "kana": d.get("kana", "")}


def _v2_to_v3(d):
    d = dict(d)
    return {"full_name": d.pop("name"), **d}


def test_upcasting_chain_v1_to_v3():
    reg = Registry()
    et = reg.register("customer_named", "identity", version=3, upcasters={1: _v1_to_v2, 2: _v2_to_v3})
    assert reg.get("customer_named") is et
    assert et.upcast(1, {"name": "山田"}) == {"full_name": "山田", "kana": ""}
    assert et.upcast(2, {"name": "山田", "kana": "ヤマダ"}) == {"full_name": "山田", "kana": "ヤマダ"}
    assert et.upcast(3, {"full_name": "x"}) == {"full_name": "x"}


def test_missing_upcaster_is_an_error():
    et = EventType("t", "s", version=3, upcasters={2: _v2_to_v3})
    with pytest.raises(KeyError):
        et.upcast(1, {"name": "x"})


def test_duplicate_registration():
    reg = Registry()
    reg.register("paid", "billing", version=2, upcasters={1: _v1_to_v2})
    # The same definition again (a module imported twice) is harmless …
    reg.register("paid", "billing", version=2, upcasters={1: _v1_to_v2})
    # … a different one is a programming error.
    for other in ({"version": 3}, {"version": 2, "upcasters": {1: _v2_to_v3}},
                  {"version": 2, "upcasters": {1: _v1_to_v2}, "personal_fields": ("email",)}):
        with pytest.raises(ValueError, match="registered twice"):
            reg.register("paid", "billing", **other)
    with pytest.raises(ValueError):
        reg.register("paid", "other_service", version=2, upcasters={1: _v1_to_v2})
    assert reg.source_service("paid") == "billing"
    assert reg.source_service("never_registered") == "unknown"
    assert [e.name for e in reg] == ["paid"]


@pytest.mark.parametrize("error", [
    ConcurrencyConflict(stream="customer-1", expected=3, retry=True),
    Locked("ロック中です。", "login_password_locked", attempts=6),
    ValidationFailed(fields={"email": ["不正"]}),
    DomainError(),
])
def test_domain_error_round_trips_through_nameko(error):
    back = deserialize(json.loads(json.dumps(serialize(error))))
    assert type(back) is type(error)
    assert not isinstance(back, RemoteError)
    assert (back.code, back.detail, back.extra, back.status) == (error.code, error.detail, error.extra,
                                                                  error.status)


@pytest.mark.parametrize("error", [ConcurrencyConflict(stream="s", expected=0),
                                   Locked(attempts=6, flag=False)])
def test_domain_error_pickles(error):
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.code, back.detail, back.extra) == (error.code, error.detail, error.extra)
    assert str(back) == str(error)


def test_error_codes_are_stable_and_distinct():
    assert ConcurrencyConflict().code == "concurrent_update" and ConcurrencyConflict.status == 409
    assert Locked().status == 423
    codes = [c.default_code for c in errors.ALL.values()]
    assert len(codes) == len(set(codes))
    for code, cls in errors.ALL.items():
        assert code.isascii() and code == code.lower() and " " not in code
        assert issubclass(cls, DomainError) and cls().detail  # a Japanese detail by default


def test_recorded_event_message_round_trip():
    e = RecordedEvent("customer-1", 2, uuid.uuid4(), "customer_named", 1, {"a": 1},
                      Metadata(correlation_id="c").as_dict(), datetime(2025, 1, 5, tzinfo=timezone.utc), 7)
    body = json.loads(json.dumps(e.as_message()))
    assert RecordedEvent.from_message(body) == e
    assert (e.category, e.stream_id) == ("customer", "1")


def test_subscription_queue_name_is_nameko_s():
    sub = Subscription("identity", "customer_named", "notifier", "on_customer_named")
    assert sub.queue_name == "evt-identity-customer_named--notifier.on_customer_named"
