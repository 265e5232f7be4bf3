"""R-INI-9: when the login asks otp_service whether the customer has an active token.

identity asks only customers whose stream has a ``confirmation_password_verified`` event:
otp_service accepts an OTP application only after identity verified the confirmation password,
so a customer without one never applied and has no token (identity/domain/customer.py
``otp_token_possible``). These tests run the real ``identity`` service over real RabbitMQ RPC and
the real event store, with small secret_questions/otp_service services defined here that record
what identity asks them.
"""
from __future__ import annotations

import base64
import hashlib
import random
import socket
import uuid

import eventlet
import pytest
from nameko.rpc import rpc
from nameko.runners import ServiceRunner
from nameko.standalone.rpc import ClusterRpcProxy

from contracts.errors import Unauthenticated
from contracts.events import NewEvent
from identity.service import IdentityService, stream_of
from tests import vhosts

LOGIN_PW, PIN = "OldPass1", "Pin12345"
NEW_LOGIN, NEW_PIN = "NewPass12", "conf5678"
HOME = {"device_id": "home-phone-1", "address": "203.0.113.10", "user_agent": "Mozilla/5.0 (iPhone)"}

TOKENS: dict[str, str] = {}          # customer number -> the one OTP code the fake accepts
ASKED: list[tuple[str, str]] = []     # (method, customer number) of every call to otp_service
RACE: set[str] = set()                # customers whose next login meets an OTP application


class FakeSecretQuestions:
    name = "secret_questions"

    @rpc
    def status(self, customer_number):
        return {"registered": True, "locked": False}

    @rpc
    def pick_question(self, customer_number):
        return {"id": "q03", "text": "初めて飼ったペットの名前は？"}


class FakeOtpService:
    name = "otp_service"

    @rpc
    def has_active_token(self, customer_number):
        ASKED.append(("has_active_token", customer_number))
        return customer_number in TOKENS

    @rpc
    def progress(self, customer_number):
        return {"stage": "active" if customer_number in TOKENS else "none"}

    @rpc(expected_exceptions=(Unauthenticated,))
    def verify_otp(self, customer_number, code, purpose):
        ASKED.append(("verify_otp", customer_number))
        if TOKENS.get(customer_number) != code:
            raise Unauthenticated("ワンタイムパスワードが正しくありません。", "otp_invalid")
        return {"ok": True, "token_serial": "t1"}


class RacingIdentity(IdentityService):
    """identity, except that for customers in RACE an OTP application happens between the
    login's read of the stream and its append: exactly what otp_service ``apply`` does
    (identity.verify_confirmation_password appends ``confirmation_password_verified``), followed
    by the token's activation."""

    def _commit(self, number, facts, expected_version):
        if number in RACE:
            RACE.discard(number)
            self.store.append(stream_of(number), [NewEvent("confirmation_password_verified", {})], None,
                              self.context)
            TOKENS[number] = "246810"
        return super()._commit(number, facts, expected_version)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(settings):
    vhost = f"tsunagi_loginotp_{uuid.uuid4().hex[:10]}"
    if not any(vhosts.create(vhost) or eventlet.sleep(1) for _ in range(3)):
        pytest.fail("could not create a RabbitMQ vhost with rabbitmqctl")
    config = {"AMQP_URI": vhosts.uri_for(settings.amqp_uri, vhost), "serializer": "json",
              "WEB_SERVER_ADDRESS": f"127.0.0.1:{_free_port()}", "max_workers": 10,
              "DATABASE_URL": settings.database_url, "CUTOVER_AT": "2025-01-05T07:00:00+09:00",
              "LOCKOUT_THRESHOLD": 5, "LOCK_RELEASE_SECONDS": 0, "RPC_TIMEOUT": 10}
    runner = ServiceRunner(config)
    for cls in (RacingIdentity, FakeSecretQuestions, FakeOtpService):
        runner.add_service(cls)
    runner.start()
    try:
        yield config
    finally:
        runner.stop()
        vhosts.delete(vhost)


@pytest.fixture
def rpc_(cluster):
    context = {"correlation_id": f"corr-{uuid.uuid4()}", "actor_kind": "customer", "actor_id": "web",
               "client_address": "203.0.113.10"}
    with ClusterRpcProxy(cluster, timeout=30, context_data=context) as p:
        yield p


def _pbkdf2(password: str) -> str:
    salt = uuid.uuid4().hex[:12]
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 1000)
    return f"pbkdf2_sha256$1000${salt}${base64.b64encode(key).decode()}"


def migrated(rpc_) -> str:
    """A customer through steps 2–4 (import, legacy login, new passwords), no OTP application."""
    number = f"{random.randrange(10**9, 10**10):010d}"
    [result] = rpc_.identity.import_legacy([{
        "line": 2, "customer_number": number, "login_password_verifier": _pbkdf2(LOGIN_PW),
        "confirmation_pin_verifier": _pbkdf2(PIN), "phones": "090-1234-5678", "email": ""}])
    assert result["status"] == "imported", result
    rpc_.identity.legacy_login(number, LOGIN_PW, HOME)
    assert rpc_.identity.change_passwords(number, {
        "current_login_password": LOGIN_PW, "new_login_password": NEW_LOGIN,
        "new_login_password_confirmation": NEW_LOGIN, "current_confirmation_password": PIN,
        "new_confirmation_password": NEW_PIN, "new_confirmation_password_confirmation": NEW_PIN,
    }) == {"next_step": "otp_application"}
    return number


def asked(number: str) -> list[str]:
    return [method for method, n in ASKED if n == number]


def test_r_ini_9_a_customer_who_never_applied_logs_in_without_asking_otp_service(rpc_):
    number = migrated(rpc_)
    ASKED.clear()
    for _ in range(2):     # the second login folds only the new events (login-state cache)
        assert rpc_.identity.login(number, NEW_LOGIN, None, HOME) == {"status": "ok", "customer_number": number}
    assert asked(number) == []


def test_r_ini_9_after_an_application_the_login_asks_and_needs_the_otp(rpc_, store):
    number = migrated(rpc_)
    assert rpc_.identity.login(number, NEW_LOGIN, None, HOME)["status"] == "ok"   # cached: no token possible
    # Step 5: otp_service has identity check the confirmation password, then the token comes.
    assert rpc_.identity.verify_confirmation_password(number, NEW_PIN) == {"ok": True}
    TOKENS[number] = "135790"
    ASKED.clear()
    for otp in (None, "000000"):
        with pytest.raises(Unauthenticated) as exc:
            rpc_.identity.login(number, NEW_LOGIN, otp, HOME)
        assert exc.value.code == "otp_required"
    assert rpc_.identity.login(number, NEW_LOGIN, "135790", HOME) == {"status": "ok", "customer_number": number}
    assert asked(number).count("has_active_token") == 3
    # Released later (no token any more): still asked, and then let in without an OTP.
    del TOKENS[number]
    assert rpc_.identity.login(number, NEW_LOGIN, None, HOME)["status"] == "ok"
    assert asked(number).count("has_active_token") == 4


def test_r_ini_9_an_application_racing_the_login_is_not_missed(rpc_, store):
    """The login read a stream without the event, then an application (and token) came before
    its append: the append conflicts, the retry reads the event, asks, and needs the OTP."""
    number = migrated(rpc_)
    ASKED.clear()
    RACE.add(number)
    with pytest.raises(Unauthenticated) as exc:
        rpc_.identity.login(number, NEW_LOGIN, None, HOME)
    assert exc.value.code == "otp_required"
    assert asked(number) == ["has_active_token"]
    types = [e.type for e in store.read_stream(stream_of(number))]
    assert types[-1] == "confirmation_password_verified" and "login_succeeded" not in types
    assert rpc_.identity.login(number, NEW_LOGIN, "246810", HOME)["status"] == "ok"
