"""Biometric login with passkeys (WebAuthn) — the pure rules (SPEC R-INI-8, R-INI-9).

R-INI-8: after ID and password, the device registers a biometric credential; later logins use
it instead of ID and password. The rules decided here:

- Registration only from a customer session that came from the ID/password login (the gateway
  checks the session's kind and how it was opened); at most ``max_passkeys`` credentials per
  customer (suspended ones count: they must be removed first); one credential ID is registered
  once, whoever asks.
- Challenges are single-use and expire (default 5 minutes); a challenge is for one purpose
  (registration or login) and, when it was issued for a customer, for that customer only.
- The sign counter must increase. Authenticators that keep no counter send 0 every time (synced
  passkeys do); 0 after 0 is accepted. A *validly signed* assertion whose counter did not
  increase means two authenticators hold the same private key — a possible clone: the login is
  refused and the credential suspended (``passkey_suspended``) until the customer removes it.
  Only a valid signature can suspend: otherwise anybody could switch off a customer's passkey
  with a forged low counter.

A passkey stands in for the login ID and password, so it is worth no more than they are: once
the signature and the counter are good, identity's *login standing* decides
(identity/domain/standing.py): while the login password is locked (R-RBA-2), re-issued by an
operator and not yet changed (R-LEG-4), or the initial operation is not done, the login is
refused (and recorded) with a problem telling the customer to use ID and password. Nothing is
suspended: the passkey works again when the standing is ok. An operator removes a customer's
passkeys with ``decide_remove_all`` (``tsunagi operator remove-passkeys``).

Failed passkey logins do not count toward a lockout (R-RBA-2 lists passwords, secret answers,
OTPs and activation passwords: secrets that can be guessed). An assertion is a signature by a
private key that never leaves the device; there is nothing to guess, and a counter would only
let anybody who knows a credential ID (allowCredentials are public) lock the customer out.
Every refusal for a known credential is still an event (``passkey_login_failed``) for the
audit, and the gateway's per-address rate limit applies to the login routes.

No I/O, no clock, no randomness here: the service verifies the WebAuthn signatures with
py_webauthn and passes the outcome, the ids and ``now`` in the commands.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Iterable, Mapping

from contracts import passkeys as contract
from contracts.errors import Conflict, DomainError, Forbidden, Locked, NotFound, Unauthenticated
from contracts.events import NewEvent, RecordedEvent

DEFAULT_CHALLENGE_SECONDS = 300
DEFAULT_MAX_PASSKEYS = 5

REGISTRATION = "registration"
LOGIN = "login"
PURPOSES = (REGISTRATION, LOGIN)

ACTIVE = "active"
SUSPENDED = "suspended"

REDACTED = "[redacted]"    # services.crypto.REDACTED: how a shredded personal field reads

# -- messages (Japanese, for the customer) ----------------------------------------------------

MSG_CHALLENGE_INVALID = ("認証の有効期限が切れたか、既に使用された認証です。"
                         "お手数ですが、最初からもう一度お試しください。")
MSG_LIMIT = "生体認証は{n}件まで登録できます。不要な登録を削除してから、もう一度お試しください。"
MSG_DUPLICATE = "この生体認証は既に登録されています。"
MSG_REGISTRATION_INVALID = ("生体認証の登録を確認できませんでした。"
                            "お手数ですが、最初からもう一度お試しください。")
MSG_LOGIN_FAILED = ("生体認証でログインできませんでした。"
                    "ログインIDとログインパスワードでログインしてください。")
MSG_SUSPENDED = ("安全のため、この生体認証の登録は利用を停止しました。ログインIDとログインパスワードで"
                 "ログインし、この登録を削除してから、もう一度登録してください。")
MSG_NOT_FOUND = "指定された生体認証の登録が見つかりません。"
MSG_LOGIN_PASSWORD_CHANGE_REQUIRED = (
    "ログインパスワードが仮パスワードのままのため、生体認証ではログインできません。ログインIDと"
    "仮ログインパスワードでログインし、新しいログインパスワードに変更してください。変更後は生体認証を"
    "そのままご利用いただけます。")
MSG_LOGIN_LOCKED = (
    "ログインパスワードのご利用が停止されているため、生体認証でもログインできません。お手数ですが、"
    "お取引店またはネットバンキング共同受付センター（0120-892-548、9:00～21:00）にご連絡ください。")
MSG_INITIAL_OPERATION_REQUIRED = (
    "初回操作（初期設定）が完了していないため、生体認証ではログインできません。"
    "ログインIDとログインパスワードでログインし、初期設定を完了してください。")
MSG_NONE_REGISTERED = "このお客さまの生体認証の登録はありません。"
MSG_OPERATOR_ONLY = "この操作はお取引店の担当者のみ行えます。"
MSG_PASSWORD_LOGIN_REQUIRED = ("生体認証の登録には、ログインIDとログインパスワードでのログインが必要です。"
                               "ログインし直してから、もう一度お試しください。")

# -- reasons a login is refused (event data, stable) ------------------------------------------

CHALLENGE_INVALID = "challenge_invalid"
ASSERTION_INVALID = "assertion_invalid"
ORIGIN_MISMATCH = "origin_mismatch"
SIGN_COUNT_NOT_INCREASED = "sign_count_not_increased"
PASSKEY_SUSPENDED = "passkey_suspended"
PASSKEY_UNUSABLE = "passkey_unusable"     # key material redacted (customer crypto-shredded)
# identity's login standing (identity/domain/standing.py) forbids a login without the password:
LOGIN_PASSWORD_CHANGE_REQUIRED = "login_password_change_required"   # re-issued by an operator
LOGIN_PASSWORD_LOCKED = "login_password_locked"                     # R-RBA-2 lock, not released
INITIAL_OPERATION_PENDING = "initial_operation_pending"             # steps 2-4 not done
CUSTOMER_UNKNOWN = "customer_unknown"                               # not in identity (shredded)

STANDING_OK = "ok"                                                   # identity's answer when allowed


# -- state --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Passkey:
    passkey_id: str
    credential_id: str          # base64url, as the browser sends it
    public_key: str             # COSE key, base64url
    nickname: str | None
    sign_count: int
    status: str
    registered_at: str
    last_used_at: str | None = None
    aaguid: str | None = None
    transports: tuple[str, ...] = ()
    backup_eligible: bool = False
    backed_up: bool = False

    @property
    def usable(self) -> bool:
        """False once the customer's data key is gone (the fields read as redacted)."""
        return REDACTED not in (self.credential_id, self.public_key)

    def view(self) -> dict:
        """What the customer's list shows: no key material, no credential ID."""
        return {"passkey_id": self.passkey_id, "nickname": self.nickname if self.usable else None,
                "status": self.status, "registered_at": self.registered_at,
                "last_used_at": self.last_used_at, "backed_up": self.backed_up,
                "aaguid": self.aaguid}


@dataclass(frozen=True)
class Passkeys:
    """One customer's passkeys, in registration order (removed ones are gone)."""
    passkeys: Mapping[str, Passkey] = field(default_factory=lambda: MappingProxyType({}))
    version: int = 0

    def get(self, passkey_id: str) -> Passkey | None:
        return self.passkeys.get(passkey_id)

    def by_credential_id(self, credential_id: str) -> Passkey | None:
        for p in self.passkeys.values():
            if p.credential_id == credential_id:
                return p
        return None

    def listed(self) -> list[dict]:
        return [p.view() for p in self.passkeys.values()]


initial_state = Passkeys()


def _with(state: Passkeys, passkey: Passkey) -> Passkeys:
    return replace(state, passkeys=MappingProxyType({**state.passkeys, passkey.passkey_id: passkey}))


def evolve(state: Passkeys, event_type: str, data: dict) -> Passkeys:
    pid = data.get("passkey_id")
    current = state.passkeys.get(pid)
    if event_type == contract.PASSKEY_REGISTERED.name:
        return _with(state, Passkey(
            passkey_id=pid, credential_id=data["credential_id"], public_key=data["public_key"],
            nickname=data.get("nickname"), sign_count=int(data.get("sign_count") or 0), status=ACTIVE,
            registered_at=data["registered_at"], aaguid=data.get("aaguid"),
            transports=tuple(data.get("transports") or ()),
            backup_eligible=bool(data.get("backup_eligible")), backed_up=bool(data.get("backed_up"))))
    if current is None:
        return state
    if event_type == contract.PASSKEY_LOGIN_SUCCEEDED.name:
        return _with(state, replace(current, sign_count=int(data.get("sign_count") or 0),
                                    last_used_at=data.get("at"),
                                    backed_up=bool(data.get("backed_up", current.backed_up))))
    if event_type == contract.PASSKEY_SUSPENDED.name:
        return _with(state, replace(current, status=SUSPENDED))
    if event_type == contract.PASSKEY_REMOVED.name:
        rest = {k: v for k, v in state.passkeys.items() if k != pid}
        return replace(state, passkeys=MappingProxyType(rest))
    return state       # passkey_login_failed changes nothing


def fold(events: Iterable[RecordedEvent | NewEvent], state: Passkeys = initial_state) -> Passkeys:
    for ev in events:
        state = evolve(state, ev.type, ev.data)
        version = getattr(ev, "stream_version", None)
        if version is not None:
            state = replace(state, version=version)
    return state


# -- challenges -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    """A stored challenge as the service read it, *before* it was marked used."""
    challenge_id: str
    purpose: str
    customer_number: str | None
    expires_at: datetime
    used_at: datetime | None = None


def challenge_expiry(now: datetime, seconds: int) -> datetime:
    if seconds < 1:
        raise ValueError("the challenge lifetime must be at least 1 second")
    return now + timedelta(seconds=seconds)


def challenge_problem(challenge: Challenge | None, purpose: str, customer_number: str | None,
                      now: datetime, challenge_id: str | None = None) -> str | None:
    """Why ``challenge`` cannot be used now (a short English reason for the log), or None.

    ``challenge_id``: the id the client quoted, if it quoted one; it must be the same challenge.
    A challenge bound to a customer (registration; a login that named the login ID) is for
    that customer only; an unbound login challenge (discoverable credential) is for anybody.
    """
    if challenge is None:
        return "unknown"
    if challenge_id is not None and challenge_id != challenge.challenge_id:
        return "other_challenge_id"
    if challenge.used_at is not None:
        return "used"
    if now >= challenge.expires_at:
        return "expired"
    if challenge.purpose != purpose:
        return "other_purpose"
    if challenge.customer_number is not None and challenge.customer_number != customer_number:
        return "other_customer"
    return None


def require_challenge(challenge: Challenge | None, purpose: str, customer_number: str | None,
                      now: datetime, challenge_id: str | None = None) -> None:
    """Registration: an unusable challenge is refused outright (nothing is recorded)."""
    if challenge_problem(challenge, purpose, customer_number, now, challenge_id) is not None:
        raise Unauthenticated(MSG_CHALLENGE_INVALID, "webauthn_challenge_invalid")


# -- the sign counter -------------------------------------------------------------------------------

def sign_count_ok(stored: int, received: int) -> bool:
    """WebAuthn §6.1.1: when either counter is non-zero the new one must be greater."""
    if stored == 0 and received == 0:
        return True
    return received > stored


# -- registration -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifiedCredential:
    """What py_webauthn established from a valid attestation."""
    credential_id: str
    public_key: str
    sign_count: int
    aaguid: str | None = None
    transports: tuple[str, ...] = ()
    backup_eligible: bool = False
    backed_up: bool = False
    attestation_format: str = "none"
    user_verified: bool = True


@dataclass(frozen=True)
class RegisterPasskey:
    customer_number: str
    passkey_id: str
    credential: VerifiedCredential
    nickname: str | None
    rp_id: str
    origin: str
    now: datetime
    max_passkeys: int = DEFAULT_MAX_PASSKEYS
    credential_taken: bool = False    # the credential ID is registered to another customer


def decide_register(cmd: RegisterPasskey, state: Passkeys) -> list[NewEvent]:
    if not cmd.credential.user_verified:
        # Biometric (R-INI-8) means the device verified the person, not only their presence.
        raise DomainError(MSG_REGISTRATION_INVALID, "webauthn_registration_invalid")
    if cmd.credential_taken or state.by_credential_id(cmd.credential.credential_id) is not None:
        raise Conflict(MSG_DUPLICATE, "passkey_already_registered")
    if len(state.passkeys) >= cmd.max_passkeys:
        raise Conflict(MSG_LIMIT.format(n=cmd.max_passkeys), "passkey_limit_reached",
                       max_passkeys=cmd.max_passkeys)
    c = cmd.credential
    nickname = (cmd.nickname or "").strip() or None
    return [NewEvent(contract.PASSKEY_REGISTERED.name, {
        "passkey_id": cmd.passkey_id, "customer_number": cmd.customer_number,
        "credential_id": c.credential_id, "public_key": c.public_key, "nickname": nickname,
        "sign_count": c.sign_count, "aaguid": c.aaguid, "transports": list(c.transports),
        "backup_eligible": c.backup_eligible, "backed_up": c.backed_up,
        "attestation_format": c.attestation_format, "rp_id": cmd.rp_id, "origin": cmd.origin,
        "registered_at": cmd.now.isoformat()})]


# -- login ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AssertionOutcome:
    """The service's check of one assertion. ``problem``: None when py_webauthn verified the
    signature, RP ID hash, origin, type, challenge and user verification; else the reason."""
    problem: str | None
    sign_count: int = 0
    backed_up: bool | None = None


@dataclass(frozen=True)
class PasskeyLogin:
    customer_number: str
    passkey_id: str
    challenge_problem: str | None      # from challenge_problem(); checked before the signature
    outcome: AssertionOutcome | None   # None when the signature was not checked
    origin: str | None
    now: datetime
    standing: str = STANDING_OK        # identity's login standing, asked once the signature is valid


@dataclass(frozen=True)
class LoginDecision:
    events: list[NewEvent]
    error: DomainError | None = None


def login_refusal(state: Passkeys, passkey_id: str, challenge_problem_: str | None) -> str | None:
    """Reasons to refuse before checking the signature (so the service need not check it)."""
    passkey = state.get(passkey_id)
    if passkey is None:
        return None                     # removed: the service treats it as unknown
    if challenge_problem_ is not None:
        return CHALLENGE_INVALID
    if passkey.status == SUSPENDED:
        return PASSKEY_SUSPENDED
    if not passkey.usable:
        return PASSKEY_UNUSABLE
    return None


def standing_refusal(standing: str) -> tuple[str, DomainError] | None:
    """A passkey stands in for the login ID and password, so it opens no customer session while
    they could not: reason and error for identity's standing, None when it is ``ok``. Anything
    unexpected refuses (fail closed)."""
    if standing == STANDING_OK:
        return None
    if standing == "password_change_required":
        return LOGIN_PASSWORD_CHANGE_REQUIRED, Forbidden(MSG_LOGIN_PASSWORD_CHANGE_REQUIRED, "password_change_required",
                                                         credential="login_password")
    if standing == "locked":
        return LOGIN_PASSWORD_LOCKED, Locked(MSG_LOGIN_LOCKED, "credential_locked", credential="login_password")
    if standing == "initial_operation_pending":
        return INITIAL_OPERATION_PENDING, Forbidden(MSG_INITIAL_OPERATION_REQUIRED, "initial_operation_required")
    return CUSTOMER_UNKNOWN, Unauthenticated(MSG_LOGIN_FAILED, "passkey_login_failed")


def decide_login(cmd: PasskeyLogin, state: Passkeys) -> LoginDecision:
    passkey = state.get(cmd.passkey_id)
    if passkey is None:
        # Removed (or never this customer's): no stream to record on, nothing to say.
        return LoginDecision([], Unauthenticated(MSG_LOGIN_FAILED, "passkey_login_failed"))
    base = {"passkey_id": passkey.passkey_id, "customer_number": cmd.customer_number,
            "at": cmd.now.isoformat()}

    def failed(reason: str, error: DomainError, **extra) -> LoginDecision:
        return LoginDecision([NewEvent(contract.PASSKEY_LOGIN_FAILED.name,
                                       {**base, "reason": reason, **extra})], error)

    refusal = login_refusal(state, cmd.passkey_id, cmd.challenge_problem)
    if refusal == CHALLENGE_INVALID:
        return failed(refusal, Unauthenticated(MSG_CHALLENGE_INVALID, "webauthn_challenge_invalid"),
                      challenge=cmd.challenge_problem)
    if refusal == PASSKEY_SUSPENDED:
        return failed(refusal, Forbidden(MSG_SUSPENDED, "passkey_suspended"))
    if refusal is not None:
        return failed(refusal, Unauthenticated(MSG_LOGIN_FAILED, "passkey_login_failed"))
    outcome = cmd.outcome
    if outcome is None or outcome.problem is not None:
        reason = outcome.problem if outcome is not None else ASSERTION_INVALID
        return failed(reason, Unauthenticated(MSG_LOGIN_FAILED, "passkey_login_failed"))
    if not sign_count_ok(passkey.sign_count, outcome.sign_count):
        counts = {"stored_sign_count": passkey.sign_count, "received_sign_count": outcome.sign_count}
        decision = failed(SIGN_COUNT_NOT_INCREASED, Forbidden(MSG_SUSPENDED, "passkey_suspended"), **counts)
        decision.events.append(NewEvent(contract.PASSKEY_SUSPENDED.name,
                                        {**base, "reason": "possible_clone", **counts}))
        return decision
    # After the signature and the counter: only the holder of the device learns the standing.
    # Nothing is suspended; the passkey works again once identity's standing is ok.
    refused = standing_refusal(cmd.standing)
    if refused is not None:
        return failed(refused[0], refused[1], received_sign_count=outcome.sign_count)
    backed_up = passkey.backed_up if outcome.backed_up is None else outcome.backed_up
    return LoginDecision([NewEvent(contract.PASSKEY_LOGIN_SUCCEEDED.name, {
        **base, "sign_count": outcome.sign_count, "backed_up": backed_up, "origin": cmd.origin})])


# -- removal ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RemovePasskey:
    customer_number: str
    passkey_id: str
    now: datetime


def decide_remove(cmd: RemovePasskey, state: Passkeys) -> list[NewEvent]:
    if state.get(cmd.passkey_id) is None:
        raise NotFound(MSG_NOT_FOUND, "passkey_not_found")
    return [NewEvent(contract.PASSKEY_REMOVED.name, {
        "passkey_id": cmd.passkey_id, "customer_number": cmd.customer_number,
        "at": cmd.now.isoformat()})]


@dataclass(frozen=True)
class RemoveAllByOperator:
    """Operator procedure (R-LEG-4): a lost or handed-on device, or a customer who asks at the
    branch — every passkey of the customer goes, suspended ones too."""
    customer_number: str
    now: datetime
    by_operator: bool


def decide_remove_all(cmd: RemoveAllByOperator, state: Passkeys) -> list[NewEvent]:
    if not cmd.by_operator:
        raise Forbidden(MSG_OPERATOR_ONLY, "operator_only")
    if not state.passkeys:
        raise NotFound(MSG_NONE_REGISTERED, "passkey_not_found")
    return [NewEvent(contract.PASSKEY_REMOVED.name, {
        "passkey_id": passkey_id, "customer_number": cmd.customer_number, "by": "operator",
        "at": cmd.now.isoformat()}) for passkey_id in state.passkeys]
