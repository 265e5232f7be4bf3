"""The customer aggregate of identity (stream ``customer-<customer number>``): a pure decider.

``initial_state`` / ``evolve(state, event)`` / ``decide(command, state) -> Decision``. No I/O,
no clock, no randomness: ``now``, generated ids, and the *results* of password verification
(slow hashing happens in the service, in real threads) arrive inside the command.

A ``Decision`` carries the facts to append and then either a result or an error. Failures are
facts too (a wrong password must be counted even though the caller gets an error), so the
service appends first and raises afterwards.

Order of the initial operation owned here (smartphone guide): legacy login (手順2) → secret
questions (手順3, registered in the secret-questions service) → password change (手順4) →
OTP application (手順5…, the OTP issue). A step cannot be skipped or repeated (409).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

from contracts.errors import (Conflict, DomainError, Forbidden, Locked, NotFound, TooEarly,
                              Unauthenticated, ValidationFailed)
from contracts.identity import CREDENTIALS
from identity.domain import lockout
from identity.domain import messages as msg
from identity.domain.legacy_record import LegacyRecord
from identity.domain.passwords import PasswordChange

LEGACY = "legacy_password"
LOGIN = "login_password"
CONFIRMATION = "confirmation_password"
MAX_CHALLENGE_ANSWERS = 3
KEEP_CHALLENGES = 10


class Fact(NamedTuple):
    """An event the decider wants recorded (the service gives it an id and metadata)."""
    type: str
    data: dict


@dataclass(frozen=True)
class Decision:
    facts: tuple[Fact, ...] = ()
    result: Any = None
    error: DomainError | None = None


@dataclass(frozen=True)
class Challenge:
    challenge_id: str
    question_id: str
    environment: str
    expires_at: datetime
    failed_answers: int = 0
    open: bool = True


@dataclass(frozen=True)
class Customer:
    exists: bool = False
    customer_number: str | None = None
    legacy_login_verifier: str | None = None
    legacy_pin_verifier: str | None = None
    record_digest: str | None = None
    phones: tuple[str, ...] = ()
    email: str | None = None
    last_legacy_environment: str | None = None
    migrated: bool = False                       # step 4 done: new passwords set
    login_password_hash: str | None = None
    confirmation_password_hash: str | None = None
    counters: Mapping[str, lockout.Counter] = field(default_factory=lambda: MappingProxyType({}))
    known_environments: frozenset[str] = frozenset()
    challenges: Mapping[str, Challenge] = field(default_factory=lambda: MappingProxyType({}))
    # Operator procedures (R-LEG-4): a temporary password must be changed before anything else.
    login_password_change_required: bool = False
    confirmation_password_change_required: bool = False
    login_id: str | None = None                  # None: the customer number (the only login ID so far)
    # Until when a temporary password from an operator works (None: no limit, e.g. events
    # recorded before the limit existed).
    login_temporary_expires_at: datetime | None = None
    confirmation_temporary_expires_at: datetime | None = None
    # A confirmation password was ever verified: only then can an OTP token exist (otp_token_possible).
    confirmation_ever_verified: bool = False

    def counter(self, credential: str) -> lockout.Counter:
        return self.counters.get(credential, lockout.Counter())

    @property
    def confirmation_verifier(self) -> tuple[str, str | None]:
        """("legacy", verifier) before step 4 — the old 確認暗証番号 — ("argon2", hash) after."""
        if self.migrated:
            return "argon2", self.confirmation_password_hash
        return "legacy", self.legacy_pin_verifier


initial_state = Customer()


# -- evolve ----------------------------------------------------------------------------------

def _ts(value) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _with_counter(state: Customer, credential: str, counter: lockout.Counter) -> Customer:
    counters = dict(state.counters)
    counters[credential] = counter
    return replace(state, counters=MappingProxyType(counters))


def _with_challenge(state: Customer, ch: Challenge) -> Customer:
    challenges = dict(state.challenges)
    challenges[ch.challenge_id] = ch
    if len(challenges) > KEEP_CHALLENGES:   # old ones can no longer be answered anyway
        for old in list(challenges)[:-KEEP_CHALLENGES]:
            del challenges[old]
    return replace(state, challenges=MappingProxyType(challenges))


def evolve(state: Customer, event) -> Customer:
    t, d = event.type, event.data
    if t == "legacy_customer_imported":
        return replace(state, exists=True, customer_number=d["customer_number"],
                       legacy_login_verifier=d["login_password_verifier"],
                       legacy_pin_verifier=d["confirmation_pin_verifier"],
                       record_digest=d.get("record_digest"),
                       phones=tuple(d.get("phones") or ()) if isinstance(d.get("phones"), list) else (),
                       email=d.get("email"))
    if t == "legacy_login_succeeded":
        state = _with_counter(state, LEGACY, lockout.Counter())
        return replace(state, last_legacy_environment=d.get("environment"))
    if t in ("legacy_login_failed", "login_failed", "credential_check_failed"):
        credential = d["credential"]
        return _with_counter(state, credential, replace(state.counter(credential),
                                                        failures=d["consecutive_failures"]))
    if t == "credential_locked":
        return _with_counter(state, d["credential"], lockout.Counter(
            d["consecutive_failures"], _ts(d["locked_at"]), _ts(d.get("release_at"))))
    if t == "credential_unlocked":
        return _with_counter(state, d["credential"], lockout.Counter())
    if t == "confirmation_password_verified":
        state = replace(state, confirmation_ever_verified=True)
        return _with_counter(state, CONFIRMATION, lockout.Counter())
    if t == "passwords_changed":
        for credential in (LEGACY, CONFIRMATION, LOGIN):
            state = _with_counter(state, credential, lockout.Counter())
        return replace(state, migrated=True, login_password_hash=d["login_password_hash"],
                       confirmation_password_hash=d["confirmation_password_hash"])
    if t in ("login_succeeded", "login_challenged"):   # both mean: the password was right
        state = _with_counter(state, LOGIN, lockout.Counter())
        if t == "login_challenged":
            state = _with_challenge(state, Challenge(d["challenge_id"], d["question_id"],
                                                     d["environment"], _ts(d["expires_at"])))
        return state
    if t == "login_password_reissued":
        state = _with_counter(state, LOGIN, lockout.Counter())
        return replace(state, login_password_hash=d["temporary_password_hash"],
                       login_password_change_required=True,
                       login_temporary_expires_at=_ts(d.get("expires_at")))
    if t == "login_password_changed":
        state = _with_counter(state, LOGIN, lockout.Counter())
        return replace(state, login_password_hash=d["login_password_hash"],
                       login_password_change_required=False)
    if t == "confirmation_password_reset":
        state = _with_counter(state, CONFIRMATION, lockout.Counter())
        return replace(state, confirmation_password_hash=d["temporary_password_hash"],
                       confirmation_password_change_required=True,
                       confirmation_temporary_expires_at=_ts(d.get("expires_at")))
    if t == "confirmation_password_changed":
        state = _with_counter(state, CONFIRMATION, lockout.Counter())
        return replace(state, confirmation_password_hash=d["confirmation_password_hash"],
                       confirmation_password_change_required=False)
    if t == "registered_phones_changed":
        phones = d.get("phones")
        return replace(state, phones=tuple(phones) if isinstance(phones, list) else state.phones)
    if t == "login_id_initialised":
        return replace(state, login_id=d.get("login_id"))
    if t == "environment_recognised":
        return replace(state, known_environments=state.known_environments | {d["environment"]})
    if t in ("challenge_passed", "challenge_failed"):
        ch = state.challenges.get(d["challenge_id"])
        if ch is None:
            return state
        if t == "challenge_passed":
            return _with_challenge(state, replace(ch, open=False))
        failed = ch.failed_answers + 1
        return _with_challenge(state, replace(ch, failed_answers=failed,
                                              open=failed < MAX_CHALLENGE_ANSWERS))
    return state   # events of later versions / other concerns: ignored, never fatal


def fold(events, state: Customer = initial_state) -> Customer:
    for event in events:
        state = evolve(state, event)
    return state


# -- queries the service asks before it does slow work -----------------------------------------

def next_step(state: Customer, secret_questions_registered: bool, otp_application_done: bool = False) -> str:
    if state.migrated:
        return "done" if otp_application_done else "otp_application"
    if not secret_questions_registered:
        return "secret_questions"
    return "password_change"


def steps(state: Customer, secret_questions_registered: bool, otp_application_done: bool = False) -> dict:
    done = lambda flag: "done" if flag else "pending"  # noqa: E731
    return {"legacy_login": "done",
            "secret_questions": done(secret_questions_registered or state.migrated),
            "password_change": done(state.migrated),
            "otp_application": done(otp_application_done)}


def blocked(state: Customer, credential: str, now: datetime) -> bool:
    """Locked and not due for a timed release: no need to check a password at all."""
    c = state.counter(credential)
    return c.is_locked(now)


def otp_token_possible(state: Customer) -> bool:
    """Could this customer hold an active OTP token? False is a proof, True only a maybe.

    A token is activated only from an OTP application, and otp_service accepts an application
    only after ``identity.verify_confirmation_password`` answered ok (otp_service ``apply``,
    R-INI-3), which is after ``confirmation_password_verified`` was committed to this
    customer's stream. So a stream without that event belongs to a customer who never applied
    and has no token: the login needs no OTP and need not ask otp_service (R-INI-9).

    The login stays safe against an application racing it: the login appends its outcome with
    the stream version it read; a ``confirmation_password_verified`` appended meanwhile makes
    that append conflict, and the retry reads the event and asks otp_service. So a login
    without the question commits only while the customer provably still has no token. Every
    other successful confirmation-password check (token release, later procedures) only makes
    identity ask, as before. Should otp_service ever accept an application without that check,
    tests/e2e/test_initial_operation_full.py (login after activation without the OTP → 401)
    fails; tests/integration/test_login_otp_question.py covers identity's side."""
    return state.confirmation_ever_verified


def environment_known(state: Customer, environment: str) -> bool:
    return environment in state.known_environments


def open_challenge(state: Customer, challenge_id: str, environment: str, now: datetime) -> Challenge:
    """The challenge a customer may answer now, or Unauthenticated(challenge_invalid). The answer
    must come from the environment that was challenged (a challenge cannot be carried elsewhere)."""
    ch = state.challenges.get(challenge_id)
    if ch is None or not ch.open or now >= ch.expires_at or ch.environment != environment:
        raise Unauthenticated(msg.CHALLENGE_INVALID, "challenge_invalid")
    return ch


def password_change_allowed(state: Customer, secret_questions_registered: bool) -> None:
    if not state.exists:
        raise NotFound(msg.CUSTOMER_NOT_FOUND, "customer_not_found")
    step = next_step(state, secret_questions_registered)
    if step != "password_change":
        raise Conflict(msg.STEP_NOT_AVAILABLE, "step_not_available", next_step=step)


# -- commands --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportLegacy:
    record: LegacyRecord


@dataclass(frozen=True)
class LegacyLogin:
    now: datetime
    cutover_at: datetime
    environment: str
    password_ok: bool | None                  # None: not checked (locked / before cut-over)
    policy: lockout.Policy = lockout.Policy()


@dataclass(frozen=True)
class ChangePasswords:
    change: PasswordChange
    now: datetime
    secret_questions_registered: bool
    current_login_ok: bool | None
    current_confirmation_ok: bool | None
    new_login_password_hash: str | None = None         # computed only when both currents are right
    new_confirmation_password_hash: str | None = None
    policy: lockout.Policy = lockout.Policy()


@dataclass(frozen=True)
class Login:
    now: datetime
    environment: str
    password_ok: bool | None
    challenge_id: str | None = None                    # generated by the service
    question: dict | None = None                       # from secret_questions.pick_question
    challenge_expires_at: datetime | None = None
    otp_required: bool = False                         # OTP issue hook: the customer has an active token
    otp_ok: bool | None = None
    policy: lockout.Policy = lockout.Policy()


@dataclass(frozen=True)
class AnswerChallenge:
    challenge_id: str
    environment: str
    now: datetime
    answer_ok: bool


@dataclass(frozen=True)
class VerifyConfirmationPassword:
    now: datetime
    password_ok: bool | None
    policy: lockout.Policy = lockout.Policy()


@dataclass(frozen=True)
class UnlockCredential:
    credential: str
    now: datetime
    by_operator: bool


# Operator procedures (R-LEG-4). The temporary password itself is generated (randomness) and
# hashed (slow) by the service; only its argon2id hash reaches the decider and the log.
# A temporary password is handed over on paper (and a temporary login password also lifts a
# lock), so it works only for a limited time, like the bank's other paper credentials: after
# that the customer asks the branch again.
TEMPORARY_PASSWORD_VALIDITY = timedelta(days=14)


@dataclass(frozen=True)
class ReissueLoginPassword:
    now: datetime
    temporary_password_hash: str
    by_operator: bool
    valid_for: timedelta = TEMPORARY_PASSWORD_VALIDITY


@dataclass(frozen=True)
class ResetConfirmationPassword:
    now: datetime
    temporary_password_hash: str
    by_operator: bool
    valid_for: timedelta = TEMPORARY_PASSWORD_VALIDITY


@dataclass(frozen=True)
class ChangeRegisteredPhones:
    now: datetime
    phones: tuple[str, ...]                  # E.164, validated by procedures.registered_phones
    by_operator: bool


@dataclass(frozen=True)
class InitialiseLoginId:
    now: datetime
    by_operator: bool


@dataclass(frozen=True)
class ChangeOnePassword:
    """The customer changes the login or the confirmation password (after a procedure, or of
    their own accord). ``current_ok``: the current password verified; ``same_as_other``: the new
    one verifies against the other password's hash (R-INI-2: the two must differ)."""
    credential: str                          # LOGIN | CONFIRMATION
    now: datetime
    current_ok: bool | None
    same_as_other: bool | None = None
    new_hash: str | None = None
    policy: lockout.Policy = lockout.Policy()


# -- decide ----------------------------------------------------------------------------------

def _release_if_due(state: Customer, credential: str, now: datetime, facts: list) -> Customer:
    if state.counter(credential).release_due(now):
        fact = Fact("credential_unlocked", {"credential": credential, "by": "timed_release",
                                            "unlocked_at": now.isoformat()})
        facts.append(fact)
        return evolve(state, fact)
    return state


def _failure(state: Customer, credential: str, event_type: str, now: datetime,
             policy: lockout.Policy, facts: list, **extra) -> lockout.Counter:
    counter = lockout.after_failure(state.counter(credential), policy, now)
    facts.append(Fact(event_type, {"credential": credential,
                                   "consecutive_failures": counter.failures, **extra}))
    if counter.locked and not state.counter(credential).locked:
        facts.append(Fact("credential_locked", {
            "credential": credential, "consecutive_failures": counter.failures,
            "locked_at": now.isoformat(),
            "release_at": counter.release_at.isoformat() if counter.release_at else None}))
    return counter


def _locked(credential: str) -> Locked:
    return Locked(msg.LOCKED[credential], "credential_locked", credential=credential)


def _need(value, what: str):
    if value is None:
        raise ValueError(f"the service must supply {what} for this decision")
    return value


def decide(command, state: Customer) -> Decision:
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise TypeError(f"unknown command {type(command).__name__}")
    return handler(command, state)


def _import(cmd: ImportLegacy, state: Customer) -> Decision:
    if state.exists:
        if state.record_digest == cmd.record.digest:
            return Decision(result={"status": "unchanged"})
        return Decision(result={"status": "rejected", "reason": "already_imported_with_different_data",
                                "message": msg.IMPORT_REASONS["already_imported_with_different_data"]})
    return Decision((Fact("legacy_customer_imported", cmd.record.event_data()),),
                    result={"status": "imported"})


def _legacy_login(cmd: LegacyLogin, state: Customer) -> Decision:
    if cmd.now < cmd.cutover_at:
        return Decision(error=TooEarly(msg.too_early(cmd.cutover_at), "before_cutover",
                                       cutover_at=cmd.cutover_at.isoformat()))
    if not state.exists:
        raise ValueError("unknown customers are answered by the shadow counter, not the aggregate")
    facts: list[Fact] = []
    state = _release_if_due(state, LEGACY, cmd.now, facts)
    if state.counter(LEGACY).is_locked(cmd.now):
        return Decision(tuple(facts), error=_locked(LEGACY))
    if not _need(cmd.password_ok, "password_ok"):
        counter = _failure(state, LEGACY, "legacy_login_failed", cmd.now, cmd.policy, facts)
        error = _locked(LEGACY) if counter.locked else \
            Unauthenticated(msg.LEGACY_INVALID_CREDENTIALS, "invalid_credentials")
        return Decision(tuple(facts), error=error)
    if state.migrated:
        # Only someone who knows the old password learns that the customer has migrated.
        return Decision(tuple(facts), error=Conflict(msg.ALREADY_MIGRATED, "already_migrated"))
    facts.append(Fact("legacy_login_succeeded", {"environment": cmd.environment}))
    return Decision(tuple(facts), result={"customer_number": state.customer_number})


def _change_passwords(cmd: ChangePasswords, state: Customer) -> Decision:
    try:
        password_change_allowed(state, cmd.secret_questions_registered)
    except DomainError as exc:
        return Decision(error=exc)
    facts: list[Fact] = []
    state = _release_if_due(state, LEGACY, cmd.now, facts)
    state = _release_if_due(state, CONFIRMATION, cmd.now, facts)
    for credential in (LEGACY, CONFIRMATION):
        if state.counter(credential).is_locked(cmd.now):
            return Decision(tuple(facts), error=_locked(credential))
    login_ok = _need(cmd.current_login_ok, "current_login_ok")
    pin_ok = _need(cmd.current_confirmation_ok, "current_confirmation_ok")
    if not (login_ok and pin_ok):
        errors: dict[str, list[str]] = {}
        lock = None
        for ok, credential, field_name, message in (
                (login_ok, LEGACY, "current_login_password", msg.CURRENT_LOGIN_WRONG),
                (pin_ok, CONFIRMATION, "current_confirmation_password", msg.CURRENT_CONFIRMATION_WRONG)):
            if not ok:
                counter = _failure(state, credential, "credential_check_failed", cmd.now, cmd.policy,
                                   facts, during="password_change")
                errors[field_name] = [message]
                lock = lock or (credential if counter.locked else None)
        if lock:
            return Decision(tuple(facts), error=_locked(lock))
        first = next(iter(errors.values()))[0]
        return Decision(tuple(facts), error=ValidationFailed(
            first, "current_password_incorrect", errors=errors))
    facts.append(Fact("passwords_changed", {
        "login_password_hash": _need(cmd.new_login_password_hash, "new_login_password_hash"),
        "confirmation_password_hash": _need(cmd.new_confirmation_password_hash,
                                            "new_confirmation_password_hash"),
        "algorithm": "argon2id"}))
    env = state.last_legacy_environment
    if env and env not in state.known_environments:
        # The device that did the initial operation (with the legacy password, the secret
        # questions and now both current passwords) is the customer's first known environment.
        facts.append(Fact("environment_recognised", {"environment": env, "source": "initial_operation"}))
    return Decision(tuple(facts), result={"customer_number": state.customer_number})


def _login(cmd: Login, state: Customer) -> Decision:
    if not (state.exists and state.migrated):
        raise ValueError("customers without a login password are answered by the shadow counter")
    facts: list[Fact] = []
    state = _release_if_due(state, LOGIN, cmd.now, facts)
    if state.counter(LOGIN).is_locked(cmd.now):
        return Decision(tuple(facts), error=_locked(LOGIN))
    if not _need(cmd.password_ok, "password_ok"):
        counter = _failure(state, LOGIN, "login_failed", cmd.now, cmd.policy, facts)
        error = _locked(LOGIN) if counter.locked else \
            Unauthenticated(msg.INVALID_CREDENTIALS, "invalid_credentials")
        return Decision(tuple(facts), error=error)
    if cmd.otp_required and not cmd.otp_ok:
        # OTP issue hook: the OTP service counts its own failures; identity only refuses.
        return Decision(tuple(facts), error=Unauthenticated(msg.OTP_REQUIRED, "otp_required"))
    if state.login_password_change_required and _temporary_expired(state, LOGIN, cmd.now):
        return Decision(tuple(facts), error=_temporary_password_expired(LOGIN))
    if state.login_password_change_required:
        # A temporary password from an operator (R-LEG-4) buys only the forced change: no
        # customer session, so no secret-question step-up either (it comes at the next login).
        facts.append(Fact("login_succeeded", {"environment": cmd.environment, "method": "temporary_password",
                                              "next_step": "login_password_change"}))
        return Decision(tuple(facts), result={"status": "password_change_required",
                                              "customer_number": state.customer_number,
                                              "next_step": "login_password_change"})
    if environment_known(state, cmd.environment):
        facts.append(Fact("login_succeeded", {"environment": cmd.environment, "method": "password"}))
        return Decision(tuple(facts), result={"status": "ok", "customer_number": state.customer_number})
    question = _need(cmd.question, "question")
    facts.append(Fact("login_challenged", {
        "challenge_id": _need(cmd.challenge_id, "challenge_id"), "question_id": question["id"],
        "environment": cmd.environment,
        "expires_at": _need(cmd.challenge_expires_at, "challenge_expires_at").isoformat()}))
    return Decision(tuple(facts), result={"status": "challenge", "challenge_id": cmd.challenge_id,
                                          "question": {"id": question["id"], "text": question["text"]}})


def _answer_challenge(cmd: AnswerChallenge, state: Customer) -> Decision:
    try:
        open_challenge(state, cmd.challenge_id, cmd.environment, cmd.now)
    except DomainError as exc:
        return Decision(error=exc)
    if not cmd.answer_ok:
        fact = Fact("challenge_failed", {"challenge_id": cmd.challenge_id})
        after = evolve(state, fact).challenges[cmd.challenge_id]
        detail = msg.WRONG_ANSWER if after.open else msg.WRONG_ANSWER + msg.CHALLENGE_INVALID
        return Decision((fact,), error=Unauthenticated(detail, "wrong_answer",
                                                       retry=after.open))
    facts = [Fact("challenge_passed", {"challenge_id": cmd.challenge_id})]
    if cmd.environment not in state.known_environments:
        facts.append(Fact("environment_recognised", {"environment": cmd.environment, "source": "challenge"}))
    facts.append(Fact("login_succeeded", {"environment": cmd.environment, "method": "password+secret_question",
                                          "challenge_id": cmd.challenge_id}))
    return Decision(tuple(facts), result={"status": "ok", "customer_number": state.customer_number})


def _verify_confirmation(cmd: VerifyConfirmationPassword, state: Customer) -> Decision:
    if not state.exists:
        return Decision(error=NotFound(msg.CUSTOMER_NOT_FOUND, "customer_not_found"))
    facts: list[Fact] = []
    state = _release_if_due(state, CONFIRMATION, cmd.now, facts)
    if state.counter(CONFIRMATION).is_locked(cmd.now):
        return Decision(tuple(facts), error=_locked(CONFIRMATION))
    if not _need(cmd.password_ok, "password_ok"):
        counter = _failure(state, CONFIRMATION, "credential_check_failed", cmd.now, cmd.policy, facts,
                           during="confirmation")
        error = _locked(CONFIRMATION) if counter.locked else Unauthenticated(
            msg.CONFIRMATION_PASSWORD_WRONG, "invalid_confirmation_password")
        return Decision(tuple(facts), error=error)
    pending = change_required(state)
    if pending:
        return Decision(tuple(facts), error=_change_required(pending))
    facts.append(Fact("confirmation_password_verified", {}))
    return Decision(tuple(facts), result={"ok": True})


def _unlock(cmd: UnlockCredential, state: Customer) -> Decision:
    if not cmd.by_operator:
        return Decision(error=Forbidden(msg.OPERATOR_ONLY, "operator_only"))
    if cmd.credential not in CREDENTIALS:
        return Decision(error=ValidationFailed(msg.CREDENTIAL_UNKNOWN,
                                               errors={"credential": [msg.CREDENTIAL_UNKNOWN]}))
    if not state.exists:
        return Decision(error=NotFound(msg.CUSTOMER_NOT_FOUND, "customer_not_found"))
    if not state.counter(cmd.credential).locked:
        return Decision(error=Conflict(msg.NOT_LOCKED, "not_locked"))
    return Decision((Fact("credential_unlocked", {"credential": cmd.credential, "by": "operator",
                                                  "unlocked_at": cmd.now.isoformat()}),),
                    result={"credential": cmd.credential, "status": "unlocked"})


def change_required(state: Customer) -> str | None:
    """Which temporary password must be changed before any transaction or settings change
    (every such change is authorised with the confirmation password), or None."""
    if state.login_password_change_required:
        return LOGIN
    if state.confirmation_password_change_required:
        return CONFIRMATION
    return None


def _temporary_expired(state: Customer, credential: str, now: datetime) -> bool:
    until = state.login_temporary_expires_at if credential == LOGIN else state.confirmation_temporary_expires_at
    return until is not None and now >= until


def _temporary_password_expired(credential: str) -> Forbidden:
    return Forbidden(msg.TEMPORARY_PASSWORD_EXPIRED, "temporary_password_expired", credential=credential)


def _change_required(credential: str) -> Forbidden:
    detail = msg.LOGIN_PASSWORD_CHANGE_REQUIRED if credential == LOGIN else msg.CONFIRMATION_PASSWORD_CHANGE_REQUIRED
    return Forbidden(detail, "password_change_required", credential=credential)


def _procedure_allowed(by_operator: bool, state: Customer, *, migrated: bool = True) -> DomainError | None:
    if not by_operator:
        return Forbidden(msg.OPERATOR_ONLY, "operator_only")
    if not state.exists:
        return NotFound(msg.CUSTOMER_NOT_FOUND, "customer_not_found")
    if migrated and not state.migrated:
        return Conflict(msg.NOT_MIGRATED, "not_migrated")
    return None


def _unlock_fact(state: Customer, credential: str, now: datetime, by: str) -> list[Fact]:
    if not state.counter(credential).locked:
        return []
    return [Fact("credential_unlocked", {"credential": credential, "by": by, "unlocked_at": now.isoformat()})]


def _reissue_login(cmd: ReissueLoginPassword, state: Customer) -> Decision:
    error = _procedure_allowed(cmd.by_operator, state)
    if error:
        return Decision(error=error)
    facts = _unlock_fact(state, LOGIN, cmd.now, "operator")
    expires_at = (cmd.now + cmd.valid_for).isoformat()
    facts.append(Fact("login_password_reissued", {
        "temporary_password_hash": cmd.temporary_password_hash, "algorithm": "argon2id",
        "reissued_at": cmd.now.isoformat(), "expires_at": expires_at,
        "procedure": "reissue_login_password"}))
    return Decision(tuple(facts), result={"status": "reissued", "next_step": "login_password_change",
                                          "unlocked": bool(facts[:-1]),
                                          "temporary_password_expires_at": expires_at})


def _reset_confirmation(cmd: ResetConfirmationPassword, state: Customer) -> Decision:
    error = _procedure_allowed(cmd.by_operator, state)
    if error:
        return Decision(error=error)
    facts = _unlock_fact(state, CONFIRMATION, cmd.now, "operator")
    expires_at = (cmd.now + cmd.valid_for).isoformat()
    facts.append(Fact("confirmation_password_reset", {
        "temporary_password_hash": cmd.temporary_password_hash, "algorithm": "argon2id",
        "reset_at": cmd.now.isoformat(), "expires_at": expires_at,
        "procedure": "reset_confirmation_password"}))
    return Decision(tuple(facts), result={"status": "reset", "unlocked": bool(facts[:-1]),
                                          "temporary_password_expires_at": expires_at})


def _change_phones(cmd: ChangeRegisteredPhones, state: Customer) -> Decision:
    error = _procedure_allowed(cmd.by_operator, state, migrated=False)
    if error:
        return Decision(error=error)
    if not cmd.phones:
        raise ValueError("the service must validate the phones first")
    if tuple(cmd.phones) == tuple(state.phones):
        return Decision(error=Conflict(msg.PHONES_UNCHANGED, "phones_unchanged"))
    return Decision((Fact("registered_phones_changed", {
        "phones": list(cmd.phones), "phone_count": len(cmd.phones),
        "previous_phone_count": len(state.phones), "changed_at": cmd.now.isoformat(),
        "procedure": "change_phones"}),), result={"status": "changed"})


def _initialise_login_id(cmd: InitialiseLoginId, state: Customer) -> Decision:
    error = _procedure_allowed(cmd.by_operator, state, migrated=False)
    if error:
        return Decision(error=error)
    # The login ID is the customer number (R-LEG-3, R-INI-9); initialising also lifts the lock
    # of the password used with it (the legacy one until step 4, the new one after).
    credential = LOGIN if state.migrated else LEGACY
    facts = _unlock_fact(state, credential, cmd.now, "operator")
    facts.append(Fact("login_id_initialised", {
        "login_id": state.customer_number, "previous_login_id": state.login_id,
        "initialised_at": cmd.now.isoformat(), "procedure": "initialise_login_id"}))
    return Decision(tuple(facts), result={"status": "initialised", "login_id": state.customer_number,
                                          "unlocked": [f.data["credential"] for f in facts[:-1]]})


def _change_one_password(cmd: ChangeOnePassword, state: Customer) -> Decision:
    if cmd.credential not in (LOGIN, CONFIRMATION):
        raise ValueError(f"unknown credential {cmd.credential!r}")
    if not state.exists:
        return Decision(error=NotFound(msg.CUSTOMER_NOT_FOUND, "customer_not_found"))
    if not state.migrated:     # before step 4 both passwords change together (R-INI-2)
        return Decision(error=Conflict(msg.STEP_NOT_AVAILABLE, "step_not_available"))
    if cmd.credential == CONFIRMATION and state.login_password_change_required:
        return Decision(error=_change_required(LOGIN))
    facts: list[Fact] = []
    state = _release_if_due(state, cmd.credential, cmd.now, facts)
    if state.counter(cmd.credential).is_locked(cmd.now):
        return Decision(tuple(facts), error=_locked(cmd.credential))
    field_prefix = "login" if cmd.credential == LOGIN else "confirmation"
    if not _need(cmd.current_ok, "current_ok"):
        counter = _failure(state, cmd.credential, "credential_check_failed", cmd.now, cmd.policy, facts,
                           during=f"{field_prefix}_password_change")
        if counter.locked:
            return Decision(tuple(facts), error=_locked(cmd.credential))
        field_name = f"current_{field_prefix}_password"
        detail = msg.CURRENT_PASSWORD_WRONG.format(label=msg.LABELS[field_name])
        return Decision(tuple(facts), error=ValidationFailed(detail, "current_password_incorrect",
                                                             errors={field_name: [detail]}))
    if _need(cmd.same_as_other, "same_as_other"):
        field_name = f"new_{field_prefix}_password"
        detail = msg.NEW_LOGIN_EQUALS_CONFIRMATION if cmd.credential == LOGIN else msg.NEW_CONFIRMATION_EQUALS_LOGIN
        return Decision(tuple(facts), error=ValidationFailed(detail, errors={field_name: [detail]}))
    was_temporary = state.login_password_change_required if cmd.credential == LOGIN \
        else state.confirmation_password_change_required
    if was_temporary and _temporary_expired(state, cmd.credential, cmd.now):
        return Decision(tuple(facts), error=_temporary_password_expired(cmd.credential))
    facts.append(Fact(f"{cmd.credential}_changed", {
        f"{cmd.credential}_hash": _need(cmd.new_hash, "new_hash"), "algorithm": "argon2id",
        "replaced_temporary": was_temporary}))
    return Decision(tuple(facts), result={"status": "changed"})


_HANDLERS = {
    ImportLegacy: _import,
    LegacyLogin: _legacy_login,
    ChangePasswords: _change_passwords,
    Login: _login,
    AnswerChallenge: _answer_challenge,
    VerifyConfirmationPassword: _verify_confirmation,
    UnlockCredential: _unlock,
    ReissueLoginPassword: _reissue_login,
    ResetConfirmationPassword: _reset_confirmation,
    ChangeRegisteredPhones: _change_phones,
    InitialiseLoginId: _initialise_login_id,
    ChangeOnePassword: _change_one_password,
}
