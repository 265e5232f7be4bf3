"""The operator procedures of R-LEG-4 as pure decisions of the identity customer decider:
re-issued login password, confirmation password reset, registered phone change, login-ID
initialisation, and the customer's forced password changes that complete them."""
from __future__ import annotations

import pytest

from contracts import errors
from identity.domain import customer as agg
from identity.domain import procedures
from identity.domain.passwords import satisfies_rules, validate_single_change
from identity.operator_procedures import new_temporary_password
from tests.unit.test_identity_decider import (IMPORTED, KNOWN, LEGACY_OK, MIGRATED, NOW, POLICY, F,
                                              fails, locked, login)

REISSUED = F("login_password_reissued", {"temporary_password_hash": "$argon2id$temp", "algorithm": "argon2id"})
PIN_RESET = F("confirmation_password_reset", {"temporary_password_hash": "$argon2id$tpin", "algorithm": "argon2id"})


def state(*facts):
    return agg.fold(facts)


def decide(command, *given):
    return agg.decide(command, state(*given))


def test_reissue_replaces_the_login_hash_unlocks_and_forces_a_change_R_LEG_4():
    given = (IMPORTED, LEGACY_OK, MIGRATED, KNOWN, *fails("login_failed", "login_password", 5),
             locked("login_password"))
    d = decide(agg.ReissueLoginPassword(NOW, "$argon2id$temp", True), *given)
    assert d.error is None
    assert [f.type for f in d.facts] == ["credential_unlocked", "login_password_reissued"]
    assert d.facts[0].data["credential"] == "login_password" and d.facts[0].data["by"] == "operator"
    assert d.result == {"status": "reissued", "next_step": "login_password_change", "unlocked": True,
                        "temporary_password_expires_at": (NOW + agg.TEMPORARY_PASSWORD_VALIDITY).isoformat()}
    after = agg.fold(d.facts, state(*given))
    assert after.login_password_hash == "$argon2id$temp" and after.login_password_change_required
    assert not after.counter("login_password").locked


def test_procedures_are_for_operators_and_existing_migrated_customers_R_LEG_4():
    assert decide(agg.ReissueLoginPassword(NOW, "h", False), IMPORTED, MIGRATED).error.code == "operator_only"
    assert decide(agg.ReissueLoginPassword(NOW, "h", True)).error.code == "customer_not_found"
    assert decide(agg.ResetConfirmationPassword(NOW, "h", True), IMPORTED).error.code == "not_migrated"
    assert decide(agg.InitialiseLoginId(NOW, False), IMPORTED).error.code == "operator_only"
    assert decide(agg.ChangeRegisteredPhones(NOW, ("+819011112222",), False), IMPORTED).error.code == "operator_only"


def test_login_with_the_temporary_password_only_buys_the_forced_change_R_LEG_4():
    d = decide(login(ok=True, env="never-seen"), IMPORTED, MIGRATED, KNOWN, REISSUED)
    assert d.error is None
    assert d.result["status"] == "password_change_required" and d.result["next_step"] == "login_password_change"
    assert [(f.type, f.data["method"]) for f in d.facts] == [("login_succeeded", "temporary_password")]
    # A wrong password is still a counted failure.
    wrong = decide(login(ok=False), IMPORTED, MIGRATED, KNOWN, REISSUED)
    assert wrong.error.code == "invalid_credentials" and wrong.facts[0].type == "login_failed"


def change_login(ok=True, same=False, new_hash="$argon2id$mine"):
    return agg.ChangeOnePassword(agg.LOGIN, NOW, ok, same, new_hash if ok and not same else None, POLICY)


def test_the_forced_login_change_clears_the_requirement_R_LEG_4_R_INI_2():
    d = decide(change_login(), IMPORTED, MIGRATED, REISSUED)
    assert d.error is None and d.result == {"status": "changed"}
    (fact,) = d.facts
    assert fact.type == "login_password_changed" and fact.data["replaced_temporary"] is True
    after = agg.fold(d.facts, state(IMPORTED, MIGRATED, REISSUED))
    assert after.login_password_hash == "$argon2id$mine" and not after.login_password_change_required
    wrong = decide(change_login(ok=False), IMPORTED, MIGRATED, REISSUED)
    assert wrong.error.code == "current_password_incorrect"
    assert wrong.facts[0].type == "credential_check_failed" and wrong.facts[0].data["credential"] == "login_password"
    same = decide(change_login(same=True), IMPORTED, MIGRATED, REISSUED)
    assert same.error.code == "validation_failed" and "new_login_password" in same.error.extra["errors"]
    assert decide(change_login(), IMPORTED).error.code == "step_not_available"


def verify(ok=True):
    return agg.VerifyConfirmationPassword(NOW, ok, POLICY)


def test_confirmation_checks_refuse_until_the_temporary_password_is_changed_R_LEG_4():
    given = (IMPORTED, MIGRATED, PIN_RESET)
    d = decide(verify(True), *given)
    assert d.error.code == "password_change_required" and d.error.extra["credential"] == "confirmation_password"
    assert d.facts == ()
    assert decide(verify(False), *given).facts[0].type == "credential_check_failed"   # still counted
    # A pending login change blocks it too (the temporary-login session can do nothing else).
    blocked = decide(verify(True), IMPORTED, MIGRATED, REISSUED)
    assert blocked.error.extra["credential"] == "login_password"
    change = agg.ChangeOnePassword(agg.CONFIRMATION, NOW, True, False, "$argon2id$newpin", POLICY)
    done = decide(change, *given)
    assert [f.type for f in done.facts] == ["confirmation_password_changed"]
    after = agg.fold(done.facts, state(*given))
    assert agg.decide(verify(True), after).result == {"ok": True}


def test_reset_confirmation_unlocks_it_R_LEG_4():
    given = (IMPORTED, MIGRATED, *fails("credential_check_failed", "confirmation_password", 5),
             locked("confirmation_password"))
    d = decide(agg.ResetConfirmationPassword(NOW, "$argon2id$tpin", True), *given)
    assert [f.type for f in d.facts] == ["credential_unlocked", "confirmation_password_reset"]
    assert agg.fold(d.facts, state(*given)).confirmation_verifier == ("argon2", "$argon2id$tpin")


def test_phone_change_replaces_the_numbers_R_LEG_4():
    d = decide(agg.ChangeRegisteredPhones(NOW, ("+819011112222", "+81172123456"), True), IMPORTED)
    assert d.facts[0].type == "registered_phones_changed"
    assert d.facts[0].data["phones"] == ["+819011112222", "+81172123456"]
    assert d.facts[0].data["previous_phone_count"] == 1
    after = agg.fold(d.facts, state(IMPORTED))
    assert after.phones == ("+819011112222", "+81172123456")
    same = decide(agg.ChangeRegisteredPhones(NOW, after.phones, True), IMPORTED, *d.facts)
    assert same.error.code == "phones_unchanged" and same.facts == ()


def test_registered_phones_are_normalised_and_all_or_nothing_R_LEG_4():
    assert procedures.registered_phones(["090-1111-2222", "（0172）12-3456", "09011112222"]) == (
        "+819011112222", "+81172123456")
    assert procedures.registered_phones("０９０－１１１１－２２２２") == ("+819011112222",)
    with pytest.raises(errors.ValidationFailed) as err:
        procedures.registered_phones(["090-1111-2222", "12345"])
    assert err.value.code == "phone_invalid" and err.value.extra["errors"]["phones"] == [
        "電話番号 2 件目は有効な日本国内の電話番号ではありません。"]
    for bad in ([], None, [""], ["+1 212 555 0100"]):
        with pytest.raises(errors.ValidationFailed):
            procedures.registered_phones(bad)


def test_initialise_login_id_resets_to_the_customer_number_and_unlocks_R_LEG_4():
    given = (IMPORTED, *fails("legacy_login_failed", "legacy_password", 5), locked("legacy_password"))
    d = decide(agg.InitialiseLoginId(NOW, True), *given)
    assert [f.type for f in d.facts] == ["credential_unlocked", "login_id_initialised"]
    assert d.facts[0].data["credential"] == "legacy_password"
    assert d.result == {"status": "initialised", "login_id": "0123456789", "unlocked": ["legacy_password"]}
    migrated = decide(agg.InitialiseLoginId(NOW, True), IMPORTED, MIGRATED)
    assert [f.type for f in migrated.facts] == ["login_id_initialised"] and migrated.result["unlocked"] == []
    assert agg.fold(migrated.facts, state(IMPORTED, MIGRATED)).login_id == "0123456789"


def test_temporary_passwords_satisfy_the_login_password_rules_R_INI_2():
    seen = {new_temporary_password() for _ in range(200)}
    assert len(seen) == 200
    for pw in seen:
        assert satisfies_rules("login_password", pw) and procedures.temporary_password_ok(pw)
        assert not set(pw) & set("0O1lI")
    assert not procedures.temporary_password_ok("abcdefgh23")       # no upper case


def test_single_change_validation_reports_every_rule_R_INI_2():
    with pytest.raises(errors.ValidationFailed) as err:
        validate_single_change("login_password", {"current_login_password": "Temp2345ab",
                                                  "new_login_password": "alllower1",
                                                  "new_login_password_confirmation": "different1"})
    fields = err.value.extra["errors"]
    assert set(fields) == {"new_login_password", "new_login_password_confirmation"}
    ok = validate_single_change("confirmation_password", {"current_confirmation_password": "Temp2345ab",
                                                          "new_confirmation_password": "pin12345",
                                                          "new_confirmation_password_confirmation": "pin12345"})
    assert ok.new == "pin12345" and ok.credential == "confirmation_password"


def test_operator_release_reuses_the_release_rule_of_the_customer_R_LEG_4():
    from otp_service import domain as otp
    with pytest.raises(errors.Forbidden):
        otp.operator_release(["T1"], "0123456789", False, NOW)
    with pytest.raises(errors.NotFound) as err:
        otp.operator_release([], "0123456789", True, NOW)
    assert err.value.code == "otp_not_in_use"
    (cmd,) = otp.operator_release(["T1"], "0123456789", True, NOW)
    token = otp.Token(token_serial="T1", customer_number="0123456789", status=otp.ACTIVE)
    (event,) = otp.decide_token(cmd, token)
    assert event.type == "token_released" and event.data["reason"] == "operator_procedure"
    with pytest.raises(errors.Conflict):                     # released once only
        otp.decide_token(cmd, otp.evolve_token(token, event))


# -- temporary passwords expire (R-LEG-4: handed over on paper) -------------------------------

def _reissued_at(when):
    return decide(agg.ReissueLoginPassword(when, "$argon2id$temp", True), IMPORTED, MIGRATED, KNOWN).facts[-1]


def _reset_at(when):
    return decide(agg.ResetConfirmationPassword(when, "$argon2id$tpin", True), IMPORTED, MIGRATED, KNOWN).facts[-1]


def test_a_temporary_login_password_works_for_14_days_only_R_LEG_4():
    from datetime import timedelta
    issued = _reissued_at(NOW - agg.TEMPORARY_PASSWORD_VALIDITY)
    assert issued.data["expires_at"] == NOW.isoformat()
    expired = decide(login(ok=True), IMPORTED, MIGRATED, KNOWN, issued)
    assert expired.error.code == "temporary_password_expired" and expired.error.status == 403
    assert expired.facts == ()                           # a right password is not a failure
    fresh = _reissued_at(NOW - agg.TEMPORARY_PASSWORD_VALIDITY + timedelta(seconds=1))
    assert decide(login(ok=True), IMPORTED, MIGRATED, KNOWN, fresh).result["next_step"] == "login_password_change"
    # An expired one cannot be changed either; a re-issue starts a new period.
    assert decide(change_login(), IMPORTED, MIGRATED, KNOWN, issued).error.code == "temporary_password_expired"
    again = _reissued_at(NOW)
    assert decide(login(ok=True), IMPORTED, MIGRATED, KNOWN, issued, again).error is None
    # Events recorded before the limit existed keep working (no expires_at).
    assert decide(login(ok=True), IMPORTED, MIGRATED, KNOWN, REISSUED).error is None


def test_a_temporary_confirmation_password_expires_too_R_LEG_4():
    reset = _reset_at(NOW - agg.TEMPORARY_PASSWORD_VALIDITY)
    change = agg.ChangeOnePassword(agg.CONFIRMATION, NOW, True, False, "$argon2id$newpin", POLICY)
    assert decide(change, IMPORTED, MIGRATED, KNOWN, reset).error.code == "temporary_password_expired"
    assert decide(change, IMPORTED, MIGRATED, KNOWN, _reset_at(NOW)).error is None


def test_the_operator_is_told_until_when_the_temporary_password_works_R_LEG_4():
    d = decide(agg.ReissueLoginPassword(NOW, "$argon2id$temp", True), IMPORTED, MIGRATED)
    assert d.result["temporary_password_expires_at"] == (NOW + agg.TEMPORARY_PASSWORD_VALIDITY).isoformat()
