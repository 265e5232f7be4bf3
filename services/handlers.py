"""Idempotent event handlers: at-least-once delivery, exactly-once effect.

``@handles(source, event_type)`` is Nameko's SERVICE_POOL ``event_handler`` plus a tracking row
written in the same transaction as the handler's effect: a redelivered event finds the row
and does nothing. The decorated method receives the decoded event and the open connection.

Nameko acks a message whose handler raised, so a transient failure (a version conflict, the
database restarting or its backends killed) is retried here with backoff for up to
``RETRY_FOR_SECONDS``, dropping dead pooled connections between attempts; one that outlasts
that puts the message back on the queue (``RequeueTransient``) instead of losing the event.
Any other failure is logged and the message acked (a poison message must not loop).
"""
from __future__ import annotations

import dataclasses
import functools
import time

import eventlet
import psycopg
from nameko.events import EventHandler

from contracts.errors import ConcurrencyConflict
from contracts.events import REGISTRY, RecordedEvent
from contracts.subscriptions import Subscription
from services import logging as tlog

# Transient: the whole effect rolled back and running it again may succeed.
RETRYABLE = (ConcurrencyConflict, psycopg.OperationalError, psycopg.errors.SerializationFailure,
             psycopg.errors.DeadlockDetected)
RETRY_FOR_SECONDS = 30.0
_BACKOFF = 0.05
_MAX_BACKOFF = 2.0
_REQUEUE_DELAY = 1.0


class RequeueTransient(EventHandler):
    """Nameko's event handler, except that a transient failure that outlasted the retries
    returns the message to the queue (after a pause, so an outage is not a busy loop)."""

    def handle_message_processed(self, message, result=None, exc_info=None):
        if exc_info is not None and issubclass(exc_info[0], RETRYABLE):
            eventlet.sleep(_REQUEUE_DELAY)
            self.queue_consumer.requeue_message(message)
        else:
            self.queue_consumer.ack_message(message)


event_handler = RequeueTransient.decorator


def _drop_dead_connections(store) -> None:
    try:
        store.pool.check()      # reconnects the pool's idle connections that died
    except Exception:           # the database still down: the next attempt will tell
        pass


def run_handler(store, name: str, body, effect, log) -> tuple[RecordedEvent, bool, object]:
    """Decode ``body`` and run ``effect(event, conn)`` once per event (``handled_once``),
    retrying transient failures with backoff for up to ``RETRY_FOR_SECONDS``. Returns
    (event, ran, result); raises the transient error when it outlasts the retries."""
    def once():
        event = decode(body, store)     # may read a data key: inside the retries too
        ran, result = handled_once(store, name, event, lambda conn: effect(event, conn))
        return event, ran, result
    return retrying(store, once, log)


def retrying(store, attempt_once, log, *, retryable=RETRYABLE, what: str = "event_handler"):
    """``attempt_once()``, again with backoff while it fails with ``retryable`` (the database
    away, a lost race), for up to ``RETRY_FOR_SECONDS``; dead pooled connections are dropped
    between attempts. Raises the last error when it outlasts the retries."""
    deadline, delay, attempt = time.monotonic() + RETRY_FOR_SECONDS, _BACKOFF, 0
    while True:
        attempt += 1
        try:
            return attempt_once()
        except retryable as exc:
            if time.monotonic() >= deadline:
                log.error(f"{what}_failed", error=type(exc).__name__, attempts=attempt)
                raise
            log.warning(f"{what}_retrying", error=type(exc).__name__, attempt=attempt)
            if isinstance(exc, psycopg.OperationalError):
                _drop_dead_connections(store)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)


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
            name = f"{self.name}.{method.__name__}"
            log = tlog.get_logger(service=self.name, handler=name, event_id=_event_id_of(body),
                                  correlation_id=_correlation_id_of(body))
            _, ran, _ = run_handler(getattr(self, store_attr), name, body,
                                    lambda event, conn: method(self, event, conn), log)
            if not ran:
                log.info("duplicate_event_ignored")

        # The subscription is recorded when the service module is imported; Nameko's own
        # queue name is derived from the service name, checked at container start.
        wrapper.__tsunagi_subscription__ = (source_service, event_type, method.__name__)
        return event_handler(source_service, event_type)(wrapper)
    return decorate


def _event_id_of(body) -> str | None:
    return str(body.get("event_id")) if isinstance(body, dict) and body.get("event_id") else None


def _correlation_id_of(body) -> str | None:
    meta = body.get("metadata") if isinstance(body, dict) else None
    return meta.get("correlation_id") if isinstance(meta, dict) else None


def subscriptions_of(service_cls) -> list[Subscription]:
    """The subscriptions a service class's handlers need. Each must also be declared in
    ``contracts`` (where the relay reads them); a test checks the two agree."""
    subs = []
    for attr in dir(service_cls):
        spec = getattr(getattr(service_cls, attr), "__tsunagi_subscription__", None)
        if spec:
            subs.append(Subscription(spec[0], spec[1], service_cls.name, spec[2]))
    return subs
