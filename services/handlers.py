"""Idempotent event handlers: at-least-once delivery, exactly-once effect.

``@handles(source, event_type)`` is Nameko's SERVICE_POOL ``event_handler`` plus a tracking row
written in the same transaction as the handler's effect: a redelivered event finds the row
and does nothing. The decorated method receives the decoded event and the open connection.

Nameko acks a message whose handler raised, so a transient failure (a version conflict, the
database restarting) is retried here a few times before the error is logged and given up.
"""
from __future__ import annotations

import dataclasses
import functools
import time

import psycopg
from nameko.events import event_handler

from contracts.errors import ConcurrencyConflict
from contracts.events import REGISTRY, RecordedEvent
from contracts.subscriptions import Subscription
from services import logging as tlog

# Transient: the whole effect rolled back and running it again may succeed.
RETRYABLE = (ConcurrencyConflict, psycopg.OperationalError, psycopg.errors.SerializationFailure,
             psycopg.errors.DeadlockDetected)
ATTEMPTS = 4
_BACKOFF = 0.05


def handled_once(store, handler: str, event: RecordedEvent, effect):
    """Run ``effect(conn)`` unless ``handler`` already handled ``event``; returns
    (ran, result). The tracking row commits or rolls back with the effect."""
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO chassis.handled_events (handler, event_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING", (handler, event.event_id))
        if cur.rowcount == 0:
            return False, None
        return True, effect(conn)


def decode(body, store=None) -> RecordedEvent:
    """The relay's message body as a RecordedEvent: personal fields opened with ``store``'s
    keys (they cross the bus sealed) and upcast to the registered schema version (a message
    published before an upgrade may still carry an older version)."""
    event = RecordedEvent.from_message(body)
    if store is not None:
        data = store.open_personal(event.data)
        if data is not event.data:
            event = dataclasses.replace(event, data=data)
    et = REGISTRY.get(event.type)
    if et is not None and event.schema_version < et.version:
        event = RecordedEvent(event.stream_name, event.stream_version, event.event_id, event.type,
                              et.version, et.upcast(event.schema_version, dict(event.data)),
                              event.metadata, event.recorded_at, event.global_position)
    return event


def handles(source_service: str, event_type: str, *, store_attr: str = "store"):
    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, body):
            event = decode(body, getattr(self, store_attr))
            name = f"{self.name}.{method.__name__}"
            log = tlog.get_logger(service=self.name, handler=name, event_id=str(event.event_id),
                                  correlation_id=event.metadata.get("correlation_id"))
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    ran, _ = handled_once(getattr(self, store_attr), name, event,
                                          lambda conn: method(self, event, conn))
                    break
                except RETRYABLE as exc:
                    if attempt == ATTEMPTS:
                        log.error("event_handler_failed", error=type(exc).__name__, attempts=attempt)
                        raise
                    log.warning("event_handler_retrying", error=type(exc).__name__, attempt=attempt)
                    time.sleep(_BACKOFF * 2 ** (attempt - 1))
            if not ran:
                log.info("duplicate_event_ignored")

        # The subscription is recorded when the service module is imported; Nameko's own
        # queue name is derived from the service name, checked at container start.
        wrapper.__tsunagi_subscription__ = (source_service, event_type, method.__name__)
        return event_handler(source_service, event_type)(wrapper)
    return decorate


def subscriptions_of(service_cls) -> list[Subscription]:
    """The subscriptions a service class's handlers need. Each must also be declared in
    ``contracts`` (where the relay reads them); a test checks the two agree."""
    subs = []
    for attr in dir(service_cls):
        spec = getattr(getattr(service_cls, attr), "__tsunagi_subscription__", None)
        if spec:
            subs.append(Subscription(spec[0], spec[1], service_cls.name, spec[2]))
    return subs
