"""otp_service's RPCs for PC customers: who needs what, the mail notification password, and
transaction authorization (SPEC R-MAIL-1, R-MAIL-2, R-MAIL-5, R-RBA-2; contracts.mail_otp).

A mixin of ``otp_service.service.OtpService`` (it uses that class's store, request context,
clock, logger, OTP settings, identity proxy and TOTP check ``_verify``). Thin around the pure
decider ``otp_service.mail_otp``: here the code is generated, HMACs are computed, the
confirmation password is checked over RPC (identity counts its failures), and — in the same
transaction that ends a code's life — the data key sealing that code is destroyed, so the
code is unreadable in the log from then on (contracts.mail_otp, "only its hash is stored").
"""
from __future__ import annotations

import os
import re
import uuid

from nameko.rpc import rpc as nameko_rpc
from nameko.timer import Timer

from contracts import mail_otp as contract
from contracts.errors import ConcurrencyConflict, DomainError, Forbidden, ValidationFailed
from contracts.events import Metadata, NewEvent
from otp_service import mail_otp as mo
from otp_service import mail_otp_projection
from otp_service import projection as otp_projection
from otp_service.mail_otp_config import MailOtpConfig, new_code
from services.eventstore import NO_STREAM
from services.rpc import rpc_call

rpc = nameko_rpc(expected_exceptions=(DomainError,))

MAX_ATTEMPTS = 5    # optimistic-concurrency retries before answering 409
_CUSTOMER_NUMBER = re.compile(r"^[0-9]{10}\Z")


def _customer_number(value) -> str:
    if not isinstance(value, str) or not _CUSTOMER_NUMBER.match(value):
        raise ValidationFailed("お客さま番号が正しくありません。", "customer_number_invalid")
    return value


class SweepTimer(Timer):
    """Nameko's timer with its interval read at container start (``MAIL_OTP_SWEEP_SECONDS``)."""

    def setup(self):
        raw = self.container.config.get("MAIL_OTP_SWEEP_SECONDS") or os.environ.get("MAIL_OTP_SWEEP_SECONDS")
        if raw:
            self.interval = float(raw)


class MailOtpMixin:
    mail_otp_cfg = MailOtpConfig()

    # -- who needs what (R-MAIL-1, R-MAIL-2) ------------------------------------------------------------

    @rpc
    def authorization_method(self, customer_number):
        number = _customer_number(customer_number)
        with self.store.pool.connection() as conn:
            has_token = otp_projection.active_token(conn, number) is not None
            state = mail_otp_projection.state(conn, number)
        method = contract.METHOD_OTP if has_token else contract.METHOD_MAIL_OTP
        locked = state.locked and not mo.lock_released(
            state, self.clock.now(), self.mail_otp_cfg.settings.lock_release)
        return {"method": method, "fields": ["confirmation_password", method],
                "mail_otp_locked": bool(locked)}

    # -- issuing (R-MAIL-1: only the latest is valid) -------------------------------------------------

    @rpc
    def issue_mail_otp(self, customer_number, purpose, operation=None):
        number = _customer_number(customer_number)
        if purpose not in contract.PURPOSES:
            raise ValidationFailed("用途の指定が正しくありません。", "mail_otp_purpose_invalid",
                                   errors={"purpose": ["用途の指定が正しくありません。"]})
        op = contract.canonical_operation(operation, purpose)
        settings, keys = self.mail_otp_cfg.settings, self.mail_otp_cfg.keys
        canonical = contract.canonical_json(op)
        stream = contract.mail_otp_stream(number)
        for _ in range(MAX_ATTEMPTS):
            with self.store.pool.connection() as conn:
                has_token = otp_projection.active_token(conn, number) is not None
                state = mail_otp_projection.state(conn, number)
            issue_id, code, kid = str(uuid.uuid4()), new_code(), keys.current_kid
            now = self.clock.now()
            events, request = mo.decide_issue(mo.IssueMailOtp(
                issue_id=issue_id, customer_number=number, purpose=purpose, operation=op,
                operation_digest=keys.operation_digest(kid, canonical), kid=kid,
                mac=keys.code_mac(kid, number, issue_id, code), code=code, now=now, ttl=settings.ttl,
                has_active_token=has_token, release_after=settings.lock_release), state)
            try:
                with self.store.transaction() as conn:
                    version = self.store.append(stream, events, state.version, self.metadata, conn=conn)
                    mail_otp_projection.project_all(conn, number, version, events)
                    # The code's own sealing key (subject mailotp:<issue_id>), see contracts.mail_otp.
                    self.store.append(contract.mail_request_stream(issue_id), [request], NO_STREAM,
                                      self.metadata, subject=contract.code_subject(issue_id), conn=conn)
                    self._shred_ended(conn, events)
                break
            except ConcurrencyConflict:
                continue
        else:
            raise ConcurrencyConflict(stream=stream)
        issued = events[-1].data
        self.log.info("mail_otp_issued", issue_id=issue_id, purpose=purpose, destination=issued["destination"],
                      superseded=[e.data["issue_id"] for e in events if e.type == contract.MAIL_OTP_SUPERSEDED.name])
        return {"issue_id": issue_id, "purpose": purpose, "expires_at": issued["expires_at"], "operation": op}

    def _shred_ended(self, conn, events) -> None:
        """Destroy the sealing key of every code these events end, in their transaction."""
        store = self.store
        for issue_id in mo.ended_issue_ids(events):
            subject = contract.code_subject(issue_id)
            if store.keyring.destroy(conn, subject):
                store.append(f"subject-{subject}", [NewEvent("subject_key_shredded", {"subject": subject})],
                             NO_STREAM, Metadata(service=self.name, reason="mail_otp_ended",
                                                 correlation_id=self.metadata.correlation_id), conn=conn)

    # -- authorizing an operation (R-MAIL-1, R-MAIL-2, R-MAIL-5) -----------------------------------------

    @rpc
    def authorize(self, customer_number, operation, confirmation_password, otp=None, mail_otp=None):
        number = _customer_number(customer_number)
        op = contract.canonical_operation(operation)
        purpose = op["type"]
        if not isinstance(confirmation_password, str) or not confirmation_password:
            raise ValidationFailed(mo.MSG_CONFIRMATION_PASSWORD_REQUIRED, "validation_failed",
                                   errors={"confirmation_password": [mo.MSG_CONFIRMATION_PASSWORD_REQUIRED]})
        with self.store.pool.connection() as conn:
            has_token = otp_projection.active_token(conn, number) is not None
        # A new mail-password destination is always confirmed with the code sent to it (R-MAIL-5).
        if has_token and purpose != contract.ADDRESS_CONFIRMATION:
            result = self._authorize_with_otp(number, op, confirmation_password, otp)
        else:
            result = self._authorize_with_mail_otp(number, op, confirmation_password, mail_otp)
        self.log.info("operation_authorized", authorization_id=result["authorization_id"], purpose=purpose,
                      method=result["method"])
        return result

    def _authorization_event(self, number: str, op: dict, digest: str, method: str, now,
                             issue_id: str | None = None, token_serial: str | None = None):
        authorization_id = str(uuid.uuid4())
        return authorization_id, NewEvent(contract.OPERATION_AUTHORIZED.name, {
            "authorization_id": authorization_id, "customer_number": number, "purpose": op["type"],
            "operation": op, "operation_digest": digest, "method": method, "mail_otp_issue_id": issue_id,
            "token_serial": token_serial, "authorized_at": now.isoformat()})

    def _authorize_with_otp(self, number: str, op: dict, confirmation_password: str, otp) -> dict:
        from otp_service import domain      # the TOTP rules of the OTP service itself
        if not otp:
            raise ValidationFailed(mo.MSG_OTP_REQUIRED, mo.CODE_OTP_REQUIRED,
                                   errors={"otp": [mo.MSG_OTP_REQUIRED]}, method=contract.METHOD_OTP)
        domain.check_otp_format(otp)
        with self.store.pool.connection() as conn:
            domain.check_otp_usable(otp_projection.customer_state(conn, number), self.clock.now(),
                                    self.cfg.settings.lock_release)
        rpc_call(self.identity.verify_confirmation_password, number, confirmation_password)
        serial = self._verify(number, otp, op["type"])
        keys, now = self.mail_otp_cfg.keys, self.clock.now()
        digest = keys.operation_digest(keys.current_kid, contract.canonical_json(op))
        authorization_id, event = self._authorization_event(number, op, digest, contract.METHOD_OTP, now,
                                                            token_serial=serial)
        self.store.append(contract.authorization_stream(authorization_id), [event], NO_STREAM, self.metadata,
                          subject=number)
        return {"authorization_id": authorization_id, "purpose": op["type"], "method": contract.METHOD_OTP,
                "authorized_at": event.data["authorized_at"]}

    def _authorize_with_mail_otp(self, number: str, op: dict, confirmation_password: str, code) -> dict:
        if not code:
            raise ValidationFailed(mo.MSG_MAIL_OTP_REQUIRED, mo.CODE_MAIL_OTP_REQUIRED,
                                   errors={"mail_otp": [mo.MSG_MAIL_OTP_REQUIRED]},
                                   method=contract.METHOD_MAIL_OTP)
        mo.check_code_format(code)
        settings, keys = self.mail_otp_cfg.settings, self.mail_otp_cfg.keys
        # Cheap refusals first: nothing issued, or locked — no password is checked (and counted).
        with self.store.pool.connection() as conn:
            mo.check_usable(mail_otp_projection.state(conn, number), self.clock.now(), settings.lock_release)
        rpc_call(self.identity.verify_confirmation_password, number, confirmation_password)
        canonical = contract.canonical_json(op)
        stream = contract.mail_otp_stream(number)
        authorization = None
        for _ in range(MAX_ATTEMPTS):
            with self.store.pool.connection() as conn:
                state = mail_otp_projection.state(conn, number)
            now = self.clock.now()
            cur = state.current
            digest = keys.operation_digest(cur.kid, canonical) if cur and keys.has(cur.kid) else ""
            events = mo.decide_verify(mo.VerifyMailOtp(
                customer_number=number, purpose=op["type"], operation_digest=digest,
                matched=self._match(number, state, code), now=now, max_attempts=settings.max_attempts,
                threshold=settings.lock_threshold, release_after=settings.lock_release), state)
            try:
                # Two entries of one customer race on the stream version: the loser re-reads and
                # finds the code used, so a code authorizes exactly one operation.
                with self.store.transaction() as conn:
                    version = self.store.append(stream, events, state.version, self.metadata, conn=conn)
                    mail_otp_projection.project_all(conn, number, version, events)
                    self._shred_ended(conn, events)
                    if mo.verified(events):
                        authorization = self._authorization_event(
                            number, op, digest, contract.METHOD_MAIL_OTP, now, issue_id=cur.issue_id)
                        self.store.append(contract.authorization_stream(authorization[0]), [authorization[1]],
                                          NO_STREAM, self.metadata, subject=number, conn=conn)
                break
            except ConcurrencyConflict:
                continue
        else:
            raise ConcurrencyConflict(stream=stream)
        if authorization is None:
            refused = [e.data for e in events if e.type == contract.MAIL_OTP_VERIFICATION_FAILED.name]
            self.log.warning("mail_otp_refused", reason=refused[0]["reason"] if refused else None,
                             consecutive_failures=refused[0]["consecutive_failures"] if refused else None)
            mo.raise_outcome(events, settings.max_attempts, settings.lock_threshold)
            raise AssertionError("a refused entry always raises")
        authorization_id, event = authorization
        return {"authorization_id": authorization_id, "purpose": op["type"], "method": contract.METHOD_MAIL_OTP,
                "authorized_at": event.data["authorized_at"]}

    def _match(self, number: str, state: mo.MailOtpState, code: str) -> str | None:
        """Which stored code the entry is: "current", "previous" (superseded) or None."""
        keys = self.mail_otp_cfg.keys
        cur = state.current
        if cur is not None and keys.matches(cur.kid, cur.mac, number, cur.issue_id, code):
            return "current"
        # Every remembered code is compared (no early exit): the time does not tell which matched.
        previous = [keys.matches(p.kid, p.mac, number, p.issue_id, code) for p in state.previous]
        return "previous" if any(previous) else None

    # -- expiry and the lock -----------------------------------------------------------------------------

    @SweepTimer.decorator(interval=15.0)
    def sweep_expired_mail_otps(self):
        """Close codes that expired unused, destroying their sealing keys."""
        with self.store.pool.connection() as conn:
            numbers = mail_otp_projection.expired(conn, self.clock.now())
        for number in numbers:
            try:
                self._decide_mail_otp(number, lambda now: mo.ExpireMailOtp(now),
                                      Metadata(service=self.name, reason="mail_otp_expiry"))
            except ConcurrencyConflict:
                continue        # someone entered or re-issued meanwhile; the next sweep looks again

    @rpc
    def unlock_mail_otp(self, customer_number):
        """Operators only: lift the mail notification password lock (R-RBA-2)."""
        number = _customer_number(customer_number)
        if self.metadata.actor.kind != "operator":
            raise Forbidden()
        self._decide_mail_otp(number, lambda now: mo.UnlockMailOtp(number, now), self.metadata)
        self.log.info("mail_otp_unlocked", customer_number=number)
        return {"unlocked": True}

    def _decide_mail_otp(self, number: str, command, metadata) -> list:
        stream = contract.mail_otp_stream(number)
        for _ in range(MAX_ATTEMPTS):
            with self.store.pool.connection() as conn:
                state = mail_otp_projection.state(conn, number)
            events = mo.decide(command(self.clock.now()), state)
            if not events:
                return []
            try:
                with self.store.transaction() as conn:
                    version = self.store.append(stream, events, state.version, metadata, conn=conn)
                    mail_otp_projection.project_all(conn, number, version, events)
                    self._shred_ended(conn, events)
                return events
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(stream=stream)
