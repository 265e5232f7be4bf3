"""No customer-number enumeration (issue 7 item 4; R-RBA-2, R-LEG-3, R-INI-9).

An unknown customer number and a wrong password get the same status, code and detail, lock
the same way (identity's shadow counters), and cost the same work: identity runs one dummy
hash verification of the same kind and cost for an unknown login ID. The work is checked by
counting the hash verifications identity performs (an in-process identity service whose
hashing functions are wrapped), not by timing; the HTTP timings are printed only.
"""
from __future__ import annotations

import statistics
import time
import uuid

import pytest
from nameko.runners import ServiceRunner
from nameko.standalone.rpc import ClusterRpcProxy

from identity import verifiers
from identity.service import IdentityService
from tests import vhosts
from tests.integration.test_identity_service import (SQ_REGISTERED, FakeOtpService, FakeSecretQuestions,
                                                     free_port)
from tests.security.common import LEGACY_PASSWORD, NEW_LOGIN, assert_problem, new_number, pbkdf2

N = 5   # LOCKOUT_THRESHOLD's default


def same_answer(a, b) -> None:
    """Status, code, detail and the set of headers are the same (ids and dates aside)."""
    assert a.status_code == b.status_code, (a.text, b.text)
    ja, jb = a.json(), b.json()
    assert {k: v for k, v in ja.items() if k != "correlation_id"} == \
           {k: v for k, v in jb.items() if k != "correlation_id"}
    ignore = {"x-request-id", "date", "content-length"}
    assert {k.lower() for k in a.headers} - ignore == {k.lower() for k in b.headers} - ignore


def timed(fn, n=5) -> tuple[object, float]:
    seconds, last = [], None
    for _ in range(n):
        started = time.perf_counter()
        last = fn()
        seconds.append(time.perf_counter() - started)
    return last, statistics.median(seconds) * 1000


# -- over HTTP: the answers ---------------------------------------------------------------------

def test_r_leg_3_unknown_customer_number_answers_like_a_wrong_password(customers, api):
    real = customers.legacy()
    wrong, t_wrong = timed(lambda: api.post("/api/v1/migration/login",
                                            {"customer_number": real.number, "password": "Wrong123x"}), n=3)
    unknown_number = new_number()
    unknown, t_unknown = timed(lambda: api.post("/api/v1/migration/login",
                                                {"customer_number": unknown_number, "password": "Wrong123x"}), n=3)
    assert_problem(wrong, 401, "invalid_credentials")
    same_answer(wrong, unknown)
    print(f"\nlegacy login, median of 3: wrong password {t_wrong:.1f} ms, unknown number {t_unknown:.1f} ms")


def test_r_ini_9_unknown_login_id_answers_like_a_wrong_password(customers, api):
    migrated = customers.migrated()
    not_migrated = customers.legacy()
    cases = {
        "wrong password": {"login_id": migrated.number, "password": "Wrong123x"},
        "unknown number": {"login_id": new_number(), "password": "Wrong123x"},
        "not migrated yet": {"login_id": not_migrated.number, "password": LEGACY_PASSWORD},
        "unknown login id": {"login_id": "nosuch" + uuid.uuid4().hex[:6], "password": "Wrong123x"},
    }
    answers, times = {}, {}
    for name, body in cases.items():
        answers[name], times[name] = timed(lambda: api.post("/api/v1/login", body, device=migrated.device), n=3)
    assert_problem(answers["wrong password"], 401, "invalid_credentials")
    for name in cases:
        same_answer(answers["wrong password"], answers[name])
    print("\nlogin, median of 3: " + ", ".join(f"{k} {v:.1f} ms" for k, v in times.items()))


@pytest.mark.parametrize("path,field", [("/api/v1/migration/login", "customer_number"),
                                        ("/api/v1/login", "login_id")])
def test_r_rba_2_an_unknown_number_locks_exactly_like_a_real_one(customers, api, path, field):
    real = customers.migrated() if field == "login_id" else customers.legacy()
    unknown = new_number()
    trail = {}
    for who, number in (("real", real.number), ("unknown", unknown)):
        answers = [api.post(path, {field: number, "password": "Wrong123x"}) for _ in range(N + 1)]
        trail[who] = [(r.status_code, r.json()["code"], r.json()["detail"]) for r in answers]
    assert [s for s, _, _ in trail["real"]] == [401] * (N - 1) + [423, 423]
    assert trail["real"] == trail["unknown"]


# -- in process: the work -------------------------------------------------------------------------

class Recorder:
    """Wraps identity's hash functions and records every verification (list.append is atomic;
    they run in tpool's real threads, where a green lock must not be taken)."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple] = []
        real_hasher = verifiers.HASHER
        calls = self.calls

        class CountingHasher:
            def __getattr__(self, name):
                return getattr(real_hasher, name)

            def verify(self, hashed, secret):
                calls.append(("argon2", hashed.split("$")[3] if hashed.count("$") >= 4 else hashed,
                              hashed == verifiers._DUMMY_ARGON2))
                return real_hasher.verify(hashed, secret)

        real_hashlib = verifiers.hashlib

        class CountingHashlib:
            """``hashlib`` as identity.verifiers sees it, with pbkdf2_hmac counted."""

            def __getattr__(self, name):
                return getattr(real_hashlib, name)

            @staticmethod
            def pbkdf2_hmac(name, password, salt, iterations, dklen=None):
                if iterations > 1:          # building the dummy verifier itself uses 1 iteration
                    calls.append(("pbkdf2", iterations))
                return real_hashlib.pbkdf2_hmac(name, password, salt, iterations, dklen)

        monkeypatch.setattr(verifiers, "HASHER", CountingHasher())
        monkeypatch.setattr(verifiers, "hashlib", CountingHashlib())

    def during(self, fn) -> list[tuple]:
        start = len(self.calls)
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the refusals are the point
            code = getattr(exc, "code", None)
            assert code in ("invalid_credentials", "credential_locked"), repr(exc)
        return self.calls[start:]


@pytest.fixture(scope="module")
def identity_rpc(settings):
    """identity alone, in this process, on a vhost of its own (with the integration tests'
    stand-ins for secret_questions and otp_service)."""
    vhost = f"tsunagi_enum_{uuid.uuid4().hex[:10]}"
    assert vhosts.create(vhost), "rabbitmqctl could not create a vhost (the broker runs beside the tests)"
    config = {"AMQP_URI": vhosts.uri_for(settings.amqp_uri, vhost), "serializer": "json",
              "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}", "max_workers": 10,
              "DATABASE_URL": settings.database_url, "LOCKOUT_THRESHOLD": N, "RPC_TIMEOUT": 10}
    runner = ServiceRunner(config)
    for cls in (IdentityService, FakeSecretQuestions, FakeOtpService):
        runner.add_service(cls)
    runner.start()
    try:
        with ClusterRpcProxy(config, timeout=60, context_data={"actor_kind": "customer", "actor_id": "web"}) as p:
            yield p
    finally:
        runner.stop()
        vhosts.delete(vhost)


CLIENT = {"device_id": "enum-device-1", "address": "203.0.113.77", "user_agent": "Mozilla/5.0 enum"}


def imported(rpc, password=LEGACY_PASSWORD) -> str:
    number = new_number()
    [result] = rpc.identity.import_legacy([{
        "line": 1, "customer_number": number, "login_password_verifier": pbkdf2(password),
        "confirmation_pin_verifier": pbkdf2("Pin4821x"), "phones": "090-1234-5678", "email": ""}])
    assert result["status"] == "imported", result
    return number


def test_r_rba_2_unknown_customer_number_costs_one_legacy_verify_of_the_same_cost(identity_rpc, monkeypatch):
    rec = Recorder(monkeypatch)
    real = imported(identity_rpc)
    rec.during(lambda: identity_rpc.identity.legacy_login(real, "Wrong123x", CLIENT))     # teaches the shape
    wrong = rec.during(lambda: identity_rpc.identity.legacy_login(real, "Wrong123x", CLIENT))
    unknown = rec.during(lambda: identity_rpc.identity.legacy_login(new_number(), "Wrong123x", CLIENT))
    assert wrong == [("pbkdf2", 1000)]       # the real verifier: pbkdf2, 1,000 iterations
    assert unknown == wrong                  # the dummy: the same scheme and cost, once


def test_r_rba_2_unknown_login_id_costs_one_argon2_verify_with_the_real_parameters(identity_rpc, monkeypatch):
    rec = Recorder(monkeypatch)
    number = imported(identity_rpc)
    identity_rpc.identity.legacy_login(number, LEGACY_PASSWORD, CLIENT)
    SQ_REGISTERED.add(number)
    identity_rpc.identity.change_passwords(number, {
        "current_login_password": LEGACY_PASSWORD, "new_login_password": NEW_LOGIN,
        "new_login_password_confirmation": NEW_LOGIN, "current_confirmation_password": "Pin4821x",
        "new_confirmation_password": "kakunin99Z", "new_confirmation_password_confirmation": "kakunin99Z"})
    not_migrated = imported(identity_rpc)
    wrong = rec.during(lambda: identity_rpc.identity.login(number, "Wrong123x", None, CLIENT))
    unknown = rec.during(lambda: identity_rpc.identity.login(new_number(), "Wrong123x", None, CLIENT))
    other = rec.during(lambda: identity_rpc.identity.login(not_migrated, LEGACY_PASSWORD, None, CLIENT))
    alnum = rec.during(lambda: identity_rpc.identity.login("nosuchid42", "Wrong123x", None, CLIENT))
    params = f"m={verifiers.MEMORY_COST_KIB},t={verifiers.TIME_COST},p={verifiers.PARALLELISM}"
    assert wrong == [("argon2", params, False)]          # the customer's own hash
    for answer in (unknown, other, alnum):
        assert answer == [("argon2", params, True)]      # the dummy: one verify, same parameters


def test_r_rba_2_a_locked_unknown_number_costs_no_verify_like_a_locked_real_one(identity_rpc, monkeypatch):
    rec = Recorder(monkeypatch)
    real, unknown = imported(identity_rpc), new_number()
    for number in (real, unknown):
        for _ in range(N):
            rec.during(lambda: identity_rpc.identity.legacy_login(number, "Wrong123x", CLIENT))
    assert rec.during(lambda: identity_rpc.identity.legacy_login(real, "Wrong123x", CLIENT)) == []
    assert rec.during(lambda: identity_rpc.identity.legacy_login(unknown, "Wrong123x", CLIENT)) == []
