"""Every lockout of R-RBA-2 with its exact count, over HTTP against the running system.

The counts are the configured defaults (README: ``LOCKOUT_THRESHOLD`` 5 for the passwords and
the secret answers, ``OTP_LOCK_THRESHOLD`` 5, ``OTP_ACTIVATION_MAX_FAILURES`` 5, the mail
notification password 5). The guides say only 「所定の回数以上誤って入力されると…」; the bank's
number is configuration. Each test: n-1 wrong entries are refused as wrong and still leave
the credential usable, the n-th locks (423, Japanese detail telling whom to call), and from
then on even the right secret is refused with the same 423.

| credential | where it is typed | n | locked answer |
| --- | --- | --- | --- |
| legacy login password | POST /api/v1/migration/login | 5 | 423 credential_locked |
| login password | POST /api/v1/login | 5 | 423 credential_locked |
| confirmation password (PIN) | POST /api/v1/migration/password (current PIN) | 5 | 423 credential_locked |
| secret answers | POST /api/v1/login/challenge | 5 | 423 credential_locked |
| OTP | POST /api/v1/login (with otp) | 5 | 423 otp_locked |
| activation password | POST /api/v1/otp-app/activate | 5 | 423 activation_attempts_exceeded, then 409 otp_application_void |
| mail notification password | POST /api/v1/transactions/authorize | 5 | 423 mail_otp_locked |
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime

import pyotp
import pytest
import requests

from identity.domain import messages as idmsg
from identity.secret_questions_domain import MSG_LOCKED as SECRET_ANSWERS_LOCKED
from otp_service.domain import MSG_APPLICATION_VOID, MSG_OTP_LOCKED
from otp_service.mail_otp import MSG_LOCKED as MAIL_OTP_LOCKED
from tests.e2e.test_initial_operation_full import call as webhook_call
from tests.e2e.test_initial_operation_full import random_mobile
from tests.security.common import (ACTIVATION_PASSWORD, LEGACY_PASSWORD, LEGACY_PIN, NEW_CONFIRMATION, NEW_LOGIN,
                                   PASSWORD_BODY, assert_problem)

N = 5                     # every threshold's default (README configuration table)
MAIL_CODE = re.compile(r"■メール通知パスワード\s*\n\s*(\d{6})\s*\n")


def wrong_password(secret: str) -> str:
    return secret[:-1] + ("0" if secret[-1] != "0" else "1")


def events(store, stream: str) -> list[str]:
    return [e.type for e in store.read_stream(stream)]


def post_json(base: str, path: str, body: dict, *, token: str | None = None, device: str | None = None,
              headers: dict | None = None) -> requests.Response:
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if device:
        h["X-Device-ID"] = device
    return requests.post(base + path, data=json.dumps(body, ensure_ascii=False).encode(), headers=h, timeout=60)


# -- identity's credentials ---------------------------------------------------------------------------

def test_r_rba_2_legacy_login_password_locks_at_the_fifth_failure(customers, api):
    c = customers.legacy()
    body = {"customer_number": c.number, "password": wrong_password(LEGACY_PASSWORD)}
    for _ in range(N - 1):
        assert_problem(api.post("/api/v1/migration/login", body, device=c.device), 401, "invalid_credentials")
    locked = assert_problem(api.post("/api/v1/migration/login", body, device=c.device), 423, "credential_locked")
    assert locked["detail"] == idmsg.LOCKED["legacy_password"]
    right = api.post("/api/v1/migration/login", {"customer_number": c.number, "password": LEGACY_PASSWORD},
                     device=c.device)
    assert assert_problem(right, 423, "credential_locked")["detail"] == idmsg.LOCKED["legacy_password"]


def test_r_rba_2_legacy_login_n_minus_1_failures_still_let_the_right_password_in(customers, api):
    c = customers.legacy()
    body = {"customer_number": c.number, "password": wrong_password(LEGACY_PASSWORD)}
    for _ in range(N - 1):
        assert_problem(api.post("/api/v1/migration/login", body, device=c.device), 401, "invalid_credentials")
    assert c.legacy_login()["next_step"] == "secret_questions"


def test_r_rba_2_login_password_locks_at_the_fifth_failure(customers, api):
    c = customers.migrated()
    for _ in range(N - 1):
        assert_problem(c.login(password=wrong_password(NEW_LOGIN)), 401, "invalid_credentials")
    locked = assert_problem(c.login(password=wrong_password(NEW_LOGIN)), 423, "credential_locked")
    assert locked["detail"] == idmsg.LOCKED["login_password"]
    assert assert_problem(c.login(), 423, "credential_locked")["detail"] == idmsg.LOCKED["login_password"]


def test_r_rba_2_login_password_n_minus_1_failures_then_the_right_one_logs_in(customers):
    c = customers.migrated()
    for _ in range(N - 1):
        assert_problem(c.login(password=wrong_password(NEW_LOGIN)), 401, "invalid_credentials")
    r = c.login()
    assert r.status_code == 200 and r.json().get("session_token"), r.text


def test_r_rba_2_confirmation_password_locks_at_the_fifth_failure(customers, api):
    """Step 4: the current confirmation PIN (確認暗証番号) typed wrong five times."""
    c = customers.migration()
    c.register_questions()
    bad = {**PASSWORD_BODY, "current_confirmation_password": wrong_password(LEGACY_PIN)}
    for _ in range(N - 1):
        assert_problem(api.post("/api/v1/migration/password", bad, token=c.token, device=c.device),
                       422, "current_password_incorrect")
    locked = assert_problem(api.post("/api/v1/migration/password", bad, token=c.token, device=c.device),
                            423, "credential_locked")
    assert locked["detail"] == idmsg.LOCKED["confirmation_password"]
    right = api.post("/api/v1/migration/password", PASSWORD_BODY, token=c.token, device=c.device)
    assert assert_problem(right, 423, "credential_locked")["detail"] == idmsg.LOCKED["confirmation_password"]
    assert "passwords_changed" not in c.types()


def test_r_rba_2_secret_answers_lock_at_the_fifth_wrong_answer(customers, api):
    c = customers.migrated()
    elsewhere = f"dev-{uuid.uuid4().hex}"           # an environment never seen: a challenge

    def challenge() -> dict:
        r = c.login(device=elsewhere)
        assert r.status_code == 200 and r.json().get("challenge") == "secret_question", r.text
        return r.json()

    current = challenge()
    for i in range(N):
        r = api.post("/api/v1/login/challenge", {"challenge_id": current["challenge_id"], "answer": "まちがい"},
                     device=elsewhere)
        if i < N - 1:
            body = assert_problem(r, 401, "wrong_answer")
            if not body.get("retry"):
                current = challenge()
        else:
            body = assert_problem(r, 423, "credential_locked")
            assert body["detail"] == SECRET_ANSWERS_LOCKED
    # Even the right answer is refused now, however the customer gets to the question.
    right = {"q01": "やまだ", "q03": "東小学校", "q05": "青森　りんご"}
    r = c.login(device=elsewhere)
    if r.status_code == 200 and r.json().get("challenge"):
        answer = right[r.json()["question"]["id"]]
        r = api.post("/api/v1/login/challenge", {"challenge_id": r.json()["challenge_id"], "answer": answer},
                     device=elsewhere)
    assert assert_problem(r, 423, "credential_locked")["detail"] == SECRET_ANSWERS_LOCKED
    assert "secret_answers_locked" in events(c.store, f"secretq-{c.number}")


# -- OTP: the token, its activation, the mail notification password ------------------------------------

def otp_customer(customers, system):
    """Migrated, with an issued (not yet activated) token: (customer, issued status)."""
    phone, e164 = random_mobile()
    c = customers.legacy(phones=phone)
    c.migrate()
    c.email = f"lock-{uuid.uuid4().hex[:10]}@example.jp"
    r = c.api.get("/api/v1/me/phones", token=c.token, device=c.device)
    assert r.status_code == 200, r.text
    r = c.api.post("/api/v1/otp/applications", {
        "email": c.email, "email_confirmation": c.email, "activation_password": ACTIVATION_PASSWORD,
        "activation_password_confirmation": ACTIVATION_PASSWORD, "phone_id": r.json()[0]["phone_id"],
        "confirmation_password": NEW_CONFIRMATION}, token=c.token, device=c.device)
    assert r.status_code == 201, r.text
    created = r.json()
    r = webhook_call(system, e164, created["call_to"].replace("-", ""))
    assert r.status_code == 200, r.text
    r = c.api.get(f"/api/v1/otp/applications/{created['application_id']}?wait=20", token=c.token, device=c.device)
    if r.json().get("status") != "issued":
        r = c.api.get(f"/api/v1/otp/applications/{created['application_id']}?wait=20", token=c.token,
                      device=c.device)
    assert r.status_code == 200 and r.json()["status"] == "issued", r.text
    return c, r.json()


def activate(system, issued: dict, password: str, app: str) -> requests.Response:
    return post_json(system.base_url, "/api/v1/otp-app/activate",
                     {"service_id": issued["service_id"], "user_id": issued["user_id"],
                      "activation_password": password, "agreed": True},
                     headers={"X-App-Instance-ID": app})


def test_r_rba_2_activation_password_voids_the_token_at_the_fifth_failure(customers, system):
    c, issued = otp_customer(customers, system)
    app = f"app-{uuid.uuid4().hex}"
    for remaining in range(N - 1, 0, -1):
        body = assert_problem(activate(system, issued, "00000000", app), 401, "activation_password_mismatch")
        assert body["remaining_attempts"] == remaining
    locked = assert_problem(activate(system, issued, "00000000", app), 423, "activation_attempts_exceeded")
    assert locked["detail"] == MSG_APPLICATION_VOID
    # The right password can no longer activate these Service ID / User ID: the application is
    # void and the customer applies again. otp_service answers this with 409
    # otp_application_void (same Japanese text as the lock), not 423: the void application,
    # not a credential, is what refuses it.
    r = activate(system, issued, ACTIVATION_PASSWORD, app)
    assert assert_problem(r, 409, "otp_application_void")["detail"] == MSG_APPLICATION_VOID
    assert "otpauth_uri" not in r.text


def test_r_rba_2_activation_n_minus_1_failures_then_the_right_password_activates(customers, system):
    c, issued = otp_customer(customers, system)
    app = f"app-{uuid.uuid4().hex}"
    for _ in range(N - 1):
        assert_problem(activate(system, issued, "00000000", app), 401, "activation_password_mismatch")
    r = activate(system, issued, ACTIVATION_PASSWORD, app)
    assert r.status_code == 200 and r.json()["otpauth_uri"].startswith("otpauth://"), r.text


def test_r_rba_2_otp_locks_at_the_fifth_wrong_code_at_login(customers, system):
    c, issued = otp_customer(customers, system)
    r = activate(system, issued, ACTIVATION_PASSWORD, f"app-{uuid.uuid4().hex}")
    assert r.status_code == 200, r.text
    totp = pyotp.parse_uri(r.json()["otpauth_uri"])

    def login(otp: str):
        return c.api.post("/api/v1/login", {"login_id": c.number, "password": NEW_LOGIN, "otp": otp},
                          device=c.device)

    def wrong() -> str:
        now = datetime.now().timestamp()
        good = {totp.at(now + k * totp.interval) for k in (-1, 0, 1)}
        return next(f"{n:06d}" for n in range(1, 10**6) if f"{n:06d}" not in good)

    for _ in range(N - 1):
        assert_problem(login(wrong()), 401, "otp_required")
    locked = assert_problem(login(wrong()), 423, "otp_locked")
    assert locked["detail"] == MSG_OTP_LOCKED
    assert assert_problem(login(totp.now()), 423, "otp_locked")["detail"] == MSG_OTP_LOCKED


@pytest.fixture
def pc_customer(customers, system, store, rpc):
    """A migrated customer without an OTP token whose legacy record has an e-mail address,
    logged in (customer session): a PC customer of the mail notification password."""
    from tests.security.common import Seeded, new_number, pbkdf2
    number, email = new_number(), f"pc-{uuid.uuid4().hex[:10]}@example.jp"
    [result] = rpc.identity.import_legacy([{
        "line": 1, "customer_number": number, "login_password_verifier": pbkdf2(LEGACY_PASSWORD),
        "confirmation_pin_verifier": pbkdf2(LEGACY_PIN), "phones": "090-1234-5678", "email": email}])
    assert result["status"] == "imported", result
    c = Seeded(number, customers.api, store).migrate()
    c.customer_session()
    c.email = email
    return c


TRANSFER = {"type": "transfer", "amount": 3000, "payee": {
    "bank_code": "0117", "branch_code": "123", "account_type": "ordinary", "account_number": "1234567",
    "name": "ﾔﾏﾀﾞ ﾀﾛｳ"}}


def test_r_rba_2_mail_notification_password_locks_at_the_fifth_failure(pc_customer, system):
    c = pc_customer
    r = post_json(system.base_url, "/api/v1/mail-otp", {"purpose": "transfer", "operation": TRANSFER},
                  token=c.token)
    assert r.status_code == 202, r.text
    mail = system.mailbox.wait_for(lambda m: m["To"] == c.email and MAIL_CODE.search(
        m.get_body(("plain",)).get_content()), timeout=30)
    code = MAIL_CODE.search(mail.get_body(("plain",)).get_content()).group(1)
    bad = f"{(int(code) + 1) % 10**6:06d}"

    def authorize(mail_otp: str):
        return post_json(system.base_url, "/api/v1/transactions/authorize",
                         {"operation": TRANSFER, "confirmation_password": NEW_CONFIRMATION, "mail_otp": mail_otp},
                         token=c.token)

    for remaining in range(N - 1, 0, -1):
        assert assert_problem(authorize(bad), 401, "mail_otp_invalid")["remaining_attempts"] == remaining
    assert assert_problem(authorize(bad), 423, "mail_otp_locked")["detail"] == MAIL_OTP_LOCKED
    assert assert_problem(authorize(code), 423, "mail_otp_locked")["detail"] == MAIL_OTP_LOCKED
