"""An operator's phone change (R-LEG-4) closes the customer's open inbound-call verifications
(R-INI-4): the old number may be a lost phone in someone else's hands, so a call from it must
not verify an application started before the change. Real RabbitMQ, PostgreSQL and relay."""
from __future__ import annotations

import random
import time
import uuid
from datetime import datetime, timezone

import eventlet
import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

from contracts import phone_auth as c
from contracts import telephony
from contracts.events import Actor, Metadata, NewEvent
from phone_auth import domain
from phone_auth.service import PhoneAuthService
from services.eventstore import ANY
from tests import vhosts
from tests.support.services import running_with_relay

TOLL_FREE = [f"0120-{random.randrange(100, 999)}-{n}" for n in (201, 202)]
OPERATOR = Metadata(actor=Actor("operator", "op-7"), service="identity", reason="携帯電話の紛失")


@pytest.fixture(scope="module")
def config(settings, store):
    with vhosts.own(settings.amqp_uri, "tsunagi_phonechg_") as amqp_uri:
        cfg = {"AMQP_URI": amqp_uri, "max_workers": 10, "serializer": "json",
               "DATABASE_URL": settings.database_url, "TOLL_FREE_NUMBERS": ",".join(TOLL_FREE),
               "PHONE_VERIFICATION_SECONDS": 120}
        with running_with_relay(store, cfg, [PhoneAuthService]):
            yield cfg


def _status(config, vid) -> str:
    with ClusterRpcProxy(config, timeout=30) as proxy:
        return proxy.phone_auth.status(vid)["status"]


def _wait_status(config, vid, wanted, timeout=20.0) -> None:
    deadline = time.monotonic() + timeout
    while (status := _status(config, vid)) != wanted:
        assert time.monotonic() < deadline, status
        eventlet.sleep(0.05)


def test_phones_changed_by_an_operator_close_the_open_verification_R_LEG_4(config, store):
    number = f"{random.randrange(10**9, 10**10):010d}"
    old_phone = f"+8190{random.randrange(10**7, 10**8)}"
    with ClusterRpcProxy(config, timeout=30) as proxy:
        started = proxy.phone_auth.start_verification(f"app-{uuid.uuid4().hex[:8]}", number, old_phone, None)
    vid = started["verification_id"]
    assert _status(config, vid) == c.AWAITING_CALL

    store.append(f"customer-{number}", [NewEvent("registered_phones_changed", {
        "phones": ["+818011112222"]})], ANY, OPERATOR, subject=number)

    _wait_status(config, vid, c.EXPIRED)
    stream = store.read_stream(c.verification_stream(vid))
    assert [e.type for e in stream] == ["phone_verification_started", "phone_verification_expired"]
    assert stream[-1].data["reason"] == "registered_phones_changed"

    # The lost phone calls afterwards: recorded as late, never verifies.
    event_dispatcher(config)(telephony.SOURCE_SERVICE, telephony.INBOUND_CALL, {
        "call_id": f"CA{uuid.uuid4().hex}", "caller": old_phone, "withheld": False,
        "called": telephony.normalize_phone(started["call_to"]) or started["call_to"],
        "received_at": datetime.now(timezone.utc).isoformat(), "edge": "sip"})
    deadline = time.monotonic() + 10
    while len(store.read_stream(c.verification_stream(vid))) < 3 and time.monotonic() < deadline:
        eventlet.sleep(0.05)
    types = [e.type for e in store.read_stream(c.verification_stream(vid))]
    assert "phone_verification_succeeded" not in types and _status(config, vid) == c.EXPIRED


def test_withdraw_closes_only_an_open_verification():
    open_state = domain.fold([])
    assert domain.decide(domain.Withdraw("registered_phones_changed"), open_state) == []
