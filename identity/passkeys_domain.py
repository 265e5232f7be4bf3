"""Biometric login with passkeys (WebAuthn) — the pure rules (SPEC R-INI-8, R-INI-9).

R-INI-8: after ID and password, the device registers a biometric credential; later logins use
it instead of ID and password. The rules decided here:

- Registration only from a customer session that came from the ID/password login (the gateway
  checks the session's kind, and ``gateway/routes_webauthn._require_password_session`` refuses
  a session a passkey login opened: a new registration path must call it too); at most
  ``max_passkeys`` credentials per customer (suspended ones count: they must be removed
  first); one credential ID is registered once, whoever asks.
- Challenges are single-use and expire (default 5 minutes); a challenge is for one purpose
  (registration or login) and, when it was issued for a customer (registration), for that
  customer only. Login challenges are issued to nobody in particular: the login options take
  no login ID (discoverable credentials), because listing a customer's credential IDs told
  anybody which customers have passkeys.
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
let anybody who knows a credential ID lock the customer out.

What is recorded (``passkey_login_failed`` on the customer's stream), and what is only logged.
The login route is unauthenticated and credential IDs are no secret, so an event that anybody
could cause would let anybody grow a customer's append-only stream without end. Hence:

- Recorded: a refusal of an assertion whose signature is *valid* (checked with the passkey's
  public key) over a *login* challenge *we issued* — that is, something only the device (or a
  copy of what the device signed) can produce: a replayed assertion (challenge ``used``), a
  late one (``expired``), a suspended passkey, a counter that did not increase (also
  suspends), identity's login standing.
- Logged only (structlog, no customer number): everything else — a challenge we never issued
  or issued for registration (``unknown``, ``other_purpose``, ``other_challenge_id``), a bad
  signature, a wrong origin (clientDataJSON is only trustworthy once the signature is), a
  passkey whose key was shredded. The answer is the same problem either way.
- Cap: a captured assertion can be replayed at will, so after a recorded failure the same
  passkey's next failures within ``FAILURE_RECORD_INTERVAL`` (1 minute) are logged only; a
  successful login ends the run. A suspension (counter) is always recorded: it changes state.

With that, a stranger without the device cannot append to the stream (short of replaying an
assertion the device signed, once a minute), so the stream grows with the customer's own use
only and is still folded whole for each login (no snapshot; worth one if that ever shows).
The gateway's per-address rate limit applies to the login routes as well.

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
    last_failed_at: str | None = None    # the last recorded failure since the last success (the cap)

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
                                    last_used_at=data.get("at"), last_failed_at=None,
                                    backed_up=bool(data.get("backed_up", current.backed_up))))
    if event_type == contract.PASSKEY_LOGIN_FAILED.name:
        return _with(state, replace(current, last_failed_at=data.get("at")))
    if event_type == contract.PASSKEY_SUSPENDED.name:
        return _with(state, replace(current, status=SUSPENDED))
    if event_type == contract.PASSKEY_REMOVED.name:
        rest = {k: v for k, v in state.passkeys.items() if k != pid}
        return replace(state, passkeys=MappingProxyType(rest))
    return state


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
    A challenge bound to a customer (registration) is for that customer only; a login
    challenge is unbound (discoverable credentials) and for anybody.
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
    challenge_problem: str | None      # from challenge_problem()
    outcome: AssertionOutcome | None   # None when the signature was not checked (needs_signature)
    origin: str | None
    now: datetime
    standing: str = STANDING_OK        # identity's login standing, asked once the signature is valid


@dataclass(frozen=True)
class LoginDecision:
    events: list[NewEvent]
    error: DomainError | None = None
    reason: str | None = None          # why it was refused, for the service's log


FAILURE_RECORD_INTERVAL = timedelta(minutes=1)

# challenge_problem() answers meaning the assertion quotes a login challenge we issued (see the
# module text): only then is a validly signed refusal worth an event.
_OUR_LOGIN_CHALLENGE = (None, "used", "expired")


def needs_signature(state: Passkeys, passkey_id: str, challenge_problem_: str | None) -> bool:
    """Whether the service should verify the assertion's signature: a usable passkey and a login
    challenge we issued (a replayed or late one too: a valid signature on it is worth an event).
    Anything else is refused unsigned, without the cost of a signature check."""
    passkey = state.get(passkey_id)
    return passkey is not None and passkey.usable and challenge_problem_ in _OUR_LOGIN_CHALLENGE


def _unsigned_refusal(passkey: Passkey, challenge_problem_: str | None,
                      outcome: AssertionOutcome | None) -> LoginDecision:
    """Nothing recorded (anybody could send it); the same problem a signed one would get."""
    if challenge_problem_ is not None:
        return LoginDecision([], Unauthenticated(MSG_CHALLENGE_INVALID, "webauthn_challenge_invalid"),
                             CHALLENGE_INVALID)
    if passkey.status == SUSPENDED:
        return LoginDecision([], Forbidden(MSG_SUSPENDED, "passkey_suspended"), PASSKEY_SUSPENDED)
    if not passkey.usable:
        reason = PASSKEY_UNUSABLE
    else:
        reason = outcome.problem if outcome is not None and outcome.problem else ASSERTION_INVALID
    return LoginDecision([], Unauthenticated(MSG_LOGIN_FAILED, "passkey_login_failed"), reason)


def _recently_failed(passkey: Passkey, now: datetime) -> bool:
    if passkey.last_failed_at is None:
        return False
    try:
        return now - datetime.fromisoformat(passkey.last_failed_at) < FAILURE_RECORD_INTERVAL
    except (TypeError, ValueError):
        return False


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
    outcome = cmd.outcome
    signed = (outcome is not None and outcome.problem is None and passkey.usable
              and cmd.challenge_problem in _OUR_LOGIN_CHALLENGE)
    if not signed:
        return _unsigned_refusal(passkey, cmd.challenge_problem, outcome)
    base = {"passkey_id": passkey.passkey_id, "customer_number": cmd.customer_number,
            "at": cmd.now.isoformat()}

    def failed(reason: str, error: DomainError, **extra) -> LoginDecision:
        if _recently_failed(passkey, cmd.now):
            return LoginDecision([], error, reason)        # the cap: logged by the service only
        return LoginDecision([NewEvent(contract.PASSKEY_LOGIN_FAILED.name,
                                       {**base, "reason": reason, **extra})], error, reason)

    # Validly signed from here on. The challenge first: a replay repeats the counter, and must
    # not be taken for a clone.
    if cmd.challenge_problem is not None:
        return failed(CHALLENGE_INVALID, Unauthenticated(MSG_CHALLENGE_INVALID, "webauthn_challenge_invalid"),
                      challenge=cmd.challenge_problem)
    if passkey.status == SUSPENDED:
        return failed(PASSKEY_SUSPENDED, Forbidden(MSG_SUSPENDED, "passkey_suspended"))
    if not sign_count_ok(passkey.sign_count, outcome.sign_count):
        counts = {"stored_sign_count": passkey.sign_count, "received_sign_count": outcome.sign_count}
        # Always recorded (no cap): the suspension changes the passkey's state.
        return LoginDecision([
            NewEvent(contract.PASSKEY_LOGIN_FAILED.name, {**base, "reason": SIGN_COUNT_NOT_INCREASED, **counts}),
            NewEvent(contract.PASSKEY_SUSPENDED.name, {**base, "reason": "possible_clone", **counts})],
            Forbidden(MSG_SUSPENDED, "passkey_suspended"), SIGN_COUNT_NOT_INCREASED)
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
