"""The ``passkeys`` Nameko service: biometric login with WebAuthn (SPEC R-INI-8, R-INI-9).

Thin around the pure rules of ``identity.passkeys_domain``. py_webauthn builds the options and
checks attestations and assertions (signature, RP ID hash, origin, challenge, user
verification); the decider gets the outcome. Each customer's passkeys are the stream
``passkeys-<customer_number>``; ``passkeys.credentials`` (deploy/sql/090_passkeys.sql) is the
read model a login needs before it knows the customer, written in the same transaction as
the events. Challenges live in ``passkeys.challenges`` and are consumed atomically.

Configuration (Nameko config key, else environment variable, else default):
``WEBAUTHN_RP_ID`` (``localhost``), ``WEBAUTHN_RP_NAME`` (``青森みちのく銀行``),
``WEBAUTHN_ORIGIN`` (comma-separated list of allowed origins; default
``http://localhost:<port of WEB_SERVER_ADDRESS / GATEWAY_ADDRESS>``),
``WEBAUTHN_CHALLENGE_SECONDS`` (300), ``WEBAUTHN_MAX_CREDENTIALS`` (5),
``WEBAUTHN_USER_HANDLE_KEY`` (a ``kid:base64`` entry as in FIELD_KEYS; default: the first
FIELD_KEYS entry — see ``user_handle_key``).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

import psycopg
from marshmallow import ValidationError
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc
from webauthn import (generate_authentication_options, generate_registration_options, options_to_json,
                      verify_authentication_response, verify_registration_response)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, generate_challenge
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (AttestationConveyancePreference, AuthenticatorAttachment,
                                      AuthenticatorSelectionCriteria, AuthenticatorTransport,
                                      CredentialDeviceType, PublicKeyCredentialDescriptor,
                                      ResidentKeyRequirement, UserVerificationRequirement)

from contracts import passkeys as contract
from contracts.errors import ConcurrencyConflict, DomainError, Unauthenticated, ValidationFailed
from contracts.events import Actor, RecordedEvent
from identity import passkeys_domain as domain
from identity.domain import procedures
from services import crypto
from services.config import ConfigReader, Settings
from services.dependencies import Clock, EventStoreProvider, Logger, RequestContext
from services.handlers import handles
from services.rpc import rpc_call
from services import ping  # the module: `nameko run` would take a PingMixin name for a service

RETRIES = 5
expected = rpc(expected_exceptions=DomainError)


# -- configuration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class WebAuthnSettings:
    rp_id: str
    rp_name: str
    origins: tuple[str, ...]
    challenge_seconds: int
    max_passkeys: int
    handle_key: bytes          # derives WebAuthn user handles


def default_origins(web_server_address: str | None) -> tuple[str, ...]:
    """``http://localhost:<port>`` of the gateway. Browsers refuse WebAuthn on an IP address, so
    the page is opened as localhost even when the gateway listens on 127.0.0.1 or 0.0.0.0."""
    port = (web_server_address or "127.0.0.1:8000").rpartition(":")[2] or "8000"
    return (f"http://localhost:{port}",)


def user_handle_key(reader: ConfigReader) -> bytes:
    """The key of the WebAuthn user handles. A handle must stay the same for a customer for as
    long as their passkeys live (the authenticator replaces its credential for the same user
    handle), but the first FIELD_KEYS entry changes at every key rotation and old entries are
    dropped in the end. So the handles come from ``WEBAUTHN_USER_HANDLE_KEY``, a FIELD_KEYS-style
    entry of its own that is never rotated. Derivation unchanged: setting it to the FIELD_KEYS
    entry that was first until now (before the first rotation) keeps every existing handle. Unset,
    the first FIELD_KEYS entry is used as before (fine until the first rotation)."""
    pinned = reader.raw("WEBAUTHN_USER_HANDLE_KEY")
    entries = crypto.parse_master_keys(str(pinned) if pinned else Settings().field_keys)
    return hmac.new(next(iter(entries.values())), b"passkeys/user-handles", hashlib.sha256).digest()


def load_settings(config: dict | None) -> WebAuthnSettings:
    reader = ConfigReader(config)
    origins = reader.raw("WEBAUTHN_ORIGIN")
    if origins:
        allowed = tuple(o.strip().rstrip("/") for o in str(origins).split(",") if o.strip())
    else:
        allowed = default_origins(reader.raw("WEB_SERVER_ADDRESS") or reader.raw("GATEWAY_ADDRESS"))
    settings = WebAuthnSettings(
        rp_id=str(reader.raw("WEBAUTHN_RP_ID") or "localhost"),
        rp_name=str(reader.raw("WEBAUTHN_RP_NAME") or "青森みちのく銀行"),
        origins=allowed,
        challenge_seconds=int(reader.number("WEBAUTHN_CHALLENGE_SECONDS", domain.DEFAULT_CHALLENGE_SECONDS,
                                            kind=int)),
        max_passkeys=int(reader.number("WEBAUTHN_MAX_CREDENTIALS", domain.DEFAULT_MAX_PASSKEYS, kind=int)),
        handle_key=user_handle_key(reader))
    if settings.challenge_seconds < 1 or settings.max_passkeys < 1 or not settings.origins:
        raise ValueError("WEBAUTHN_CHALLENGE_SECONDS and WEBAUTHN_MAX_CREDENTIALS must be positive "
                         "and WEBAUTHN_ORIGIN must name at least one origin")
    return settings


class WebAuthnConfig(DependencyProvider):
    def setup(self):
        self.value = load_settings(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.value


# -- helpers ------------------------------------------------------------------------------------

def _load(schema_cls, payload: dict) -> dict:
    try:
        return schema_cls().load(payload)
    except ValidationError as exc:
        errors = exc.normalized_messages()
        raise ValidationFailed(_first(errors) or ValidationFailed.default_detail, "validation_failed",
                               errors={str(k): v for k, v in errors.items()}) from None


def _first(messages):
    if isinstance(messages, str):
        return messages
    for value in (messages.values() if isinstance(messages, dict) else messages):
        found = _first(value)
        if found:
            return found
    return None


def client_data(credential: dict) -> dict:
    """The clientDataJSON of a browser credential, decoded (empty when it is not readable)."""
    try:
        raw = credential["response"]["clientDataJSON"]
        data = json.loads(base64url_to_bytes(raw))
        return data if isinstance(data, dict) else {}
    except (KeyError, TypeError, ValueError):
        return {}


def challenge_bytes(credential: dict) -> bytes | None:
    value = client_data(credential).get("challenge")
    if not isinstance(value, str) or len(value) > 128:
        return None
    try:
        return base64url_to_bytes(value)
    except ValueError:
        return None


_BASE64URL = re.compile(r"^[A-Za-z0-9_-]{1,1400}\Z")


def credential_id_of(credential: dict) -> str | None:
    """The credential ID as the browser sends it (base64url), or None for anything else."""
    cid = credential.get("id")
    return cid if isinstance(cid, str) and _BASE64URL.match(cid) else None


def _transports(values) -> list[AuthenticatorTransport]:
    out = []
    for value in values or ():
        try:
            out.append(AuthenticatorTransport(value))
        except ValueError:
            continue
    return out


def _options_dict(options) -> dict:
    return json.loads(options_to_json(options))


class PasskeysService(ping.PingMixin):
    name = contract.SERVICE

    store = EventStoreProvider()
    context = RequestContext()
    log = Logger()
    clock = Clock()
    webauthn = WebAuthnConfig()
    identity = RpcProxy("identity")     # the customer's login standing (identity/domain/standing.py)

    # -- registration (after ID/password login; the gateway checks the session) ------------------

    @expected
    def registration_options(self, customer_number=None):
        number = _load(contract.CustomerPayload, {"customer_number": customer_number})["customer_number"]
        cfg = self.webauthn
        state = self._state(number)
        now = self.clock.now()
        challenge_id, challenge, expires_at = self._new_challenge(domain.REGISTRATION, number, now)
        options = generate_registration_options(
            rp_id=cfg.rp_id, rp_name=cfg.rp_name,
            user_id=self._user_handle(number), user_name=number,
            user_display_name=f"{cfg.rp_name} お客さま番号 {number}",
            challenge=challenge, timeout=cfg.challenge_seconds * 1000,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                authenticator_attachment=AuthenticatorAttachment.PLATFORM,
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id),
                                                               transports=_transports(p.transports) or None)
                                 for p in state.passkeys.values() if p.usable])
        return {**_options_dict(options), "challenge_id": challenge_id, "expires_at": expires_at.isoformat()}

    @expected
    def register(self, customer_number=None, credential=None, nickname=None, challenge_id=None):
        args = _load(contract.RegisterPayload, {"customer_number": customer_number, "credential": credential,
                                                "nickname": nickname, "challenge_id": challenge_id})
        number, credential = args["customer_number"], args["credential"]
        cfg = self.webauthn
        now = self.clock.now()
        challenge = self._consume_challenge(challenge_bytes(credential))
        domain.require_challenge(challenge and challenge[0], domain.REGISTRATION, number, now,
                                 args["challenge_id"])
        try:
            verified = verify_registration_response(
                credential=credential, expected_challenge=challenge[1], expected_rp_id=cfg.rp_id,
                expected_origin=list(cfg.origins), require_user_verification=True)
            transports = [t.value for t in _transports(credential["response"].get("transports"))]
        except (WebAuthnException, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.log.info("passkey_registration_refused", customer_number=number, error=str(exc)[:200])
            raise DomainError(domain.MSG_REGISTRATION_INVALID, "webauthn_registration_invalid") from None
        credential_id = bytes_to_base64url(verified.credential_id)
        checked = domain.VerifiedCredential(
            credential_id=credential_id, public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count, aaguid=verified.aaguid, transports=tuple(transports),
            backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
            backed_up=bool(verified.credential_backed_up), attestation_format=str(getattr(verified.fmt, "value", verified.fmt)),
            user_verified=verified.user_verified)
        passkey_id = str(uuid.uuid4())
        origin = client_data(credential).get("origin")

        def decide(state):
            with self.store.pool.connection() as conn:
                taken = self._owner_of(conn, credential_id) is not None
            return domain.decide_register(domain.RegisterPasskey(
                number, passkey_id, checked, args["nickname"], cfg.rp_id, origin, now,
                cfg.max_passkeys, credential_taken=taken), state)

        # Also start over when another customer registered the same credential ID meanwhile.
        state, events = self._execute(number, decide, also_retry=(psycopg.errors.UniqueViolation,))
        self.log.info("passkey_registered", customer_number=number, passkey_id=passkey_id,
                      aaguid=checked.aaguid, backed_up=checked.backed_up)
        return domain.fold(events, state).get(passkey_id).view()

    # -- login instead of ID and password --------------------------------------------------------

    @expected
    def login_options(self):
        """Request options without ``allowCredentials``: the browser offers the discoverable
        passkeys it holds for this site. There is no login-ID form: listing a customer's
        credential IDs told anybody which customers have passkeys (no decoy hid how many and in
        which lengths), and with the IDs anybody could aim failed logins at a customer."""
        cfg = self.webauthn
        challenge_id, challenge, expires_at = self._new_challenge(domain.LOGIN, None, self.clock.now())
        options = generate_authentication_options(
            rp_id=cfg.rp_id, challenge=challenge, timeout=cfg.challenge_seconds * 1000,
            user_verification=UserVerificationRequirement.REQUIRED)
        return {**_options_dict(options), "challenge_id": challenge_id, "expires_at": expires_at.isoformat()}

    @expected
    def login(self, credential=None, challenge_id=None):
        """Checks an assertion; ``{"status": "ok", "customer_number", "passkey_id"}`` lets the
        gateway open a customer session. Only validly signed refusals are recorded (see
        identity/passkeys_domain.py); the rest are logged without the customer number."""
        args = _load(contract.LoginPayload, {"credential": credential, "challenge_id": challenge_id})
        credential = args["credential"]
        cfg = self.webauthn
        now = self.clock.now()
        failed = Unauthenticated(domain.MSG_LOGIN_FAILED, "passkey_login_failed")
        cid = credential_id_of(credential)
        with self.store.pool.connection() as conn:
            owner = self._owner_of(conn, cid) if cid else None
        # The challenge is spent whatever happens next: a replayed assertion finds it used.
        challenge = self._consume_challenge(challenge_bytes(credential))
        if owner is None:
            self.log.info("passkey_login_unknown_credential")
            raise failed
        passkey_id, number = owner
        problem = domain.challenge_problem(challenge and challenge[0], domain.LOGIN, number, now,
                                           args["challenge_id"])
        origin = client_data(credential).get("origin")
        state = self._state(number)
        outcome = None
        if domain.needs_signature(state, passkey_id, problem):
            outcome = self._check_assertion(credential, challenge[1], state.get(passkey_id), origin)
        standing = domain.STANDING_OK
        if outcome is not None and outcome.problem is None and problem is None:
            # Only a valid assertion asks: whoever merely knows a credential ID learns nothing.
            standing = self._login_standing(number)
        metadata = replace(self.context, actor=Actor("customer", number))
        for _ in range(RETRIES):
            decision = domain.decide_login(domain.PasskeyLogin(number, passkey_id, problem, outcome,
                                                               origin if isinstance(origin, str) else None,
                                                               now, standing), state)
            if not decision.events:
                break
            try:
                self._commit(number, decision.events, state.version, metadata)
                break
            except ConcurrencyConflict:
                state = self._state(number)
        else:
            raise ConcurrencyConflict()
        if decision.events:
            self.log.info("passkey_login", customer_number=number, passkey_id=passkey_id,
                          events=[e.type for e in decision.events], reason=decision.reason, challenge=problem)
        else:
            # Not recorded (unsigned, or within the cap): anybody may have sent it, so the log
            # names the passkey's internal id only, not the customer.
            self.log.info("passkey_login_refused_unrecorded", passkey_id=passkey_id,
                          reason=decision.reason, challenge=problem)
        if decision.error is not None:
            raise decision.error
        return {"status": "ok", "customer_number": number, "passkey_id": passkey_id}

    def _check_assertion(self, credential: dict, expected_challenge: bytes, passkey: domain.Passkey,
                         origin) -> domain.AssertionOutcome:
        cfg = self.webauthn
        if origin not in cfg.origins:
            return domain.AssertionOutcome(domain.ORIGIN_MISMATCH)
        try:
            # The counter is compared by the decider, after the signature is known to be valid
            # (py_webauthn would refuse a low counter before checking the signature).
            verified = verify_authentication_response(
                credential=credential, expected_challenge=expected_challenge, expected_rp_id=cfg.rp_id,
                expected_origin=list(cfg.origins), credential_public_key=base64url_to_bytes(passkey.public_key),
                credential_current_sign_count=0, require_user_verification=True)
        except (WebAuthnException, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.log.info("passkey_assertion_invalid", passkey_id=passkey.passkey_id, error=str(exc)[:200])
            return domain.AssertionOutcome(domain.ASSERTION_INVALID)
        return domain.AssertionOutcome(None, verified.new_sign_count, bool(verified.credential_backed_up))

    # -- the customer's list --------------------------------------------------------------------

    @expected
    def list_passkeys(self, customer_number=None):
        number = _load(contract.CustomerPayload, {"customer_number": customer_number})["customer_number"]
        return self._state(number).listed()

    @expected
    def remove(self, customer_number=None, passkey_id=None):
        args = _load(contract.RemovePayload, {"customer_number": customer_number, "passkey_id": passkey_id})
        number = args["customer_number"]
        now = self.clock.now()

        def decide(state):
            # The list's passkey_id, or the WebAuthn credential ID a browser knows.
            found = state.get(args["passkey_id"]) or state.by_credential_id(args["passkey_id"])
            return domain.decide_remove(domain.RemovePasskey(
                number, found.passkey_id if found is not None else args["passkey_id"], now), state)

        _, events = self._execute(number, decide)
        passkey_id = events[0].data["passkey_id"]      # decide_remove refuses when none is found
        self.log.info("passkey_removed", customer_number=number, passkey_id=passkey_id)
        return {"removed": True, "passkey_id": passkey_id}

    @expected
    def remove_by_operator(self, customer_number=None):
        """Operator procedure (R-LEG-4, ``tsunagi operator remove-passkeys``): every passkey of
        the customer is removed (a lost device, or the customer asks at the branch); one
        ``passkey_removed`` per passkey, the operator and the reason in the metadata."""
        number = _load(contract.CustomerPayload, {"customer_number": customer_number})["customer_number"]
        by_operator = procedures.names_operator_and_reason(self.context, self.name)
        now = self.clock.now()
        _, events = self._execute(number, lambda state: domain.decide_remove_all(
            domain.RemoveAllByOperator(number, now, by_operator), state))
        removed = [e.data["passkey_id"] for e in events]
        self.log.info("passkeys_removed_by_operator", customer_number=number, count=len(removed),
                      operator=self.context.actor.id)
        return {"status": "removed", "removed": len(removed), "passkey_ids": removed}

    # -- crypto-shredding ---------------------------------------------------------------------------

    @handles("eventstore", "subject_key_shredded")
    def on_subject_key_shredded(self, event: RecordedEvent, conn):
        """A shredded customer's credentials can no longer log in: forget their rows."""
        subject = event.data.get("subject") or ""
        if subject.isdigit() and len(subject) == 10:
            forget(conn, subject)

    # -- plumbing ---------------------------------------------------------------------------------

    def _login_standing(self, number: str) -> str | None:
        """identity's answer; no answer in time is a 503 (fail closed, nothing recorded)."""
        answer = rpc_call(self.identity.login_standing, number)
        return answer.get("standing") if isinstance(answer, dict) else None

    def _execute(self, number: str, decide, also_retry: tuple = ()):
        """Load, ``decide(state)``, append with the expected version; on a concurrent append
        (or one of ``also_retry``) start over. Returns (the state decided on, the events)."""
        for _ in range(RETRIES):
            state = self._state(number)
            events = decide(state)
            try:
                self._commit(number, events, state.version, self.context)
                return state, events
            except (ConcurrencyConflict, *also_retry):
                continue
        raise ConcurrencyConflict()

    def _state(self, number: str) -> domain.Passkeys:
        return domain.fold(self.store.read_stream(contract.stream_name(number)))

    def _commit(self, number: str, events, expected_version: int, metadata) -> None:
        stream = contract.stream_name(number)
        with self.store.transaction() as conn:
            version = self.store.append(stream, events, expected_version, metadata, subject=number, conn=conn)
            first = version - len(events) + 1
            for offset, event in enumerate(events):
                project(conn, number, first + offset, event.type, event.data)

    def _user_handle(self, number: str) -> bytes:
        """A stable, opaque WebAuthn user handle: no personal data on the authenticator."""
        return hmac.new(self.webauthn.handle_key, b"user:" + number.encode(), hashlib.sha256).digest()

    @staticmethod
    def _owner_of(conn, credential_id: str | None) -> tuple[str, str] | None:
        row = conn.execute("SELECT passkey_id::text, customer_number FROM passkeys.credentials "
                           "WHERE credential_id = %s", (credential_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def _new_challenge(self, purpose: str, customer_number: str | None, now: datetime):
        challenge_id = str(uuid.uuid4())
        challenge = generate_challenge()
        expires_at = domain.challenge_expiry(now, self.webauthn.challenge_seconds)
        with self.store.transaction() as conn:
            # Housekeeping: challenges an hour past their expiry are of no use to anybody.
            conn.execute("DELETE FROM passkeys.challenges WHERE expires_at < %s - interval '1 hour'", (now,))
            conn.execute("INSERT INTO passkeys.challenges (challenge_id, challenge, purpose, customer_number, "
                         "created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
                         (challenge_id, challenge, purpose, customer_number, now, expires_at))
        return challenge_id, challenge, expires_at

    def _consume_challenge(self, challenge: bytes | None) -> tuple[domain.Challenge, bytes] | None:
        """Marks the challenge used and returns it as it was *before* (``used_at`` tells a
        replay). Row-locked, so two requests quoting one challenge cannot both see it unused."""
        if not challenge:
            return None
        with self.store.transaction() as conn:
            row = conn.execute("SELECT challenge_id::text, purpose, customer_number, expires_at, used_at "
                               "FROM passkeys.challenges WHERE challenge = %s FOR UPDATE", (challenge,)).fetchone()
            if row is None:
                return None
            if row[4] is None:
                conn.execute("UPDATE passkeys.challenges SET used_at = %s WHERE challenge_id = %s",
                             (self.clock.now(), row[0]))
        return domain.Challenge(*row), challenge


# -- the read model (deploy/sql/090_passkeys.sql) ---------------------------------------------------

def project(conn, customer_number: str, version: int, event_type: str, data: dict) -> None:
    """Apply one event (new or replayed) to ``passkeys.credentials``. Idempotent."""
    pid = data.get("passkey_id")
    if event_type == contract.PASSKEY_REGISTERED.name:
        if data.get("credential_id") in (None, domain.REDACTED):
            return         # a shredded customer's credential: nothing to look up any more
        conn.execute(
            "INSERT INTO passkeys.credentials (passkey_id, customer_number, credential_id, status, sign_count, "
            "registered_at, stream_version) VALUES (%s, %s, %s, 'active', %s, %s, %s) "
            "ON CONFLICT (passkey_id) DO NOTHING",
            (pid, customer_number, data["credential_id"], int(data.get("sign_count") or 0),
             data["registered_at"], version))
    elif event_type == contract.PASSKEY_LOGIN_SUCCEEDED.name:
        conn.execute("UPDATE passkeys.credentials SET sign_count = %s, last_used_at = %s, stream_version = %s, "
                     "updated_at = now() WHERE passkey_id = %s",
                     (int(data.get("sign_count") or 0), data.get("at"), version, pid))
    elif event_type == contract.PASSKEY_SUSPENDED.name:
        conn.execute("UPDATE passkeys.credentials SET status = 'suspended', stream_version = %s, "
                     "updated_at = now() WHERE passkey_id = %s", (version, pid))
    elif event_type == contract.PASSKEY_REMOVED.name:
        conn.execute("DELETE FROM passkeys.credentials WHERE passkey_id = %s", (pid,))


def forget(conn, customer_number: str) -> int:
    return conn.execute("DELETE FROM passkeys.credentials WHERE customer_number = %s",
                        (customer_number,)).rowcount


def rebuild(store, *, batch: int = 5000, progress=None) -> int:
    """Empty the read model and replay every passkeys event into it. Returns events seen.

    The category is read through one server-side cursor (only the credential id opened, the
    one personal field the table keeps), then applied by ``project`` in pipeline mode (the
    cursor must be closed first: pipeline mode allows no server-side cursor)."""
    from services.eventstore.bulk_read import read_events
    store.seal_all()     # what was committed before the rebuild is in it (replay: sealed already)
    with store.transaction() as conn:
        conn.execute("DELETE FROM passkeys.credentials")
        events = list(read_events(conn, store.keyring, (contract.STREAM_CATEGORY,), reveal=("credential_id",)))
        with conn.pipeline():
            for ev in events:
                project(conn, ev.stream_id, ev.stream_version, ev.type, ev.data)
        if progress:
            progress(len(events))
        return len(events)
