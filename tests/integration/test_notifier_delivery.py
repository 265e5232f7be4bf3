"""The notifier over real RabbitMQ, PostgreSQL and a real SMTP server (aiosmtpd) on loopback
(DESIGN.md "Mail"; SPEC R-INI-5, R-MAIL-3).

``token_issued`` events are appended to the store exactly as otp_service appends them and
reach the notifier through the real relay. The SMTP server runs in a process of its own (it
is asyncio; the test process is eventlet), so "the relay is down" is simply that process
stopped and "up again" a new one on the same port.
"""
from __future__ import annotations

import email
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from email import policy
from pathlib import Path

import eventlet
import pytest
from nameko.containers import ServiceContainer
from nameko.extensions import DependencyProvider
from nameko.standalone.rpc import ClusterRpcProxy

from contracts.errors import NotFound
from contracts.events import Actor, Metadata, NewEvent
from notifier.service import NotifierService
from services import topology
from services.eventstore import ANY
from services.relay import Relay
from tests import vhosts

# -- a real SMTP server in its own process ---------------------------------------------------------------

_SINK = r'''
import asyncio, os, sys, time
from aiosmtpd.controller import Controller

directory, port = sys.argv[1], int(sys.argv[2])

class Sink:
    count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # A relay that refuses a recipient for good (5xx).
        if address.endswith("@refused.example"):
            return "550 5.1.1 <%s>: Recipient address rejected" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        Sink.count += 1
        name = "%d-%d-%d.eml" % (time.time_ns(), os.getpid(), Sink.count)
        head = ("X-Envelope-From: %s\r\nX-Envelope-To: %s\r\n"
                % (envelope.mail_from, ",".join(envelope.rcpt_tos))).encode()
        tmp = os.path.join(directory, "." + name)
        with open(tmp, "wb") as f:
            f.write(head + envelope.original_content)
        os.rename(tmp, os.path.join(directory, name))      # readers never see half a mail
        return "250 Message accepted for delivery"

controller = Controller(Sink(), hostname="127.0.0.1", port=port)
controller.start()
print("READY", flush=True)
sys.stdin.read()          # until the test closes our stdin
controller.stop()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """aiosmtpd on 127.0.0.1:<port>, storing each mail as one file (envelope on top)."""

    def __init__(self, directory: str, port: int | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "SmtpSink":
        self.proc = subprocess.Popen([sys.executable, "-c", _SINK, self.directory, str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "READY", f"SMTP sink did not start: {line!r}"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        # Nothing listens any more: a connection is refused.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", self.port)) != 0

    def messages(self) -> list[email.message.EmailMessage]:
        out = []
        for path in sorted(Path(self.directory).glob("[!.]*.eml")):
            out.append(email.message_from_bytes(path.read_bytes(), policy=policy.default))
        return out

    def with_message_id(self, message_id: str) -> list:
        return [m for m in self.messages() if m["Message-ID"] == message_id]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        eventlet.sleep(interval)


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


class HandledEvents(DependencyProvider):
    """Records each finished event-handler worker (tests wait on it, never on the clock)."""
    results: list = []

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        if worker_ctx.entrypoint.method_name.startswith("on_"):
            body = worker_ctx.args[0] if worker_ctx.args else {}
            HandledEvents.results.append((worker_ctx.entrypoint.method_name, body.get("event_id"), exc_info))

    @classmethod
    def count(cls, event_id) -> int:
        return sum(1 for _, eid, _ in cls.results if eid == str(event_id))


class ObservedNotifier(NotifierService):
    handled = HandledEvents()


# -- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def system(settings, store):
    vhost = f"tsunagi_notifier_{uuid.uuid4().hex[:10]}"
    if not vhosts.create(vhost):
        pytest.fail("could not create a RabbitMQ vhost with rabbitmqctl")
    amqp_uri = vhosts.uri_for(settings.amqp_uri, vhost)
    maildir = tempfile.mkdtemp(prefix="tsunagi-mail-")
    sink = SmtpSink(maildir).start()
    config = {"AMQP_URI": amqp_uri, "max_workers": 10, "serializer": "json",
              "DATABASE_URL": settings.database_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": sink.port,
              "SMTP_TIMEOUT_SECONDS": 5, "MAIL_RETRY_BASE_SECONDS": 0.2, "MAIL_RETRY_MAX_SECONDS": 1,
              "MAIL_RETRY_TICK_SECONDS": 0.1, "MAIL_MAX_ATTEMPTS": 30}
    relay, stop, thread = start_relay(store, amqp_uri)
    container = ServiceContainer(ObservedNotifier, config)
    container.start()
    try:
        yield {"config": config, "sink": sink, "relay": relay}
    finally:
        container.stop()
        stop.set()
        thread.join(10)
        sink.stop()
        vhosts.delete(vhost)


@pytest.fixture
def notifier(system):
    with ClusterRpcProxy(system["config"], timeout=30) as proxy:
        yield proxy.notifier


def issue_token_event(store, address: str) -> tuple[uuid.UUID, str]:
    """Append ``token_issued`` as otp_service does; returns (event id, customer number)."""
    customer = f"{uuid.uuid4().int % 10**10:010d}"
    application_id = str(uuid.uuid4())
    event = NewEvent("token_issued", {"application_id": application_id, "customer_number": customer,
                                      "service_id": "AMBK000117", "user_id": "ABCDEFGHJKMNPQRS",
                                      "email": address, "issued_at": "2025-01-06T09:00:00+09:00"})
    store.append(f"otpapp-{application_id}", [event], ANY,
                 Metadata(actor=Actor("system", "otp_service"), service="otp_service"), subject=customer)
    return event.event_id, customer


def status_of(notifier, event_id) -> dict:
    """The mail's outbox status; an empty dict while it is not queued yet."""
    try:
        return notifier.mail_status(str(event_id))
    except NotFound:
        return {}


def mail_events(store, event_id) -> list[str]:
    return [e.type for e in store.read_stream(f"mail-{event_id}")]


# -- tests ------------------------------------------------------------------------------------------------

def test_token_mail_is_sent_once_even_when_the_event_is_redelivered_R_INI_5(system, store, notifier):
    sink, relay = system["sink"], system["relay"]
    event_id, customer = issue_token_event(store, "hanako.sato@example.co.jp")
    message_id = f"<{event_id}@tsunagi.am-bk.co.jp>"
    (mail,) = wait_for(lambda: sink.with_message_id(message_id), what="the token mail")

    assert mail["Subject"] == "【青森みちのく銀行】トークン発行のご案内"
    assert mail["From"].addresses[0].addr_spec == "no-reply@otp-auth.net"          # R-MAIL-3
    assert mail["From"].addresses[0].display_name == "青森みちのく銀行"
    assert mail["X-Envelope-From"] == "no-reply@otp-auth.net"
    assert mail["X-Envelope-To"] == "hanako.sato@example.co.jp"
    body = mail.get_body(("plain",)).get_content()
    assert "AMBK000117" in body and "ABCDEFGHJKMNPQRS" in body
    wait_for(lambda: status_of(notifier, event_id).get("status") == "sent", what="mail_sent")
    assert mail_events(store, event_id) == ["mail_queued", "mail_sent"]

    # Redelivery: the relay publishes the very same event again (at-least-once) …
    (recorded,) = [e for e in store.read_stream(f"otpapp-{recorded_app(store, event_id)}") if e.event_id == event_id]
    relay.publish(recorded)
    wait_for(lambda: HandledEvents.count(event_id) >= 2, what="the redelivered event to be handled")
    # … and once more with the handler's tracking row gone: the mail's own stream still knows.
    with store.pool.connection() as conn:
        conn.execute("DELETE FROM chassis.handled_events WHERE handler = 'notifier.on_token_issued' "
                     "AND event_id = %s", (event_id,))
    relay.publish(recorded)
    wait_for(lambda: HandledEvents.count(event_id) >= 3, what="the third delivery to be handled")
    assert all(exc is None for _, eid, exc in HandledEvents.results if eid == str(event_id))

    assert len(sink.with_message_id(message_id)) == 1
    assert mail_events(store, event_id) == ["mail_queued", "mail_sent"]
    status = notifier.mail_status(str(event_id))
    assert (status["status"], status["attempts"], status["message_id"]) == ("sent", 1, message_id)


def recorded_app(store, event_id) -> str:
    with store.pool.connection() as conn:
        (stream,) = conn.execute("SELECT stream_name FROM eventstore.events WHERE event_id = %s",
                                 (event_id,)).fetchone()
    return stream.split("-", 1)[1]


def test_smtp_down_then_up_delivers_exactly_once(system, store, notifier):
    sink = system["sink"]
    sink.stop()
    try:
        event_id, _ = issue_token_event(store, "jiro@example.ne.jp")
        # Two failed attempts at least: the first one right after queuing, then a retry.
        wait_for(lambda: status_of(notifier, event_id).get("attempts", 0) >= 2, what="failed attempts")
        status = notifier.mail_status(str(event_id))
        assert status["status"] == "queued" and "Connection" in status["last_error"]
    finally:
        sink.start()
    message_id = f"<{event_id}@tsunagi.am-bk.co.jp>"
    wait_for(lambda: sink.with_message_id(message_id), what="the mail after the relay came back")
    wait_for(lambda: status_of(notifier, event_id).get("status") == "sent", what="mail_sent")
    types = mail_events(store, event_id)
    assert types[0] == "mail_queued" and types[-1] == "mail_sent"
    assert set(types[1:-1]) == {"mail_deferred"} and len(types) >= 4
    # A later tick finds nothing due: still exactly one mail.
    wait_for(lambda: HandledEvents.count(event_id) >= 1, what="the handler")
    assert len(sink.with_message_id(message_id)) == 1
    assert types == mail_events(store, event_id)


def test_permanent_refusal_ends_as_mail_failed_visible_to_operators(system, store, notifier):
    sink = system["sink"]
    event_id, _ = issue_token_event(store, "nobody@refused.example")
    wait_for(lambda: status_of(notifier, event_id).get("status") == "failed", what="mail_failed")
    (failed,) = [e for e in store.read_stream(f"mail-{event_id}") if e.type == "mail_failed"]
    assert failed.data["permanent"] is True and failed.data["attempts"] == 1
    assert "550" in failed.data["error"]
    assert "nobody@refused.example" not in failed.data["error"]     # never a full address
    assert sink.with_message_id(f"<{event_id}@tsunagi.am-bk.co.jp>") == []
    # The failure is in the log for operators and auditors, once.
    with store.pool.connection() as conn:
        count = conn.execute("SELECT count(*) FROM eventstore.events WHERE stream_name = %s AND "
                             "event_type = 'mail_failed'", (f"mail-{event_id}",)).fetchone()[0]
    assert count == 1


def test_addresses_are_personal_fields_in_the_log(system, store, notifier):
    event_id, customer = issue_token_event(store, "saburo@example.com")
    wait_for(lambda: status_of(notifier, event_id).get("status") == "sent", what="mail_sent")
    with store.pool.connection() as conn:
        raw = conn.execute("SELECT data::text FROM eventstore.events WHERE stream_name = %s AND "
                           "event_type = 'mail_queued'", (f"mail-{event_id}",)).fetchone()[0]
    assert "saburo@example.com" not in raw and "ABCDEFGHJKMNPQRS" not in raw
    (queued,) = [e for e in store.read_stream(f"mail-{event_id}") if e.type == "mail_queued"]
    assert queued.data["to"] == ["saburo@example.com"]


def test_outbox_rebuilds_by_replay(system, store, notifier):
    from notifier import projection

    event_id, _ = issue_token_event(store, "shiro@example.jp")
    wait_for(lambda: status_of(notifier, event_id).get("status") == "sent", what="mail_sent")
    query = ("SELECT mail_id, template, customer_number, source_event_id, status, attempts, next_attempt_at, "
             "last_error, message_id, queued_at, sent_at, stream_version FROM notifier.outbox ORDER BY mail_id")
    with store.pool.connection() as conn:
        before = conn.execute(query).fetchall()
    assert projection.rebuild(store) >= len(before) > 0
    with store.pool.connection() as conn:
        assert conn.execute(query).fetchall() == before
