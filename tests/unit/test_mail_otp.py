"""The mail notification password — the canonical operation, the pure decider, the keyed
verifier and the mail (SPEC R-MAIL-1, R-MAIL-2, R-MAIL-3, R-RBA-2). Given events / when
command / then events."""
from __future__ import annotations

import email
from datetime import datetime, timedelta, timezone
from email import policy

import pytest

from contracts import mail_otp as contract
from contracts.errors import Conflict, Locked, Unauthenticated, ValidationFailed
from contracts.events import NewEvent
from notifier import templates
from notifier.config import MailSettings
from notifier.mail import render
from otp_service import mail_otp as mo
from otp_service.mail_otp_config import MailOtpKeys, MailOtpSettings, new_code

NOW = datetime(2025, 1, 6, 1, 0, tzinfo=timezone.utc)
NUMBER = "0123456789"
CODE = "905813"
KEYS = MailOtpKeys("k1:" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")


def transfer(**payee) -> dict:
    return {"type": "transfer", "amount": 50000, "payee": {
        "bank_code": "0117", "branch_code": "123", "account_type": "ordinary", "account_number": "1234567",
        "name": "ﾔﾏﾀﾞ ﾀﾛｳ", **payee}}


def digest(op: dict) -> str:
    return KEYS.operation_digest("k1", contract.canonical_json(contract.canonical_operation(op)))


def issue(state=mo.initial_state, issue_id="i1", op=None, now=NOW, **kw):
    op = contract.canonical_operation(op or transfer())
    return mo.decide_issue(mo.IssueMailOtp(
        issue_id=issue_id, customer_number=NUMBER, purpose=op["type"], operation=op,
        operation_digest=digest(op), kid="k1", mac=KEYS.code_mac("k1", NUMBER, issue_id, CODE),
        code=CODE, now=now, **kw), state)


def issued(issue_id="i1", op=None, now=NOW) -> mo.MailOtpState:
    events, _ = issue(issue_id=issue_id, op=op, now=now)
    return mo.fold(events)


def verify(state, matched="current", op=None, now=NOW, **kw):
    return mo.decide_verify(mo.VerifyMailOtp(
        customer_number=NUMBER, purpose=(op or transfer())["type"], operation_digest=digest(op or transfer()),
        matched=matched, now=now, **kw), state)


def types(events) -> list[str]:
    return [e.type for e in events]


# -- the canonical operation -------------------------------------------------------------------------------

def test_one_operation_has_one_canonical_form_R_MAIL_1():
    a = contract.canonical_operation(transfer())
    b = contract.canonical_operation({"type": "transfer", "amount": 50000, "payee": {
        "bank_code": "0117", "branch_code": "123", "account_type": "ordinary", "account_number": "1234567",
        "name": "  ヤマダ　　タロウ "}})
    c = contract.canonical_operation(transfer(account_number="1234567"[-7:]), "transfer")
    assert contract.canonical_json(a) == contract.canonical_json(b) == contract.canonical_json(c)
    assert a["payee"]["name"] == "ヤマダ タロウ"
    assert contract.canonical_operation(transfer(account_number="4567"))["payee"]["account_number"] == "0004567"
    other_branch = contract.canonical_operation(transfer(branch_code="124"))
    assert contract.canonical_json(a) != contract.canonical_json(other_branch)


def test_select_email_changes_spell_out_both_slots_and_normalise_addresses():
    op = contract.canonical_operation({"type": "settings_change", "setting": "select_email", "changes": {
        "select1": {"address": " Taro..Yamada.@DoCoMo.NE.JP ", "enabled": True, "receives_mail_otp": True}}})
    assert op["changes"] == {
        "select1": {"address": "Taro..Yamada.@docomo.ne.jp", "enabled": True, "receives_mail_otp": True},
        "select2": {"address": None, "enabled": False, "receives_mail_otp": False}}


@pytest.mark.parametrize("op, field", [
    ({**transfer(), "amount": 0}, "operation.amount"),
    ({**transfer(), "amount": True}, "operation.amount"),
    ({**transfer(), "amount": 1.5}, "operation.amount"),
    (transfer(bank_code="117"), "operation.payee.bank_code"),
    (transfer(account_number="12345678"), "operation.payee.account_number"),
    (transfer(account_type="futsu"), "operation.payee.account_type"),
    (transfer(name=""), "operation.payee.name"),
    ({**transfer(), "memo": "x"}, "operation.memo"),
    ({"type": "settings_change", "setting": "select_email",
      "changes": {"select1": {"address": "not-an-address", "enabled": True}}}, "operation.changes.select1.address"),
    ({"type": "settings_change", "setting": "select_email",
      "changes": {"select1": {"address": "a@example.jp", "enabled": False, "receives_mail_otp": True}}},
     "operation.changes.select1.receives_mail_otp"),
    ({"type": "settings_change", "setting": "Select Email"}, "operation.setting"),
    ({"type": "address_confirmation", "slot": "select3", "address": "a@example.jp"}, "operation.slot"),
    ({"type": "refund"}, "operation.type"),
])
def test_invalid_operations_are_refused_field_by_field(op, field):
    with pytest.raises(ValidationFailed) as err:
        contract.canonical_operation(op)
    assert field in err.value.extra["errors"] and not err.value.detail.isascii()


def test_purpose_and_operation_must_agree():
    with pytest.raises(ValidationFailed) as err:
        contract.canonical_operation(transfer(), "settings_change")
    assert err.value.code == "operation_purpose_mismatch"
    with pytest.raises(ValidationFailed) as err:
        contract.canonical_operation(None, "transfer")
    assert err.value.code == "operation_required"


# -- the keyed verifier -----------------------------------------------------------------------------------

def test_the_verifier_is_an_hmac_bound_to_customer_and_issue():
    mac = KEYS.code_mac("k1", NUMBER, "i1", "123456")
    assert len(mac) == 64 and "123456" not in mac
    assert KEYS.matches("k1", mac, NUMBER, "i1", "123456")
    assert not KEYS.matches("k1", mac, NUMBER, "i1", "123457")
    assert not KEYS.matches("k1", mac, NUMBER, "i2", "123456")              # another issue
    assert not KEYS.matches("k1", mac, "9999999999", "i1", "123456")        # another customer
    assert not KEYS.matches("nokey", mac, NUMBER, "i1", "123456")
    # Rotation: a new signing key first, the old one still verifies codes it signed.
    rotated = MailOtpKeys("k2:" + "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=,k1:"
                          + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")
    assert rotated.current_kid == "k2" and rotated.matches("k1", mac, NUMBER, "i1", "123456")
    assert {len(new_code()) for _ in range(50)} == {6}


def test_settings_default_to_ten_minutes_and_five_attempts(monkeypatch):
    for key in ("MAIL_OTP_TTL_SECONDS", "MAIL_OTP_LOCK_THRESHOLD", "LOCKOUT_THRESHOLD", "MAIL_OTP_MAX_ATTEMPTS"):
        monkeypatch.delenv(key, raising=False)
    s = MailOtpSettings.load({})
    assert (s.ttl, s.max_attempts, s.lock_threshold, s.lock_release) == (timedelta(minutes=10), 5, 5, None)
    monkeypatch.setenv("MAIL_OTP_TTL_SECONDS", "300")
    monkeypatch.setenv("LOCKOUT_THRESHOLD", "7")
    s = MailOtpSettings.load({"MAIL_OTP_LOCK_RELEASE_SECONDS": 1800})
    assert (s.ttl, s.lock_threshold, s.lock_release) == (timedelta(minutes=5), 7, timedelta(minutes=30))


# -- issuing ------------------------------------------------------------------------------------------------

def test_issue_records_the_hash_and_seals_the_code_for_the_mail_R_MAIL_1():
    events, request = issue()
    (event,) = events
    assert event.type == "mail_otp_issued" and CODE not in str(event.data)
    assert event.data["verifier"]["mac"] == KEYS.code_mac("k1", NUMBER, "i1", CODE)
    assert event.data["expires_at"] == (NOW + timedelta(minutes=10)).isoformat()
    assert event.data["destination"] == "mail_otp_destinations"
    assert request.type == "mail_otp_mail_requested" and request.data["code"] == CODE
    assert request.data["key_subject"] == "mailotp:i1" == contract.code_subject("i1")
    assert set(contract.MAIL_OTP_MAIL_REQUESTED.personal_fields) == {"code", "operation"}


def test_a_new_code_supersedes_the_latest_one_R_MAIL_1():
    events, _ = issue(issued("i1"), issue_id="i2")
    assert types(events) == ["mail_otp_superseded", "mail_otp_issued"]
    assert events[0].data == {"issue_id": "i1", "customer_number": NUMBER, "by_issue_id": "i2", "at": NOW.isoformat()}
    assert mo.ended_issue_ids(events) == ["i1"]
    state = mo.fold(events, issued("i1"))
    assert state.current.issue_id == "i2" and [p.issue_id for p in state.previous] == ["i1"]
    # An expired latest code is closed as expired, not superseded.
    events, _ = issue(issued("i1"), issue_id="i2", now=NOW + timedelta(minutes=11))
    assert types(events) == ["mail_otp_expired", "mail_otp_issued"]


def test_otp_users_need_no_mail_password_except_to_confirm_a_destination_R_MAIL_2():
    with pytest.raises(Conflict) as err:
        issue(has_active_token=True)
    assert err.value.code == "mail_otp_not_needed"
    op = {"type": "address_confirmation", "slot": "select2", "address": "hanako@example.jp"}
    events, request = issue(op=op, has_active_token=True)
    assert events[-1].data["destination"] == "select2" and request.data["destination"] == "select2"


# -- entering a code ------------------------------------------------------------------------------------------

def test_the_right_code_for_its_operation_is_accepted_once_R_MAIL_1():
    state = issued()
    events = verify(state)
    assert types(events) == ["mail_otp_verified"] and mo.verified(events)
    assert mo.ended_issue_ids(events) == ["i1"]
    again = verify(mo.fold(events, state))
    assert types(again) == ["mail_otp_verification_failed"]
    assert (again[0].data["reason"], again[0].data["counted"]) == ("used", False)
    with pytest.raises(Unauthenticated) as err:
        mo.raise_outcome(again, 5, 5)
    assert err.value.code == "mail_otp_used"


def test_the_code_of_another_operation_fails_and_counts_R_MAIL_1():
    events = verify(issued(), op=transfer(account_number="7654321"))
    assert [(e.data["reason"], e.data["counted"]) for e in events] == [("other_operation", True)]
    with pytest.raises(Unauthenticated) as err:
        mo.raise_outcome(events, 5, 5)
    assert err.value.code == "mail_otp_other_operation" and err.value.extra["remaining_attempts"] == 4
    settings_change = {"type": "settings_change", "setting": "select_email", "changes": {}}
    assert verify(issued(), op=settings_change)[0].data["reason"] == "other_operation"


def test_an_older_code_is_told_apart_and_not_counted_R_MAIL_1():
    state = mo.fold(issue(issued("i1"), issue_id="i2")[0], issued("i1"))
    events = verify(state, matched="previous")
    assert [(e.data["reason"], e.data["counted"], e.data["issue_id"]) for e in events] == [("superseded", False, "i2")]
    assert mo.fold(events, state).consecutive_failures == 0


def test_expiry_ends_the_code_R_MAIL_1():
    state = issued()
    assert types(verify(state, now=NOW + timedelta(minutes=9, seconds=59))) == ["mail_otp_verified"]
    events = verify(state, now=NOW + timedelta(minutes=10))
    assert types(events) == ["mail_otp_expired", "mail_otp_verification_failed"]
    assert events[1].data["reason"] == "expired" and not events[1].data["counted"]
    assert mo.decide(mo.ExpireMailOtp(NOW + timedelta(minutes=5)), state) == []
    assert types(mo.decide(mo.ExpireMailOtp(NOW + timedelta(minutes=10)), state)) == ["mail_otp_expired"]
    # Nothing issued at all: refused before anything is checked.
    with pytest.raises(Conflict) as err:
        verify(mo.initial_state)
    assert err.value.code == "mail_otp_not_issued"


def test_five_wrong_entries_void_the_code_and_lock_R_RBA_2():
    state = issued()
    for remaining in (4, 3, 2, 1):
        events = verify(state, matched=None)
        with pytest.raises(Unauthenticated) as err:
            mo.raise_outcome(events, 5, 5)
        assert err.value.code == "mail_otp_invalid" and err.value.extra["remaining_attempts"] == remaining
        state = mo.fold(events, state)
    events = verify(state, matched=None)
    assert types(events) == ["mail_otp_verification_failed", "mail_otp_voided", "mail_otp_locked"]
    with pytest.raises(Locked) as err:
        mo.raise_outcome(events, 5, 5)
    assert err.value.code == "mail_otp_locked"
    state = mo.fold(events, state)
    with pytest.raises(Locked):
        verify(state)                                       # even the right code
    with pytest.raises(Locked):
        issue(state, issue_id="i2")
    unlocked = mo.fold(mo.decide(mo.UnlockMailOtp(NUMBER, NOW), state), state)
    assert types(verify(unlocked)) == ["mail_otp_verification_failed"]
    assert verify(unlocked)[0].data["reason"] == "voided"   # the code itself stays void


def test_voiding_and_locking_are_separate_thresholds_R_RBA_2():
    state = issued()
    for _ in range(5):
        events = verify(state, matched=None, threshold=10)
        state = mo.fold(events, state)
    assert types(events) == ["mail_otp_verification_failed", "mail_otp_voided"]
    with pytest.raises(Unauthenticated) as err:
        mo.raise_outcome(events, 5, 10)
    assert err.value.code == "mail_otp_voided"
    # A new code does not reset the count toward the lock: re-issuing buys no guesses.
    state = mo.fold(issue(state, issue_id="i2")[0], state)
    assert state.consecutive_failures == 5
    for _ in range(5):
        events = verify(state, matched=None, threshold=10)
        state = mo.fold(events, state)
    assert "mail_otp_locked" in types(events)


def test_a_timed_release_unlocks_at_the_next_entry_R_RBA_2():
    state = mo.fold([NewEvent("mail_otp_locked", {"customer_number": NUMBER, "consecutive_failures": 5,
                                                  "threshold": 5, "locked_at": NOW.isoformat()})], issued())
    with pytest.raises(Locked):
        verify(state, now=NOW + timedelta(minutes=1), release_after=timedelta(minutes=30))
    events = verify(state, now=NOW + timedelta(minutes=9), release_after=timedelta(minutes=5))
    assert types(events) == ["mail_otp_unlocked", "mail_otp_verified"]
    with pytest.raises(Conflict):
        mo.decide(mo.UnlockMailOtp(NUMBER, NOW), issued())


def test_code_format():
    for bad in ("12345", "1234567", "12345a", "１２３４５６", None, 123456):
        with pytest.raises(ValidationFailed) as err:
            mo.check_code_format(bad)
        assert err.value.code == "mail_otp_format"


def test_the_snapshot_round_trips():
    state = mo.fold(issue(issued("i1"), issue_id="i2")[0], issued("i1"))
    assert mo.Code.from_dict(state.current.as_dict()) == state.current
    assert mo.Code.from_dict(state.previous[0].as_dict()) == state.previous[0]


# -- the mail itself (R-MAIL-1: it states what it authorizes; R-MAIL-3: otp-auth.net) ---------------------------

def test_the_mail_notification_password_mail_R_MAIL_1_R_MAIL_3():
    _, request = issue()
    from contracts.events import RecordedEvent
    event = RecordedEvent("mailotpmail-i1", 1, request.event_id, request.type, 1, request.data, {}, NOW)
    (order,) = templates.orders_for_mail_otp(event, [("registered", "taro@example.jp")])
    assert order.subject == "mailotp:i1" and order.slot == "registered"
    message = render(templates.TEMPLATES[order.template], order.params, to=order.to,
                     sender=MailSettings.load({}).senders["otp"].as_dict(), message_id="<m@x>", date=NOW)
    raw = message.as_bytes()
    assert raw.isascii()
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["From"].addresses[0].domain == "otp-auth.net"
    assert parsed["Subject"] == "【青森みちのく銀行】メール通知パスワードのお知らせ"
    body = parsed.get_content().replace("\r\n", "\n")
    assert f"■メール通知パスワード\n　{CODE}\n" in body and "振込金額　：50,000円" in body and "ヤマダ タロウ" in body
    assert "2025年1月6日 10:10まで（発行から10分間）" in body        # JST
    # A code whose sealing key is already gone is never mailed.
    redacted = RecordedEvent("mailotpmail-i1", 1, request.event_id, request.type, 1,
                             {**request.data, "code": "[redacted]", "operation": "[redacted]"}, {}, NOW)
    assert templates.orders_for_mail_otp(redacted, [("registered", "taro@example.jp")]) == []
