"""A passkey (R-INI-8) stands in for the login ID and password, so it opens no customer session
while they could not (R-LEG-4 forced change, R-RBA-2 lock, initial operation not done): identity's
login standing (identity/domain/standing.py) and the passkey decider's use of it
(identity/passkeys_domain.py), plus the operator's removal of every passkey (R-LEG-4)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.errors import Forbidden, Locked, NotFound, Unauthenticated
from identity import passkeys_domain as domain
from identity.domain import customer as agg
from identity.domain import standing
from tests.unit.test_identity_decider import IMPORTED, LEGACY_OK, MIGRATED, NOW, F, fails, locked
from tests.unit.test_passkeys_domain import CUSTOMER, registered, types

REISSUED = F("login_password_reissued", {"temporary_password_hash": "$argon2id$temp", "algorithm": "argon2id"})
CHANGED = F("login_password_changed", {"login_password_hash": "$argon2id$mine", "algorithm": "argon2id"})
PIN_RESET = F("confirmation_password_reset", {"temporary_password_hash": "$argon2id$tpin", "algorithm": "argon2id"})
UNLOCKED = F("credential_unlocked", {"credential": "login_password", "by": "operator",
                                     "unlocked_at": NOW.isoformat()})


@pytest.mark.parametrize("given, expected", [
    ((), standing.UNKNOWN),
    ((IMPORTED,), standing.INITIAL_OPERATION_PENDING),
    ((IMPORTED, LEGACY_OK), standing.INITIAL_OPERATION_PENDING),
    ((IMPORTED, LEGACY_OK, MIGRATED), standing.OK),
    ((IMPORTED, LEGACY_OK, MIGRATED, *fails("login_failed", "login_password", 4)), standing.OK),
    ((IMPORTED, LEGACY_OK, MIGRATED, *fails("login_failed", "login_password", 5), locked("login_password")),
     standing.LOCKED),
    ((IMPORTED, LEGACY_OK, MIGRATED, locked("login_password"), UNLOCKED), standing.OK),
    ((IMPORTED, LEGACY_OK, MIGRATED, locked("login_password", release_at=NOW + timedelta(minutes=10))),
     standing.LOCKED),
    ((IMPORTED, LEGACY_OK, MIGRATED, locked("login_password", release_at=NOW)), standing.OK),   # release due
    ((IMPORTED, LEGACY_OK, MIGRATED, locked("confirmation_password")), standing.OK),
    ((IMPORTED, LEGACY_OK, MIGRATED, REISSUED), standing.PASSWORD_CHANGE_REQUIRED),
    ((IMPORTED, LEGACY_OK, MIGRATED, REISSUED, locked("login_password")), standing.LOCKED),
    ((IMPORTED, LEGACY_OK, MIGRATED, REISSUED, CHANGED), standing.OK),
    ((IMPORTED, LEGACY_OK, MIGRATED, PIN_RESET), standing.OK),   # transactions refuse it, as after a password login
])
def test_login_standing_R_INI_8_R_LEG_4_R_RBA_2(given, expected):
    assert standing.login_standing(agg.fold(given), NOW) == expected


def valid_login(state, standing_):
    outcome = domain.AssertionOutcome(None, sign_count=7)
    return domain.decide_login(domain.PasskeyLogin(CUSTOMER, "pk1", None, outcome, "http://localhost:8000",
                                                   NOW, standing_), state)


@pytest.mark.parametrize("standing_, reason, error, code", [
    ("password_change_required", domain.LOGIN_PASSWORD_CHANGE_REQUIRED, Forbidden, "password_change_required"),
    ("locked", domain.LOGIN_PASSWORD_LOCKED, Locked, "credential_locked"),
    ("initial_operation_pending", domain.INITIAL_OPERATION_PENDING, Forbidden, "initial_operation_required"),
    ("unknown", domain.CUSTOMER_UNKNOWN, Unauthenticated, "passkey_login_failed"),
    (None, domain.CUSTOMER_UNKNOWN, Unauthenticated, "passkey_login_failed"),          # no answer: refuse
])
def test_a_valid_passkey_opens_no_session_while_id_and_password_could_not(standing_, reason, error, code):
    state = registered(1)
    decision = valid_login(state, standing_)
    assert isinstance(decision.error, error) and decision.error.code == code
    assert not decision.error.detail.isascii()
    (event,) = decision.events
    assert (event.type, event.data["reason"], event.data["received_sign_count"]) == ("passkey_login_failed", reason, 7)
    if code in ("password_change_required", "credential_locked"):
        assert decision.error.extra == {"credential": "login_password"}
    # Nothing is suspended and the counter is not taken: once the standing is ok it logs in.
    after = domain.fold(decision.events, state)
    assert after.get("pk1").status == domain.ACTIVE
    ok = valid_login(after, "ok")
    assert ok.error is None and types(ok.events) == ["passkey_login_succeeded"]


def test_a_clone_is_suspended_whatever_the_standing():
    state = domain.fold([domain.decide_login(domain.PasskeyLogin(
        CUSTOMER, "pk1", None, domain.AssertionOutcome(None, sign_count=9), None, NOW), registered(1)).events[0]],
        registered(1))
    decision = valid_login(state, "password_change_required")       # counter 7 after 9
    assert decision.error.code == "passkey_suspended"
    assert types(decision.events) == ["passkey_login_failed", "passkey_suspended"]


def test_operator_removes_every_passkey_R_LEG_4():
    state = registered(1, 2, 3)
    events = domain.decide_remove_all(domain.RemoveAllByOperator(CUSTOMER, NOW, by_operator=True), state)
    assert types(events) == ["passkey_removed"] * 3
    assert [e.data["passkey_id"] for e in events] == ["pk1", "pk2", "pk3"]
    assert all(e.data["by"] == "operator" and e.data["customer_number"] == CUSTOMER for e in events)
    assert domain.fold(events, state).listed() == []
    with pytest.raises(NotFound) as none:
        domain.decide_remove_all(domain.RemoveAllByOperator(CUSTOMER, NOW, True), domain.fold(events, state))
    assert none.value.code == "passkey_not_found"
    with pytest.raises(Forbidden) as customer:
        domain.decide_remove_all(domain.RemoveAllByOperator(CUSTOMER, NOW, by_operator=False), state)
    assert customer.value.code == "operator_only"
