"""The notifier over real RabbitMQ, PostgreSQL and a real SMTP server (aiosmtpd) on loopback
(DESIGN.md "Mail"; SPEC R-INI-5, R-MAIL-3).

``token_issued`` events are appended to the store exactly as otp_service appends them and
reach the notifier through the real relay. The SMTP server runs in a process of its own (it
is asyncio; the test process is eventlet), so "the relay is down" is simply that process
stopped and "up again" a new one on the same port.
"""
from __future__ import annotations

import tempfile
import uuid

import pytest
from nameko.extensions import DependencyProvider
from nameko.standalone.rpc import ClusterRpcProxy

from contracts.errors import NotFound
from contracts.events import Actor, Metadata, NewEvent
from notifier.service import NotifierService
from services.eventstore import ANY
from tests import vhosts
from tests.support.services import running_with_relay
from tests.support.smtp import FAST_MAIL_RETRIES, SmtpSink
from tests.support.waiting import wait_for


# -- observing the notifier ------------------------------------------------------------------------------

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
    with vhosts.own(settings.amqp_uri, "tsunagi_notifier_") as amqp_uri:
        sink = SmtpSink(tempfile.mkdtemp(prefix="tsunagi-mail-")).start()
        config = {"AMQP_URI": amqp_uri, "max_workers": 10, "serializer": "json",
                  "DATABASE_URL": settings.database_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": sink.port,
                  "SMTP_TIMEOUT_SECONDS": 5, "MAIL_MAX_ATTEMPTS": 30, **FAST_MAIL_RETRIES}
        try:
            with running_with_relay(store, config, [ObservedNotifier]) as relay:
                yield {"config": config, "sink": sink, "relay": relay}
        finally:
            sink.stop()


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


def test_database_lost_after_the_smtp_accept_still_records_one_sent_mail_R_INI_5(system, store):
    """The SMTP server has accepted the mail, and the database goes away before ``mail_sent``
    is recorded. The notifier waits the outage out and records it; the timer must not send the
    mail a second time (the soak once saw exactly that after a database outage)."""
    sink = system["sink"]
    sink.hold_replies(True)
    try:
        event_id, _ = issue_token_event(store, "saburo@example.ne.jp")
        message_id = f"<{event_id}@tsunagi.am-bk.co.jp>"
        wait_for(lambda: sink.with_message_id(message_id), what="the mail stored, its 250 held back")
        with store.pool.connection() as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        store.pool.check()          # the test's own pooled connections died too
        assert killed >= 1
    finally:
        sink.hold_replies(False)
    # Read from the store: an RPC now may meet one of the notifier's own dead pooled
    # connections and answer with an error, which is not what this test is about.
    wait_for(lambda: mail_events(store, event_id)[-1] == "mail_sent", what="mail_sent")
    assert mail_events(store, event_id) == ["mail_queued", "mail_sent"]
    with store.pool.connection() as conn:
        assert conn.execute("SELECT status, attempts FROM notifier.outbox WHERE message_id = %s",
                            (message_id,)).fetchone() == ("sent", 1)
    assert len(sink.with_message_id(message_id)) == 1


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
