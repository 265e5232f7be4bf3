"""otp_service and the notifier over real RabbitMQ, PostgreSQL and SMTP (aiosmtpd on loopback):
smartphone guide steps 5–9 and OTP use (SPEC R-INI-3…7, R-INI-9, R-RBA-2, R-MAIL-3).

identity and phone_auth are stand-ins defined here — real Nameko services answering real RPC
over RabbitMQ — so this suite depends only on the interface otp_service calls. The verifying
call is reported the way phone_auth reports it: ``phone_verification_succeeded`` appended to
the store and carried to otp_service by the real relay.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote, urlsplit

import eventlet
import pyotp
import pytest
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy

from contracts.errors import (Conflict, Forbidden, Locked, NotFound, Unauthenticated, ValidationFailed)
from contracts.events import Actor, Metadata, NewEvent
from gateway.service import GatewayService
from gateway.sessions import SessionStore
from notifier.service import NotifierService
from otp_service.service import OtpService
from tests.support.services import system_with_mail
from tests.support.smtp import FAST_MAIL_RETRIES
from tests.support.waiting import wait_for
from tests.support.web import http_json

CONFIRMATION_PASSWORD = "Kakunin12"
NO_PHONES: set[str] = set()          # customers with no registered phone at all
NOT_CALLABLE: set[str] = set()       # customers whose registered phone cannot call (no E.164)


class FakeIdentity:
    """The three identity RPCs otp_service uses, as contracts/identity.py describes them."""
    name = "identity"

    @rpc(expected_exceptions=(Unauthenticated, NotFound))
    def verify_confirmation_password(self, customer_number, password):
        if password != CONFIRMATION_PASSWORD:
            raise Unauthenticated("確認用パスワードが正しくありません。", "confirmation_password_mismatch")
        return {"ok": True}

    @rpc(expected_exceptions=(NotFound,))
    def phone(self, customer_number, phone_id):
        if customer_number in NO_PHONES or phone_id != "ph1":
            raise NotFound()
        e164 = None if customer_number in NOT_CALLABLE else "+8190" + customer_number[-8:]
        return {"phone_id": "ph1", "masked": "*****" + customer_number[-4:], "e164": e164}

    @rpc
    def phones(self, customer_number):
        return [] if customer_number in NO_PHONES else [{"phone_id": "ph1", "masked": "*****" + customer_number[-4:]}]


class FakePhoneAuth:
    """``phone_auth.start_verification`` as contracts/phone_auth.py describes it."""
    name = "phone_auth"

    @rpc
    def start_verification(self, application_id, customer_number, caller_e164, ttl_seconds=None):
        expires = datetime.now(timezone.utc) + timedelta(seconds=ttl_seconds or 120)
        return {"verification_id": str(uuid.uuid5(uuid.NAMESPACE_URL, application_id)),
                "call_from_masked": "*****" + caller_e164[-4:], "call_to": "0120-000-110",
                "expires_at": expires.isoformat()}


@pytest.fixture(scope="module")
def system(settings, store):
    with system_with_mail(settings, store, (FakeIdentity, FakePhoneAuth, OtpService, NotifierService, GatewayService),
                          vhost_prefix="tsunagi_otp_", OTP_SERVICE_ID="AMBK000117", **FAST_MAIL_RETRIES) as system:
        yield system


def proxy(system, kind="customer", actor="tester"):
    return ClusterRpcProxy(system["config"], timeout=30, context_data={
        "correlation_id": str(uuid.uuid4()), "actor_kind": kind, "actor_id": actor})


@pytest.fixture
def otp(system):
    with proxy(system) as p:
        yield p.otp_service


def new_customer() -> str:
    return f"{uuid.uuid4().int % 10**10:010d}"


def form(email="taro@example.jp", password="4321", **kw):
    return {"email": email, "email_confirmation": email, "activation_password": password,
            "activation_password_confirmation": password, "phone_id": "ph1",
            "confirmation_password": CONFIRMATION_PASSWORD, **kw}


def report_call(store, customer, application_id, kind="phone_verification_succeeded"):
    """What phone_auth writes when the registered phone called (or the window closed)."""
    verification_id = str(uuid.uuid5(uuid.NAMESPACE_URL, application_id))
    store.append(f"phoneverif-{verification_id}", [NewEvent(kind, {
        "verification_id": verification_id, "application_id": application_id, "customer_number": customer,
        "call_key": str(uuid.uuid4()), "at": datetime.now(timezone.utc).isoformat()})],
        None, Metadata(actor=Actor("system", "phone_auth"), service="phone_auth"), subject=customer)


def wait_status(otp, customer, application_id, status) -> dict:
    return wait_for(lambda: (lambda s: s if s["status"] == status else None)(
        otp.application_status(customer, application_id)), what=f"status {status}")


def issued_application(otp, store, email="taro@example.jp", password="4321") -> tuple[str, dict]:
    return issued_applications(otp, store, 1, email, password)[0]


def issued_applications(otp, store, count, email="taro@example.jp", password="4321") -> list[tuple[str, dict]]:
    """``count`` customers, each with an issued application: (customer, status)."""
    created = []
    for _ in range(count):
        customer = new_customer()
        created.append((customer, otp.apply(customer, form(email, password))["application_id"]))
    for customer, application_id in created:
        report_call(store, customer, application_id)
    return [(customer, wait_status(otp, customer, application_id, "issued")) for customer, application_id in created]


def instance_id() -> str:
    return f"app-{uuid.uuid4()}"


# -- the whole of steps 5–9 and OTP use ---------------------------------------------------------------------

def test_steps_5_to_9_then_otp_use_R_INI_3_to_7_R_INI_9(system, store, otp):
    sink = system["sink"]
    customer = new_customer()

    # Step 5 (R-INI-3): the application starts the call window.
    created = otp.apply(customer, form("ichiro.suzuki@example.co.jp", "20250105"))
    application_id = created["application_id"]
    assert created["status"] == "awaiting_call"
    assert created["call_from_masked"] == "*****" + customer[-4:] and created["call_to"] == "0120-000-110"
    assert otp.application_status(customer, application_id)["status"] == "awaiting_call"
    with pytest.raises(Conflict) as err:                                   # one in flight
        otp.apply(customer, form())
    assert err.value.code == "otp_application_in_progress"
    with pytest.raises(NotFound):                                          # only the owner reads it
        otp.application_status(new_customer(), application_id)

    # Step 6 → 7 (R-INI-4, R-INI-5): the call verifies, Service ID and User ID are issued …
    report_call(store, customer, application_id)
    status = wait_status(otp, customer, application_id, "issued")
    assert status["service_id"] == "AMBK000117"
    user_id = status["user_id"]
    assert len(user_id) == 16 and set(user_id) <= set("ABCDEFGHJKMNPQRSTUVWXYZ23456789")

    # … and mailed once from otp-auth.net (R-INI-5, R-MAIL-3).
    (issued_event,) = [e for e in store.read_stream(f"otpapp-{application_id}") if e.type == "token_issued"]
    message_id = f"<{issued_event.event_id}@tsunagi.am-bk.co.jp>"
    (mail,) = wait_for(lambda: sink.with_message_id(message_id), what="the token mail")
    assert mail["Subject"] == "【青森みちのく銀行】トークン発行のご案内"
    assert mail["From"].addresses[0].domain == "otp-auth.net"
    assert mail["X-Envelope-To"] == "ichiro.suzuki@example.co.jp"
    body = mail.get_body(("plain",)).get_content()
    assert "AMBK000117" in body and user_id in body and "20250105" not in body

    # Step 8 (R-INI-6): a wrong activation password counts; the right one activates.
    app_instance = instance_id()
    activation = {"service_id": "AMBK000117", "user_id": user_id, "activation_password": "20250105", "agreed": True}
    with pytest.raises(ValidationFailed) as err:
        otp.activate({**activation, "agreed": False}, app_instance)
    assert err.value.code == "agreement_required"
    with pytest.raises(Unauthenticated) as err:
        otp.activate({**activation, "activation_password": "20250106"}, app_instance)
    assert err.value.extra["remaining_attempts"] == 4
    with pytest.raises(NotFound):
        otp.activate({**activation, "service_id": "AMBK999999"}, app_instance)
    result = otp.activate(activation, app_instance)
    assert result["display_name"] == "青森みちのく銀行"
    uri = urlsplit(result["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/青森みちのく銀行:{result['token_serial']}"
    assert parse_qs(uri.query)["issuer"] == ["青森みちのく銀行"]
    token = pyotp.parse_uri(result["otpauth_uri"])
    # Single use: the three values never work again (R-INI-6).
    with pytest.raises(Conflict) as err:
        otp.activate(activation, instance_id())
    assert err.value.code == "otp_already_activated"
    status = otp.application_status(customer, application_id)
    assert status["status"] == "issued" and status["activated"] is True and "user_id" not in status

    # The secret is in the log only sealed.
    with store.pool.connection() as conn:
        raw = conn.execute("SELECT data::text FROM eventstore.events WHERE stream_name = %s",
                           (f"otptoken-{result['token_serial']}",)).fetchone()[0]
    assert token.secret not in raw

    # Step 9 (R-INI-7): the display name.
    serial = result["token_serial"]
    assert otp.set_display_name(serial, "本店用", app_instance_id=app_instance)["display_name"] == "青森みちのく銀行 本店用"
    for bad, code in (("みちのく銀行の契約", "display_name_suffix_too_long"), ("honten", "display_name_suffix_not_full_width")):
        with pytest.raises(ValidationFailed) as err:
            otp.set_display_name(serial, bad, app_instance_id=app_instance)
        assert err.value.code == code
    with pytest.raises(NotFound):                                          # another app's token
        otp.set_display_name(serial, "本店用", app_instance_id=instance_id())

    # R-INI-9: the OTP computed from the URI is accepted once; the replay is refused.
    assert otp.has_active_token(customer) is True
    code = token.now()
    assert otp.verify_otp(customer, code, "login") == {"ok": True, "token_serial": serial}
    with pytest.raises(Unauthenticated) as err:
        otp.verify_otp(customer, code, "login")
    assert err.value.code == "otp_already_used"

    # Release for a phone change: confirmation password + the next OTP (R-MAIL-2 fallback).
    later = token.at(datetime.now(timezone.utc) + timedelta(seconds=30))
    with pytest.raises(Unauthenticated):
        otp.release_token(customer, "Wrong1234", later)
    assert otp.release_token(customer, CONFIRMATION_PASSWORD, later) == {"released": True, "token_serial": serial}
    assert otp.has_active_token(customer) is False
    with pytest.raises(NotFound):
        otp.verify_otp(customer, token.now(), "login")

    # Every transition is an event (issue 4, item 8).
    types = [e.type for e in store.read_stream(f"otpapp-{application_id}")]
    assert types == ["otp_application_submitted", "otp_application_verified", "token_issued",
                     "otp_activation_failed", "otp_application_activated"]
    assert [e.type for e in store.read_stream(f"otptoken-{serial}")] == [
        "token_activated", "token_display_name_set", "token_released"]
    customer_types = [e.type for e in store.read_stream(f"otpcust-{customer}")]
    assert customer_types == ["otp_verified", "otp_verification_failed", "otp_verified"]
    assert len(sink.with_message_id(message_id)) == 1


def test_five_wrong_activation_passwords_void_the_application_R_RBA_2(system, store, otp):
    customer, status = issued_application(otp, store, password="1111")
    activation = {"service_id": "AMBK000117", "user_id": status["user_id"], "activation_password": "2222",
                  "agreed": True}
    for remaining in (4, 3, 2, 1):
        with pytest.raises(Unauthenticated) as err:
            otp.activate(activation, instance_id())
        assert err.value.extra["remaining_attempts"] == remaining
    with pytest.raises(Locked) as err:
        otp.activate(activation, instance_id())
    assert err.value.code == "activation_attempts_exceeded"
    with pytest.raises(Conflict) as err:                                   # not even the right one now
        otp.activate({**activation, "activation_password": "1111"}, instance_id())
    assert err.value.code == "otp_application_void"
    status = otp.application_status(customer, status["application_id"])
    assert (status["status"], status["reason"]) == ("failed", "activation_password_attempts_exceeded")
    # The customer applies again.
    again = otp.apply(customer, form(password="1111"))
    assert again["status"] == "awaiting_call"


def test_an_app_holds_ten_tokens_and_one_activation_wins_R_INI_7(system, store, otp):
    app_instance = instance_id()
    applications = issued_applications(otp, store, 12, password="5678")

    def activation(status):
        return {"service_id": "AMBK000117", "user_id": status["user_id"], "activation_password": "5678", "agreed": True}

    # Two activations with the same IDs at the same moment: exactly one wins.
    def activate_with_own_proxy(body):
        with proxy(system) as p:
            try:
                return p.otp_service.activate(body, app_instance)
            except Conflict as exc:
                return exc
    pool = eventlet.GreenPool()
    outcomes = list(pool.imap(activate_with_own_proxy, [activation(applications[0][1])] * 2))
    winners = [o for o in outcomes if isinstance(o, dict)]
    losers = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(winners) == 1 and len(losers) == 1 and losers[0].code == "otp_already_activated"

    for _, status in applications[1:10]:
        otp.activate(activation(status), app_instance)
    with pytest.raises(Conflict) as err:                                   # the 11th
        otp.activate(activation(applications[10][1]), app_instance)
    assert err.value.code == "token_limit_reached" and "10件" in err.value.detail
    # Refused for room, not for the password: the IDs still work in another app.
    assert otp.activate(activation(applications[10][1]), instance_id())["token_serial"]


def test_a_request_and_its_redelivered_twin_at_once_get_the_same_answer_R_INI_6(system, store, otp):
    # The soak found it: a broker cut redelivers the activation RPC while the first delivery
    # still runs; the twin must not answer 409 (the customer would never see the secret).
    [(_, status)] = issued_applications(otp, store, 1, password="2468")
    app_instance, key = instance_id(), "k" * 32
    body = {"service_id": "AMBK000117", "user_id": status["user_id"], "activation_password": "2468",
            "agreed": True}

    def activate_with_own_proxy(idempotency_key):
        with proxy(system) as p:
            try:
                return p.otp_service.activate(body, app_instance, idempotency_key)
            except Conflict as exc:
                return exc
    outcomes = list(eventlet.GreenPool().imap(activate_with_own_proxy, [key, key]))
    assert all(isinstance(o, dict) for o in outcomes), outcomes
    assert outcomes[0]["token_serial"] == outcomes[1]["token_serial"]
    assert outcomes[0]["otpauth_uri"] == outcomes[1]["otpauth_uri"]
    # Without the key, or with another one, the used-up IDs stay refused (R-INI-6).
    assert isinstance(activate_with_own_proxy(None), Conflict)
    assert isinstance(activate_with_own_proxy("z" * 32), Conflict)


def test_application_rules_R_INI_3_R_INI_4(system, store, otp):
    # No callable number: the customer is sent to the branch.
    for group in (NO_PHONES, NOT_CALLABLE):
        customer = new_customer()
        group.add(customer)
        with pytest.raises(Conflict) as err:
            otp.apply(customer, form())
        assert err.value.code == "no_callable_phone" and "お取引店" in err.value.detail
    customer = new_customer()
    with pytest.raises(ValidationFailed) as err:
        otp.apply(customer, form(phone_id="someone-elses"))
    assert err.value.code == "phone_not_registered"
    with pytest.raises(Unauthenticated):                                   # identity's answer passes through
        otp.apply(customer, form(confirmation_password="Wrong9999"))
    with pytest.raises(ValidationFailed) as err:
        otp.apply(customer, {**form(), "email_confirmation": "other@example.jp", "activation_password": "12"})
    assert set(err.value.extra["errors"]) == {"email_confirmation", "activation_password"}

    # The window closes without a call: expired, and the customer may apply again.
    created = otp.apply(customer, form())
    report_call(store, customer, created["application_id"], "phone_verification_expired")
    status = wait_status(otp, customer, created["application_id"], "expired")
    assert status["reason"] == "call_timeout"
    again = otp.apply(customer, form())
    # A late report of a call for the expired application issues nothing.
    report_call(store, customer, created["application_id"])
    report_call(store, customer, again["application_id"])
    wait_status(otp, customer, again["application_id"], "issued")
    assert otp.application_status(customer, created["application_id"])["status"] == "expired"
    # With a token issued (not yet activated) a new application is still possible; with an
    # active token it is not.
    issued = otp.application_status(customer, again["application_id"])
    otp.activate({"service_id": "AMBK000117", "user_id": issued["user_id"], "activation_password": "4321",
                  "agreed": True}, instance_id())
    with pytest.raises(Conflict) as err:
        otp.apply(customer, form())
    assert err.value.code == "otp_token_already_active"


def test_five_wrong_otps_lock_and_an_operator_unlocks_R_RBA_2(system, store, otp):
    customer, status = issued_application(otp, store, password="9876")
    result = otp.activate({"service_id": "AMBK000117", "user_id": status["user_id"], "activation_password": "9876",
                           "agreed": True}, instance_id())
    token = pyotp.parse_uri(result["otpauth_uri"])
    wrong = f"{(int(token.now()) + 500000) % 1000000:06d}"
    for remaining in (4, 3, 2, 1):
        with pytest.raises(Unauthenticated) as err:
            otp.verify_otp(customer, wrong, "transaction")
        assert err.value.extra["remaining_attempts"] == remaining
    with pytest.raises(Locked):
        otp.verify_otp(customer, wrong, "transaction")
    with pytest.raises(Locked):                                            # even the right code
        otp.verify_otp(customer, token.now(), "transaction")
    with pytest.raises(Forbidden):                                         # customers cannot unlock
        otp.unlock_otp(customer)
    with proxy(system, kind="operator", actor="op-001") as operator:
        assert operator.otp_service.unlock_otp(customer) == {"unlocked": True}
    assert otp.verify_otp(customer, token.now(), "transaction")["ok"] is True
    types = [e.type for e in store.read_stream(f"otpcust-{customer}")]
    assert types == ["otp_verification_failed"] * 5 + ["otp_locked", "otp_unlocked", "otp_verified"]


# -- the same over HTTP through the gateway (API.md paths and fields) ------------------------------------------

def http_call(system, method, path, body=None, token=None, headers=None):
    return http_json(system["web_port"], method, path, body, token, headers, timeout=40)


def test_gateway_routes_steps_5_to_9_R_INI_3_to_7(system, store):
    customer = new_customer()
    sessions = SessionStore(store.pool)
    token = sessions.create(customer, "migration")
    path = "/api/v1/otp/applications"

    status, _, body = http_call(system, "POST", path, form("shiro@example.jp", "8642"))
    assert status == 401 and body["code"] == "unauthenticated"
    status, _, created = http_call(system, "POST", path, form("shiro@example.jp", "8642"), token)
    assert status == 201 and created["status"] == "awaiting_call" and created["call_to"] == "0120-000-110"
    status, headers, body = http_call(system, "POST", path, form(), token)
    assert status == 409 and body["code"] == "otp_application_in_progress"
    assert headers["Content-Type"].startswith("application/problem+json") and not body["detail"].isascii()
    status, _, body = http_call(system, "POST", path, {**form(), "email_confirmation": "x@example.jp"}, token)
    assert status == 422 and "email_confirmation" in body["errors"]

    status_path = f"{path}/{created['application_id']}"
    status, _, body = http_call(system, "GET", status_path + "?wait=0", token=token)
    assert (status, body["status"]) == (200, "awaiting_call")
    status, _, body = http_call(system, "GET", status_path, token=sessions.create(new_customer(), "customer"))
    assert status == 404

    # The long poll answers once the call is verified (the page moves on by itself, R-INI-4).
    eventlet.spawn_after(0.3, report_call, store, customer, created["application_id"])
    status, _, issued = http_call(system, "GET", status_path + "?wait=20&_=1", token=token)
    assert status == 200 and issued["status"] == "issued" and issued["service_id"] == "AMBK000117"

    # Step 8 in the OTP app.
    activation = {"service_id": "AMBK000117", "user_id": issued["user_id"], "activation_password": "8642",
                  "agreed": True}
    status, _, body = http_call(system, "POST", "/api/v1/otp-app/activate", activation)
    assert status == 422 and body["code"] == "app_instance_id_invalid"
    app_header = {"X-App-Instance-ID": instance_id()}
    status, _, body = http_call(system, "POST", "/api/v1/otp-app/activate",
                                {**activation, "activation_password": "8643"}, headers=app_header)
    assert status == 401 and body["code"] == "activation_password_mismatch" and body["remaining_attempts"] == 4
    status, headers, result = http_call(system, "POST", "/api/v1/otp-app/activate", activation, headers=app_header)
    assert status == 200 and result["otpauth_uri"].startswith("otpauth://totp/")
    assert headers["Cache-Control"] == "no-store"
    status, _, body = http_call(system, "POST", "/api/v1/otp-app/activate", activation, headers=app_header)
    assert status == 409 and body["code"] == "otp_already_activated"

    # Step 9.
    name_path = f"/api/v1/otp-app/tokens/{result['token_serial']}/display-name"
    status, _, body = http_call(system, "PUT", name_path, {"suffix": "青森銀行分"}, headers=app_header)
    assert (status, body["display_name"]) == (200, "青森みちのく銀行 青森銀行分")
    status, _, body = http_call(system, "PUT", name_path, {"suffix": "aomori"}, headers=app_header)
    assert status == 422 and body["code"] == "display_name_suffix_not_full_width" and "全角" in body["detail"]
    status, _, body = http_call(system, "PUT", name_path, {"suffix": "青森みちのく銀行の分"}, headers=app_header)
    assert status == 422 and body["code"] == "display_name_suffix_too_long"

    # Release with the confirmation password and the current OTP.
    code = pyotp.parse_uri(result["otpauth_uri"]).now()
    status, _, body = http_call(system, "POST", "/api/v1/otp/tokens/release",
                                {"confirmation_password": CONFIRMATION_PASSWORD, "otp": code}, token)
    assert (status, body) == (200, {"released": True, "token_serial": result["token_serial"]})


def test_read_models_rebuild_by_replay(system, store, otp):
    """The read models are derived data: replaying the log gives the same rows."""
    from otp_service import projection

    issued_application(otp, store)          # at least one row of each kind exists by now

    def snapshot():
        with store.pool.connection() as conn:
            return {table: sorted(conn.execute(f"SELECT * FROM otp.{table}").fetchall(), key=str)
                    for table in ("applications", "tokens", "customers")}

    def without_updated_at(rows_by_table):
        out = {}
        for table, rows in rows_by_table.items():
            with store.pool.connection() as conn:
                cols = [c.name for c in conn.execute(f"SELECT * FROM otp.{table} LIMIT 0").description]
            keep = [i for i, c in enumerate(cols) if c != "updated_at"]
            out[table] = [tuple(row[i] for i in keep) for row in rows]
        return out

    before = without_updated_at(snapshot())
    assert all(before.values())
    assert projection.rebuild(store) > 0
    assert without_updated_at(snapshot()) == before
