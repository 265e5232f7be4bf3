"""The relay: the event log is the outbox.

It seals committed events into the global log, reads the log in order from its checkpoint and
publishes each event as a Nameko event (exchange ``<service>.events``, routing key = event
type) with publisher confirms, then moves the checkpoint. A crash between publish and
checkpoint republishes a few events; handlers are idempotent, so that is harmless. Only one
relay publishes at a time (a PostgreSQL advisory lock held on its own connection); a second
one waits as a hot standby.
"""
from __future__ import annotations

import threading
import time

import kombu
import psycopg
from kombu import Exchange, Queue

from contracts.events import REGISTRY, RecordedEvent, Registry
from contracts.subscriptions import SUBSCRIPTIONS, Subscription
from services import logging as tlog
from services.eventstore import EventStore

_LEADER_LOCK = 7031704583


def event_exchange(service: str) -> Exchange:
    # Same parameters as nameko.standalone.events.get_event_exchange (durable, not auto-delete).
    return Exchange(f"{service}.events", type="topic", durable=True, auto_delete=False,
                    delivery_mode=2)


class Relay:
    def __init__(self, store: EventStore, amqp_uri: str, *, name: str = "relay",
                 registry: Registry = REGISTRY, subscriptions: list[Subscription] | None = None,
                 batch: int = 500, idle_sleep: float = 0.01):
        self.store = store
        self.amqp_uri = amqp_uri
        self.name = name
        self.registry = registry
        self.subscriptions = SUBSCRIPTIONS if subscriptions is None else subscriptions
        self.batch = batch
        self.idle_sleep = idle_sleep
        self.log = tlog.get_logger(service="relay", relay=name)
        self.published = 0
        self._connection: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._declared: set[str] = set()

    # -- checkpoint ----------------------------------------------------------------------

    def checkpoint(self) -> int:
        with self.store.pool.connection() as c:
            row = c.execute("SELECT position FROM chassis.checkpoints WHERE name = %s",
                            (self.name,)).fetchone()
        return row[0] if row else 0

    def _save_checkpoint(self, position: int) -> None:
        with self.store.pool.connection() as c:
            c.execute("INSERT INTO chassis.checkpoints (name, position) VALUES (%s, %s) "
                      "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
                      "updated_at = now()", (self.name, position))

    # -- broker ----------------------------------------------------------------------------

    def _connect(self) -> kombu.Producer:
        if self._producer is None:
            self._connection = kombu.Connection(self.amqp_uri, transport_options={"confirm_publish": True},
                                                heartbeat=0, connect_timeout=5)
            self._connection.ensure_connection(max_retries=1)
            self._producer = kombu.Producer(self._connection.channel(), serializer="json")
            self._declared.clear()
            self._declare_subscriptions()
        return self._producer

    def _declare_subscriptions(self) -> None:
        """Declare every handler queue up front so no event waits on a consumer's first start."""
        channel = self._producer.channel
        for sub in self.subscriptions:
            exchange = event_exchange(sub.source_service)
            self._declare_exchange(exchange)
            Queue(sub.queue_name, exchange=exchange, routing_key=sub.event_type, durable=True,
                  auto_delete=False)(channel).declare()

    def _declare_exchange(self, exchange: Exchange) -> None:
        if exchange.name not in self._declared:
            exchange(self._producer.channel).declare()
            self._declared.add(exchange.name)

    def _disconnect(self) -> None:
        try:
            if self._connection is not None:
                self._connection.release()
        except Exception:  # the connection is already broken; nothing to release cleanly
            pass
        self._connection = self._producer = None

    def publish(self, event: RecordedEvent) -> None:
        producer = self._connect()
        exchange = event_exchange(self.registry.source_service(event.type))
        self._declare_exchange(exchange)
        # publish() returns only after the broker confirmed the message (confirm_publish).
        producer.publish(event.as_message(), exchange=exchange, routing_key=event.type,
                         delivery_mode=2, content_type="application/json",
                         message_id=str(event.event_id),
                         headers={"nameko.correlation_id": event.metadata.get("correlation_id"),
                                  "nameko.call_id_stack": [f"relay.{event.type}.{event.event_id}"]})

    # -- the loop ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Seal, publish one batch, move the checkpoint. Returns the number published."""
        self.store.seal()
        position = self.checkpoint()
        events = self.store.read_all(position, self.batch)
        for event in events:
            self.publish(event)
            self.published += 1
        if events:
            self._save_checkpoint(events[-1].global_position)
        return len(events)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, surviving broker and database restarts."""
        backoff = 0.1
        with psycopg.connect(self.store.pool.conninfo, autocommit=True) as leader:
            while not stop.is_set() and not leader.execute(
                    "SELECT pg_try_advisory_lock(%s)", (_LEADER_LOCK,)).fetchone()[0]:
                stop.wait(1.0)   # another relay leads; stand by
            self.log.info("relay_leading", checkpoint=self.checkpoint())
            while not stop.is_set():
                try:
                    n = self.run_once()
                    backoff = 0.1
                    if n == 0:
                        stop.wait(self.idle_sleep)
                except (kombu.exceptions.OperationalError, ConnectionError, OSError,
                        psycopg.OperationalError) as exc:
                    self.log.warning("relay_retrying", error=type(exc).__name__, backoff=backoff)
                    self._disconnect()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        self._disconnect()


def wait_until_published(relay: Relay, timeout: float = 10.0) -> None:
    """Drive ``relay`` until everything committed is published (tests and tools)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.run_once() == 0 and relay.store.seal() == 0:
            with relay.store.pool.connection() as c:
                pending = c.execute("SELECT count(*) FROM eventstore.events e WHERE NOT EXISTS "
                                    "(SELECT 1 FROM eventstore.log l WHERE l.event_seq = e.id)").fetchone()[0]
            if pending == 0 and relay.run_once() == 0:
                return
        time.sleep(0.01)
    raise TimeoutError("relay did not catch up")
