"""The ``phone_auth`` Nameko service over real RabbitMQ and PostgreSQL (SPEC R-INI-4).

Calls arrive as the edges send them: a JSON ``inbound_call`` message on the ``telephony.events``
exchange (published here with Nameko's standalone dispatcher, i.e. with publisher confirms).
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import datetime, timezone

import eventlet
import psycopg
import pytest
from nameko.extensions import DependencyProvider
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

from contracts import phone_auth as c
from contracts import telephony
from contracts.errors import NotFound, ValidationFailed
from phone_auth.service import PhoneAuthService
from services import db
from tests import vhosts
from tests.support.services import running

# Numbers of this module only, so calls of other suites never meet these verifications.
_PREFIX = random.randrange(100, 999)
TOLL_FREE = [f"0120-{_PREFIX}-{n}" for n in (101, 102)]


def new_phone() -> str:
    """A mobile number of its own per test: verifications of one phone meet each other."""
    return f"+8190{random.randrange(10**7, 10**8)}"


class HandledCalls(DependencyProvider):
    """Records every finished ``handle_inbound_call`` worker of any instance (tests wait on it)."""
    results: list = []
    lock = threading.Lock()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        if worker_ctx.entrypoint.method_name == "handle_inbound_call":
            with self.lock:
                HandledCalls.results.append((worker_ctx.args[0], result, exc_info))


class ObservedPhoneAuth(PhoneAuthService):
    handled_calls = HandledCalls()


@pytest.fixture(scope="module")
def config(settings):
    with vhosts.own(settings.amqp_uri, "tsunagi_phone_") as amqp_uri:
        cfg = {"AMQP_URI": amqp_uri, "max_workers": 10,
               "serializer": "json", "DATABASE_URL": settings.database_url,
               "TOLL_FREE_NUMBERS": ",".join(TOLL_FREE), "PHONE_VERIFICATION_SECONDS": 120}
        with running(cfg, [ObservedPhoneAuth]):
            yield cfg


@pytest.fixture
def rpc(config):
    with ClusterRpcProxy(config, timeout=30, context_data={"correlation_id": f"corr-{uuid.uuid4()}"}) as proxy:
        yield proxy.phone_auth


@pytest.fixture
def call(config):
    """``call(caller, called, call_id=None, withheld=False)`` publishes one inbound call and
    waits until a phone_auth instance has handled it; returns the handler's result."""
    dispatch = event_dispatcher(config)

    def _call(caller, called, call_id=None, withheld=False, wait=True, **extra):
        body = {"call_id": call_id or f"CA{uuid.uuid4().hex}", "caller": None if withheld else caller,
                "withheld": withheld, "called": called,
                "received_at": datetime.now(timezone.utc).isoformat(), "edge": "sip", **extra}
        before = len(HandledCalls.results)
        dispatch(telephony.SOURCE_SERVICE, telephony.INBOUND_CALL, body)
        if wait:
            return wait_handled(before + 1)[-1]
        return None
    return _call


def wait_handled(count: int, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while len(HandledCalls.results) < count:
        assert time.monotonic() < deadline, f"only {len(HandledCalls.results)} of {count} calls handled"
        eventlet.sleep(0.02)
    results = HandledCalls.results[:count]
    for _, result, exc_info in results:
        assert exc_info is None, exc_info
    return [r for _, r, _ in results]


def wait_status(rpc, vid, status, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = rpc.status(vid)
        if st["status"] == status:
            return st
        assert time.monotonic() < deadline, st
        eventlet.sleep(0.05)


def customer() -> str:
    return f"{random.randrange(10**9, 10**10):010d}"


def start(rpc, phone=None, ttl=None):
    """Start a verification; returns (application id, result, the phone's E.164)."""
    app = f"app-{uuid.uuid4().hex[:8]}"
    phone = phone or new_phone()
    return app, rpc.start_verification(app, customer(), phone, ttl), telephony.normalize_phone(phone)


def types(store, vid):
    return [e.type for e in store.read_stream(c.verification_stream(vid))]


def test_r_ini_4_start_shows_masked_phone_and_a_toll_free_number_of_the_pool(rpc, store):
    app, v, phone = start(rpc, phone="090-1234-5678")
    assert v["call_from_masked"] == "*****5678"
    assert v["call_to"] in TOLL_FREE                      # national format, as configured
    expires = datetime.fromisoformat(v["expires_at"])
    assert 110 <= (expires - datetime.now(timezone.utc)).total_seconds() <= 120
    st = rpc.status(v["verification_id"])
    assert st["status"] == c.AWAITING_CALL and st["attempts"] == [] and st["application_id"] == app
    [event] = store.read_stream(c.verification_stream(v["verification_id"]))
    assert event.type == "phone_verification_started"
    assert event.data["caller"] == phone == "+819012345678" and event.data["application_id"] == app


def test_r_ini_4_the_phone_number_is_never_stored_in_clear(rpc, settings):
    _, v, _ = start(rpc, phone="+819087654321")
    with psycopg.connect(db.admin_url_for(settings, settings.database_name)) as conn:
        raw = conn.execute("SELECT data::text FROM eventstore.events WHERE stream_name = %s",
                           (c.verification_stream(v["verification_id"]),)).fetchone()[0]
        row = conn.execute("SELECT row_to_json(v)::text FROM phone_auth.verifications v "
                           "WHERE verification_id = %s", (v["verification_id"],)).fetchone()[0]
    assert "87654321" not in raw and "$pii" in raw
    assert "87654321" not in row and "*****4321" in row


def test_r_ini_4_call_from_the_registered_phone_verifies_exactly_once(rpc, call, store):
    app, v, phone = start(rpc)
    vid = v["verification_id"]
    spelled = telephony.national_format(phone)                 # 090-xxxx-xxxx: same number
    outcome = call(spelled, v["call_to"], call_id="CA-v-" + vid)
    assert outcome == {vid: ["phone_verification_succeeded"]}
    assert rpc.status(vid)["status"] == c.VERIFIED
    call(phone, v["call_to"])                                  # calls again: nothing more
    assert types(store, vid) == ["phone_verification_started", "phone_verification_succeeded"]
    succeeded = store.read_stream(c.verification_stream(vid))[-1]
    assert succeeded.data["application_id"] == app and succeeded.metadata["actor"] == \
        {"kind": "system", "id": "telephony.sip"}
    [received] = store.read_stream(c.call_stream(telephony.call_key("sip", "CA-v-" + vid)))
    assert received.type == "inbound_call_received"
    assert received.data["caller"] == phone and received.data["verification_ids"] == [vid]


def test_r_ini_4_failed_attempts_are_recorded_and_the_customer_may_call_again(rpc, call, store):
    _, v, phone = start(rpc)
    vid = v["verification_id"]
    other = next(n for n in TOLL_FREE if n != v["call_to"])
    call(None, v["call_to"], withheld=True)                    # 184 / 非通知
    call("+819099998888", v["call_to"])                        # another phone
    call(phone, other)                                         # the other toll-free number
    st = rpc.status(vid)
    assert st["status"] == c.AWAITING_CALL
    assert st["attempts"] == [c.WITHHELD, c.UNKNOWN_CALLER, c.WRONG_NUMBER]
    call(phone, v["call_to"])
    assert wait_status(rpc, vid, c.VERIFIED)["attempts"] == [c.WITHHELD, c.UNKNOWN_CALLER, c.WRONG_NUMBER]
    assert types(store, vid)[-1] == "phone_verification_succeeded"


def test_r_ini_4_the_same_call_id_twice_has_one_effect(rpc, call, store, config):
    _, v, phone = start(rpc)
    vid = v["verification_id"]
    first = call(None, v["call_to"], call_id="CA-dup-" + vid, withheld=True)
    again = call(None, v["call_to"], call_id="CA-dup-" + vid, withheld=True)
    # (a withheld call is an attempt on every open verification of the number dialled)
    assert first[vid] == ["phone_verification_attempt_failed"] and again is None
    assert rpc.status(vid)["attempts"] == [c.WITHHELD]
    key = telephony.call_key("sip", "CA-dup-" + vid)
    assert [e.type for e in store.read_stream(c.call_stream(key))] == ["inbound_call_received"]
    # A verifying call id replayed: still one success.
    call(phone, v["call_to"], call_id="CA-ok-" + vid)
    call(phone, v["call_to"], call_id="CA-ok-" + vid)
    assert types(store, vid).count("phone_verification_succeeded") == 1


def test_r_ini_4_verification_expires_by_itself_and_a_late_call_fails(rpc, call, store):
    _, v, phone = start(rpc, ttl=1)
    vid = v["verification_id"]
    assert wait_status(rpc, vid, c.EXPIRED)["attempts"] == []  # nobody asked: the timer did it
    assert types(store, vid) == ["phone_verification_started", "phone_verification_expired"]
    call(phone, v["call_to"])                                  # the registered phone, too late
    assert rpc.status(vid)["attempts"] == [c.LATE]
    assert types(store, vid) == ["phone_verification_started", "phone_verification_expired",
                                 "phone_verification_attempt_failed"]




def test_malformed_call_messages_are_dropped_without_effect(rpc, call):
    _, v, phone = start(rpc)
    assert call(phone, v["call_to"], edge="carrier-pigeon") is None
    assert call("", "not a number") is None
    st = rpc.status(v["verification_id"])
    assert st["status"] == c.AWAITING_CALL and st["attempts"] == []


def test_start_verification_refuses_what_is_not_a_phone_number(rpc):
    with pytest.raises(ValidationFailed) as err:
        rpc.start_verification("app-x", customer(), "anonymous")
    assert "caller_e164" in err.value.extra["errors"]
    with pytest.raises(ValidationFailed):
        rpc.start_verification("app-x", "12", new_phone())
    with pytest.raises(NotFound):
        rpc.status(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        rpc.status("not-a-uuid")


# -- two instances (kept last: the second instance stays up to the end of the module) --------

@pytest.fixture(scope="module")
def second_instance(config):
    """Another phone_auth instance on the same queues and database (as `--instances 2`)."""
    with running(config, [ObservedPhoneAuth]) as runner:
        yield runner


def test_r_ini_4_two_instances_emit_one_expiry_per_verification(rpc, second_instance, store):
    vids = [start(rpc, ttl=1)[1]["verification_id"] for _ in range(12)]
    for vid in vids:
        wait_status(rpc, vid, c.EXPIRED)
    eventlet.sleep(1.1)       # both timers have had another turn at every row by now
    for vid in vids:
        assert types(store, vid) == ["phone_verification_started", "phone_verification_expired"]


def test_r_ini_4_concurrent_duplicates_on_two_instances_have_one_effect(rpc, second_instance,
                                                                        config, store):
    _, v, phone = start(rpc)
    vid = v["verification_id"]
    dispatch = event_dispatcher(config)
    body = {"call_id": "CA-race-" + vid, "caller": phone, "withheld": False,
            "called": v["call_to"], "received_at": datetime.now(timezone.utc).isoformat(),
            "edge": "webhook"}
    before = len(HandledCalls.results)
    for _ in range(6):
        dispatch(telephony.SOURCE_SERVICE, telephony.INBOUND_CALL, body)
    outcomes = wait_handled(before + 6)[before:]
    assert sorted(outcomes, key=bool) == [None] * 5 + [{vid: ["phone_verification_succeeded"]}]
    assert types(store, vid) == ["phone_verification_started", "phone_verification_succeeded"]
