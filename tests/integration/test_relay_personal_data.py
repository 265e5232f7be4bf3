"""R-PLT-2 / DESIGN.md crypto-shredding: personal fields cross RabbitMQ sealed, exactly as
stored; a consumer opens them with its own keys (``services.handlers.decode``), and after a
shred even a message still sitting in a queue reads as redacted."""
from __future__ import annotations

import kombu
from kombu import Queue

from contracts.events import Actor, Metadata, NewEvent, register
from contracts.subscriptions import Subscription
from services import crypto
from services.eventstore import NO_STREAM
from services.handlers import decode
from services.relay import Relay, event_exchange, wait_until_published
from tests.conftest import unique

META = Metadata(actor=Actor("system", "relay-pii-test"), service="test")


def test_personal_fields_travel_sealed_and_open_only_with_the_key(settings, store):
    source, event_type = unique("piisrc"), unique("pii_recorded_")
    register(event_type, source, personal_fields=("email",))
    sub = Subscription(source, event_type, unique("piitest"), "collect")
    customer = unique("c")
    store.append(f"piicust-{customer}", [NewEvent(event_type, {"email": "taro@example.jp", "n": 1})],
                 NO_STREAM, META, subject=customer)
    relay = Relay(store, settings.amqp_uri, name=unique("relay"), subscriptions=[sub])
    try:
        wait_until_published(relay)
        with kombu.Connection(settings.amqp_uri) as conn:
            message = Queue(sub.queue_name)(conn.channel()).get(no_ack=True)
        body = message.payload
        assert "taro@example.jp" not in message.body.decode() if isinstance(message.body, bytes) \
            else "taro@example.jp" not in str(message.body)
        assert crypto.is_sealed(body["data"]["email"])
        assert body["data"]["n"] == 1

        assert decode(body, store).data["email"] == "taro@example.jp"
        store.shred(customer, META)
        store.keyring.forget_cache()
        assert decode(body, store).data["email"] == crypto.REDACTED
    finally:
        relay._disconnect()
        with kombu.Connection(settings.amqp_uri) as conn:
            ch = conn.channel()
            Queue(sub.queue_name)(ch).delete()
            event_exchange(source)(ch).delete()
