"""The ``notifier`` Nameko service: mail delivery (DESIGN.md "Mail"; SPEC R-INI-5, R-MAIL-1…5).

Mails: 「トークン発行のご案内」 (``token_issued``), the mail notification password
(``mail_otp_mail_requested``: registered address + select addresses chosen to receive it, or
only a destination being confirmed), the 取引受付メール (``operation_authorized``) and the
removal notice to a removed select address. The address book (registered address from
identity's ``legacy_customer_imported``; select addresses, ``notifier.select_email``) decides
the recipients.

An event that causes mail is turned into ``MailOrder``s (``notifier.templates``); each order
becomes one ``mail-<mail_id>`` stream whose first event, ``mail_queued``, is written in the same
transaction as the handler's tracking row. Right after that commits, the mail is sent once;
whatever did not go out (relay down, 4xx, the process died) is picked up by the retry timer
when its backoff is over. Every outcome is an event: ``mail_sent``, ``mail_deferred``,
``mail_failed`` (given up: visible to operators in the log and the outbox).

Exactly once: SMTP is spoken only for a mail whose stream says ``queued``, by the one sender
holding its lease in ``notifier.outbox``. The one window left — the relay accepted the mail but
the process died before ``mail_sent`` was stored — resends after the lease ran out, with the
same Message-ID (derived from the event id), so the duplicate is recognisable as such.
"""
from __future__ import annotations

import functools
import os
import re

import psycopg
from nameko.rpc import rpc as nameko_rpc
from nameko.timer import Timer

from contracts import notifier as contract
from contracts.errors import ConcurrencyConflict, DomainError, NotFound
from contracts.events import Metadata, RecordedEvent
from notifier import addresses, addresses_projection, outbox, projection, smtp, templates
from notifier.config import MailConfig
from notifier.mail import TemplateError, mail_id_for, message_id_for, render
from services.dependencies import Clock, EventStoreProvider, Logger
from services.eventstore import NO_STREAM
from services.handlers import event_handler, handles, retrying, run_handler
from services.logging import mask_email
from services.ping import PingMixin
from notifier.select_email import SelectEmailMixin

# A DomainError is an answer to the caller, not a failure of the service: logged as expected.
rpc = nameko_rpc(expected_exceptions=(DomainError,))


class ConfiguredTimer(Timer):
    """Nameko's timer with its interval read at container start (config key, else environment
    variable, else the default), so tests and deployments can tune it without code."""

    def __init__(self, key: str, default: float, **kwargs):
        self.key, self.default = key, default
        super().__init__(default, **kwargs)

    def setup(self):
        raw = self.container.config.get(self.key) or os.environ.get(self.key)
        self.interval = float(raw) if raw else self.default


def mails_from(source_service: str, event_type: str):
    """``services.handlers.handles`` for events that cause mail: the method queues mails inside
    the handler's transaction and returns their ids; they are sent once that has committed
    (a redelivered event finds its tracking row and queues nothing)."""
    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, body):
            # With the retries and requeueing of every other handler (a dead database
            # connection must not lose the event and with it the customer's mail).
            event, ran, mail_ids = run_handler(self.store, f"{self.name}.{method.__name__}", body,
                                               lambda event, conn: method(self, event, conn), self.log)
            if not ran:
                self.log.info("duplicate_event_ignored", event_id=str(event.event_id))
                return
            for mail_id in mail_ids or ():
                self._deliver(mail_id)

        wrapper.__tsunagi_subscription__ = (source_service, event_type, method.__name__)
        return event_handler(source_service, event_type)(wrapper)
    return decorate


class NotifierService(SelectEmailMixin, PingMixin):
    name = contract.SERVICE

    store = EventStoreProvider()
    log = Logger()
    clock = Clock()
    settings = MailConfig()

    # -- events that cause mail -------------------------------------------------------------------

    @mails_from("otp_service", "token_issued")
    def on_token_issued(self, event: RecordedEvent, conn):
        """R-INI-5: 「トークン発行のご案内」 with Service ID and User ID, from otp-auth.net."""
        return self._queue(event, conn, templates.orders_for_token_issued(event))

    @mails_from("otp_service", "mail_otp_mail_requested")
    def on_mail_otp_mail_requested(self, event: RecordedEvent, conn):
        """R-MAIL-1, R-MAIL-4, R-MAIL-5: the code, from otp-auth.net, to the registered address and
        every used select address chosen to receive it — or only to the address being confirmed."""
        d = event.data
        subject = d.get("key_subject")
        if not subject or self.store.keyring.data_key(conn, subject, create=False) is None:
            # The code ended (superseded, used, expired) before it reached us: never send it.
            self.log.info("mail_otp_withdrawn", issue_id=d.get("issue_id"))
            return []
        registered, book = addresses_projection.load(conn, self.store.keyring, d["customer_number"])
        operation = d.get("operation") if isinstance(d.get("operation"), dict) else {}
        recipients = addresses.mail_otp_recipients(registered, book, d.get("destination"), operation.get("address"))
        if not recipients:
            self.log.warning("mail_otp_without_recipient", issue_id=d.get("issue_id"),
                             destination=d.get("destination"))
            return []
        return self._queue(event, conn, templates.orders_for_mail_otp(event, recipients))

    @mails_from("otp_service", "operation_authorized")
    def on_operation_authorized(self, event: RecordedEvent, conn):
        """取引受付メール from am-bk.co.jp to the registered address and every used select address."""
        d = event.data
        registered, book = addresses_projection.load(conn, self.store.keyring, d["customer_number"])
        operation = d.get("operation") if isinstance(d.get("operation"), dict) else {}
        recipients = addresses.acceptance_recipients(registered, book, operation)
        return self._queue(event, conn, templates.orders_for_operation_authorized(event, recipients))

    @mails_from(contract.SERVICE, "select_address_removed")
    def on_select_address_removed(self, event: RecordedEvent, conn):
        """R-MAIL-4: the removed (or replaced) address is told that it no longer receives mail."""
        return self._queue(event, conn, templates.orders_for_select_address_removed(event))

    # -- the address book --------------------------------------------------------------------------

    @handles("identity", "legacy_customer_imported")
    def on_legacy_customer_imported(self, event: RecordedEvent, conn):
        """The registered address (the legacy record's e-mail) — the notifier's own copy."""
        number = event.data.get("customer_number") or event.stream_id
        addresses_projection.set_registered(conn, self.store.keyring, number, event.data.get("email"))

    @handles("eventstore", "subject_key_shredded")
    def on_subject_key_shredded(self, event: RecordedEvent, conn):
        """A shredded customer's addresses leave the address book too."""
        subject = event.data.get("subject") or ""
        if re.fullmatch(r"[0-9]{10}", subject):
            addresses_projection.forget(conn, subject)

    # -- queuing ----------------------------------------------------------------------------------

    def _queue(self, event: RecordedEvent, conn, orders) -> list[str]:
        queued = []
        metadata = Metadata(service=self.name).caused_by(event, service=self.name)
        for order in orders:
            template = templates.TEMPLATES[order.template]
            mail_id = str(mail_id_for(event.event_id, order.slot))
            stream = contract.mail_stream(mail_id)
            state = outbox.fold(self.store.read_stream(stream, conn=conn))
            events = outbox.decide(outbox.QueueMail(
                mail_id=mail_id, template=order.template, customer_number=order.customer_number,
                to=order.to, params=order.params,
                sender=self.settings.senders[template.sender].as_dict(),
                message_id=message_id_for(mail_id, self.settings.message_id_domain),
                source_event_id=str(event.event_id), source_event_type=event.type,
                now=self.clock.now()), state)
            if not events:
                continue
            try:
                with conn.transaction():     # savepoint: a concurrent queuer only costs this mail
                    version = self.store.append(stream, events, NO_STREAM, metadata,
                                                subject=order.subject or order.customer_number, conn=conn)
                    projection.project_all(conn, version, events)
            except ConcurrencyConflict:
                continue
            queued.append(mail_id)
            self.log.info("mail_queued", mail_id=mail_id, template=order.template,
                          to=[mask_email(a) for a in order.to])
        return queued

    # -- delivery -------------------------------------------------------------------------------------

    @ConfiguredTimer.decorator("MAIL_RETRY_TICK_SECONDS", 1.0)
    def deliver_due(self):
        """Send what is due: first attempts that did not happen, retries after their backoff."""
        with self.store.pool.connection() as conn:
            mail_ids = projection.due(conn, self.clock.now())
        for mail_id in mail_ids:
            self._deliver(mail_id)

    def _deliver(self, mail_id: str) -> None:
        cfg = self.settings
        with self.store.pool.connection() as conn:
            if not projection.claim(conn, mail_id, self.clock.now(), cfg.lease):
                return
        try:
            self._attempt(mail_id)
        except Exception:
            # Not recorded (e.g. the database went away): give the lease back so the timer
            # retries soon instead of after the whole lease.
            self.log.exception("mail_attempt_not_recorded", mail_id=mail_id)
            try:
                with self.store.pool.connection() as conn:
                    projection.release(conn, mail_id)
            except Exception:  # the database is still away; the lease will simply run out
                pass

    def _attempt(self, mail_id: str) -> None:
        cfg = self.settings
        stream = contract.mail_stream(mail_id)
        history = self.store.read_stream(stream)
        state = outbox.fold(history)
        if state.status != contract.QUEUED:
            return
        outcome, error = outbox.SENT_OK, None
        try:
            template = templates.TEMPLATES.get(state.template)
            if template is None:
                raise TemplateError(f"unknown template {state.template}")
            if not isinstance(state.params, dict) or not all(isinstance(a, str) and "@" in a for a in state.to) \
                    or not self._content_alive(state.params.get("key_subject")):
                # Sealed under a key that is gone (a one-time code that ended, a shredded
                # customer): the content is withdrawn, and must not be sent late.
                raise TemplateError("withdrawn: the mail's content is no longer valid")
            message = render(template, state.params, to=state.to, sender=state.sender,
                             message_id=state.message_id, date=state.queued_at)
            smtp.send(message, envelope_from=state.sender["address"], recipients=state.to,
                      host=cfg.smtp_host, port=cfg.smtp_port, timeout=cfg.smtp_timeout,
                      starttls=cfg.smtp_starttls)
        except TemplateError as exc:
            outcome, error = outbox.PERMANENT, str(exc)
        except smtp.DeliveryError as exc:
            outcome, error = (outbox.PERMANENT if exc.permanent else outbox.TRANSIENT), str(exc)
        events = outbox.decide(outbox.RecordAttempt(
            outcome=outcome, error=error, now=self.clock.now(), max_attempts=cfg.max_attempts,
            retry_base=cfg.retry_base, retry_max=cfg.retry_max), state)

        def record():
            with self.store.transaction() as conn:
                # Attempts belong to the request that caused the mail: same correlation id.
                metadata = Metadata(service=self.name).caused_by(history[0], service=self.name)
                version = self.store.append(stream, events, state.version, metadata,
                                            subject=state.customer_number, conn=conn)
                projection.project_all(conn, version, events)

        if outcome == outbox.SENT_OK:
            # The server has the mail. Left unrecorded, the lease would run out and the timer
            # send it a second time, so wait out a database outage here (the lease is longer).
            # Only a crash in this gap can still send it twice; the Message-ID stays the same.
            retrying(self.store, record, self.log, retryable=(psycopg.OperationalError,),
                     what="mail_sent_record")
        else:
            record()
        kind = events[0].type
        log = self.log.warning if kind != contract.MAIL_SENT.name else self.log.info
        log(kind, mail_id=mail_id, template=state.template, attempt=state.attempts + 1, error=error,
            to=[mask_email(a) for a in state.to])

    def _content_alive(self, subject) -> bool:
        """A mail sealed under a one-time code's key: is that key still in the database? (The
        keyring caches keys for a while; this asks the table itself.)"""
        if not subject:
            return True
        with self.store.pool.connection() as conn:
            return conn.execute("SELECT 1 FROM eventstore.subject_keys WHERE subject = %s",
                                (subject,)).fetchone() is not None

    # -- for operators ------------------------------------------------------------------------------

    @rpc
    def mail_status(self, mail_id):
        with self.store.pool.connection() as conn:
            row = projection.status(conn, str(mail_id)) if _is_uuid(mail_id) else None
        if row is None:
            raise NotFound("お探しのメールが見つかりません。", "mail_not_found")
        out = dict(zip(("mail_id", "status", "template", "attempts", "message_id", "last_error"), row))
        return out


def _is_uuid(value) -> bool:
    import uuid
    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False
