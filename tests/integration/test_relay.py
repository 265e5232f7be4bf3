"""R-PLT-1, R-PLT-2: the relay (event log → RabbitMQ) and idempotent handlers, on a real broker
and database.

Every event reaches its queue in order as a Nameko event; none is lost when the relay's broker
connection is cut or the broker restarts mid-stream; the checkpoint survives a relay restart;
one relay of a name leads at a time; and a redelivered event has no second effect in a real
Nameko service (issue 2 §6, DESIGN.md "The log is the outbox").
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from urllib.parse import unquote, urlsplit

import eventlet
import kombu
import psycopg
import pytest
from kombu import Queue
from nameko.containers import ServiceContainer

import services.handlers as handlers
from contracts.errors import ConcurrencyConflict
from contracts.events import Actor, Metadata, NewEvent, register
from contracts.subscriptions import SUBSCRIPTIONS, Subscription, subscribe
from services import db
from services.dependencies import EventStoreProvider
from services.eventstore import ANY
from services.handlers import handled_once, handles
from services.relay import Relay, event_exchange, pending_count, wait_until_published
from tests.conftest import unique

META = Metadata(actor=Actor("system", "relay-test"), correlation_id="corr-relay-test", service="test")


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        eventlet.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)


def vhost_of(uri: str) -> str:
    return unquote(urlsplit(uri).path[1:]) or "/"


@pytest.fixture
def amqp_uri(settings):
    return settings.amqp_uri


@pytest.fixture
def topic(amqp_uri):
    """A unique event type of a unique source service, with a queue the relay pre-declares
    (named as Nameko would name a SERVICE_POOL handler's). Removed from the broker afterwards."""
    source, event_type = unique("relaysrc"), unique("thing_happened_")
    register(event_type, source)
    sub = Subscription(source, event_type, unique("relaytest"), "collect")
    yield sub
    with kombu.Connection(amqp_uri) as conn:
        ch = conn.channel()
        Queue(sub.queue_name)(ch).delete()
        event_exchange(source)(ch).delete()


def drain(amqp_uri: str, queue_name: str) -> list[kombu.Message]:
    out = []
    with kombu.Connection(amqp_uri) as conn:
        bound = Queue(queue_name)(conn.channel())
        while (message := bound.get(no_ack=True)) is not None:
            out.append(message)
    return out


def queued(amqp_uri: str, queue_name: str) -> int:
    with kombu.Connection(amqp_uri) as conn:
        return conn.channel().queue_declare(queue_name, passive=True).message_count


def append_events(store, event_type: str, n: int, stream: str | None = None) -> list:
    stream = stream or f"thing-{unique()}"
    events = [NewEvent(event_type, {"i": i}) for i in range(n)]
    for e in events:
        store.append(stream, [e], ANY, META)
    return events


def ids(messages) -> list[str]:
    return [m.payload["event_id"] for m in messages]


class RunningRelay:
    """``relay.run(stop)`` in a thread of its own, stopped (and joined) on exit."""

    def __init__(self, relay: Relay):
        self.relay = relay
        self.stop = threading.Event()
        self.thread = threading.Thread(target=relay.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.relay

    def __exit__(self, *exc):
        if self.thread.ident is None:
            return
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "relay did not stop"


def caught_up(relay: Relay) -> bool:
    relay.store.seal()
    return pending_count(relay.store) == 0 and relay.checkpoint() == relay.store.head()[0]


# -- delivery ---------------------------------------------------------------------------------

def test_relay_publishes_every_event_in_order_as_a_nameko_event(scratch_store, amqp_uri, topic):
    relay = Relay(scratch_store, amqp_uri, name=unique("relay"), subscriptions=[topic])
    appended = append_events(scratch_store, topic.event_type, 25)
    wait_until_published(relay)
    assert relay.checkpoint() == 25

    messages = drain(amqp_uri, topic.queue_name)
    assert ids(messages) == [str(e.event_id) for e in appended]
    recorded = scratch_store.read_all(0)
    for message, event in zip(messages, recorded):
        assert message.payload == event.as_message()          # the handler's argument
        assert message.delivery_info["exchange"] == f"{topic.source_service}.events"
        assert message.delivery_info["routing_key"] == topic.event_type
        assert message.content_type == "application/json"
        assert message.properties["delivery_mode"] == 2          # persistent
        assert message.headers["nameko.correlation_id"] == META.correlation_id
        assert message.properties["message_id"] == str(event.event_id)
    assert [m.payload["global_position"] for m in messages] == list(range(1, 26))


def _broker_restart_possible(amqp_uri: str) -> str | None:
    """A full broker restart would cut every other user of this shared broker; only do it when
    nobody outside this test session's virtual host is connected."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl not available"
    listing = rabbitmqctl("list_connections", "vhost", "--no-table-headers")
    if listing.returncode != 0:
        return f"rabbitmqctl failed: {listing.stderr.strip()}"
    foreign = [v for v in listing.stdout.split() if v != vhost_of(amqp_uri)]
    if vhost_of(amqp_uri) == "/" or foreign:
        return f"other clients are connected to the broker ({len(foreign)}); not restarting it"
    return None


def _cut_relay_connection(relay: Relay) -> None:
    """Close exactly the relay's AMQP connection from the broker side (ConnectionForced)."""
    port = relay._connection.connection.sock.getsockname()[1]
    listing = rabbitmqctl("list_connections", "pid", "peer_port", "--no-table-headers")
    pids = [line.split("\t")[0] for line in listing.stdout.splitlines()
            if line.split("\t")[-1] == str(port)]
    assert pids, f"relay connection (port {port}) not found: {listing.stdout!r}"
    closed = rabbitmqctl("close_connection", pids[0], "test: cut the relay mid-stream")
    assert closed.returncode == 0, closed.stderr


def _restart_broker() -> None:
    try:
        assert rabbitmqctl("stop_app").returncode == 0
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


@pytest.mark.parametrize("outage", ["connection_cut", "broker_restart"])
def test_relay_loses_nothing_when_the_broker_goes_away_mid_stream(scratch_store, amqp_uri, topic, outage):
    """Events appended before, during and after the outage all arrive (at least once)."""
    if outage == "broker_restart" and (reason := _broker_restart_possible(amqp_uri)):
        pytest.skip(reason)
    relay = Relay(scratch_store, amqp_uri, name=unique("relay"), subscriptions=[topic],
                  max_backoff=0.5)
    appended: list = []
    enough = threading.Event()

    def writer():   # appends before, during and after the outage, until told to stop
        i = 0
        while not enough.is_set():
            appended.extend(append_events(scratch_store, topic.event_type, 1, stream=f"thing-w{i % 7}"))
            i += 1
            eventlet.sleep(0.005)

    try:
        with RunningRelay(relay):
            w = eventlet.spawn(writer)
            wait_for(lambda: relay.published >= 30 and relay._connection is not None, "first events")
            if outage == "connection_cut":
                _cut_relay_connection(relay)
            else:
                _restart_broker()
            during = len(appended)
            wait_for(lambda: relay.reconnects >= 1, "the relay to notice the outage and reconnect")
            wait_for(lambda: len(appended) > during + 30, "more events after the outage")
            enough.set()
            w.wait()
            wait_for(lambda: caught_up(relay), "relay to catch up", timeout=30)
    finally:
        enough.set()
        if outage == "broker_restart":      # whatever happened, leave the broker running
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")

    received = ids(drain(amqp_uri, topic.queue_name))
    assert set(received) == {str(e.event_id) for e in appended}
    # At-least-once: an event whose confirm was lost is published again, never skipped.
    assert len(received) - len(set(received)) <= relay.batch


def test_checkpoint_survives_a_relay_restart(scratch_store, amqp_uri, topic):
    name = unique("relay")
    first = append_events(scratch_store, topic.event_type, 8)
    relay = Relay(scratch_store, amqp_uri, name=name, subscriptions=[topic])
    with RunningRelay(relay):
        wait_for(lambda: caught_up(relay), "first relay")
    assert relay.published == 8

    second = append_events(scratch_store, topic.event_type, 5)
    again = Relay(scratch_store, amqp_uri, name=name, subscriptions=[topic])
    assert again.checkpoint() == 8
    with RunningRelay(again):
        wait_for(lambda: caught_up(again), "second relay")
    assert again.published == 5
    assert ids(drain(amqp_uri, topic.queue_name)) == [str(e.event_id) for e in first + second]


def test_one_relay_of_a_name_leads_and_a_standby_takes_over(scratch_store, amqp_uri, topic, settings,
                                                            scratch_db):
    name = unique("relay")
    a = Relay(scratch_store, amqp_uri, name=name, subscriptions=[topic], standby_poll=0.05,
              max_backoff=0.2)
    b = Relay(scratch_store, amqp_uri, name=name, subscriptions=[topic], standby_poll=0.05,
              max_backoff=0.2)
    appended = append_events(scratch_store, topic.event_type, 10)
    run_a, run_b = RunningRelay(a), RunningRelay(b)
    try:
        with run_a:
            wait_for(lambda: a.leading.is_set(), "a to lead")
            run_b.__enter__()        # b starts second and stands by
            wait_for(lambda: caught_up(a), "leader to publish")
            appended += append_events(scratch_store, topic.event_type, 10)
            wait_for(lambda: caught_up(a), "leader to publish more")
            assert not b.leading.is_set()
            assert (a.published, b.published) == (20, 0)   # the standby never published
        # The leader stopped: the standby takes over where the checkpoint stands.
        wait_for(lambda: b.leading.is_set(), "standby to take over")
        appended += append_events(scratch_store, topic.event_type, 7)
        wait_for(lambda: caught_up(b), "standby to publish")
        assert b.published == 7

        # Its lock connection dies (the lock with it): it steps down, reconnects, leads again.
        pid = b._leader.info.backend_pid
        with psycopg.connect(db.admin_url_for(settings, db.dbname_of(scratch_db)), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        appended += append_events(scratch_store, topic.event_type, 3)
        wait_for(lambda: b.leading.is_set() and b._leader is not None
                 and b._leader.info.backend_pid != pid and caught_up(b), "relay to lead again")
    finally:
        run_b.__exit__()
    published = ids(drain(amqp_uri, topic.queue_name))
    # Nothing lost and the order kept. Events published between the lock's death and the
    # relay noticing it may go out again from the last checkpoint (at-least-once; handlers
    # are idempotent): at most the 3 appended after the kill.
    assert list(dict.fromkeys(published)) == [str(e.event_id) for e in appended]
    assert len(published) - len(set(published)) <= 3


# -- idempotent handlers ----------------------------------------------------------------------

@pytest.fixture
def effects_table(settings, scratch_db):
    """A read-model table in the scratch database the handlers write their effect to."""
    table = unique("effects_")
    with psycopg.connect(db.admin_url_for(settings, db.dbname_of(scratch_db)), autocommit=True) as admin:
        admin.execute(f"CREATE TABLE public.{table} (event_id uuid NOT NULL, amount int)")
        admin.execute(f"GRANT SELECT, INSERT ON public.{table} TO tsunagi_service")
    return table


def effects(store, table: str, event) -> int:
    with store.pool.connection() as c:
        return c.execute(f"SELECT count(*) FROM public.{table} WHERE event_id = %s",
                         (event.event_id,)).fetchone()[0]


def test_handled_once_rolls_back_the_tracking_row_with_the_effect(scratch_store, effects_table):
    stream = f"thing-{unique()}"
    scratch_store.append(stream, [NewEvent("paid", {"amount": 5})], ANY, META)
    (event,) = scratch_store.read_stream(stream)

    def effect(conn, fail=False):
        conn.execute(f"INSERT INTO public.{effects_table} VALUES (%s, 5)", (event.event_id,))
        if fail:
            raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError):
        handled_once(scratch_store, "svc.on_paid", event, lambda c: effect(c, fail=True))
    assert effects(scratch_store, effects_table, event) == 0
    assert handled_once(scratch_store, "svc.on_paid", event, effect)[0] is True
    assert handled_once(scratch_store, "svc.on_paid", event, effect)[0] is False
    assert handled_once(scratch_store, "other.on_paid", event, effect)[0] is True  # per handler
    assert effects(scratch_store, effects_table, event) == 2


def test_handler_retries_a_transient_conflict(scratch_store, effects_table):
    stream = f"thing-{unique()}"
    scratch_store.append(stream, [NewEvent("paid", {"amount": 5})], ANY, META)
    (event,) = scratch_store.read_stream(stream)
    attempts = []

    class Service:
        name = "retrying"
        store = scratch_store

        @handles("payments", "paid")
        def on_paid(self, event, conn):
            conn.execute(f"INSERT INTO public.{effects_table} VALUES (%s, 1)", (event.event_id,))
            attempts.append(1)
            if len(attempts) < 3:
                raise ConcurrencyConflict(stream="x")

    Service().on_paid(event.as_message())
    assert len(attempts) == 3
    assert effects(scratch_store, effects_table, event) == 1   # the failed attempts rolled back


def test_redelivered_event_has_no_second_effect_in_a_nameko_service(
        scratch_store, scratch_db, amqp_uri, effects_table, monkeypatch):
    """A real Nameko service with a @handles method; the queue is declared by the relay from
    contracts.subscriptions, so an event published before the service ever ran is handled
    when it starts; publishing the same event again has no second effect."""
    source, event_type, service_name = unique("payments"), unique("payment_received_"), unique("ledger")
    register(event_type, source)
    table = effects_table

    class Ledger:
        name = service_name
        store = EventStoreProvider(max_size=4)

        @handles(source, event_type)
        def on_payment(self, event, conn):
            conn.execute(f"INSERT INTO public.{table} VALUES (%s, %s)", (event.event_id, event.data["i"]))

    calls = []

    def spy(store, handler, event, effect):
        ran, result = handled_once(store, handler, event, effect)
        calls.append((event.event_id, ran))
        return ran, result

    monkeypatch.setattr(handlers, "handled_once", spy)
    sub = subscribe(source, event_type, service_name, "on_payment")
    container = ServiceContainer(Ledger, {"AMQP_URI": amqp_uri, "DATABASE_URL": scratch_db})
    try:
        relay = Relay(scratch_store, amqp_uri, name=unique("relay"))   # all declared subscriptions
        (early,) = append_events(scratch_store, event_type, 1)
        wait_until_published(relay)
        assert queued(amqp_uri, sub.queue_name) == 1     # kept although no consumer ever ran

        container.start()
        wait_for(lambda: effects(scratch_store, table, early) == 1, "the early event's effect")

        relay.reset_checkpoint(0)                        # publish everything again …
        (later,) = append_events(scratch_store, event_type, 1)
        wait_until_published(relay)
        assert relay.published == 3
        wait_for(lambda: effects(scratch_store, table, later) == 1, "the later event's effect")
        container.stop()                                 # waits for running workers

        assert effects(scratch_store, table, early) == 1
        assert [ran for event_id, ran in calls if event_id == early.event_id] == [True, False]
        assert [ran for event_id, ran in calls if event_id == later.event_id] == [True]
    finally:
        container.kill() if container.started else None
        SUBSCRIPTIONS.remove(sub)
        with kombu.Connection(amqp_uri) as conn:
            ch = conn.channel()
            Queue(sub.queue_name)(ch).delete()
            event_exchange(source)(ch).delete()
