"""The relay: the event log is the outbox.

It seals committed events into the global log, reads the log in order from its checkpoint and
publishes each event as a Nameko event (exchange ``<service>.events``, routing key = event
type) with publisher confirms, then moves the checkpoint. A crash between publish and
checkpoint republishes a few events; handlers are idempotent, so that is harmless.

Only one relay of a given name publishes at a time: it holds a PostgreSQL advisory lock on a
connection of its own and reads and moves its checkpoint on that same connection, so a relay
whose lock connection died can no longer move the checkpoint; it stops publishing, reconnects
and queues up for the lock again. The others wait as hot standbys.
"""
from __future__ import annotations

import threading
import time
from typing import Iterator

import kombu
import psycopg
from amqp.exceptions import MessageNacked
from kombu import Exchange, Queue

from contracts.events import REGISTRY, RecordedEvent, Registry
from contracts.subscriptions import SUBSCRIPTIONS, Subscription
from services import logging as tlog
from services.eventstore import EventStore

# Advisory lock (class, hashtext(relay name)): one leader per relay name and database.
_LEADER_LOCK_CLASS = 70317045
SEAL_BATCH = 10000          # events sealed per call at most (EventStore.seal's default)
CONFIRM_TIMEOUT = 30.0      # seconds without any frame while confirms are due: reconnect, republish
_CHECKPOINT = "SELECT position FROM chassis.checkpoints WHERE name = %s"
_LOOK = (f"SELECT coalesce(({_CHECKPOINT}), 0),"
         " coalesce((SELECT max(global_position) FROM eventstore.log), 0)")


def event_exchange(service: str) -> Exchange:
    # Same parameters as nameko.standalone.events.get_event_exchange (durable, not auto-delete).
    return Exchange(f"{service}.events", type="topic", durable=True, auto_delete=False,
                    delivery_mode=2)


class Relay:
    def __init__(self, store: EventStore, amqp_uri: str, *, name: str = "relay",
                 registry: Registry = REGISTRY, subscriptions: list[Subscription] | None = None,
                 batch: int = 500, idle_sleep: float = 0.01, max_backoff: float = 5.0,
                 standby_poll: float = 1.0):
        self.store = store
        self.amqp_uri = amqp_uri
        self.name = name
        self.registry = registry
        self.subscriptions = SUBSCRIPTIONS if subscriptions is None else subscriptions
        self.batch = batch
        self.idle_sleep = idle_sleep
        self.max_backoff = max_backoff
        self.standby_poll = standby_poll
        self.log = tlog.get_logger(service="relay", relay=name)
        self.published = 0
        self.reconnects = 0            # broker connections opened after the first one
        self.leading = threading.Event()
        self._leader: psycopg.Connection | None = None
        self._connection: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._connected_once = False
        self._declared: set[str] = set()
        self._sent = 0                 # messages published on the current channel (its delivery tags)
        self._unconfirmed: set[int] = set()
        self._nacked = False

    # -- checkpoint ----------------------------------------------------------------------

    def checkpoint(self) -> int:
        with self.store.pool.connection() as c:
            return self._read_checkpoint(c)

    def _read_checkpoint(self, c) -> int:
        row = c.execute(_CHECKPOINT, (self.name,)).fetchone()
        return row[0] if row else 0

    def _save_checkpoint(self, c, position: int) -> None:
        c.execute("INSERT INTO chassis.checkpoints (name, position) VALUES (%s, %s) "
                  "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
                  "updated_at = now()", (self.name, position))

    def reset_checkpoint(self, position: int) -> None:
        """Move the checkpoint (operators: republish from ``position``; tools)."""
        with self.store.pool.connection() as c:
            self._save_checkpoint(c, position)

    # -- broker ----------------------------------------------------------------------------

    def _connect(self) -> kombu.Producer:
        if self._producer is None:
            # Publisher confirms on the channel, but not kombu's confirm_publish (which waits
            # for each message's confirm before the next): _confirmed sends a whole batch,
            # then collects its confirms.
            connection = kombu.Connection(self.amqp_uri, heartbeat=0, connect_timeout=5)
            self._connection = connection
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            # Every confirm reaches these, also one that arrives while the channel waits for
            # something else (a declaration's answer).
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.confirm_select()
            self._sent, self._unconfirmed, self._nacked = 0, set(), False
            self._producer = kombu.Producer(channel, serializer="json")
            if self._connected_once:
                self.reconnects += 1
                self.log.info("relay_reconnected", reconnects=self.reconnects)
            self._connected_once = True
            self._declared.clear()
            self._declare_subscriptions()
        return self._producer

    def _declare_subscriptions(self) -> None:
        """Declare every handler queue up front so no event waits on a consumer's first start."""
        channel = self._producer.channel
        for sub in list(self.subscriptions):
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
        """Publish one event; returns once the broker has confirmed it."""
        for _ in self._confirmed([event]):
            pass

    def _send(self, producer: kombu.Producer, event: RecordedEvent) -> None:
        exchange = event_exchange(self.registry.source_service(event.type))
        self._declare_exchange(exchange)
        headers = {"nameko.call_id_stack": [f"relay.{event.type}.{event.event_id}"]}
        if event.metadata.get("correlation_id"):
            headers["nameko.correlation_id"] = event.metadata["correlation_id"]
        # The body is serialised by kombu (JSON), exactly as Nameko's EventDispatcher does;
        # passing content_type here would make kombu send the dict unserialised.
        producer.publish(event.as_message(), exchange=exchange, routing_key=event.type,
                         delivery_mode=2, message_id=str(event.event_id), headers=headers)
        self._sent += 1

    def _confirmed(self, events: list[RecordedEvent]) -> Iterator[RecordedEvent]:
        """Publish ``events``, then yield each, in order, once the broker has confirmed it and
        every event before it: one wait for the confirms of a batch instead of one per event.
        A nack or a lost connection raises; what was yielded is confirmed."""
        producer = self._connect()
        first = self._sent + 1
        for event in events:
            self._send(producer, event)
            self._unconfirmed.add(self._sent)
        connection, ready = producer.channel.connection, 0
        while ready < len(events):
            if self._nacked:       # the broker could not take a message: publish it again
                raise MessageNacked()
            if first + ready in self._unconfirmed:
                connection.drain_events(timeout=CONFIRM_TIMEOUT)
                continue
            yield events[ready]
            ready += 1

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > tag}
        else:
            self._unconfirmed.discard(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked = True

    # -- the loop ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Seal, publish one batch, move the checkpoint. Returns the number published.

        When publishing fails part-way, the checkpoint still moves past what the broker has
        confirmed, so a reconnect republishes only the unconfirmed rest."""
        position, head = self._on_checkpoint_conn(self._seal_and_look)
        if head <= position:
            return 0          # the idle poll (100 Hz): nothing to read
        events = self.store.read_all(position, self.batch, reveal=False)
        done = None
        try:
            for event in self._confirmed(events):
                self.published += 1
                done = event.global_position
        finally:
            if done is not None:
                self._on_checkpoint_conn(lambda c: self._save_checkpoint(c, done))
        return len(events)

    def _seal_and_look(self, c) -> tuple[int, int]:
        """Seal (as ``EventStore.seal``), then read the checkpoint and the head of the global
        log in one statement: an idle poll is two round trips instead of three (seal,
        checkpoint, an empty read of the log). Not all in one statement: its snapshot would
        not see what the seal in it sealed. Not a psycopg pipeline either: measured, entering
        and leaving pipeline mode cost more CPU than the round trip it saved."""
        c.execute("SELECT eventstore.seal(%s)", (SEAL_BATCH,))
        return c.execute(_LOOK, (self.name,)).fetchone()

    def _on_checkpoint_conn(self, fn):
        """The leader reads and moves its checkpoint on its lock connection: should that
        connection (and with it the lock) be gone, the checkpoint cannot move."""
        if self._leader is not None:
            return fn(self._leader)
        with self.store.pool.connection() as c:
            return fn(c)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, surviving broker and database restarts."""
        backoff = 0.1
        while not stop.is_set():
            try:
                with psycopg.connect(self.store.pool.conninfo, autocommit=True,
                                     connect_timeout=5) as leader:
                    if not self._await_leadership(leader, stop):
                        break
                    self._leader = leader
                    self.leading.set()
                    self.log.info("relay_leading", checkpoint=self._read_checkpoint(leader))
                    backoff = 0.1
                    self._lead(stop)
            except psycopg.Error as exc:
                # The database is gone or our lock connection died (the lock with it): stop
                # publishing, then queue up for leadership again.
                self.log.warning("relay_database_error", error=f"{type(exc).__name__}: {exc}",
                                 backoff=backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                self._leader = None
                self.leading.clear()
        self._disconnect()

    def _await_leadership(self, leader: psycopg.Connection, stop: threading.Event) -> bool:
        while not stop.is_set():
            if leader.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                              (_LEADER_LOCK_CLASS, self.name)).fetchone()[0]:
                return True
            stop.wait(self.standby_poll)   # another relay of this name leads; stand by
        return False

    def _lead(self, stop: threading.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                n = self.run_once()
            except psycopg.Error:
                raise
            except Exception as exc:
                # Broker restarted, connection cut (ConnectionForced), channel closed, confirm
                # lost: none may end the relay. Reconnect with backoff; unconfirmed events
                # are published again.
                self.log.warning("relay_broker_error", error=f"{type(exc).__name__}: {exc}",
                                 backoff=backoff)
                self._disconnect()
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.1
            if n == 0:
                stop.wait(self.idle_sleep)


def pending_count(store: EventStore) -> int:
    with store.pool.connection() as c:
        return c.execute("SELECT count(*) FROM eventstore.events e WHERE NOT EXISTS "
                         "(SELECT 1 FROM eventstore.log l WHERE l.event_seq = e.id)").fetchone()[0]


def wait_until_published(relay: Relay, timeout: float = 10.0) -> None:
    """Drive ``relay`` until everything committed is published (tests and tools)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.run_once() == 0 and relay.store.seal() == 0:
            if pending_count(relay.store) == 0 and relay.run_once() == 0:
                return
        time.sleep(0.01)
    raise TimeoutError("relay did not catch up")
