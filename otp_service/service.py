"""The ``otp_service`` Nameko service: OTP applications, token issuance and activation, display
names, OTP verification and release (SPEC R-INI-3…7, R-INI-9, R-RBA-2).

Thin around the pure deciders of ``otp_service.domain``: load the stream, fold, decide, append
with the expected version (retry on a version conflict), project into the read models in the
same transaction. What the deciders must not do happens here: the clock, random ids and
secrets, argon2id (in ``eventlet.tpool``), AES-GCM, and the RPC calls to identity (the
confirmation password, the registered phone) and phone_auth (starting the call window).
RPC calls are made from RPC entrypoints only, never from event handlers (DESIGN.md traps).
"""
from __future__ import annotations

import re
import secrets
import uuid
from datetime import datetime

import psycopg
from marshmallow import ValidationError
from nameko.rpc import RpcProxy
from nameko.rpc import rpc as nameko_rpc

from contracts import otp as contract
from contracts.errors import (ConcurrencyConflict, Conflict, DomainError, Forbidden, NotFound,
                             ValidationFailed)
from contracts.events import Metadata, RecordedEvent
from otp_service import domain, passwords, projection, totp
from otp_service.config import OtpConfig
from otp_service.mail_otp_service import MailOtpMixin
from services.dependencies import Clock, EventStoreProvider, Logger, RequestContext
from services.eventstore import NO_STREAM
from services.handlers import handles
from services.logging import mask_email
from services.ping import PingMixin
from services.rpc import rpc_call

# A DomainError is an answer to the caller, not a failure of the service: logged as expected.
rpc = nameko_rpc(expected_exceptions=(DomainError,))

MAX_ATTEMPTS = 5    # optimistic-concurrency retries before answering 409

# Service/User IDs are read off a screen or a mail and typed into the OTP app: no 0/O, 1/I/L.
UNAMBIGUOUS = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
USER_ID_LENGTH = 16                   # R-INI-5: 16 characters (≈ 79 random bits)
TOKEN_SERIAL_LENGTH = 12

_CUSTOMER_NUMBER = re.compile(r"^[0-9]{10}\Z")
_TOKEN_SERIAL = re.compile(rf"^[{UNAMBIGUOUS}]{{{TOKEN_SERIAL_LENGTH}}}\Z")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def new_user_id() -> str:
    return "".join(secrets.choice(UNAMBIGUOUS) for _ in range(USER_ID_LENGTH))


def new_token_serial() -> str:
    return "".join(secrets.choice(UNAMBIGUOUS) for _ in range(TOKEN_SERIAL_LENGTH))


def _customer_number(value) -> str:
    if not isinstance(value, str) or not _CUSTOMER_NUMBER.match(value):
        raise ValidationFailed("お客さま番号が正しくありません。", "customer_number_invalid")
    return value


def _load(schema_cls, payload) -> dict:
    try:
        return schema_cls().load(payload if isinstance(payload, dict) else {})
    except ValidationError as exc:
        errors = {k: (v if isinstance(v, list) else [str(v)]) for k, v in exc.normalized_messages().items()}
        raise ValidationFailed(domain.MSG_FORM, "validation_failed", errors=errors) from None


class OtpService(MailOtpMixin, PingMixin):
    name = contract.SERVICE

    store = EventStoreProvider()
    metadata = RequestContext()
    log = Logger()
    clock = Clock()
    cfg = OtpConfig()
    identity = RpcProxy("identity")
    phone_auth = RpcProxy("phone_auth")

    # -- step 5: the application ------------------------------------------------------------------

    @rpc
    def apply(self, customer_number, body):
        number = _customer_number(customer_number)
        body = _load(contract.ApplicationRequest, body)
        domain.check_application_form(body)
        settings = self.cfg.settings
        # Cheap refusals first: no password is checked (and counted) for a form that cannot go on.
        with self.store.pool.connection() as conn:
            domain.check_may_apply(projection.customer_applications(conn, number, self.clock.now(),
                                                                    settings.grace))
        rpc_call(self.identity.verify_confirmation_password, number, body["confirmation_password"])
        caller = self._callable_phone(number, body["phone_id"])
        verifier = passwords.hash_secret(body["activation_password"])
        application_id = str(uuid.uuid4())
        stream = contract.application_stream(application_id)
        with self.store.transaction() as conn:
            # The verification starts only under the customer's lock, after checking again:
            # two devices applying at once must not leave the loser's verification (and its
            # expiry event) behind in phone_auth. The loser gets otp_application_in_progress.
            projection.lock(conn, "customer", number)
            domain.check_may_apply(projection.customer_applications(conn, number, self.clock.now(),
                                                                    settings.grace))
            started = rpc_call(self.phone_auth.start_verification, application_id, number, caller)
            now = self.clock.now()
            cmd = domain.SubmitApplication(
                application_id=application_id, customer_number=number, email=body["email"],
                verifier=verifier, phone_id=body["phone_id"], verification_id=str(started["verification_id"]),
                call_from_masked=started["call_from_masked"], call_to=started["call_to"],
                expires_at=datetime.fromisoformat(started["expires_at"]), now=now,
                customer=projection.customer_applications(conn, number, now, settings.grace))
            events = domain.decide_application(cmd, domain.initial_application)
            version = self.store.append(stream, events, NO_STREAM, self.metadata, subject=number, conn=conn)
            projection.project_all(conn, stream, version, events)
        self.log.info("otp_application_submitted", application_id=application_id,
                      email=mask_email(body["email"]), expires_at=started["expires_at"])
        return {"application_id": application_id, "status": contract.AWAITING_CALL,
                "call_from_masked": started["call_from_masked"], "call_to": started["call_to"],
                "expires_at": started["expires_at"]}

    def _callable_phone(self, number: str, phone_id: str) -> str:
        """The E.164 number the customer will call from; a customer without one is sent to
        the branch (R-INI-3: 認証可能な電話番号が表示されない場合は、銀行窓口で…変更が必要)."""
        try:
            phone = rpc_call(self.identity.phone, number, phone_id)
        except NotFound:
            if not rpc_call(self.identity.phones, number):
                raise Conflict(domain.MSG_NO_CALLABLE_PHONE, domain.CODE_NO_CALLABLE_PHONE) from None
            raise ValidationFailed(domain.MSG_PHONE_UNKNOWN, domain.CODE_PHONE_UNKNOWN,
                                   errors={"phone_id": [domain.MSG_PHONE_UNKNOWN]}) from None
        e164 = (phone or {}).get("e164")
        if not e164 or (phone or {}).get("callable") is False:
            raise Conflict(domain.MSG_NO_CALLABLE_PHONE, domain.CODE_NO_CALLABLE_PHONE)
        return e164

    @rpc
    def application_status(self, customer_number, application_id):
        number = _customer_number(customer_number)
        if not isinstance(application_id, str) or not _UUID.match(application_id):
            raise NotFound(domain.MSG_APPLICATION_NOT_FOUND, domain.CODE_APPLICATION_NOT_FOUND)
        with self.store.pool.connection() as conn:
            row = projection.application(conn, application_id)
        # Another customer's application reads as no application at all.
        if row is None or row[1] != number:
            raise NotFound(domain.MSG_APPLICATION_NOT_FOUND, domain.CODE_APPLICATION_NOT_FOUND)
        _, _, status, reason, service_id, user_id, expires_at, _ = row
        status, reason, activated = domain.public_status(status, reason, expires_at, self.clock.now(),
                                                         self.cfg.settings.grace)
        out = {"application_id": application_id, "status": status, "expires_at": expires_at.isoformat()}
        if reason:
            out["reason"] = reason
        if status == contract.ISSUED:
            out["activated"] = activated
            if not activated:      # used up once activated: no reason to show them any more
                out.update(service_id=service_id, user_id=user_id)
        return out

    # -- steps 6–7: the call verified → the token is issued ----------------------------------------

    @handles("phone_auth", "phone_verification_succeeded")
    def on_phone_verification_succeeded(self, event: RecordedEvent, conn):
        def command(app):
            return domain.RecordVerification(event.data.get("verification_id"), self.cfg.settings.service_id,
                                              new_user_id(), self.clock.now())
        events = self._react(event, conn, command)
        if events:
            self.log.info("token_issued", application_id=event.data.get("application_id"),
                          correlation_id=event.metadata.get("correlation_id"))

    @handles("phone_auth", "phone_verification_expired")
    def on_phone_verification_expired(self, event: RecordedEvent, conn):
        self._react(event, conn, lambda app: domain.RecordExpiry(event.data.get("verification_id"),
                                                                 self.clock.now()))

    def _react(self, event: RecordedEvent, conn, command):
        application_id = event.data.get("application_id")
        if not application_id:
            self.log.warning("phone_event_without_application", event_id=str(event.event_id))
            return []
        stream = contract.application_stream(application_id)
        metadata = Metadata(service=self.name).caused_by(event, service=self.name)
        for _ in range(MAX_ATTEMPTS):
            try:
                # A savepoint: a version conflict or a (vanishingly rare) duplicate User ID
                # undoes this try only, not the handler's tracking row.
                with conn.transaction():
                    app = domain.fold_application(self.store.read_stream(stream, conn=conn))
                    if app.status == domain.NONE:
                        self.log.warning("phone_event_for_unknown_application", application_id=application_id)
                        return []
                    events = domain.decide_application(command(app), app)
                    if not events:
                        return []
                    version = self.store.append(stream, events, app.version, metadata,
                                                subject=app.customer_number, conn=conn)
                    projection.project_all(conn, stream, version, events)
                    return events
            except (ConcurrencyConflict, psycopg.errors.UniqueViolation):
                continue
        raise ConcurrencyConflict(stream=stream)

    # -- step 8: activation in the OTP app -----------------------------------------------------------

    @rpc
    def activate(self, body, app_instance_id, idempotency_key=None):
        body = _load(contract.ActivateRequest, body)
        instance = domain.check_app_instance_id(app_instance_id)
        request_key = domain.request_key_of(instance, idempotency_key)
        if body["agreed"] is not True:
            raise ValidationFailed(domain.MSG_NOT_AGREED, domain.CODE_NOT_AGREED,
                                   errors={"agreed": [domain.MSG_NOT_AGREED]})
        password = body["activation_password"]
        if not domain.valid_activation_password(password):
            raise ValidationFailed(domain.MSG_ACTIVATION_PASSWORD_FORMAT, "validation_failed",
                                   errors={"activation_password": [domain.MSG_ACTIVATION_PASSWORD_FORMAT]})
        settings, box = self.cfg.settings, self.cfg.box
        application_id = None
        if secrets.compare_digest(body["service_id"].encode(), settings.service_id.encode()):
            with self.store.pool.connection() as conn:
                application_id = projection.application_id_by_user_id(conn, body["user_id"])
        if application_id is None:
            raise NotFound(domain.MSG_ACTIVATION_NOT_FOUND, domain.CODE_ACTIVATION_NOT_FOUND)
        stream = contract.application_stream(application_id)
        # Cheap refusals first (used up, voided, no room): no argon2 run, nothing counted.
        app = domain.fold_application(self.store.read_stream(stream))
        if app.status == domain.ACTIVATED and app.token_serial and request_key:
            again = self._activation_answer_again(app, instance, request_key, password)
            if again is not None:
                return again
        domain.check_activatable(app)
        with self.store.pool.connection() as conn:
            domain.check_token_room(self._activation(app, instance, False, "", {}, conn))
        # The verifier never changes: one argon2 run serves every retry below.
        matched = passwords.verify_secret(app.verifier, password)
        twin = None
        for _ in range(MAX_ATTEMPTS):
            serial, secret = new_token_serial(), totp.new_secret()
            try:
                with self.store.transaction() as conn:
                    # Under the customer's and the app's locks, decide on what is true now: a
                    # concurrent activation of the same IDs has committed or has not started.
                    projection.lock(conn, "customer", app.customer_number)
                    projection.lock(conn, "app-instance", instance)
                    app = domain.fold_application(self.store.read_stream(stream, conn=conn))
                    if app.status == domain.ACTIVATED and app.token_serial and request_key:
                        # A twin of this very request won the locks: the same RPC redelivered
                        # while it still ran (a cut broker connection), or the client's retry.
                        # Its answer is this request's answer too (below, after the locks).
                        twin = app
                        break
                    cmd = self._activation(app, instance, matched, serial, box.seal(serial, secret), conn,
                                           request_key)
                    app_events, token_events = domain.decide_activation(cmd, app)
                    version = self.store.append(stream, app_events, app.version, self.metadata,
                                                subject=app.customer_number, conn=conn)
                    projection.project_all(conn, stream, version, app_events)
                    if token_events:
                        token_stream = contract.token_stream(serial)
                        version = self.store.append(token_stream, token_events, NO_STREAM, self.metadata,
                                                    subject=app.customer_number, conn=conn)
                        projection.project_all(conn, token_stream, version, token_events)
                break
            except ConcurrencyConflict:
                continue
        else:
            raise ConcurrencyConflict(stream=stream)
        if twin is not None:
            again = self._activation_answer_again(twin, instance, request_key, password)
            if again is not None:
                return again
            domain.check_activatable(twin)      # another request's: used up (409)
        if not matched:
            self.log.warning("otp_activation_failed", application_id=application_id,
                             consecutive_failures=app.activation_failures + 1)
        domain.raise_activation_outcome(app_events, settings.activation_max_failures)
        self.log.info("token_activated", application_id=application_id, token_serial=serial)
        return {"token_serial": serial,
                "otpauth_uri": totp.provisioning_uri(secret, account=serial, issuer=contract.TOKEN_ISSUER),
                "display_name": token_events[0].data["display_name"]}

    def _activation_answer_again(self, app, instance: str, request_key, password: str) -> dict | None:
        """The answer of an activation whose reply was lost (domain.replayable_activation);
        None when it may not be repeated (then the IDs are simply used up, as before)."""
        token = domain.replayable_activation(
            self.store.read_stream(contract.token_stream(app.token_serial)), instance, request_key,
            self.clock.now(), customer_events=self.store.read_stream(contract.customer_stream(app.customer_number)))
        if token is None or not passwords.verify_secret(app.verifier, password):
            return None
        secret = self.cfg.box.open(token["token_serial"], token["secret"])
        self.log.info("token_activation_answer_repeated", application_id=app.application_id,
                      token_serial=token["token_serial"])
        return {"token_serial": token["token_serial"],
                "otpauth_uri": totp.provisioning_uri(secret, account=token["token_serial"],
                                                     issuer=contract.TOKEN_ISSUER),
                "display_name": token["display_name"]}

    def _activation(self, app, instance, matched, serial, sealed, conn, request_key=None) -> domain.ActivateToken:
        settings = self.cfg.settings
        return domain.ActivateToken(
            app_instance_id=instance, password_matched=matched, token_serial=serial, sealed_secret=sealed,
            now=self.clock.now(), tokens_on_instance=projection.tokens_on_instance(conn, instance),
            customer_has_active_token=projection.active_token(conn, app.customer_number) is not None,
            algorithm=totp.ALGORITHM, digits=totp.DIGITS, period=totp.PERIOD,
            max_failures=settings.activation_max_failures, max_tokens=settings.max_tokens_per_app,
            request_key=request_key)

    # -- step 9: the display name ----------------------------------------------------------------------

    @rpc
    def set_display_name(self, token_serial, suffix, app_instance_id=None, customer_number=None):
        if not isinstance(token_serial, str) or not _TOKEN_SERIAL.match(token_serial):
            raise NotFound(domain.MSG_TOKEN_NOT_FOUND, domain.CODE_TOKEN_NOT_FOUND)
        if suffix is not None and not isinstance(suffix, str):
            raise ValidationFailed(domain.MSG_SUFFIX_HALF_WIDTH, "validation_failed",
                                   errors={"suffix": [contract.NOT_STRING]})
        if app_instance_id is None and customer_number is None:
            raise Forbidden()
        if app_instance_id is not None:
            domain.check_app_instance_id(app_instance_id)
        if customer_number is not None:
            _customer_number(customer_number)
        cmd = domain.SetDisplayName(token_serial, suffix, app_instance_id, customer_number)
        events = self._decide_token(token_serial, cmd)
        return {"token_serial": token_serial, "display_name": events[0].data["display_name"]}

    def _decide_token(self, token_serial: str, cmd):
        stream = contract.token_stream(token_serial)
        for _ in range(MAX_ATTEMPTS):
            token = domain.fold_token(self.store.read_stream(stream))
            events = domain.decide_token(cmd, token)
            try:
                with self.store.transaction() as conn:
                    version = self.store.append(stream, events, token.version, self.metadata,
                                                subject=token.customer_number, conn=conn)
                    projection.project_all(conn, stream, version, events)
                return events
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(stream=stream)

    # -- using the token (R-INI-9) ------------------------------------------------------------------------

    @rpc
    def verify_otp(self, customer_number, code, purpose):
        number = _customer_number(customer_number)
        domain.check_otp_format(code)
        domain.check_purpose(purpose)
        serial = self._verify(number, code, purpose)
        return {"ok": True, "token_serial": serial}

    def _verify(self, number: str, code: str, purpose: str) -> str:
        settings, box = self.cfg.settings, self.cfg.box
        stream = contract.customer_stream(number)
        for _ in range(MAX_ATTEMPTS):
            now = self.clock.now()
            # One pooled connection per attempt, for the read and then the write's transaction
            # (a checkout and return fewer per verification than a connection for each).
            with self.store.pool.connection() as conn:
                token, state = projection.token_and_state(conn, number)
                if token is None:
                    raise NotFound(domain.MSG_NO_TOKEN, domain.CODE_NO_TOKEN)
                domain.check_otp_usable(state, now, settings.lock_release)
                serial, kid, sealed = token
                step = totp.match_step(box.open(serial, {"kid": kid, "ct": sealed}), code, now)
                events = domain.decide_customer(domain.VerifyOtp(
                    customer_number=number, token_serial=serial, matched_step=step, purpose=purpose, now=now,
                    threshold=settings.lock_threshold, release_after=settings.lock_release), state)
                try:
                    # Two checks of one customer race on the stream version: the loser re-reads
                    # and finds the step already used, so a code is accepted exactly once.
                    with conn.transaction():
                        version = self.store.append(stream, events, state.version, self.metadata, conn=conn)
                        projection.project_customer_from(conn, state, version, events)
                    break
                except ConcurrencyConflict:
                    continue
        else:
            raise ConcurrencyConflict(stream=stream)
        domain.raise_otp_outcome(events, settings.lock_threshold)
        return serial

    @rpc
    def progress(self, customer_number):
        """Where the customer stands in the OTP application (identity's migration_status asks):
        ``active`` (a token is activated), ``issued`` (token mailed, not yet activated),
        ``awaiting_call`` (an application waits for the call) or ``none``."""
        number = _customer_number(customer_number)
        now = self.clock.now()
        with self.store.pool.connection() as conn:
            if projection.active_token(conn, number) is not None:
                return {"stage": "active"}
            rows = conn.execute(
                "SELECT status, expires_at FROM otp.applications WHERE customer_number = %s "
                "AND status IN ('awaiting_call', 'verified', 'issued')", (number,)).fetchall()
        if any(r[0] == contract.ISSUED for r in rows):
            return {"stage": "issued"}
        if any(domain.in_flight(r[0], r[1], now, self.cfg.settings.grace) for r in rows):
            return {"stage": "awaiting_call"}
        return {"stage": "none"}

    @rpc
    def has_active_token(self, customer_number):
        number = _customer_number(customer_number)
        with self.store.pool.connection() as conn:
            return projection.active_token(conn, number) is not None

    @rpc
    def release_token(self, customer_number, confirmation_password, otp):
        """Phone change: confirmation password + the current OTP. Afterwards the customer uses
        the mail notification password until a new token is active (R-MAIL-2)."""
        number = _customer_number(customer_number)
        body = _load(contract.ReleaseRequest, {"confirmation_password": confirmation_password, "otp": otp})
        domain.check_otp_format(body["otp"])
        with self.store.pool.connection() as conn:
            if projection.active_token(conn, number) is None:
                raise NotFound(domain.MSG_NO_TOKEN, domain.CODE_NO_TOKEN)
        rpc_call(self.identity.verify_confirmation_password, number, body["confirmation_password"])
        serial = self._verify(number, body["otp"], "token_release")
        self._decide_token(serial, domain.ReleaseToken(serial, number, "customer_request", self.clock.now()))
        self.log.info("token_released", token_serial=serial)
        return {"released": True, "token_serial": serial}

    @rpc
    def unlock_otp(self, customer_number):
        """Operators only: lift the OTP lock (R-RBA-2)."""
        number = _customer_number(customer_number)
        if self.metadata.actor.kind != "operator":
            raise Forbidden()
        stream = contract.customer_stream(number)
        for _ in range(MAX_ATTEMPTS):
            with self.store.pool.connection() as conn:
                state = projection.customer_state(conn, number)
            events = domain.decide_customer(domain.UnlockOtp(number, self.clock.now()), state)
            try:
                with self.store.transaction() as conn:
                    version = self.store.append(stream, events, state.version, self.metadata, conn=conn)
                    projection.project_all(conn, stream, version, events)
                return {"unlocked": True}
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(stream=stream)

    @rpc
    def release_tokens_by_operator(self, customer_number):
        """Operators only (R-LEG-4, lost phone or OTP card): release the customer's active
        token(s) without the OTP; the customer falls back to the mail notification password and
        may apply for a new token. The operator and reason are in the events' metadata."""
        number = _customer_number(customer_number)
        with self.store.pool.connection() as conn:
            serials = [r[0] for r in conn.execute(
                "SELECT token_serial FROM otp.tokens WHERE customer_number = %s AND status = 'active' "
                "ORDER BY token_serial", (number,)).fetchall()]
        for cmd in domain.operator_release(serials, number, self.metadata.actor.kind == "operator",
                                           self.clock.now()):
            self._decide_token(cmd.token_serial, cmd)
            self.log.info("token_released", token_serial=cmd.token_serial, by="operator")
        return {"released": True, "token_serials": serials}
