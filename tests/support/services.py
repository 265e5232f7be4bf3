"""Real services in in-process Nameko containers, fed by a relay of the test module's own."""
from __future__ import annotations

import tempfile
import threading
import uuid
from contextlib import contextmanager
from typing import Iterator

import eventlet
from nameko.containers import ServiceContainer
from nameko.runners import ServiceRunner

from services import topology
from services.relay import Relay
from tests import vhosts
from tests.support.net import free_port
from tests.support.smtp import SmtpSink


def start_relay(store, amqp_uri: str) -> tuple[Relay, threading.Event, threading.Thread]:
    """A relay of this module's own (own checkpoint, starting at the current head: events of
    other suites in the session database are not published again)."""
    topology.load_contracts()
    relay = Relay(store, amqp_uri, name=f"relay-{uuid.uuid4().hex[:8]}", idle_sleep=0.01)
    store.seal_all()
    relay.reset_checkpoint(store.head()[0])
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    return relay, stop, thread


@contextmanager
def running(config: dict, services) -> Iterator[ServiceRunner]:
    """``services`` in one runner on ``config`` for as long as the block runs (no relay: RPC only,
    or events the test publishes itself)."""
    runner = ServiceRunner(config)
    for cls in services:
        runner.add_service(cls)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@contextmanager
def running_with_relay(store, config: dict, services) -> Iterator[Relay]:
    """``services`` started in containers of their own on ``config`` (its AMQP_URI is the
    relay's too) for as long as the block runs; yields the relay."""
    relay, stop, thread = start_relay(store, config["AMQP_URI"])
    containers = [ServiceContainer(cls, config) for cls in services]
    for container in containers:
        container.start()
    try:
        yield relay
    finally:
        # Stopped side by side: each waits a second or two for its consumers to wind down.
        list(eventlet.GreenPool().imap(lambda container: container.stop(), containers))
        stop.set()
        thread.join(10)


@contextmanager
def system_with_mail(settings, store, services, *, vhost_prefix: str, **config) -> Iterator[dict]:
    """``services`` (the gateway among them) on a RabbitMQ vhost of their own, with a relay and an
    SMTP sink as the mail relay; ``config`` adds to (or overrides) the base configuration.
    Yields {"config", "sink", "web_port"}."""
    with vhosts.own(settings.amqp_uri, vhost_prefix) as amqp_uri:
        sink = SmtpSink(tempfile.mkdtemp(prefix="tsunagi-mail-")).start()
        web_port = free_port()
        config = {**settings.nameko_config(), "AMQP_URI": amqp_uri, "max_workers": 10,
                  "WEB_SERVER_ADDRESS": f"127.0.0.1:{web_port}", "DATABASE_URL": settings.database_url,
                  "SMTP_HOST": "127.0.0.1", "SMTP_PORT": sink.port, **config}
        try:
            with running_with_relay(store, config, services):
                yield {"config": config, "sink": sink, "web_port": web_port}
        finally:
            sink.stop()
