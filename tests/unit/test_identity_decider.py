"""The identity customer decider as given / when / then tables (R-LEG-1…3, R-INI-2, R-INI-9,
R-RBA-1, R-RBA-2). Given: events already in the stream; when: a command; then: the facts it
decides (type + the data keys that matter) and the error code / result it answers."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from contracts import errors
from identity.domain import customer as agg
from identity.domain import lockout
from identity.domain import messages as msg
from identity.domain.legacy_record import validate_record
from identity.domain.passwords import PasswordChange

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
CUTOVER = datetime.fromisoformat("2025-01-05T07:00:00+09:00")
POLICY = lockout.Policy(threshold=5, release_seconds=0)
TIMED = lockout.Policy(threshold=5, release_seconds=600)
NUMBER = "0123456789"
PBKDF2 = "pbkdf2_sha256$1000$salt$" + "A" * 43 + "="
BCRYPT = "$2b$10$" + "a" * 53
ENV = "env-home"
ENV2 = "env-elsewhere"

RECORD = validate_record({"customer_number": NUMBER, "login_password_verifier": PBKDF2,
                          "confirmation_pin_verifier": BCRYPT, "phones": "090-1234-5678", "email": ""})
F = agg.Fact
IMPORTED = F("legacy_customer_imported", RECORD.event_data())
LEGACY_OK = F("legacy_login_succeeded", {"environment": ENV})
MIGRATED = F("passwords_changed", {"login_password_hash": "$argon2id$new", "confirmation_password_hash": "$argon2id$pin",
                                   "algorithm": "argon2id"})
KNOWN = F("environment_recognised", {"environment": ENV, "source": "initial_operation"})


def fails(event_type: str, credential: str, n: int) -> list[agg.Fact]:
    return [F(event_type, {"credential": credential, "consecutive_failures": i}) for i in range(1, n + 1)]


def locked(credential: str, n: int = 5, release_at: datetime | None = None) -> agg.Fact:
    return F("credential_locked", {"credential": credential, "consecutive_failures": n,
                                   "locked_at": NOW.isoformat(),
                                   "release_at": release_at.isoformat() if release_at else None})


CHANGE = PasswordChange("oldPass1", "NewPass12", "oldPin12", "pinPin34")


def change(login_ok=True, pin_ok=True, sq=True, now=NOW, policy=POLICY):
    return agg.ChangePasswords(CHANGE, now, sq, login_ok, pin_ok,
                               "$argon2id$h1" if login_ok and pin_ok else None,
                               "$argon2id$h2" if login_ok and pin_ok else None, policy)


def login(ok=True, env=ENV, now=NOW, policy=POLICY, question=None, otp_required=False, otp_ok=None):
    return agg.Login(now, env, ok, "c-1", question or {"id": "q3", "text": "母親の旧姓は？"},
                     now + timedelta(minutes=5), otp_required, otp_ok, policy)


def legacy(ok=True, now=NOW, policy=POLICY):
    return agg.LegacyLogin(now, CUTOVER, ENV, ok, policy)


CHALLENGED = F("login_challenged", {"challenge_id": "c-1", "question_id": "q3", "environment": ENV2,
                                    "expires_at": (NOW + timedelta(minutes=5)).isoformat()})

# (id, given, when, then facts [(type, {key: value})], error code or None, result subset)
CASES = [
    # -- R-LEG-1 import
    ("import new customer", [], agg.ImportLegacy(RECORD),
     [("legacy_customer_imported", {"customer_number": NUMBER, "phones": ["+819012345678"]})], None,
     {"status": "imported"}),
    ("import same record again is unchanged", [IMPORTED], agg.ImportLegacy(RECORD), [], None,
     {"status": "unchanged"}),
    ("import different record for existing number is rejected", [IMPORTED],
     agg.ImportLegacy(validate_record({**RECORD.event_data(), "phones": "03-1234-5678", "email": ""})), [], None,
     {"status": "rejected", "reason": "already_imported_with_different_data"}),
    # -- R-LEG-2 cut-over
    ("legacy login before cut-over", [IMPORTED], legacy(now=CUTOVER - timedelta(seconds=1)), [], "before_cutover", None),
    # -- R-LEG-3 legacy login
    ("legacy login succeeds", [IMPORTED], legacy(True), [("legacy_login_succeeded", {"environment": ENV})], None,
     {"customer_number": NUMBER}),
    ("legacy login wrong password counts", [IMPORTED], legacy(False),
     [("legacy_login_failed", {"credential": "legacy_password", "consecutive_failures": 1})],
     "invalid_credentials", None),
    ("legacy login 5th failure locks", [IMPORTED, *fails("legacy_login_failed", "legacy_password", 4)], legacy(False),
     [("legacy_login_failed", {"consecutive_failures": 5}),
      ("credential_locked", {"credential": "legacy_password", "release_at": None})], "credential_locked", None),
    ("legacy login success resets the counter", [IMPORTED, *fails("legacy_login_failed", "legacy_password", 4),
                                                LEGACY_OK], legacy(False),
     [("legacy_login_failed", {"consecutive_failures": 1})], "invalid_credentials", None),
    ("locked legacy login refuses even the right password",
     [IMPORTED, *fails("legacy_login_failed", "legacy_password", 5), locked("legacy_password")], legacy(None),
     [], "credential_locked", None),
    ("timed release unlocks at the next attempt",
     [IMPORTED, *fails("legacy_login_failed", "legacy_password", 5),
      locked("legacy_password", release_at=NOW + timedelta(minutes=10))],
     legacy(True, now=NOW + timedelta(minutes=10), policy=TIMED),
     [("credential_unlocked", {"credential": "legacy_password", "by": "timed_release"}),
      ("legacy_login_succeeded", {})], None, {"customer_number": NUMBER}),
    ("timed release not yet due",
     [IMPORTED, locked("legacy_password", release_at=NOW + timedelta(minutes=10))],
     legacy(None, now=NOW + timedelta(minutes=9), policy=TIMED), [], "credential_locked", None),
    ("lock with timed release records when it ends", [IMPORTED, *fails("legacy_login_failed", "legacy_password", 4)],
     legacy(False, policy=TIMED),
     [("legacy_login_failed", {}), ("credential_locked", {"release_at": (NOW + timedelta(seconds=600)).isoformat()})],
     "credential_locked", None),
    ("after migration legacy password says use normal login", [IMPORTED, LEGACY_OK, MIGRATED], legacy(True), [],
     "already_migrated", None),
    ("after migration wrong legacy password is just wrong", [IMPORTED, LEGACY_OK, MIGRATED], legacy(False),
     [("legacy_login_failed", {})], "invalid_credentials", None),
    # -- R-INI-2 password change
    ("password change before secret questions is out of order", [IMPORTED, LEGACY_OK], change(sq=False), [],
     "step_not_available", None),
    ("password change replaces verifiers and remembers the device", [IMPORTED, LEGACY_OK], change(),
     [("passwords_changed", {"login_password_hash": "$argon2id$h1", "confirmation_password_hash": "$argon2id$h2",
                             "algorithm": "argon2id"}),
      ("environment_recognised", {"environment": ENV, "source": "initial_operation"})], None, {}),
    ("password change cannot be repeated", [IMPORTED, LEGACY_OK, MIGRATED], change(), [], "step_not_available", None),
    ("wrong current login password counts on the legacy password", [IMPORTED, LEGACY_OK], change(login_ok=False),
     [("credential_check_failed", {"credential": "legacy_password", "consecutive_failures": 1,
                                   "during": "password_change"})], "current_password_incorrect", None),
    ("wrong current confirmation password counts on its own counter", [IMPORTED, LEGACY_OK], change(pin_ok=False),
     [("credential_check_failed", {"credential": "confirmation_password", "consecutive_failures": 1})],
     "current_password_incorrect", None),
    ("both wrong count both", [IMPORTED, LEGACY_OK], change(False, False),
     [("credential_check_failed", {"credential": "legacy_password"}),
      ("credential_check_failed", {"credential": "confirmation_password"})], "current_password_incorrect", None),
    ("5th wrong confirmation password locks it",
     [IMPORTED, LEGACY_OK, *fails("credential_check_failed", "confirmation_password", 4)], change(pin_ok=False),
     [("credential_check_failed", {"consecutive_failures": 5}),
      ("credential_locked", {"credential": "confirmation_password"})], "credential_locked", None),
    ("locked legacy password blocks the change",
     [IMPORTED, LEGACY_OK, locked("legacy_password")], change(None, None), [], "credential_locked", None),
    # -- R-INI-9 / R-RBA-1 login
    ("login from a known environment", [IMPORTED, LEGACY_OK, MIGRATED, KNOWN], login(),
     [("login_succeeded", {"environment": ENV, "method": "password"})], None, {"status": "ok"}),
    ("login from an unknown environment is challenged", [IMPORTED, LEGACY_OK, MIGRATED, KNOWN], login(env=ENV2),
     [("login_challenged", {"challenge_id": "c-1", "question_id": "q3", "environment": ENV2})], None,
     {"status": "challenge", "challenge_id": "c-1", "question": {"id": "q3", "text": "母親の旧姓は？"}}),
    ("wrong login password counts", [IMPORTED, MIGRATED, KNOWN], login(False),
     [("login_failed", {"credential": "login_password", "consecutive_failures": 1})], "invalid_credentials", None),
    ("5th wrong login password locks", [IMPORTED, MIGRATED, *fails("login_failed", "login_password", 4)], login(False),
     [("login_failed", {}), ("credential_locked", {"credential": "login_password"})], "credential_locked", None),
    ("right password after challenge resets the counter",
     [IMPORTED, MIGRATED, KNOWN, *fails("login_failed", "login_password", 4), CHALLENGED], login(False),
     [("login_failed", {"consecutive_failures": 1})], "invalid_credentials", None),
    ("login lock is separate from the legacy lock",
     [IMPORTED, MIGRATED, KNOWN, locked("legacy_password")], login(), [("login_succeeded", {})], None, {}),
    ("OTP hook: a token holder without a valid OTP is refused", [IMPORTED, MIGRATED, KNOWN],
     login(otp_required=True, otp_ok=False), [], "otp_required", None),
    ("answer right: passed, environment remembered, logged in", [IMPORTED, MIGRATED, KNOWN, CHALLENGED],
     agg.AnswerChallenge("c-1", ENV2, NOW, True),
     [("challenge_passed", {"challenge_id": "c-1"}), ("environment_recognised", {"environment": ENV2}),
      ("login_succeeded", {"method": "password+secret_question"})], None, {"status": "ok"}),
    ("answer wrong", [IMPORTED, MIGRATED, KNOWN, CHALLENGED], agg.AnswerChallenge("c-1", ENV2, NOW, False),
     [("challenge_failed", {"challenge_id": "c-1"})], "wrong_answer", None),
    ("answer from another environment is refused", [IMPORTED, MIGRATED, CHALLENGED],
     agg.AnswerChallenge("c-1", ENV, NOW, True), [], "challenge_invalid", None),
    ("expired challenge is refused", [IMPORTED, MIGRATED, CHALLENGED],
     agg.AnswerChallenge("c-1", ENV2, NOW + timedelta(minutes=5), True), [], "challenge_invalid", None),
    ("passed challenge cannot be reused", [IMPORTED, MIGRATED, CHALLENGED, F("challenge_passed", {"challenge_id": "c-1"})],
     agg.AnswerChallenge("c-1", ENV2, NOW, True), [], "challenge_invalid", None),
    ("three wrong answers close the challenge",
     [IMPORTED, MIGRATED, CHALLENGED, *[F("challenge_failed", {"challenge_id": "c-1"})] * 3],
     agg.AnswerChallenge("c-1", ENV2, NOW, True), [], "challenge_invalid", None),
    # -- confirmation password
    ("confirmation password before migration is the legacy PIN: right", [IMPORTED],
     agg.VerifyConfirmationPassword(NOW, True), [("confirmation_password_verified", {})], None, {"ok": True}),
    ("confirmation password wrong", [IMPORTED, MIGRATED], agg.VerifyConfirmationPassword(NOW, False),
     [("credential_check_failed", {"credential": "confirmation_password", "during": "confirmation"})],
     "invalid_confirmation_password", None),
    ("confirmation password for unknown customer", [], agg.VerifyConfirmationPassword(NOW, None), [],
     "customer_not_found", None),
    # -- operator unlock (R-RBA-2, R-LEG-4)
    ("operator unlocks", [IMPORTED, locked("login_password")], agg.UnlockCredential("login_password", NOW, True),
     [("credential_unlocked", {"credential": "login_password", "by": "operator"})], None, {"status": "unlocked"}),
    ("customer cannot unlock", [IMPORTED, locked("login_password")], agg.UnlockCredential("login_password", NOW, False),
     [], "operator_only", None),
    ("unlock of an unlocked credential", [IMPORTED], agg.UnlockCredential("login_password", NOW, True), [],
     "not_locked", None),
]


@pytest.mark.parametrize("given,when,then,error,result", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decider(given, when, then, error, result):
    state = agg.fold(given)
    decision = agg.decide(when, state)
    assert [f.type for f in decision.facts] == [t for t, _ in then]
    for fact, (_, expected) in zip(decision.facts, then):
        for key, value in expected.items():
            assert fact.data[key] == value, (fact.type, key)
    if error is None:
        assert decision.error is None, decision.error
        for key, value in (result or {}).items():
            assert decision.result[key] == value
    else:
        assert decision.error is not None and decision.error.code == error
        assert isinstance(decision.error, errors.DomainError)
        assert decision.error.detail  # Japanese, for the customer


def test_japanese_messages_of_the_decisions():
    """R-RBA-2 / R-LEG-2: the customer is told what to do, in the guide's words."""
    d = agg.decide(legacy(now=CUTOVER - timedelta(hours=1)), agg.fold([IMPORTED]))
    assert d.error.detail == "初回操作は2025年1月5日7:00以降に可能となります。開始日時以降にお手続きください。"
    assert d.error.status == 403
    d = agg.decide(legacy(False), agg.fold([IMPORTED, *fails("legacy_login_failed", "legacy_password", 4)]))
    assert d.error.status == 423 and "ご連絡ください" in d.error.detail and "0120-892-548" in d.error.detail
    d = agg.decide(legacy(True), agg.fold([IMPORTED, MIGRATED]))
    assert d.error.status == 409 and "通常のログイン" in d.error.detail
    d = agg.decide(change(login_ok=False), agg.fold([IMPORTED, LEGACY_OK]))
    assert d.error.extra["errors"] == {"current_login_password": [msg.CURRENT_LOGIN_WRONG]}
    d = agg.decide(change(sq=False), agg.fold([IMPORTED, LEGACY_OK]))
    assert d.error.extra["next_step"] == "secret_questions"


def test_unknown_and_wrong_password_answer_alike():
    """R-RBA-2: the decider's wrong-password detail is the one the shadow path uses."""
    d = agg.decide(legacy(False), agg.fold([IMPORTED]))
    assert d.error.detail == msg.LEGACY_INVALID_CREDENTIALS
    d = agg.decide(login(False), agg.fold([IMPORTED, MIGRATED]))
    assert d.error.detail == msg.INVALID_CREDENTIALS


@pytest.mark.parametrize("given,sq,otp,step", [
    ([IMPORTED, LEGACY_OK], False, False, "secret_questions"),
    ([IMPORTED, LEGACY_OK], True, False, "password_change"),
    ([IMPORTED, LEGACY_OK, MIGRATED], True, False, "otp_application"),
    ([IMPORTED, LEGACY_OK, MIGRATED], True, True, "done"),
])
def test_next_step_walks_the_guide_in_order(given, sq, otp, step):
    """R-INI-1 → R-INI-2 → R-INI-3: identity owns the order of the initial operation."""
    state = agg.fold(given)
    assert agg.next_step(state, sq, otp) == step
    assert agg.steps(state, sq, otp)["legacy_login"] == "done"


def test_lockout_counter_is_pure_and_configurable():
    policy = lockout.Policy(threshold=3, release_seconds=0)
    c = lockout.Counter()
    for _ in range(2):
        c = lockout.after_failure(c, policy, NOW)
    assert not c.locked and c.failures == 2
    c = lockout.after_failure(c, policy, NOW)
    assert c.locked and c.is_locked(NOW + timedelta(days=365)) and c.release_at is None
    with pytest.raises(ValueError):
        lockout.Policy(threshold=0)


def test_decider_refuses_to_guess_missing_inputs():
    """The service must hand over the password check; the decider never assumes one."""
    with pytest.raises(ValueError):
        agg.decide(legacy(None), agg.fold([IMPORTED]))
    with pytest.raises(ValueError):
        agg.decide(legacy(True), agg.initial_state)  # unknown numbers go to the shadow counter


def test_shredded_personal_data_folds_without_error():
    redacted = F("legacy_customer_imported", {**RECORD.event_data(), "phones": "[redacted]", "email": "[redacted]"})
    state = agg.fold([redacted])
    assert state.exists and state.phones == ()
