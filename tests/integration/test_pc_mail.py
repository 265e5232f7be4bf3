"""PC customers end to end over HTTP: the mail notification password, transaction authorization
and the Select E-mail service (SPEC R-MAIL-1…5, R-RBA-2; PC guide) — real RabbitMQ, PostgreSQL
and an SMTP server (aiosmtpd) on loopback whose mailbox the tests read the codes from.

otp_service, the notifier and the gateway are the real services; identity and phone_auth are
the stand-ins of the OTP suite (real Nameko services over real RPC). The registered address
reaches the notifier the way identity publishes it: ``legacy_customer_imported`` appended to
the store and carried by the real relay. otp_service runs with a clock the expiry test can
move forward (every other service keeps the real one).
"""
from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pyotp
import pytest
from nameko.extensions import DependencyProvider

from contracts.errors import NotFound
from contracts.events import Actor, Metadata, NewEvent
from gateway.service import GatewayService
from gateway.sessions import SessionStore
from identity import readmodels as identity_readmodels
from notifier.mail import mail_id_for
from notifier.service import NotifierService
from otp_service.service import OtpService
from services.eventstore import NO_STREAM
from tests.integration.test_otp_flow import (CONFIRMATION_PASSWORD, FakeIdentity, FakePhoneAuth,
                                             http_call, instance_id, issued_application)
from tests.integration.test_otp_flow import proxy as rpc_proxy
from tests.support.services import system_with_mail
from tests.support.smtp import FAST_MAIL_RETRIES
from tests.support.waiting import wait_for

MID_DOMAIN = "tsunagi.am-bk.co.jp"
CODE_LINE = re.compile(r"■メール通知パスワード\s*\n\s*(\d{6})\s*\n")
CUSTOMERS: set[str] = set()          # the customers of this module (the rebuild test compares them)


class ShiftedClock(DependencyProvider):
    """The real clock plus an offset the expiry test moves (otp_service only)."""
    offset = timedelta(0)

    def get_dependency(self, worker_ctx):
        return self

    def now(self):
        return datetime.now(timezone.utc) + ShiftedClock.offset


class ClockedOtpService(OtpService):
    clock = ShiftedClock()


@pytest.fixture(scope="module")
def system(settings, store):
    try:
        with system_with_mail(settings, store, (FakeIdentity, FakePhoneAuth, ClockedOtpService, NotifierService,
                                                GatewayService),
                              vhost_prefix="tsunagi_pc_", SMTP_TIMEOUT_SECONDS=5, MAIL_MAX_ATTEMPTS=30,
                              MAIL_OTP_SWEEP_SECONDS=0.5, **FAST_MAIL_RETRIES) as system:
            yield system
    finally:
        ShiftedClock.offset = timedelta(0)


# -- customers, requests, the mailbox ------------------------------------------------------------------

def new_number() -> str:
    return f"{uuid.uuid4().int % 10**10:010d}"


def address(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@example.jp"


def pc_customer(system, store, email: str | None = None, number: str | None = None) -> tuple[str, str, str]:
    """A migrated PC customer whose legacy record holds ``email``: (number, session, email)."""
    number = number or new_number()
    email = email or address("taro")
    stream, imported = f"customer-{number}", {
        "customer_number": number, "login_password_verifier": "pbkdf2_sha256$1$x$y",
        "confirmation_pin_verifier": "pbkdf2_sha256$1$x$y", "phones": ["+819012345678"], "email": email,
        "record_digest": uuid.uuid4().hex}
    # As identity's own commit does: the event and its read model in one transaction (the
    # session log is later replayed and compared with the read models, R-PLT-4).
    with store.transaction() as conn:
        store.append(stream, [NewEvent("legacy_customer_imported", imported)], NO_STREAM,
                     Metadata(actor=Actor("system", "identity"), service="identity"),
                     subject=number, conn=conn)
        identity_readmodels.apply(conn, stream, "legacy_customer_imported", imported)
    CUSTOMERS.add(number)
    token = SessionStore(store.pool).create(number, "customer")
    wait_for(lambda: call(system, "GET", "/api/v1/notification-addresses", token=token)[1]["registered"]["address"]
             == email, what="the registered address at the notifier")
    return number, token, email


def call(system, method, path, body=None, token=None):
    status, _, payload = http_call(system, method, path, body, token)
    return status, payload


def transfer(amount=50000, name="ﾔﾏﾀﾞ ﾀﾛｳ", account="1234567") -> dict:
    return {"type": "transfer", "amount": amount, "payee": {
        "bank_code": "0117", "branch_code": "123", "account_type": "ordinary", "account_number": account,
        "name": name}}


def select_change(select1=None, select2=None) -> dict:
    return {"type": "settings_change", "setting": "select_email", "changes": {"select1": select1, "select2": select2}}


def issue(system, token, purpose="transfer", operation=None, expect=202) -> dict:
    status, body = call(system, "POST", "/api/v1/mail-otp", {"purpose": purpose, "operation": operation}, token)
    assert status == expect, body
    return body


def authorize(system, token, operation, mail_otp=None, otp=None, password=CONFIRMATION_PASSWORD):
    body = {"operation": operation, "confirmation_password": password}
    if mail_otp is not None:
        body["mail_otp"] = mail_otp
    if otp is not None:
        body["otp"] = otp
    return call(system, "POST", "/api/v1/transactions/authorize", body, token)


def event_id_of(store, stream: str, event_type: str):
    events = wait_for(lambda: [e for e in store.read_stream(stream) if e.type == event_type], what=event_type)
    return events[-1].event_id


def mail(system, event_id, role: str = ""):
    """The one mail an event caused for ``role`` (its Message-ID is derived from the event)."""
    message_id = f"<{mail_id_for(event_id, role)}@{MID_DOMAIN}>"
    (message,) = wait_for(lambda: system["sink"].with_message_id(message_id), what=f"mail {message_id}")
    return message


def mail_otp_mail(system, store, issue_id: str, role: str = "registered"):
    return mail(system, event_id_of(store, f"mailotpmail-{issue_id}", "mail_otp_mail_requested"), role)


def code_in(message) -> str:
    return CODE_LINE.search(body_of(message)).group(1)


def body_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def acceptance_mail(system, store, authorization_id: str, role: str = "registered"):
    return mail(system, event_id_of(store, f"authorization-{authorization_id}", "operation_authorized"), role)


def read_fresh(store, stream: str):
    """The stream as a reader without cached data keys sees it (a shredded key is gone)."""
    store.keyring.forget_cache()
    return store.read_stream(stream)


def types(store, stream: str) -> list[str]:
    return [e.type for e in store.read_stream(stream)]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1000000:06d}"


# -- R-MAIL-1, R-MAIL-3: a transfer authorized with the mail notification password ---------------------

def test_pc_customer_authorizes_a_transfer_with_the_mail_password_R_MAIL_1_R_MAIL_3(system, store, capfd):
    number, token, email = pc_customer(system, store)
    status, method = call(system, "GET", "/api/v1/me/authorization-method", token=token)
    assert (status, method["method"], method["fields"]) == (200, "mail_otp", ["confirmation_password", "mail_otp"])

    # Nothing issued yet: refused before any password is checked.
    status, body = authorize(system, token, transfer(), mail_otp="123456")
    assert (status, body["code"]) == (409, "mail_otp_not_issued")
    status, body = authorize(system, token, transfer())
    assert (status, body["code"]) == (422, "mail_otp_required")
    status, body = authorize(system, token, {"type": "address_confirmation", "slot": "select1",
                                             "address": email}, mail_otp="123456")
    assert status == 422 and "operation" in body["errors"]

    issued = issue(system, token, operation=transfer())
    assert issued["purpose"] == "transfer" and issued["destinations"] == [email[0] + "***@example.jp"]
    expires = datetime.fromisoformat(issued["expires_at"]) - datetime.now(timezone.utc)
    assert timedelta(minutes=9) < expires <= timedelta(minutes=10)          # default TTL

    message = mail_otp_mail(system, store, issued["issue_id"])
    assert message["From"].addresses[0].domain == "otp-auth.net"            # R-MAIL-3
    assert message["X-Envelope-To"] == email
    assert message["Subject"] == "【青森みちのく銀行】メール通知パスワードのお知らせ"
    text = body_of(message)
    # The mail states what it authorizes: amount and payee (R-MAIL-1).
    assert "振込金額　：50,000円" in text and "ヤマダ タロウ" in text and "普通　1234567" in text
    code = code_in(message)

    # A wrong confirmation password is identity's refusal and spends nothing of the code.
    status, body = authorize(system, token, transfer(), mail_otp=code, password="Wrong0000")
    assert status == 401 and body["code"] == "confirmation_password_mismatch"
    status, result = authorize(system, token, transfer(), mail_otp=code)
    assert status == 200 and result["method"] == "mail_otp" and result["purpose"] == "transfer"

    # 取引受付メール from am-bk.co.jp to the registered address.
    accepted = acceptance_mail(system, store, result["authorization_id"])
    assert accepted["From"].addresses[0].domain == "am-bk.co.jp"             # R-MAIL-3
    assert accepted["X-Envelope-To"] == email
    assert accepted["Subject"] == "【青森みちのく銀行】お振込受付のお知らせ"
    assert "50,000円" in body_of(accepted) and result["authorization_id"].split("-")[0].upper() in body_of(accepted)

    # Single use.
    status, body = authorize(system, token, transfer(), mail_otp=code)
    assert (status, body["code"]) == (401, "mail_otp_used")

    # Every transition is an event; the code is stored as its hash only — the sealed copy the
    # mail was written from is unreadable now that the code is used.
    assert types(store, f"mailotp-{number}") == ["mail_otp_issued", "mail_otp_verified",
                                                 "mail_otp_verification_failed"]
    assert types(store, f"authorization-{result['authorization_id']}") == ["operation_authorized"]
    (request,) = read_fresh(store, f"mailotpmail-{issued['issue_id']}")
    assert request.data["code"] == "[redacted]"
    assert types(store, f"subject-mailotp:{issued['issue_id']}") == ["subject_key_shredded"]
    with store.pool.connection() as conn:
        raw = conn.execute("SELECT string_agg(data::text, '') FROM eventstore.events WHERE stream_name IN "
                           "(%s, %s) OR data->>'source_event_id' = %s",
                           (f"mailotp-{number}", f"mailotpmail-{issued['issue_id']}", str(request.event_id))
                           ).fetchone()[0]
        snapshot = conn.execute("SELECT current::text FROM otp.mail_otp_customers WHERE customer_number = %s",
                                (number,)).fetchone()[0]
    assert f'"{code}"' not in raw and f'"{code}"' not in snapshot and email not in raw
    out, _ = capfd.readouterr()
    assert email not in out and f'"{code}"' not in out                   # never logged in full


# -- R-MAIL-1: only the latest code, for exactly its operation ------------------------------------------

def test_an_older_code_fails_after_a_new_one_and_a_code_for_another_operation_fails_R_MAIL_1(system, store):
    number, token, _ = pc_customer(system, store)
    first = issue(system, token, operation=transfer())
    old = code_in(mail_otp_mail(system, store, first["issue_id"]))
    second = issue(system, token, operation=transfer())
    new = code_in(mail_otp_mail(system, store, second["issue_id"]))

    status, body = authorize(system, token, transfer(), mail_otp=old)
    assert (status, body["code"]) == (401, "mail_otp_superseded") and "最新" in body["detail"]
    # The right code for another payee or amount: a substituted transfer is refused.
    for other in (transfer(account="7654321"), transfer(amount=50001)):
        status, body = authorize(system, token, other, mail_otp=new)
        assert (status, body["code"]) == (401, "mail_otp_other_operation") and body["remaining_attempts"] >= 3
    status, body = authorize(system, token, {**select_change(), "setting": "transfer_limit"}, mail_otp=new)
    assert (status, body["code"]) == (401, "mail_otp_other_operation")
    # The same operation spelled differently (full-width name, unpadded account) is the same one.
    status, result = authorize(system, token, transfer(name="ヤマダ　タロウ", account="0001234567"[-7:]), mail_otp=new)
    assert status == 200, result
    assert types(store, f"mailotp-{number}") == [
        "mail_otp_issued", "mail_otp_superseded", "mail_otp_issued", "mail_otp_verification_failed",
        "mail_otp_verification_failed", "mail_otp_verification_failed", "mail_otp_verification_failed",
        "mail_otp_verified"]
    refused = [e.data for e in store.read_stream(f"mailotp-{number}") if e.type == "mail_otp_verification_failed"]
    assert [(r["reason"], r["counted"]) for r in refused] == [
        ("superseded", False), ("other_operation", True), ("other_operation", True), ("other_operation", True)]


def test_the_code_expires_after_ten_minutes_by_default_R_MAIL_1(system, store):
    number, token, _ = pc_customer(system, store)
    try:
        first = issue(system, token, operation=transfer(amount=1000))
        code = code_in(mail_otp_mail(system, store, first["issue_id"]))
        ShiftedClock.offset = timedelta(minutes=10, seconds=1)
        status, body = authorize(system, token, transfer(amount=1000), mail_otp=code)
        assert (status, body["code"]) == (401, "mail_otp_expired")
        ShiftedClock.offset = timedelta(0)
        second = issue(system, token, operation=transfer(amount=1000))
        code = code_in(mail_otp_mail(system, store, second["issue_id"]))
        ShiftedClock.offset = timedelta(minutes=9, seconds=50)
        status, result = authorize(system, token, transfer(amount=1000), mail_otp=code)
        assert status == 200, result
    finally:
        ShiftedClock.offset = timedelta(0)
    assert types(store, f"mailotp-{number}")[:3] == ["mail_otp_issued", "mail_otp_expired",
                                                     "mail_otp_verification_failed"]
    assert read_fresh(store, f"mailotpmail-{first['issue_id']}")[0].data["code"] == "[redacted]"

    # Unused and never entered: the sweep closes it (and destroys its key) by itself.
    third = issue(system, token, operation=transfer(amount=2000))
    mail_otp_mail(system, store, third["issue_id"])
    ShiftedClock.offset = timedelta(minutes=11)
    try:
        wait_for(lambda: types(store, f"mailotp-{number}")[-1] == "mail_otp_expired", what="the expiry sweep")
    finally:
        ShiftedClock.offset = timedelta(0)
    assert read_fresh(store, f"mailotpmail-{third['issue_id']}")[0].data["code"] == "[redacted]"


def test_five_wrong_entries_void_the_code_and_lock_R_RBA_2(system, store):
    number, token, _ = pc_customer(system, store)
    issued = issue(system, token, operation=transfer(amount=3000))
    code = code_in(mail_otp_mail(system, store, issued["issue_id"]))
    for remaining in (4, 3, 2, 1):
        status, body = authorize(system, token, transfer(amount=3000), mail_otp=wrong(code))
        assert (status, body["code"], body["remaining_attempts"]) == (401, "mail_otp_invalid", remaining)
    status, body = authorize(system, token, transfer(amount=3000), mail_otp=wrong(code))
    assert (status, body["code"]) == (423, "mail_otp_locked")
    status, body = authorize(system, token, transfer(amount=3000), mail_otp=code)      # even the right one
    assert (status, body["code"]) == (423, "mail_otp_locked")
    status, body = call(system, "GET", "/api/v1/me/authorization-method", token=token)
    assert body["mail_otp_locked"] is True
    issue(system, token, operation=transfer(amount=3000), expect=423)
    with rpc_proxy(system) as customer:
        with pytest.raises(Exception) as err:
            customer.otp_service.unlock_mail_otp(number)
        assert getattr(err.value, "code", None) == "forbidden"
    with rpc_proxy(system, kind="operator", actor="op-001") as operator:
        assert operator.otp_service.unlock_mail_otp(number) == {"unlocked": True}
    # Unlocked, but that code stays void: a new one is needed.
    status, body = authorize(system, token, transfer(amount=3000), mail_otp=code)
    assert (status, body["code"]) == (401, "mail_otp_voided")
    fresh = issue(system, token, operation=transfer(amount=3000))
    status, _ = authorize(system, token, transfer(amount=3000),
                          mail_otp=code_in(mail_otp_mail(system, store, fresh["issue_id"])))
    assert status == 200
    assert types(store, f"mailotp-{number}") == (
        ["mail_otp_issued"] + ["mail_otp_verification_failed"] * 5
        + ["mail_otp_voided", "mail_otp_locked", "mail_otp_unlocked", "mail_otp_verification_failed",
           "mail_otp_issued", "mail_otp_verified"])


# -- R-MAIL-4, R-MAIL-5: Select E-mail ---------------------------------------------------------------------

def change(system, token, select1=None, select2=None, mail_otp=None, otp=None):
    body = {"select1": select1, "select2": select2, "confirmation_password": CONFIRMATION_PASSWORD}
    if mail_otp:
        body["mail_otp"] = mail_otp
    if otp:
        body["otp"] = otp
    return call(system, "PUT", "/api/v1/notification-addresses", body, token)


def authorized_change(system, store, token, select1=None, select2=None):
    """The PC guide's flow: the code for exactly this change (to today's destinations), then PUT."""
    issued = issue(system, token, "settings_change", select_change(select1, select2))
    code = code_in(mail_otp_mail(system, store, issued["issue_id"]))
    return issued, change(system, token, select1, select2, mail_otp=code)


def test_select_addresses_added_confirmed_and_receiving_both_mails_R_MAIL_4_R_MAIL_5(system, store, capfd):
    number, token, email = pc_customer(system, store)
    phone, spare = address("keitai"), address("spare")
    select1 = {"address": phone, "enabled": True, "receives_mail_otp": True}
    select2 = {"address": spare, "enabled": True, "receives_mail_otp": False}

    # Nothing that changes nothing or repeats an address spends a code or a password check.
    status, body = change(system, token, mail_otp="000000")
    assert (status, body["code"]) == (422, "no_change")
    status, body = change(system, token, {"address": email, "enabled": True}, mail_otp="000000")
    assert (status, body["code"]) == (422, "duplicate_address")

    issued, (status, result) = authorized_change(system, store, token, select1, select2)
    # The code for the change went to the registered address only, and named the change.
    text = body_of(mail_otp_mail(system, store, issued["issue_id"]))
    assert "セレクトEメールサービスの変更" in text and phone in text and spare in text
    assert status == 200, result
    assert result["select1"] == {"address": phone, "enabled": True, "receives_mail_otp": False,
                                 "mail_otp_pending_confirmation": True}
    assert result["select2"]["address"] == spare and result["pending_confirmation"] == "select1"
    assert result["confirmation_sent_to"] == [phone[0] + "***@example.jp"]

    # The confirming code went to the new address alone (R-MAIL-5).
    (confirmation,) = [e for e in store.read_stream(f"mailotp-{number}") if e.type == "mail_otp_issued"][-1:]
    confirm_issue = confirmation.data["issue_id"]
    confirm_mail = mail_otp_mail(system, store, confirm_issue, role="select1")
    assert confirm_mail["X-Envelope-To"] == phone and "メール通知パスワード送信先の設定" in body_of(confirm_mail)
    request_id = event_id_of(store, f"mailotpmail-{confirm_issue}", "mail_otp_mail_requested")
    with store.pool.connection() as conn:
        queued = conn.execute("SELECT count(*) FROM notifier.outbox WHERE source_event_id = %s",
                              (request_id,)).fetchone()[0]
    assert queued == 1
    status, body = call(system, "POST", "/api/v1/notification-addresses/confirmation",
                        {"mail_otp": wrong(code_in(confirm_mail)), "confirmation_password": CONFIRMATION_PASSWORD},
                        token)
    assert (status, body["code"]) == (401, "mail_otp_invalid")
    # "Send it again": a new code to the same new address; the first one is superseded.
    resent = issue(system, token, "address_confirmation")
    assert resent["destinations"] == [phone[0] + "***@example.jp"]
    resent_mail = mail_otp_mail(system, store, resent["issue_id"], role="select1")
    status, body = call(system, "POST", "/api/v1/notification-addresses/confirmation",
                        {"mail_otp": code_in(confirm_mail), "confirmation_password": CONFIRMATION_PASSWORD}, token)
    assert (status, body["code"]) == (401, "mail_otp_superseded")
    status, result = call(system, "POST", "/api/v1/notification-addresses/confirmation",
                          {"mail_otp": code_in(resent_mail), "confirmation_password": CONFIRMATION_PASSWORD}, token)
    assert status == 200, result
    assert result["select1"]["receives_mail_otp"] is True and result["pending_confirmation"] is None

    # Both mails now reach the select addresses: the code to registered + select1 (not select2,
    # not chosen) …
    transfer_code = issue(system, token, operation=transfer(amount=7000))
    assert sorted(transfer_code["destinations"]) == sorted([email[0] + "***@example.jp", phone[0] + "***@example.jp"])
    to_registered = mail_otp_mail(system, store, transfer_code["issue_id"], "registered")
    to_phone = mail_otp_mail(system, store, transfer_code["issue_id"], "select1")
    assert to_phone["X-Envelope-To"] == phone and code_in(to_phone) == code_in(to_registered)
    assert to_phone["Message-ID"] != to_registered["Message-ID"]
    status, result = authorize(system, token, transfer(amount=7000), mail_otp=code_in(to_phone))
    assert status == 200
    # … and the 取引受付メール to registered + every used select address.
    recipients = {acceptance_mail(system, store, result["authorization_id"], role)["X-Envelope-To"]
                  for role in ("registered", "select1", "select2")}
    assert recipients == {email, phone, spare}
    sent = [m for m in system["sink"].messages() if m["X-Envelope-To"] == spare
            and m["From"].addresses[0].domain == "otp-auth.net"]
    assert sent == []                                                     # select2 never got a code

    assert types(store, f"notifyaddr-{number}") == [
        "select_address_set", "mail_otp_destination_requested", "select_address_set",
        "mail_otp_destination_confirmed"]
    out, _ = capfd.readouterr()
    assert phone not in out and spare not in out and email not in out      # masked in every log line


def test_removed_and_replaced_addresses_get_a_removal_notice_R_MAIL_4(system, store):
    number, token, email = pc_customer(system, store)
    first, second, third = address("first"), address("second"), address("third")
    _, (status, _) = authorized_change(system, store, token, {"address": first, "enabled": True},
                                       {"address": second, "enabled": False})
    assert status == 200
    # select1 replaced, select2 removed.
    _, (status, result) = authorized_change(system, store, token, {"address": third, "enabled": True}, None)
    assert status == 200, result
    assert result["select1"]["address"] == third and result["select2"]["address"] is None
    removed = [e for e in store.read_stream(f"notifyaddr-{number}") if e.type == "select_address_removed"]
    assert [(e.data["slot"], e.data["reason"]) for e in removed] == [("select1", "replaced"), ("select2", "removed")]
    for event, gone, reason in zip(removed, (first, second), ("変更により登録解除", "登録解除")):
        notice = mail(system, event.event_id)
        assert notice["X-Envelope-To"] == gone and notice["From"].addresses[0].domain == "am-bk.co.jp"
        assert notice["Subject"] == "【青森みちのく銀行】セレクトEメールサービス登録解除のお知らせ"
        assert f"{reason}されました" in body_of(notice)
    status, view = call(system, "GET", "/api/v1/notification-addresses", token=token)
    assert view["select1"] == {"address": third, "enabled": True, "receives_mail_otp": False,
                               "mail_otp_pending_confirmation": False}


# -- DESIGN.md "Mail": SMTP down during a send, then up ------------------------------------------------

def test_smtp_down_then_up_the_code_arrives_exactly_once_R_MAIL_1(system, store):
    number, token, _ = pc_customer(system, store)
    sink = system["sink"]

    def mail_id_of(issued):
        return str(mail_id_for(event_id_of(store, f"mailotpmail-{issued['issue_id']}", "mail_otp_mail_requested"),
                               "registered"))

    sink.stop()
    try:
        with rpc_proxy(system) as proxy:
            def status(mail_id):
                try:
                    return proxy.notifier.mail_status(mail_id)
                except NotFound:
                    return {}
            stale = issue(system, token, operation=transfer(amount=4000))
            stale_mail = mail_id_of(stale)
            wait_for(lambda: status(stale_mail).get("attempts", 0) >= 1, what="a failed attempt")
            # A newer code while the first mail still waits: the first is never sent.
            issued = issue(system, token, operation=transfer(amount=4000))
            mail_id = mail_id_of(issued)
            wait_for(lambda: status(mail_id).get("attempts", 0) >= 2, what="failed attempts while SMTP is down")
            assert status(mail_id)["status"] == "queued"
    finally:
        sink.start()
    message = mail_otp_mail(system, store, issued["issue_id"])
    with rpc_proxy(system) as proxy:
        wait_for(lambda: proxy.notifier.mail_status(mail_id)["status"] == "sent", what="mail_sent")
        failed = wait_for(lambda: (lambda s: s if s["status"] == "failed" else None)(
            proxy.notifier.mail_status(stale_mail)), what="the superseded code's mail withdrawn")
    assert failed["last_error"].startswith("withdrawn")
    assert sink.with_message_id(f"<{stale_mail}@{MID_DOMAIN}>") == []
    assert len(sink.with_message_id(message["Message-ID"])) == 1
    stream = [e.type for e in store.read_stream(f"mail-{mail_id}")]
    assert stream[0] == "mail_queued" and stream[-1] == "mail_sent" and "mail_deferred" in stream
    status, _ = authorize(system, token, transfer(amount=4000), mail_otp=code_in(message))
    assert status == 200


# -- R-MAIL-2: OTP users, and the fallback after releasing the token -----------------------------------------

def test_an_otp_customer_who_releases_the_token_needs_the_mail_password_R_MAIL_2(system, store):
    with rpc_proxy(system) as proxy:
        number, application = issued_application(proxy.otp_service, store)
        activated = proxy.otp_service.activate({"service_id": "AMBK000117", "user_id": application["user_id"],
                                                "activation_password": "4321", "agreed": True}, instance_id())
    totp = pyotp.parse_uri(activated["otpauth_uri"])
    _, token, email = pc_customer(system, store, number=number)

    status, method = call(system, "GET", "/api/v1/me/authorization-method", token=token)
    assert (status, method["method"]) == (200, "otp")
    status, body = call(system, "POST", "/api/v1/mail-otp", {"purpose": "transfer", "operation": transfer()}, token)
    assert (status, body["code"]) == (409, "mail_otp_not_needed")
    status, body = authorize(system, token, transfer(), mail_otp="123456")
    assert (status, body["code"]) == (422, "otp_required")

    # Three OTPs follow (each time step is accepted once): the previous, the current and the
    # next step's code, all inside the ±1 step window — started early in a step so it holds.
    if time.time() % 30 > 20:
        time.sleep(30 - time.time() % 30 + 0.1)
    base = datetime.now(timezone.utc)
    status, result = authorize(system, token, transfer(), otp=totp.at(base - timedelta(seconds=30)))
    assert (status, result["method"]) == (200, "otp")
    assert acceptance_mail(system, store, result["authorization_id"])["X-Envelope-To"] == email

    # An OTP user changes the select addresses with the OTP (R-MAIL-5) — yet a new destination
    # is still confirmed by the mail notification password sent to it.
    phone = address("keitai")
    status, result = change(system, token, {"address": phone, "enabled": True, "receives_mail_otp": True},
                            otp=totp.at(base))
    assert status == 200 and result["pending_confirmation"] == "select1", result
    confirmation = [e for e in store.read_stream(f"mailotp-{number}") if e.type == "mail_otp_issued"][-1]
    code = code_in(mail_otp_mail(system, store, confirmation.data["issue_id"], "select1"))
    status, result = call(system, "POST", "/api/v1/notification-addresses/confirmation",
                          {"mail_otp": code, "confirmation_password": CONFIRMATION_PASSWORD}, token)
    assert status == 200 and result["select1"]["receives_mail_otp"] is True

    # The phone change: the token is released — from now on the mail notification password.
    status, _ = call(system, "POST", "/api/v1/otp/tokens/release",
                     {"confirmation_password": CONFIRMATION_PASSWORD, "otp": totp.at(base + timedelta(seconds=30))},
                     token)
    assert status == 200
    status, method = call(system, "GET", "/api/v1/me/authorization-method", token=token)
    assert (status, method["method"]) == (200, "mail_otp")
    status, body = authorize(system, token, transfer(), otp=totp.now())
    assert (status, body["code"]) == (422, "mail_otp_required")
    issued = issue(system, token, operation=transfer())
    assert mail_otp_mail(system, store, issued["issue_id"], "select1")["X-Envelope-To"] == phone
    status, result = authorize(system, token, transfer(),
                               mail_otp=code_in(mail_otp_mail(system, store, issued["issue_id"])))
    assert (status, result["method"]) == (200, "mail_otp")


# -- the API description and the read models ------------------------------------------------------------------

def test_openapi_documents_the_pc_routes(system):
    status, spec = call(system, "GET", "/openapi.json")
    assert status == 200
    for path, method in (("/api/v1/mail-otp", "post"), ("/api/v1/transactions/authorize", "post"),
                         ("/api/v1/notification-addresses", "get"), ("/api/v1/notification-addresses", "put"),
                         ("/api/v1/notification-addresses/confirmation", "post"),
                         ("/api/v1/me/authorization-method", "get")):
        assert method in spec["paths"][path], (path, method)
    assert "202" in spec["paths"]["/api/v1/mail-otp"]["post"]["responses"]


def test_read_models_rebuild_by_replay(system, store):
    """The mail OTP snapshots and the address book are derived data: replay gives the same rows."""
    from notifier import addresses_projection
    from otp_service import mail_otp_projection

    def snapshot():
        mine = list(CUSTOMERS)
        with store.pool.connection() as conn:
            return (sorted(conn.execute("SELECT customer_number, current, previous, current_status, "
                                        "current_expires_at, consecutive_failures, locked, locked_at, "
                                        "stream_version FROM otp.mail_otp_customers "
                                        "WHERE customer_number = ANY(%s)", (mine,)).fetchall(), key=str),
                    sorted(conn.execute("SELECT customer_number, slot, address, enabled, receives_mail_otp, "
                                        "pending_mail_otp FROM notifier.addresses WHERE customer_number = ANY(%s)",
                                        (mine,)).fetchall(), key=str))

    before = snapshot()
    assert before[0] and before[1]
    assert mail_otp_projection.rebuild(store) > 0 and addresses_projection.rebuild(store) > 0
    assert snapshot() == before
