"""Inbound-call verification (Nameko service ``phone_auth``; SPEC R-INI-4, guide step 6).

Thin around the pure decider in ``phone_auth.domain``:
- ``start_verification`` picks the toll-free number to show and opens ``phoneverif-<id>``;
- ``handle_inbound_call`` consumes the edges' normalized ``inbound_call`` messages (exchange
  ``telephony.events``): records each call once (``inboundcall-<key>``, tracking row keyed by
  a uuid5 of edge and call id), finds the verifications it concerns in the read model and
  applies the call to each — events and read model in one transaction;
- ``expire_overdue`` (a timer, every second) expires verifications whose window has passed,
  without anyone asking. Rows are claimed with ``FOR UPDATE SKIP LOCKED``, so with several
  instances each overdue verification is expired by exactly one of them; a call for the same
  verification takes the same row lock, so call and timer never both decide.
"""
from __future__ import annotations

import os
import uuid
from collections import namedtuple
from dataclasses import replace
from datetime import timedelta

import eventlet
from marshmallow import ValidationError
from nameko.events import event_handler
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.timer import timer
from psycopg.rows import dict_row

from contracts import phone_auth as c
from contracts import telephony
from contracts.errors import NotFound, ValidationFailed
from contracts.events import Actor, NewEvent
from phone_auth import domain, projection
from services import crypto
from services.config import Settings
from services.dependencies import Clock, EventStoreProvider, Logger, RequestContext
from services.eventstore import NO_STREAM
from services.handlers import handled_once, handles
from services.logging import mask_phone
from services.ping import PingMixin

EXPIRY_SCAN_SECONDS = 1.0
EXPIRY_BATCH = 100
REQUEUE_PAUSE_SECONDS = 1.0     # a failing call message is retried, but not in a hot loop

MSG_BAD_PHONE = "登録電話番号の形式が正しくありません。お取引店で電話番号をご確認ください。"

_CallRef = namedtuple("_CallRef", "event_id")   # what handled_once needs of a message


class PhoneAuthConfig(DependencyProvider):
    """``TOLL_FREE_NUMBERS`` (comma-separated, any notation; default 0120-000-110,0120-000-111)
    and ``PHONE_VERIFICATION_SECONDS`` (default 120): Nameko config key, else environment."""

    def setup(self):
        cfg = self.container.config

        def value(key: str, default: str) -> str:
            raw = cfg.get(key)
            if raw in (None, ""):
                raw = os.environ.get(key)
            return str(raw) if raw not in (None, "") else default

        numbers = [n.strip() for n in value("TOLL_FREE_NUMBERS",
                                            ",".join(c.DEFAULT_TOLL_FREE_NUMBERS)).split(",")]
        self.pool: list[str] = []
        for raw in filter(None, numbers):
            e164 = telephony.normalize_phone(raw)
            if e164 is None:
                raise ValueError(f"TOLL_FREE_NUMBERS: {raw!r} is not a telephone number")
            if e164 not in self.pool:
                self.pool.append(e164)
        if not self.pool:
            raise ValueError("TOLL_FREE_NUMBERS names no number")
        self.window = timedelta(seconds=int(value("PHONE_VERIFICATION_SECONDS",
                                                  str(c.DEFAULT_WINDOW_SECONDS))))
        if self.window.total_seconds() < 1:
            raise ValueError("PHONE_VERIFICATION_SECONDS must be at least 1")
        # The caller index key is derived from the current master key (FIELD_KEYS).
        master = next(iter(crypto.parse_master_keys(Settings().field_keys).values()))
        self.caller_index = projection.caller_index_function(master)

    def get_dependency(self, worker_ctx):
        return self


def _load(schema_cls, payload: dict) -> dict:
    try:
        return schema_cls().load(payload)
    except ValidationError as exc:
        errors = {k: v if isinstance(v, list) else [str(v)] for k, v in exc.messages.items()}
        first = next(iter(errors.values()))[0]
        raise ValidationFailed(first, "validation_failed", errors=errors) from None


class PhoneAuthService(PingMixin):
    name = c.SERVICE

    store = EventStoreProvider()
    metadata = RequestContext()
    log = Logger()
    clock = Clock()
    config = PhoneAuthConfig()

    # -- RPC -------------------------------------------------------------------------------------

    @rpc
    def start_verification(self, application_id, customer_number, caller_e164, ttl_seconds=None):
        args = _load(c.StartVerificationPayload, {
            "application_id": application_id, "customer_number": customer_number,
            "caller_e164": caller_e164, "ttl_seconds": ttl_seconds})
        caller = telephony.normalize_phone(args["caller_e164"])
        if caller is None:
            raise ValidationFailed(MSG_BAD_PHONE, "validation_failed",
                                   errors={"caller_e164": [MSG_BAD_PHONE]})
        window = (timedelta(seconds=args["ttl_seconds"]) if args["ttl_seconds"]
                  else self.config.window)
        now = self.clock.now()
        verification_id = str(uuid.uuid4())
        index = self.config.caller_index
        with self.store.transaction() as conn:
            rows = conn.execute(
                "SELECT call_to, count(*), bool_or(caller_index = %s) FROM phone_auth.verifications "
                "WHERE status = %s AND expires_at > %s GROUP BY call_to",
                (index(caller), c.AWAITING_CALL, now)).fetchall()
            call_to = domain.choose_toll_free(self.config.pool, {n: k for n, k, _ in rows},
                                              {n for n, _, callers in rows if callers})
            cmd = domain.StartVerification(
                verification_id, args["application_id"], args["customer_number"], caller,
                call_to, telephony.national_format(call_to), now, window)
            events = domain.decide(cmd, domain.initial_state)
            version = self.store.append(c.verification_stream(verification_id), events, NO_STREAM,
                                        self.metadata, subject=args["customer_number"], conn=conn)
            self._project(conn, events, version)
        started = events[0].data
        self.log.info("phone_verification_started", verification_id=verification_id,
                      application_id=args["application_id"], caller=mask_phone(caller),
                      call_to=started["call_to_display"], window_seconds=started["window_seconds"])
        return {"verification_id": verification_id, "call_from_masked": mask_phone(caller),
                "call_to": started["call_to_display"], "expires_at": started["expires_at"]}

    @rpc
    def status(self, verification_id):
        try:
            vid = uuid.UUID(str(verification_id))
        except ValueError:
            raise NotFound(verification_id=str(verification_id)) from None
        with self.store.pool.connection() as conn:
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute("SELECT * FROM phone_auth.verifications WHERE verification_id = %s",
                                  (vid,)).fetchone()
        if row is None:
            raise NotFound(verification_id=str(vid))
        return projection.as_status(row)

    # -- inbound calls -----------------------------------------------------------------------------

    @event_handler(telephony.SOURCE_SERVICE, telephony.INBOUND_CALL, requeue_on_error=True)
    def handle_inbound_call(self, body):
        """One normalized call from an edge (not a stored event, so not ``@handles``).

        A malformed message is logged and dropped (it would fail the same way forever); any
        other failure — database or broker trouble — returns the message to the queue after a
        pause, so a call is never lost to a transient error."""
        try:
            call = telephony.InboundCall.from_message(body)
        except ValidationError as exc:
            self.log.warning("inbound_call_rejected", errors=sorted(exc.messages))
            return None
        now = self.clock.now()
        at = domain.effective_time(call.received_at, now)
        try:
            ran, outcome = handled_once(self.store, f"{self.name}.handle_inbound_call",
                                        _CallRef(call.key), lambda conn: self._apply_call(conn, call, at))
        except Exception:
            eventlet.sleep(REQUEUE_PAUSE_SECONDS)
            raise
        fields = {"call_key": str(call.key), "edge": call.edge, "withheld": call.withheld,
                  "caller": mask_phone(call.caller), "called": call.called}
        if not ran:
            self.log.info("duplicate_inbound_call_ignored", **fields)
            return None
        self.log.info("inbound_call_handled", outcome=outcome, **fields)
        return outcome

    def _apply_call(self, conn, call: telephony.InboundCall, at) -> dict:
        index = self.config.caller_index
        caller_index = index(call.caller) if call.caller else None
        # Lock every row the call may touch, in one order (no deadlock between two calls); the
        # timer skips locked rows, so it never expires what a call is deciding about.
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT verification_id, caller_index, call_to, status, started_at, expires_at "
                "FROM phone_auth.verifications "
                "WHERE (caller_index = %(idx)s OR (call_to = %(called)s AND status = %(open)s)) "
                "AND expires_at > %(since)s ORDER BY verification_id FOR UPDATE",
                {"idx": caller_index, "called": call.called, "open": c.AWAITING_CALL,
                 "since": at - domain.LATE_CALL_GRACE}).fetchall()
        candidates = [domain.Candidate(str(r["verification_id"]), r["caller_index"], r["call_to"],
                                       r["status"], r["started_at"], r["expires_at"]) for r in rows]
        targets = domain.route_call(caller_index=caller_index, called=call.called, at=at,
                                    candidates=candidates)
        states = {vid: domain.fold(self.store.read_stream(c.verification_stream(vid), conn=conn))
                  for vid in targets}
        # The call's caller number is personal data of the customer whose phone it is, if any.
        owners = [s.customer_number for s in states.values() if call.caller and s.caller == call.caller]
        meta = replace(self.metadata, actor=Actor("system", f"telephony.{call.edge}"))
        self.store.append(c.call_stream(call.key), [_received(call, targets)], NO_STREAM, meta,
                          subject=owners[0] if owners else str(call.key), conn=conn)
        outcome: dict[str, list[str]] = {}
        for vid, state in states.items():
            events = domain.decide(domain.ApplyCall(str(call.key), call.caller, call.withheld,
                                                    call.called, at), state)
            outcome[vid] = [e.type for e in events]
            if events:
                version = self.store.append(c.verification_stream(vid), events, state.version,
                                            meta, subject=state.customer_number, conn=conn)
                self._project(conn, events, version)
        return outcome

    # -- expiry ----------------------------------------------------------------------------------

    @timer(interval=EXPIRY_SCAN_SECONDS)
    def expire_overdue(self):
        """Expire every open verification whose window has passed (R-INI-4: the page says so
        by itself). Safe with several instances: each claims rows with SKIP LOCKED."""
        now = self.clock.now()
        expired = []
        with self.store.transaction() as conn:
            rows = conn.execute(
                "SELECT verification_id FROM phone_auth.verifications "
                "WHERE status = %s AND expires_at <= %s ORDER BY expires_at LIMIT %s "
                "FOR UPDATE SKIP LOCKED", (c.AWAITING_CALL, now, EXPIRY_BATCH)).fetchall()
            for (vid,) in rows:
                stream = c.verification_stream(str(vid))
                state = domain.fold(self.store.read_stream(stream, conn=conn))
                events = domain.decide(domain.Expire(now), state)
                if events:
                    version = self.store.append(stream, events, state.version, self.metadata,
                                                subject=state.customer_number, conn=conn)
                    self._project(conn, events, version)
                    expired.append(str(vid))
        if expired:
            self.log.info("phone_verifications_expired", verification_ids=expired)
        return expired

    @handles("identity", "registered_phones_changed")
    def on_registered_phones_changed(self, event, conn):
        """R-LEG-4: after an operator replaced the registered phones, a call from the old number
        must not verify an application started before the change (the old phone may be lost
        and in someone else's hands). Open verifications of the customer close now; the
        application expires with them and the customer applies again with a new number."""
        number = event.stream_name.split("-", 1)[1]
        rows = conn.execute(
            "SELECT verification_id FROM phone_auth.verifications WHERE customer_number = %s "
            "AND status = %s ORDER BY verification_id FOR UPDATE",
            (number, c.AWAITING_CALL)).fetchall()
        for (vid,) in rows:
            stream = c.verification_stream(str(vid))
            state = domain.fold(self.store.read_stream(stream, conn=conn))
            events = domain.decide(domain.Withdraw(c.WITHDRAWN_PHONES_CHANGED), state)
            if events:
                version = self.store.append(stream, events, state.version, self.metadata,
                                            subject=state.customer_number, conn=conn)
                self._project(conn, events, version)
                self.log.info("phone_verification_withdrawn", verification_id=str(vid),
                              reason=c.WITHDRAWN_PHONES_CHANGED)

    # -- helpers ---------------------------------------------------------------------------------

    def _project(self, conn, events, last_version: int) -> None:
        first = last_version - len(events) + 1
        for i, event in enumerate(events):
            projection.apply(conn, event.type, event.data, first + i, self.config.caller_index)


def _received(call: telephony.InboundCall, targets: list[str]) -> NewEvent:
    return NewEvent(c.INBOUND_CALL_RECEIVED.name, {
        "call_key": str(call.key), "call_id": call.call_id, "edge": call.edge,
        "caller": call.caller, "withheld": call.withheld, "called": call.called,
        "received_at": call.received_at.isoformat(), "verification_ids": targets})


# Declared for services.handlers.subscriptions_of (checked against contracts.phone_auth).
PhoneAuthService.handle_inbound_call.__tsunagi_subscription__ = (
    telephony.SOURCE_SERVICE, telephony.INBOUND_CALL, "handle_inbound_call")
