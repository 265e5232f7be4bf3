"""The same customer submitting the same step from two devices at once (issue 7 item 2).

Two requests leave the test at the same moment (a barrier releases two green threads, each
with its own HTTP connection and device) against the running system (`system` fixture).
Exactly one wins; the other gets a clear problem — 409 ``application/problem+json`` with a
Japanese ``detail`` — and nothing is torn: the event log holds one event of each kind the step
writes, and the read models agree with it.

Steps raced: the password change (R-INI-2), the secret-question registration (R-INI-1), the
OTP application (R-INI-3), the activation with one Service ID/User ID (R-INI-6), operator
unlocks of a locked credential and of the OTP lock (R-RBA-2), and the confirmation of a new
mail-notification-password destination with its code (R-MAIL-5).
"""
from __future__ import annotations

import json
import re
import threading
import time
import uuid

import pyotp
import pytest
import requests

from services.cli.operator import call_service
from services.config import Settings
from tests.e2e.test_initial_operation_full import (ACTIVATION_PASSWORD, OtpCustomer, apply, call_and_wait_issued,
                                                   events_of, migrate, random_mobile, seed_otp)  # noqa: F401
from tests.e2e.test_initial_operation_steps_2_4 import (ANSWERS, LEGACY_PASSWORD, LEGACY_PIN,  # noqa: F401
                                                        NEW_CONFIRMATION, NEW_LOGIN, PASSWORD_BODY, api,
                                                        new_number, pbkdf2, rpc)

CODE_LINE = re.compile(r"■メール通知パスワード\s*\n\s*(\d{6})\s*\n")


# -- two devices, one moment -----------------------------------------------------------------

def at_once(*requests_):
    """Run each zero-argument callable in its own green thread, released together by a
    barrier; returns their results in order."""
    gate = threading.Barrier(len(requests_))
    results: list = [None] * len(requests_)
    errors: list = []

    def run(i, fn):
        try:
            gate.wait(timeout=30)
            results[i] = fn()
        except Exception as exc:  # noqa: BLE001 — reported below, with the other result
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(requests_)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def post(base: str, path: str, body: dict, *, token: str | None = None, device: str | None = None,
         headers: dict | None = None) -> requests.Response:
    """A request from a device of its own (its own connection)."""
    h = {"Content-Type": "application/json", "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)",
         **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if device:
        h["X-Device-ID"] = device
    return requests.post(base + path, data=json.dumps(body, ensure_ascii=False).encode(), headers=h, timeout=60)


def one_wins(responses, ok: int = 200, lost: tuple[int, str | None] = (409, None)
             ) -> tuple[requests.Response, requests.Response]:
    """(winner, loser): one succeeded; the other is a problem+json in Japanese — by default a
    409 (the step is done / in progress), or ``lost`` = (status, code) where the step's own
    rule names the loss better (a one-time code already used is refused as used)."""
    status, code = lost
    statuses = sorted(r.status_code for r in responses)
    assert statuses == sorted([ok, status]), [(r.status_code, r.text) for r in responses]
    winner = next(r for r in responses if r.status_code == ok)
    loser = next(r for r in responses if r.status_code == status)
    assert loser.headers["Content-Type"].startswith("application/problem+json"), loser.headers
    problem = loser.json()
    assert problem["status"] == status and problem["code"] and not problem["detail"].isascii(), problem
    if code is not None:
        assert problem["code"] == code, problem
    return winner, loser


def count(types: list[str], name: str) -> int:
    return sum(1 for t in types if t == name)


def two_sessions(c) -> list[tuple[str, str]]:
    """Two devices of one customer, each logged in with the legacy credentials (step 2)."""
    out = []
    for _ in range(2):
        device = f"dev-{uuid.uuid4().hex}"
        r = c.api.post("/api/v1/migration/login", {"customer_number": c.number, "password": LEGACY_PASSWORD},
                       device=device)
        assert r.status_code == 200, r.text
        out.append((r.json()["session_token"], device))
    return out


def operator(service: str, method: str, *args):
    """One operator procedure as `tsunagi operator` runs it: its own RPC connection."""
    from contracts.errors import DomainError
    try:
        return call_service(Settings().amqp_uri, service, method, list(args), operator="op-race",
                            reason="concurrency test", timeout=30, correlation_id=str(uuid.uuid4()))
    except DomainError as exc:
        return exc


def one_unlock_wins(results) -> dict:
    from contracts.errors import DomainError
    oks = [r for r in results if not isinstance(r, DomainError)]
    refused = [r for r in results if isinstance(r, DomainError)]
    assert len(oks) == 1 and len(refused) == 1, results
    assert refused[0].status == 409 and not refused[0].detail.isascii(), (refused[0].code, refused[0].detail)
    return oks[0]


# -- steps 3 and 4 -------------------------------------------------------------------------------

def test_r_ini_1_two_devices_register_the_secret_questions_at_once(seed_otp, system):
    c = seed_otp()
    (t1, d1), (t2, d2) = two_sessions(c)
    body = {"answers": ANSWERS, "confirmed": True}
    responses = at_once(lambda: post(system.base_url, "/api/v1/migration/secret-questions", body, token=t1, device=d1),
                        lambda: post(system.base_url, "/api/v1/migration/secret-questions", body, token=t2, device=d2))
    winner, _ = one_wins(responses)
    assert count(events_of(c.store, f"secretq-{c.number}"), "secret_questions_registered") == 1
    # Both devices now see the same next step: the password change.
    for token, device in ((t1, d1), (t2, d2)):
        c.token, c.device = token, device
        assert c.change_passwords()["next_step"] == "otp_application"
        break


def test_r_ini_2_two_devices_change_the_passwords_at_once(seed_otp, system):
    c = seed_otp()
    (t1, d1), (t2, d2) = two_sessions(c)
    c.token, c.device = t1, d1
    c.register_questions()
    responses = at_once(lambda: post(system.base_url, "/api/v1/migration/password", PASSWORD_BODY, token=t1, device=d1),
                        lambda: post(system.base_url, "/api/v1/migration/password", PASSWORD_BODY, token=t2, device=d2))
    one_wins(responses)
    types = events_of(c.store, f"customer-{c.number}")
    assert count(types, "passwords_changed") == 1, types
    # The new passwords work, the legacy ones no longer do.
    r = c.api.post("/api/v1/login", {"login_id": c.number, "password": NEW_LOGIN}, device=d1)
    assert r.status_code == 200, r.text


# -- step 5: the OTP application ---------------------------------------------------------------------

def application_body(c, phone_id: str) -> dict:
    return {"email": c.email, "email_confirmation": c.email, "activation_password": ACTIVATION_PASSWORD,
            "activation_password_confirmation": ACTIVATION_PASSWORD, "phone_id": phone_id,
            "confirmation_password": NEW_CONFIRMATION}


def test_r_ini_3_two_devices_apply_for_otp_at_once(seed_otp, system):
    c = seed_otp()
    migrate(c)
    [phone] = c.api.get("/api/v1/me/phones", token=c.token, device=c.device).json()
    body = application_body(c, phone["phone_id"])
    responses = at_once(
        lambda: post(system.base_url, "/api/v1/otp/applications", body, token=c.token, device="dev-a-" + c.device),
        lambda: post(system.base_url, "/api/v1/otp/applications", body, token=c.token, device="dev-b-" + c.device))
    winner, _ = one_wins(responses, ok=201)
    app_id = winner.json()["application_id"]
    with c.store.pool.connection() as conn:
        apps = conn.execute("SELECT application_id::text, verification_id::text FROM otp.applications "
                            "WHERE customer_number = %s", (c.number,)).fetchall()
        verifications = conn.execute("SELECT verification_id::text FROM phone_auth.verifications "
                                     "WHERE customer_number = %s", (c.number,)).fetchall()
    assert [a for a, _ in apps] == [app_id]
    # No verification is left behind for the application that lost.
    assert [v for (v,) in verifications] == [apps[0][1]], verifications
    assert events_of(c.store, f"otpapp-{app_id}") == ["otp_application_submitted"]


# -- step 8: one Service ID/User ID activated from two app instances at once ----------------------------

def activation(system, issued: dict, instance: str):
    return lambda: post(system.base_url, "/api/v1/otp-app/activate", {
        "service_id": issued["service_id"], "user_id": issued["user_id"],
        "activation_password": ACTIVATION_PASSWORD, "agreed": True}, headers={"X-App-Instance-ID": instance})


@pytest.fixture(scope="module")
def raced_activation(seed_otp, system):
    c = seed_otp()
    migrate(c)
    created = apply(c)
    issued = call_and_wait_issued(system, c, created)
    responses = at_once(activation(system, issued, f"app-{uuid.uuid4().hex}"),
                        activation(system, issued, f"app-{uuid.uuid4().hex}"))
    return c, created["application_id"], responses


def test_r_ini_6_two_app_instances_activate_one_user_id_at_once(raced_activation):
    c, app_id, responses = raced_activation
    winner, _ = one_wins(responses)
    serial = winner.json()["token_serial"]
    types = events_of(c.store, f"otpapp-{app_id}")
    assert count(types, "otp_application_activated") == 1 and count(types, "otp_activation_failed") == 0, types
    assert events_of(c.store, f"otptoken-{serial}") == ["token_activated"]
    with c.store.pool.connection() as conn:
        tokens = conn.execute("SELECT token_serial, status FROM otp.tokens WHERE customer_number = %s",
                              (c.number,)).fetchall()
    assert tokens == [(serial, "active")]


@pytest.fixture(scope="module")
def otp_session(raced_activation):
    """(customer, TOTP of the activated token, a customer session opened with the OTP)."""
    c, _, responses = raced_activation
    totp = pyotp.parse_uri(next(r for r in responses if r.status_code == 200).json()["otpauth_uri"])
    login = c.api.post("/api/v1/login", {"login_id": c.number, "password": NEW_LOGIN, "otp": totp.now()},
                       device=c.device)
    assert login.status_code == 200, login.text
    return c, totp, login.json()["session_token"]


def test_r_ini_9_one_otp_sent_from_two_devices_at_once_is_accepted_once(otp_session, system):
    """The step-up check (POST /api/v1/otp/verify): a code is accepted once, also when two
    devices send it at the same moment; the other is told it was already used."""
    c, totp, token = otp_session
    code = totp.at(time.time() + totp.interval)       # the next step: login used this one
    responses = at_once(lambda: post(system.base_url, "/api/v1/otp/verify", {"otp": code}, token=token, device="a"),
                        lambda: post(system.base_url, "/api/v1/otp/verify", {"otp": code}, token=token, device="b"))
    winner, _ = one_wins(responses, lost=(401, "otp_already_used"))
    assert winner.json()["verified"] is True and winner.json()["purpose"] == "step_up"
    log = c.store.read_stream(f"otpcust-{c.number}")
    assert [e.type for e in log] == ["otp_verified", "otp_verified", "otp_verification_failed"], log
    assert [e.data["purpose"] for e in log[:2]] == ["login", "step_up"] and log[2].data["reason"] == "replayed"
    r = post(system.base_url, "/api/v1/otp/verify", {"otp": "12345"}, token=token, device="a")
    assert r.status_code == 422 and r.json()["code"] == "otp_format", r.text


# -- R-RBA-2: two operators unlock the same lock at once --------------------------------------------------

def test_r_rba_2_two_operators_lift_the_otp_lock_at_once(otp_session, system):
    c, totp, token = otp_session
    good = totp.now()
    wrong = f"{(int(good) + 1) % 10**6:06d}"
    for _ in range(5):
        r = post(system.base_url, "/api/v1/otp/verify", {"otp": wrong}, token=token, device=c.device)
        assert r.status_code in (401, 423), r.text
    assert r.status_code == 423 and r.json()["code"] == "otp_locked", r.text
    results = at_once(lambda: operator("otp_service", "unlock_otp", c.number),
                      lambda: operator("otp_service", "unlock_otp", c.number))
    assert one_unlock_wins(results) == {"unlocked": True}
    types = events_of(c.store, f"otpcust-{c.number}")
    assert count(types, "otp_locked") == 1 and count(types, "otp_unlocked") == 1, types
    with c.store.pool.connection() as conn:
        locked, failures = conn.execute("SELECT locked, consecutive_failures FROM otp.customers "
                                        "WHERE customer_number = %s", (c.number,)).fetchone()
    assert (locked, failures) == (False, 0)


def test_r_rba_2_two_operators_unlock_the_login_password_at_once(seed_otp, system):
    c = seed_otp()
    migrate(c)
    for _ in range(10):
        r = c.api.post("/api/v1/login", {"login_id": c.number, "password": "Wrong1234x"}, device=c.device)
        if r.status_code == 423:
            break
    assert r.status_code == 423, r.text
    results = at_once(lambda: operator("identity", "unlock_credential", c.number, "login_password"),
                      lambda: operator("identity", "unlock_credential", c.number, "login_password"))
    one_unlock_wins(results)
    types = events_of(c.store, f"customer-{c.number}")
    assert count(types, "credential_locked") == 1 and count(types, "credential_unlocked") == 1, types
    assert c.api.post("/api/v1/login", {"login_id": c.number, "password": NEW_LOGIN},
                      device=c.device).status_code == 200


# -- R-MAIL-5: one code for a new destination, confirmed from two devices at once ---------------------------

def code_of(message) -> str:
    return CODE_LINE.search(message.get_body(("plain",)).get_content()).group(1)


def test_r_mail_5_two_devices_confirm_the_new_destination_with_one_code_at_once(rpc, api, store, system):
    number = new_number()
    email = f"pc-{uuid.uuid4().hex[:10]}@example.jp"
    phone, _ = random_mobile()
    [result] = rpc.identity.import_legacy([{
        "line": 1, "customer_number": number, "login_password_verifier": pbkdf2(LEGACY_PASSWORD),
        "confirmation_pin_verifier": pbkdf2(LEGACY_PIN), "phones": phone, "email": email}])
    assert result["status"] == "imported", result
    c = OtpCustomer(number, api, store, "", email)
    migrate(c)
    r = c.login()                                     # a PC customer's session after migration
    assert r.status_code == 200 and "session_token" in r.json(), r.text
    c.token = r.json()["session_token"]
    new_address = f"keitai-{uuid.uuid4().hex[:10]}@example.jp"
    select1 = {"address": new_address, "enabled": True, "receives_mail_otp": True}
    op = {"type": "settings_change", "setting": "select_email", "changes": {"select1": select1, "select2": None}}
    r = post(system.base_url, "/api/v1/mail-otp", {"purpose": "settings_change", "operation": op},
             token=c.token, device=c.device)
    assert r.status_code == 202, r.text
    to_registered = system.mailbox.wait_for(lambda m: m["To"] == email and CODE_LINE.search(
        m.get_body(("plain",)).get_content() or ""))
    r = requests.put(system.base_url + "/api/v1/notification-addresses", json={
        "select1": select1, "select2": None, "confirmation_password": NEW_CONFIRMATION,
        "mail_otp": code_of(to_registered)}, headers={"Authorization": f"Bearer {c.token}",
                                                       "X-Device-ID": c.device}, timeout=60)
    assert r.status_code == 200, r.text
    code = code_of(system.mailbox.wait_for(lambda m: m["To"] == new_address))
    body = {"mail_otp": code, "confirmation_password": NEW_CONFIRMATION}
    responses = at_once(
        lambda: post(system.base_url, "/api/v1/notification-addresses/confirmation", body, token=c.token,
                     device="dev-a"),
        lambda: post(system.base_url, "/api/v1/notification-addresses/confirmation", body, token=c.token,
                     device="dev-b"))
    # The loser either read the waiting destination with the winner and then found the code used
    # (401 mail_otp_used, recorded as a use of a used code), or came after the winner had finished
    # and found nothing waiting (409 no_pending_destination, nothing recorded): both are what a
    # second press would get, and neither confirms twice.
    loser = next((r for r in responses if r.status_code != 200), responses[1])
    lost = (401, "mail_otp_used") if loser.status_code == 401 else (409, "no_pending_destination")
    one_wins(responses, lost=lost)
    assert count(events_of(store, f"notifyaddr-{number}"), "mail_otp_destination_confirmed") == 1
    log = store.read_stream(f"mailotp-{number}")
    expected = ["mail_otp_issued", "mail_otp_verified", "mail_otp_issued", "mail_otp_verified"]
    if lost[0] == 401:
        expected.append("mail_otp_verification_failed")
    assert [e.type for e in log] == expected, log
    if lost[0] == 401:
        assert log[-1].data["issue_id"] == log[-2].data["issue_id"] and log[-1].data["reason"] == "used"
    r = requests.get(system.base_url + "/api/v1/notification-addresses",
                     headers={"Authorization": f"Bearer {c.token}"}, timeout=30)
    assert r.json()["select1"]["receives_mail_otp"] is True and r.json()["pending_confirmation"] is None
