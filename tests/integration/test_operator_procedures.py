"""The operator procedures of R-LEG-4 through ``tsunagi operator …`` against the real services:
identity, secret_questions, otp_service, phone_auth, notifier, passkeys and the gateway (in-process Nameko
containers on their own RabbitMQ vhost), the real relay, PostgreSQL and an SMTP sink.

Each procedure is checked where the customer feels it — the gateway's HTTP API — and in the
log: an event whose metadata names the operator (actor kind ``operator``) and the reason, also
as ``tsunagi audit journey`` shows it (personal fields masked).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import uuid
from datetime import datetime, timezone

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

from contracts import telephony
from gateway.service import GatewayService
from identity.passkeys import PasskeysService
from identity.secret_questions import SecretQuestionsService
from identity.service import IdentityService
from notifier.service import NotifierService
from otp_service.service import OtpService
from phone_auth.service import PhoneAuthService
from tests.integration.test_cli import tsunagi
from tests.integration.webauthn_soft import SoftAuthenticator
from tests.support.services import system_with_mail
from tests.support.waiting import wait_for
from tests.support.web import http_json

LEGACY_PASSWORD, LEGACY_PIN = "Michi2024Ab", "Pin4821x"
NEW_LOGIN, NEW_CONFIRMATION = "Tsunagi2025X", "kakunin99Z"
ANSWERS = [{"question_id": "q01", "answer": "やまだ"}, {"question_id": "q03", "answer": "東小学校"},
           {"question_id": "q05", "answer": "青森　りんご"}]
TOLL_FREE = "0120-000-110"
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1"


@pytest.fixture(scope="module")
def system(settings, store):
    with system_with_mail(settings, store, (
            IdentityService, SecretQuestionsService, OtpService, PhoneAuthService, NotifierService, PasskeysService,
            GatewayService), vhost_prefix="tsunagi_opproc_", CUTOVER_AT="2025-01-05T07:00:00+09:00",
            LOCKOUT_THRESHOLD=5, LOCK_RELEASE_SECONDS=0, RPC_TIMEOUT=20, TOLL_FREE_NUMBERS=TOLL_FREE,
            PHONE_VERIFICATION_SECONDS=120, OTP_SERVICE_ID="AMBK000117") as system:
        yield {**system, "env": {"AMQP_URI": system["config"]["AMQP_URI"]}}


# -- plumbing --------------------------------------------------------------------------------

def http_call(system, method, path, body=None, token=None, headers=None):
    status, _, payload = http_json(system["web_port"], method, path, body, token,
                                   {"User-Agent": UA, **(headers or {})}, timeout=60)
    return status, payload


def pbkdf2(password: str, iterations: int = 1000) -> str:
    salt = base64.b64encode(os.urandom(9)).decode()
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(key).decode()}"


def random_mobile() -> tuple[str, str]:
    digits = f"{random.randrange(10**7, 10**8)}"
    return f"090-{digits[:4]}-{digits[4:]}", f"+8190{digits}"


def imported(system) -> tuple[str, str]:
    """A legacy customer (number, E.164 of the registered mobile)."""
    number = f"{random.randrange(10**9, 10**10):010d}"
    phone, e164 = random_mobile()
    with ClusterRpcProxy(system["config"], timeout=30, context_data={
            "correlation_id": str(uuid.uuid4()), "actor_kind": "operator", "actor_id": "import"}) as rpc:
        [result] = rpc.identity.import_legacy([{
            "line": 1, "customer_number": number, "login_password_verifier": pbkdf2(LEGACY_PASSWORD),
            "confirmation_pin_verifier": pbkdf2(LEGACY_PIN), "phones": phone, "email": ""}])
    assert result["status"] == "imported", result
    return number, e164


def migrated(system) -> tuple[str, str]:
    """A customer through steps 2–4 over HTTP (new login and confirmation passwords)."""
    number, e164 = imported(system)
    status, body = http_call(system, "POST", "/api/v1/migration/login",
                             {"customer_number": number, "password": LEGACY_PASSWORD})
    assert status == 200, body
    token = body["session_token"]
    status, body = http_call(system, "POST", "/api/v1/migration/secret-questions",
                             {"answers": ANSWERS, "confirmed": True}, token)
    assert status == 200, body
    status, body = http_call(system, "POST", "/api/v1/migration/password", {
        "current_login_password": LEGACY_PASSWORD, "new_login_password": NEW_LOGIN,
        "new_login_password_confirmation": NEW_LOGIN, "current_confirmation_password": LEGACY_PIN,
        "new_confirmation_password": NEW_CONFIRMATION,
        "new_confirmation_password_confirmation": NEW_CONFIRMATION}, token)
    assert status == 200, body
    return number, e164


def login(system, number, password):
    return http_call(system, "POST", "/api/v1/login", {"login_id": number, "password": password})


def session_and_phone(system, number) -> tuple[str, str]:
    """A customer session from the new login password, and the id of the first registered phone."""
    status, body = login(system, number, NEW_LOGIN)
    assert status == 200, body
    session = body["session_token"]
    return session, http_call(system, "GET", "/api/v1/me/phones", token=session)[1][0]["phone_id"]


def operator(system, procedure, number, *extra, operator_id="op-42", reason="紙の申請書 2026-118"):
    result = tsunagi("operator", procedure, number, *extra, "--operator", operator_id, "--reason", reason,
                     "--json", env=system["env"])
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None, result.stderr


def passkey(system, token) -> SoftAuthenticator:
    """Step 10 (R-INI-8) with a software authenticator, from an ID/password session."""
    authenticator = SoftAuthenticator(f"http://localhost:{system['web_port']}")
    status, options = http_call(system, "POST", "/api/v1/webauthn/register/options", token=token)
    assert status == 200, options
    status, body = http_call(system, "POST", "/api/v1/webauthn/register", {
        "credential": authenticator.create(options), "challenge_id": options["challenge_id"]}, token)
    assert status == 201, body
    return authenticator


def passkey_login(system, authenticator):
    status, options = http_call(system, "POST", "/api/v1/webauthn/login/options", {})
    assert status == 200, options
    return http_call(system, "POST", "/api/v1/webauthn/login", {
        "credential": authenticator.get(options), "challenge_id": options["challenge_id"]})


def customer_events(store, number):
    return store.read_stream(f"customer-{number}")


def recorded(store, stream, event_type):
    (event,) = [e for e in store.read_stream(stream) if e.type == event_type]
    return event


def by_operator(event, operator_id="op-42", reason="紙の申請書 2026-118"):
    assert event.metadata["actor"] == {"kind": "operator", "id": operator_id}
    assert event.metadata["reason"] == reason
    return event


def application_form(phone_id, confirmation_password, email="taro@example.jp"):
    return {"email": email, "email_confirmation": email, "activation_password": "4321",
            "activation_password_confirmation": "4321", "phone_id": phone_id,
            "confirmation_password": confirmation_password}


def journey(store, number) -> list[dict]:
    store.seal_all()
    result = tsunagi("audit", "journey", number, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


# -- re-issue of the login password ------------------------------------------------------------

def test_reissued_login_password_forces_a_change_then_only_the_new_one_works_R_LEG_4(system, store):
    number, _ = migrated(system)
    status, body = login(system, number, NEW_LOGIN)
    assert status == 200, body
    old_session = body["session_token"]
    device = passkey(system, old_session)               # biometric login too (R-INI-8)
    assert passkey_login(system, device)[0] == 200
    for i in range(5):                                  # forgotten: locked by wrong guesses (R-RBA-2)
        login(system, number, f"Wrong{i}Guess")
    assert login(system, number, NEW_LOGIN)[1]["code"] == "credential_locked"
    status, body = passkey_login(system, device)        # no way around the lock
    assert status == 423 and body["code"] == "credential_locked", body

    code, out, err = operator(system, "reissue-login-password", number)
    assert code == 0, err
    temporary = out["result"]["temporary_password"]
    assert out["result"]["unlocked"] is True and out["result"]["next_step"] == "login_password_change"
    assert 6 <= len(temporary) <= 12 and temporary.isalnum() and temporary.isascii()
    assert temporary != temporary.lower() and temporary != temporary.upper()

    # The customer's sessions end (the gateway hears the event through the relay).
    wait_for(lambda: http_call(system, "GET", "/api/v1/me/phones", token=old_session)[0] == 401,
             what="the old session revoked", timeout=60)
    # Neither does the passkey, until the customer has changed the temporary password.
    status, body = passkey_login(system, device)
    assert status == 403 and body["code"] == "password_change_required", body
    # The forgotten password no longer works; the temporary one opens only the forced change.
    assert login(system, number, NEW_LOGIN)[1]["code"] == "invalid_credentials"
    status, body = login(system, number, temporary)
    assert status == 200 and body["next_step"] == "login_password_change", body
    change_session = body["session_token"]
    status, body = http_call(system, "GET", "/api/v1/me/authorization-method", token=change_session)
    assert status == 403, body                          # no customer session
    status, phones = http_call(system, "GET", "/api/v1/me/phones", token=change_session)
    status, body = http_call(system, "POST", "/api/v1/otp/applications",
                             application_form(phones[0]["phone_id"], NEW_CONFIRMATION), change_session)
    assert status == 403 and body["code"] == "password_change_required", body

    # The change follows the rules of R-INI-2 …
    status, body = http_call(system, "POST", "/api/v1/me/login-password", {
        "current_login_password": temporary, "new_login_password": "alllowercase1",
        "new_login_password_confirmation": "alllowercase1"}, change_session)
    assert status == 422 and "new_login_password" in body["errors"], body
    status, body = http_call(system, "POST", "/api/v1/me/login-password", {
        "current_login_password": temporary, "new_login_password": "Renewed2026A",
        "new_login_password_confirmation": "Renewed2026A"}, change_session)
    assert status == 200 and body == {"status": "changed", "next_step": "login"}, body
    # … ends the change session, and afterwards only the new password logs in.
    assert http_call(system, "GET", "/api/v1/me/phones", token=change_session)[0] == 401
    assert login(system, number, temporary)[1]["code"] == "invalid_credentials"
    assert login(system, number, NEW_LOGIN)[1]["code"] == "invalid_credentials"
    status, body = login(system, number, "Renewed2026A")
    assert status == 200 and "session_token" in body and "next_step" not in body, body
    # The re-issue removed nothing else: the passkey logs in again. Removing it is its own
    # procedure (a lost device).
    assert passkey_login(system, device)[0] == 200
    code, out, err = operator(system, "remove-passkeys", number)
    assert code == 0 and out["result"]["removed"] == 1, err
    assert passkey_login(system, device)[1]["code"] == "passkey_login_failed"
    assert by_operator(recorded(store, f"passkeys-{number}", "passkey_removed")).data["by"] == "operator"

    reissued = by_operator(recorded(store, f"customer-{number}", "login_password_reissued"))
    assert reissued.data["temporary_password_hash"].startswith("$argon2id$")
    unlocked = [e for e in customer_events(store, number) if e.type == "credential_unlocked"]
    assert [e.data["by"] for e in unlocked] == ["operator"]
    by_operator(unlocked[0])
    assert recorded(store, f"customer-{number}", "login_password_changed").metadata["actor"]["kind"] == "customer"

    rows = journey(store, number)
    row = next(r for r in rows if r["event_type"] == "login_password_reissued")
    assert row["actor"] == {"kind": "operator", "id": "op-42"} and row["reason"] == "紙の申請書 2026-118"
    assert next(r for r in rows if r["event_type"] == "passkey_removed")["reason"] == "紙の申請書 2026-118"
    assert row["data"]["temporary_password_hash"] == "***" and temporary not in json.dumps(rows)


# -- reset of the confirmation password --------------------------------------------------------

def test_reset_confirmation_password_blocks_transactions_until_changed_R_LEG_4(system, store):
    number, _ = migrated(system)
    session, phone_id = session_and_phone(system, number)

    code, out, err = operator(system, "reset-confirmation-password", number, reason="確認用パスワード失念")
    assert code == 0, err
    temporary = out["result"]["temporary_password"]
    # Every check of the confirmation password refuses, the temporary one included …
    status, body = http_call(system, "POST", "/api/v1/otp/applications",
                             application_form(phone_id, temporary), session)
    assert status == 403 and body["code"] == "password_change_required", body
    assert body["credential"] == "confirmation_password"
    status, body = http_call(system, "POST", "/api/v1/otp/applications",
                             application_form(phone_id, NEW_CONFIRMATION), session)
    assert status == 401, body                           # the forgotten one is gone
    # … until the customer sets a new one (≠ the login password, R-INI-2).
    status, body = http_call(system, "POST", "/api/v1/me/confirmation-password", {
        "current_confirmation_password": temporary, "new_confirmation_password": NEW_LOGIN,
        "new_confirmation_password_confirmation": NEW_LOGIN}, session)
    assert status == 422 and "new_confirmation_password" in body["errors"], body
    status, body = http_call(system, "POST", "/api/v1/me/confirmation-password", {
        "current_confirmation_password": temporary, "new_confirmation_password": "pinNew2026",
        "new_confirmation_password_confirmation": "pinNew2026"}, session)
    assert status == 200 and body["status"] == "changed", body
    status, body = http_call(system, "POST", "/api/v1/otp/applications",
                             application_form(phone_id, temporary), session)
    assert status == 401 and body["code"] == "invalid_confirmation_password", body
    status, body = http_call(system, "POST", "/api/v1/otp/applications",
                             application_form(phone_id, "pinNew2026"), session)
    assert status == 201 and body["status"] == "awaiting_call", body

    by_operator(recorded(store, f"customer-{number}", "confirmation_password_reset"), reason="確認用パスワード失念")
    assert recorded(store, f"customer-{number}", "confirmation_password_changed").data["replaced_temporary"] is True


# -- phone change and OTP release --------------------------------------------------------------

def call_from(system, caller_e164):
    """An inbound call to the toll-free number, as the telephony edge publishes it; its key."""
    call_id = f"CA{uuid.uuid4().hex}"
    event_dispatcher(system["config"])(telephony.SOURCE_SERVICE, telephony.INBOUND_CALL, {
        "call_id": call_id, "caller": caller_e164, "withheld": False, "called": TOLL_FREE,
        "received_at": datetime.now(timezone.utc).isoformat(), "edge": "sip"})
    return str(telephony.call_key("sip", call_id))


def test_changed_phones_are_used_by_the_otp_application_and_release_falls_back_to_mail_R_LEG_4(system, store):
    number, old_e164 = migrated(system)
    session, old_phone_id = session_and_phone(system, number)
    before = len(customer_events(store, number))

    # An invalid number refuses the whole form and changes nothing.
    code, out, err = operator(system, "change-phones", number, "--phone", "080-1111-2222", "--phone", "12345")
    assert code == 1 and out["code"] == "phone_invalid" and "2 件目" in out["detail"], (out, err)
    assert len(customer_events(store, number)) == before

    mobile, new_e164 = random_mobile()
    code, out, err = operator(system, "change-phones", number, "--phone", mobile, "--phone", "（0172）12-3456")
    assert code == 0, err
    status, phones = http_call(system, "GET", "/api/v1/me/phones", token=session)
    assert [p["masked"] for p in phones] == ["*****" + new_e164[-4:], "*****3456"]
    changed = by_operator(recorded(store, f"customer-{number}", "registered_phones_changed"))
    assert changed.data["phones"] == [new_e164, "+81172123456"]

    # The old number is no longer offered; an application verifies against the new one.
    status, body = http_call(system, "POST", "/api/v1/otp/applications",
                             application_form(old_phone_id, NEW_CONFIRMATION), session)
    assert status == 422, body
    status, created = http_call(system, "POST", "/api/v1/otp/applications",
                                application_form(phones[0]["phone_id"], NEW_CONFIRMATION), session)
    assert status == 201 and created["call_from_masked"] == "*****" + new_e164[-4:], created
    path = f"/api/v1/otp/applications/{created['application_id']}"
    call_from(system, old_e164)                          # the old phone verifies nothing …
    new_call = call_from(system, new_e164)               # … the new one does
    issued = wait_for(lambda: (lambda r: r[1] if r[1].get("status") == "issued" else None)(
        http_call(system, "GET", path, token=session)), what="token issued", timeout=60)
    verification = [e for e in store.read_category("phoneverif", 0, 100_000)
                    if e.type == "phone_verification_succeeded"
                    and e.data.get("application_id") == created["application_id"]]
    assert [e.data["call_key"] for e in verification] == [new_call]

    # Activate the token in the OTP app: the customer now authorises with the OTP.
    status, body = http_call(system, "POST", "/api/v1/otp-app/activate", {
        "service_id": issued["service_id"], "user_id": issued["user_id"], "activation_password": "4321",
        "agreed": True}, headers={"X-App-Instance-ID": f"app-{uuid.uuid4()}"})
    assert status == 200, body
    serial = body["token_serial"]
    assert http_call(system, "GET", "/api/v1/me/authorization-method", token=session)[1]["method"] == "otp"

    # Lost phone: the operator releases the token without the OTP.
    code, out, err = operator(system, "release-otp", number, reason="スマートフォン紛失")
    assert code == 0 and out["result"]["token_serials"] == [serial], (out, err)
    assert http_call(system, "GET", "/api/v1/me/authorization-method", token=session)[1]["method"] == "mail_otp"
    released = by_operator(recorded(store, f"otptoken-{serial}", "token_released"), reason="スマートフォン紛失")
    assert released.data["reason"] == "operator_procedure"
    # … and the customer may apply for a new token.
    status, body = http_call(system, "POST", "/api/v1/otp/applications",
                             application_form(phones[0]["phone_id"], NEW_CONFIRMATION), session)
    assert status == 201, body


# -- login-ID initialisation and refusals --------------------------------------------------------

def test_initialise_login_id_lets_a_locked_out_customer_log_in_with_the_customer_number_R_LEG_4(system, store):
    number, _ = imported(system)
    for i in range(5):
        http_call(system, "POST", "/api/v1/migration/login", {"customer_number": number, "password": f"Bad{i}pass"})
    status, body = http_call(system, "POST", "/api/v1/migration/login",
                             {"customer_number": number, "password": LEGACY_PASSWORD})
    assert status == 423, body

    code, out, err = operator(system, "initialise-login-id", number, reason="ログインID初期化依頼書")
    assert code == 0 and out["result"] == {"status": "initialised", "login_id": number,
                                           "unlocked": ["legacy_password"]}, (out, err)
    status, body = http_call(system, "POST", "/api/v1/migration/login",
                             {"customer_number": number, "password": LEGACY_PASSWORD})
    assert status == 200 and body["next_step"] == "secret_questions", body
    initialised = by_operator(recorded(store, f"customer-{number}", "login_id_initialised"),
                              reason="ログインID初期化依頼書")
    assert initialised.data["login_id"] == number

    # Password procedures need the new passwords of step 4; refused, nothing recorded.
    before = len(customer_events(store, number))
    code, out, _ = operator(system, "reissue-login-password", number)
    assert code == 1 and out["code"] == "not_migrated"
    assert len(customer_events(store, number)) == before


def test_a_customer_cannot_run_an_operator_procedure_R_LEG_4(system, store):
    number, _ = imported(system)
    with ClusterRpcProxy(system["config"], timeout=30, context_data={
            "correlation_id": str(uuid.uuid4()), "actor_kind": "customer", "actor_id": number}) as rpc:
        for call in (lambda: rpc.identity.initialise_login_id(number),
                     lambda: rpc.identity.change_phones(number, ["090-1111-2222"]),
                     lambda: rpc.otp_service.release_tokens_by_operator(number),
                     lambda: rpc.passkeys.remove_by_operator(number)):
            with pytest.raises(Exception) as err:
                call()
            assert getattr(err.value, "code", None) in ("operator_only", "forbidden"), err.value
    assert [e.type for e in customer_events(store, number)] == ["legacy_customer_imported"]


def test_an_operator_procedure_without_operator_id_or_reason_is_refused_R_LEG_4(system, store):
    """R-LEG-4: every procedure is an event naming the operator and the reason. The services
    check it themselves, not only the CLI: a bus caller that sets ``actor_kind=operator`` but
    leaves out ``actor_id`` (the id would default to the service's name) or ``reason`` is
    refused, and nothing is recorded."""
    number, _ = migrated(system)
    before = [e.type for e in customer_events(store, number)]
    for context in ({"actor_kind": "operator"},                                   # neither
                    {"actor_kind": "operator", "actor_id": "op-42"},              # no reason
                    {"actor_kind": "operator", "actor_id": "op-42", "reason": "  "},
                    {"actor_kind": "operator", "reason": "紙の申請書 2026-118"}):  # no operator
        with ClusterRpcProxy(system["config"], timeout=30,
                             context_data={"correlation_id": str(uuid.uuid4()), **context}) as rpc:
            for call in (lambda: rpc.identity.reissue_login_password(number),
                         lambda: rpc.identity.reset_confirmation_password(number),
                         lambda: rpc.identity.initialise_login_id(number),
                         lambda: rpc.identity.change_phones(number, ["090-1111-2222"]),
                         lambda: rpc.passkeys.remove_by_operator(number)):
                with pytest.raises(Exception) as err:
                    call()
                assert getattr(err.value, "code", None) == "operator_only", (context, err.value)
    assert [e.type for e in customer_events(store, number)] == before
