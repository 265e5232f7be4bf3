"""The ``identity`` Nameko service over real RabbitMQ RPC and the real event store, with a tiny
``secret_questions`` service defined here (a real Nameko service on the bus, not a mock).

SPEC R-LEG-1 (import), R-LEG-2 (cut-over), R-LEG-3 (legacy login), R-INI-1/2 (step order,
password change), R-INI-9 (login), R-RBA-1 (step-up), R-RBA-2 (lockouts without enumeration).
"""
from __future__ import annotations

import base64
import csv
import hashlib
import os
import random
import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import bcrypt
import eventlet
import eventlet.tpool
import psycopg
import pytest
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy

from contracts.errors import (Conflict, DomainError, Forbidden, Locked, NotFound, TooEarly,
                              Unauthenticated, ValidationFailed)
from identity.domain import messages as msg
from identity.service import IdentityConfig, IdentityService
from services import db
from services.eventstore.store import EventStore
from tests import vhosts
from tests.support.net import free_port
from tests.support.services import running

ROOT = Path(__file__).resolve().parents[2]
LOGIN_PW, PIN = "OldPass1", "Pin12345"
NEW_LOGIN, NEW_PIN = "NewPass12", "conf5678"
HOME = {"device_id": None, "address": "203.0.113.10", "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Version/17.5 Mobile Safari/604.1"}
ELSEWHERE = {"device_id": "new-tablet-7", "address": "198.51.100.20", "user_agent": "Mozilla/5.0 (Linux; Android 14) Chrome/126.0 Mobile Safari/537.36"}
QUESTION = {"id": "q03", "text": "初めて飼ったペットの名前は？"}
RIGHT_ANSWER = "ポチ"


# -- the secret-questions service as identity sees it -----------------------------------------

SQ_REGISTERED: set[str] = set()
SQ_VERIFY_CALLS: list[tuple] = []


class FakeSecretQuestions:
    """Just the three calls identity makes (contract of the real service)."""
    name = "secret_questions"

    @rpc
    def status(self, customer_number):
        return {"registered": customer_number in SQ_REGISTERED, "locked": False}

    @rpc
    def pick_question(self, customer_number):
        return dict(QUESTION)

    @rpc
    def verify_answer(self, customer_number, question_id, answer):
        SQ_VERIFY_CALLS.append((customer_number, question_id, answer))
        return question_id == QUESTION["id"] and answer == RIGHT_ANSWER


OTP_ACTIVE: dict[str, str] = {}   # customer number -> the one OTP code the fake accepts
OTP_USED: set[tuple[str, str]] = set()


class FakeOtpService:
    """The calls identity makes to otp_service (issue 4): a real service on the bus."""
    name = "otp_service"

    @rpc
    def has_active_token(self, customer_number):
        return customer_number in OTP_ACTIVE

    @rpc
    def progress(self, customer_number):
        return {"stage": "active" if customer_number in OTP_ACTIVE else "none"}

    @rpc(expected_exceptions=(Unauthenticated,))
    def verify_otp(self, customer_number, code, purpose):
        if OTP_ACTIVE.get(customer_number) != code or (customer_number, code) in OTP_USED:
            raise Unauthenticated("ワンタイムパスワードが正しくありません。", "otp_invalid")
        OTP_USED.add((customer_number, code))
        return {"ok": True, "token_serial": "t1"}


class FutureCutover(IdentityConfig):
    def setup(self):
        super().setup()
        self.value = replace(self.value, cutover_at=datetime(2099, 1, 5, 7, tzinfo=timezone.utc))


class IdentityBeforeCutover(IdentityService):
    """The same service, configured with a cut-over in the future (R-LEG-2)."""
    name = "identity_before_cutover"
    settings = FutureCutover()


@pytest.fixture(scope="module")
def cluster(settings):
    with vhosts.own(settings.amqp_uri, "tsunagi_identity_") as amqp_uri:
        config = {"AMQP_URI": amqp_uri, "serializer": "json",
                  "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}", "max_workers": 10,
                  "DATABASE_URL": settings.database_url, "CUTOVER_AT": "2025-01-05T07:00:00+09:00",
                  "LOCKOUT_THRESHOLD": 5, "LOCK_RELEASE_SECONDS": 0, "RPC_TIMEOUT": 10}
        with running(config, (IdentityService, IdentityBeforeCutover, FakeSecretQuestions, FakeOtpService)):
            yield config


@contextmanager
def proxy(config, actor_kind="customer", actor_id="web", correlation_id=None, reason=None):
    context = {"correlation_id": correlation_id or f"corr-{uuid.uuid4()}", "actor_kind": actor_kind,
               "actor_id": actor_id, "client_address": "203.0.113.10"}
    if reason:
        context["reason"] = reason
    with ClusterRpcProxy(config, timeout=30, context_data=context) as p:
        p.correlation_id = context["correlation_id"]
        yield p


@pytest.fixture
def rpc_(cluster):
    with proxy(cluster) as p:
        yield p


def new_number() -> str:
    return f"{random.randrange(10**9, 10**10):010d}"


def pbkdf2(password: str, iterations: int = 1000) -> str:
    salt = uuid.uuid4().hex[:12]
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(key).decode()}"


def record(number: str, line: int = 2, **over) -> dict:
    r = {"line": line, "customer_number": number, "login_password_verifier": pbkdf2(LOGIN_PW),
         "confirmation_pin_verifier": bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$"),
         "phones": "090-1234-5678;（0172）12-3456", "email": "taro@example.jp"}
    r.update(over)
    return r


def events(store, number):
    return store.read_stream(f"customer-{number}")


def event_count(settings) -> int:
    with psycopg.connect(db.admin_url_for(settings, settings.database_name)) as c:
        return c.execute("SELECT count(*) FROM eventstore.events").fetchone()[0]


def imported(rpc_, **over) -> str:
    number = new_number()
    [result] = rpc_.identity.import_legacy([record(number, **over)])
    assert result["status"] == "imported", result
    return number


def migrated(rpc_, client=HOME) -> str:
    number = imported(rpc_)
    rpc_.identity.legacy_login(number, LOGIN_PW, client)
    SQ_REGISTERED.add(number)
    assert rpc_.identity.change_passwords(number, change_body()) == {"next_step": "otp_application"}
    return number


def change_body(**over) -> dict:
    body = {"current_login_password": LOGIN_PW, "new_login_password": NEW_LOGIN,
            "new_login_password_confirmation": NEW_LOGIN, "current_confirmation_password": PIN,
            "new_confirmation_password": NEW_PIN, "new_confirmation_password_confirmation": NEW_PIN}
    body.update(over)
    return body


def outcome(call):
    """(code, detail) of a call: what the caller can observe."""
    try:
        result = call()
    except DomainError as exc:
        return exc.code, exc.detail
    return "ok", result


# -- R-LEG-1 import ---------------------------------------------------------------------------

def test_r_leg_1_import_is_idempotent_and_reports_each_bad_line(cluster, store, settings):
    good, other, dup_number = new_number(), new_number(), new_number()
    batch = [record(good, 2), record(other, 3, phones="123;０９０－８７６５－４３２１", email=""),
             record("12345", 4), record(new_number(), 5, login_password_verifier="OldPass1"),
             record(new_number(), 6, confirmation_pin_verifier="md5$x$y"), record(new_number(), 7, phones="123"),
             record(new_number(), 8, email="no-at-sign"), {"line": 9}, "not a record",
             record(dup_number, 10), record(dup_number, 11, email="other@example.jp")]
    with proxy(cluster, actor_kind="operator", actor_id="op-7") as p:
        results = p.identity.import_legacy(batch)
        corr = p.correlation_id
    by_line = {r["line"]: r for r in results}
    assert [r["status"] for r in results] == ["imported", "imported", "rejected", "rejected", "rejected",
                                              "rejected", "rejected", "rejected", "rejected", "imported", "rejected"]
    assert by_line[4]["reason"] == "invalid_customer_number"
    assert by_line[5]["reason"] == "unknown_verifier_scheme" and "平文" in by_line[5]["message"]
    assert by_line[6]["reason"] == "unknown_verifier_scheme"
    assert by_line[7]["reason"] == "no_valid_phone"
    assert by_line[8]["reason"] == "invalid_email"
    assert results[7]["reason"] == "missing_field"
    assert results[8]["reason"] == "invalid_record"
    assert by_line[11]["reason"] == "already_imported_with_different_data"
    assert by_line[3]["warnings"] and "*****" not in str(by_line[2].get("warnings", ""))

    [ev] = events(store, good)
    assert ev.type == "legacy_customer_imported"
    assert ev.data["phones"] == ["+819012345678", "+81172123456"] and ev.data["email"] == "taro@example.jp"
    assert ev.metadata["actor"] == {"kind": "operator", "id": "op-7"} and ev.metadata["correlation_id"] == corr
    # Phones, e-mail and the verifiers are ciphertext in the database (crypto-shredding).
    with psycopg.connect(db.admin_url_for(settings, settings.database_name)) as c:
        raw = c.execute("SELECT data::text FROM eventstore.events WHERE stream_name = %s",
                        (f"customer-{good}",)).fetchone()[0]
    assert "+8190" not in raw and "taro@" not in raw and "pbkdf2" not in raw and "$pii" in raw

    # The same batch again changes nothing.
    before = event_count(settings)
    with proxy(cluster, actor_kind="operator", actor_id="op-7") as p:
        again = p.identity.import_legacy(batch)
    assert [r["status"] for r in again] == ["unchanged", "unchanged", *["rejected"] * 7, "unchanged", "rejected"]
    assert event_count(settings) == before


def test_r_leg_1_import_batch_shape_is_checked(rpc_):
    for junk in ("records", {"a": 1}, None):
        with pytest.raises(ValidationFailed):
            rpc_.identity.import_legacy(junk)
    with pytest.raises(ValidationFailed):
        rpc_.identity.import_legacy([{}] * 2001)


# -- R-LEG-2 / R-LEG-3 legacy login -----------------------------------------------------------------

def test_r_leg_2_legacy_login_refused_before_cutover_for_everyone(rpc_, store):
    number = imported(rpc_)
    for who, pw in ((number, LOGIN_PW), (number, "wrong1"), (new_number(), LOGIN_PW)):
        with pytest.raises(TooEarly) as exc:
            rpc_.identity_before_cutover.legacy_login(who, pw, HOME)
        assert exc.value.code == "before_cutover" and exc.value.status == 403
        assert "2099年1月5日16:00以降" in exc.value.detail
    assert [e.type for e in events(store, number)] == ["legacy_customer_imported"]


def test_r_leg_3_legacy_login_then_steps_in_order(rpc_, store):
    number = imported(rpc_)
    answer = rpc_.identity.legacy_login(number, LOGIN_PW, HOME)
    assert answer == {"customer_number": number, "next_step": "secret_questions"}
    status = rpc_.identity.migration_status(number)
    assert status["next_step"] == "secret_questions"
    assert status["steps"] == {"legacy_login": "done", "secret_questions": "pending",
                               "password_change": "pending", "otp_application": "pending"}
    # Step 4 cannot be done before step 3 (R-INI-1 before R-INI-2).
    with pytest.raises(Conflict) as exc:
        rpc_.identity.change_passwords(number, change_body())
    assert exc.value.code == "step_not_available" and exc.value.extra["next_step"] == "secret_questions"

    SQ_REGISTERED.add(number)
    assert rpc_.identity.migration_status(number)["next_step"] == "password_change"
    assert rpc_.identity.legacy_login(number, LOGIN_PW, HOME)["next_step"] == "password_change"
    ev = [e for e in events(store, number) if e.type == "legacy_login_succeeded"][0]
    assert ev.metadata["actor"] == {"kind": "customer", "id": "web"}
    assert ev.metadata["correlation_id"] == rpc_.correlation_id
    assert ev.metadata["client_address"] == "203.0.113.10"
    assert [p["masked"] for p in rpc_.identity.phones(number)] == ["*****5678", "*****3456"]


def test_r_rba_2_legacy_lockout_does_not_reveal_whether_a_number_exists(cluster, store):
    known, unknown = None, new_number()
    with proxy(cluster) as p:
        known = imported(p)
        seen = {}
        for who in (known, unknown):
            seen[who] = [outcome(lambda: p.identity.legacy_login(who, f"Wrong{i}x", HOME)) for i in range(6)]
            # even the right password is refused once locked
            seen[who].append(outcome(lambda: p.identity.legacy_login(who, LOGIN_PW, HOME)))
    assert seen[known] == seen[unknown]
    codes = [code for code, _ in seen[known]]
    assert codes == ["invalid_credentials"] * 4 + ["credential_locked"] * 3
    assert seen[known][0][1] == msg.LEGACY_INVALID_CREDENTIALS
    assert "ご連絡ください" in seen[known][4][1]
    types = [e.type for e in events(store, known)]
    assert types == ["legacy_customer_imported"] + ["legacy_login_failed"] * 5 + ["credential_locked"]
    assert events(store, unknown) == []           # no stream for a number that does not exist

    # Unlocking is an operator action; the operator and the reason are recorded.
    with proxy(cluster) as p, pytest.raises(Forbidden):
        p.identity.unlock_credential(known, "legacy_password")
    with proxy(cluster, actor_kind="operator", actor_id="op-3") as op:
        assert op.identity.unlock_credential(known, "legacy_password")["status"] == "unlocked"
        with pytest.raises(Conflict):
            op.identity.unlock_credential(known, "legacy_password")
    unlocked = events(store, known)[-1]
    assert unlocked.type == "credential_unlocked" and unlocked.metadata["actor"] == {"kind": "operator", "id": "op-3"}
    with proxy(cluster) as p:
        assert p.identity.legacy_login(known, LOGIN_PW, HOME)["customer_number"] == known


def test_r_rba_2_concurrent_wrong_passwords_are_all_counted(cluster, store):
    """Version conflicts are retried: five simultaneous failures lock exactly once."""
    with proxy(cluster) as p:
        number = imported(p)

    def attempt(i):
        with proxy(cluster) as p:
            return outcome(lambda: p.identity.legacy_login(number, f"Wrong{i}x", HOME))[0]

    codes = list(eventlet.GreenPool(5).imap(attempt, range(5)))
    assert sorted(codes) == ["credential_locked"] + ["invalid_credentials"] * 4
    unknown = new_number()

    def attempt_unknown(i):
        with proxy(cluster) as p:
            return outcome(lambda: p.identity.legacy_login(unknown, f"Wrong{i}x", HOME))[0]

    assert sorted(eventlet.GreenPool(5).imap(attempt_unknown, range(5))) == sorted(codes)
    evs = events(store, number)
    assert [e.data["consecutive_failures"] for e in evs if e.type == "legacy_login_failed"] == [1, 2, 3, 4, 5]
    assert [e.type for e in evs].count("credential_locked") == 1


# -- R-INI-2 password change --------------------------------------------------------------------------

def test_r_ini_2_password_change_rules_and_replacement(rpc_, store, settings):
    number = imported(rpc_)
    rpc_.identity.legacy_login(number, LOGIN_PW, HOME)
    SQ_REGISTERED.add(number)
    before = event_count(settings)
    for over, field, message in (
            ({"new_login_password": "newpass12", "new_login_password_confirmation": "newpass12"},
             "new_login_password", msg.LOGIN_PASSWORD_MIXED_CASE),
            ({"new_login_password_confirmation": "NewPass13"}, "new_login_password_confirmation",
             "新しいログインパスワード（再入力）が一致しません。確認のため同じものを再度入力してください。"),
            ({"new_login_password": LOGIN_PW, "new_login_password_confirmation": LOGIN_PW},
             "new_login_password", "「現在のログインパスワード」と同一のものはご利用いただけません。"),
            ({"new_confirmation_password": NEW_LOGIN, "new_confirmation_password_confirmation": NEW_LOGIN},
             "new_confirmation_password", msg.LOGIN_EQUALS_CONFIRMATION),
            ({"new_confirmation_password": "ｐｉｎ１２３４５", "new_confirmation_password_confirmation": "ｐｉｎ１２３４５"},
             "new_confirmation_password", "新しい確認用パスワードは半角英数字6～12桁で入力してください。")):
        with pytest.raises(ValidationFailed) as exc:
            rpc_.identity.change_passwords(number, change_body(**over))
        assert message in exc.value.extra["errors"][field]
    assert event_count(settings) == before            # validation changes nothing

    # Wrong current passwords are checked against the legacy verifiers and counted.
    with pytest.raises(ValidationFailed) as exc:
        rpc_.identity.change_passwords(number, change_body(current_login_password="Wrong1x",
                                                           current_confirmation_password="Wrong2x"))
    assert exc.value.code == "current_password_incorrect"
    assert set(exc.value.extra["errors"]) == {"current_login_password", "current_confirmation_password"}
    assert [(e.type, e.data["credential"]) for e in events(store, number)[-2:]] == [
        ("credential_check_failed", "legacy_password"), ("credential_check_failed", "confirmation_password")]

    assert rpc_.identity.change_passwords(number, change_body()) == {"next_step": "otp_application"}
    changed = [e for e in events(store, number) if e.type == "passwords_changed"][0]
    assert changed.data["login_password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert changed.metadata["correlation_id"] == rpc_.correlation_id
    assert rpc_.identity.migration_status(number)["next_step"] == "otp_application"

    # Not repeatable; the legacy password never works again, and says where to go instead.
    with pytest.raises(Conflict):
        rpc_.identity.change_passwords(number, change_body())
    with pytest.raises(Conflict) as exc:
        rpc_.identity.legacy_login(number, LOGIN_PW, HOME)
    assert exc.value.code == "already_migrated" and "通常のログイン" in exc.value.detail
    with pytest.raises(Unauthenticated):
        rpc_.identity.legacy_login(number, NEW_LOGIN, HOME)
    # The confirmation password is now the new one.
    assert rpc_.identity.verify_confirmation_password(number, NEW_PIN) == {"ok": True}
    with pytest.raises(Unauthenticated) as exc:
        rpc_.identity.verify_confirmation_password(number, PIN)
    assert exc.value.code == "invalid_confirmation_password"


# -- R-INI-9 / R-RBA-1 login with step-up -------------------------------------------------------------

def test_r_ini_9_login_requires_the_otp_once_a_token_is_active(rpc_, store):
    """R-INI-9: with an active token (otp_service says so) the login needs a valid, unused OTP."""
    number = migrated(rpc_)
    # Step 5 as otp_service runs it: the confirmation password first, then the token.
    assert rpc_.identity.verify_confirmation_password(number, NEW_PIN) == {"ok": True}
    OTP_ACTIVE[number] = "654321"
    assert rpc_.identity.migration_status(number)["next_step"] == "done"
    for otp in (None, "000000"):
        with pytest.raises(Unauthenticated):
            rpc_.identity.login(number, NEW_LOGIN, otp, HOME)
    assert rpc_.identity.login(number, NEW_LOGIN, "654321", HOME) == {"status": "ok", "customer_number": number}
    with pytest.raises(Unauthenticated):
        rpc_.identity.login(number, NEW_LOGIN, "654321", HOME)     # replayed


def test_r_ini_9_login_from_the_migration_device_and_step_up_elsewhere(rpc_, store):
    number = migrated(rpc_)
    # The environment of the initial operation is known: no challenge there.
    assert rpc_.identity.login(number, NEW_LOGIN, None, HOME) == {"status": "ok", "customer_number": number}
    with pytest.raises(Unauthenticated) as exc:
        rpc_.identity.login(number, LOGIN_PW, None, HOME)           # the legacy password is dead
    assert exc.value.code == "invalid_credentials"

    challenge = rpc_.identity.login(number, NEW_LOGIN, "123456", ELSEWHERE)   # OTP ignored: no token yet
    assert challenge["status"] == "challenge" and challenge["question"] == QUESTION
    cid = challenge["challenge_id"]
    with pytest.raises(Unauthenticated) as exc:
        rpc_.identity.answer_challenge(cid, RIGHT_ANSWER, HOME)     # answered from elsewhere
    assert exc.value.code == "challenge_invalid"
    with pytest.raises(Unauthenticated) as exc:
        rpc_.identity.answer_challenge(cid, "タマ", ELSEWHERE)
    assert exc.value.code == "wrong_answer" and "一字一句" in exc.value.detail
    assert rpc_.identity.answer_challenge(cid, RIGHT_ANSWER, ELSEWHERE) == {"status": "ok", "customer_number": number}
    assert SQ_VERIFY_CALLS[-1] == (number, "q03", RIGHT_ANSWER)
    with pytest.raises(Unauthenticated) as exc:
        rpc_.identity.answer_challenge(cid, RIGHT_ANSWER, ELSEWHERE)   # used up
    assert exc.value.code == "challenge_invalid"
    # The environment is remembered.
    assert rpc_.identity.login(number, NEW_LOGIN, None, ELSEWHERE)["status"] == "ok"
    types = [e.type for e in events(store, number)]
    assert types[-8:] == ["login_succeeded", "login_failed", "login_challenged", "challenge_failed",
                          "challenge_passed", "environment_recognised", "login_succeeded", "login_succeeded"]
    for ev in events(store, number)[-8:]:
        assert ev.metadata["correlation_id"] == rpc_.correlation_id and ev.metadata["service"] == "identity"
    with pytest.raises(Unauthenticated):
        rpc_.identity.answer_challenge(str(uuid.uuid4()), RIGHT_ANSWER, ELSEWHERE)


def test_r_rba_2_login_lockout_alike_for_unknown_unmigrated_and_real(cluster, store):
    with proxy(cluster) as p:
        real = migrated(p)
        not_migrated = imported(p)
        unknown = new_number()
        seen = {}
        for who in (real, not_migrated, unknown):
            seen[who] = [outcome(lambda: p.identity.login(who, f"Wrong{i}x", None, HOME)) for i in range(5)]
            seen[who].append(outcome(lambda: p.identity.login(who, NEW_LOGIN, None, HOME)))
        # The legacy credential of the real customer is untouched by login-password failures.
        verify_after = outcome(lambda: p.identity.verify_confirmation_password(real, NEW_PIN))
    assert seen[real] == seen[not_migrated] == seen[unknown]
    assert [c for c, _ in seen[real]] == ["invalid_credentials"] * 4 + ["credential_locked"] * 2
    assert seen[real][0][1] == msg.INVALID_CREDENTIALS
    assert verify_after == ("ok", {"ok": True})
    assert [e.type for e in events(store, real)][-3:] == ["login_failed", "credential_locked",
                                                          "confirmation_password_verified"]


def test_r_ini_9_a_repeat_login_reads_nothing_from_the_stream(cluster, monkeypatch):
    """Issue 3's benchmark path: after the first login, a login is decided on the cached state
    and proven current by its append alone (both tests below show it stays correct)."""
    reads = []
    read_stream = EventStore.read_stream
    monkeypatch.setattr(EventStore, "read_stream", lambda self, *a, **k: reads.append(a) or read_stream(self, *a, **k))
    with proxy(cluster) as p:
        number = migrated(p)
        seen = []
        for _ in range(3):
            reads.clear()
            seen.append((outcome(lambda: p.identity.login(number, NEW_LOGIN, None, HOME))[0], len(reads)))
        reads.clear()
        wrong = (outcome(lambda: p.identity.login(number, "Wrong1x", None, HOME))[0], len(reads))
    assert seen == [("ok", 1), ("ok", 0), ("ok", 0)]
    assert wrong == ("invalid_credentials", 0)


def test_r_ini_9_a_password_reissued_elsewhere_ends_the_old_one_at_once(cluster, store):
    """A repeat login is decided on identity's cached state without reading the stream; the
    append's expected version is what proves that state current. An operator's re-issue
    changes the password without that cache (as another identity process would), so the next
    login with the old password is decided on a stale state first: it must not commit."""
    with proxy(cluster) as p:
        number = migrated(p)
        assert outcome(lambda: p.identity.login(number, NEW_LOGIN, None, HOME))[0] == "ok"   # cached
        with proxy(cluster, actor_kind="operator", actor_id="op-9", reason="窓口 2026-031") as op:
            temporary = op.identity.reissue_login_password(number)["temporary_password"]
        stale = outcome(lambda: p.identity.login(number, NEW_LOGIN, None, HOME))
        fresh = outcome(lambda: p.identity.login(number, temporary, None, HOME))
    assert stale == ("invalid_credentials", msg.INVALID_CREDENTIALS)
    assert fresh[0] == "ok" and fresh[1]["status"] == "password_change_required"
    types = [e.type for e in events(store, number)]
    assert types[types.index("login_password_reissued"):] == ["login_password_reissued", "login_failed",
                                                              "login_succeeded"]


def test_r_rba_2_an_unlock_made_elsewhere_is_seen_by_the_next_login(cluster, store):
    """A refusal of a locked credential appends nothing, so it is never decided on the cached
    state (nothing would prove it current): the operator's unlock must count at once."""
    with proxy(cluster) as p:
        number = migrated(p)
        refused = [outcome(lambda: p.identity.login(number, f"Wrong{i}x", None, HOME))[0] for i in range(6)]
        with proxy(cluster, actor_kind="operator", actor_id="op-9") as op:
            assert op.identity.unlock_credential(number, "login_password")["status"] == "unlocked"
        after = outcome(lambda: p.identity.login(number, NEW_LOGIN, None, HOME))
    assert refused == ["invalid_credentials"] * 4 + ["credential_locked"] * 2
    assert after == ("ok", {"status": "ok", "customer_number": number})
    assert [e.type for e in events(store, number)][-2:] == ["credential_unlocked", "login_succeeded"]


def test_confirmation_password_lockout_and_phones(rpc_, store):
    number = imported(rpc_)
    assert rpc_.identity.verify_confirmation_password(number, PIN) == {"ok": True}   # legacy PIN before step 4
    codes = [outcome(lambda: rpc_.identity.verify_confirmation_password(number, "Wrong1x"))[0] for _ in range(5)]
    assert codes == ["invalid_confirmation_password"] * 4 + ["credential_locked"]
    with pytest.raises(Locked):
        rpc_.identity.verify_confirmation_password(number, PIN)
    phones = rpc_.identity.phones(number)
    assert [p["masked"] for p in phones] == ["*****5678", "*****3456"]
    assert rpc_.identity.phone(number, phones[1]["phone_id"])["e164"] == "+81172123456"
    with pytest.raises(NotFound):
        rpc_.identity.phone(number, "nope")
    with pytest.raises(NotFound):
        rpc_.identity.phones(new_number())


# -- bad input of every kind -------------------------------------------------------------------------

JUNK = [None, "", 12345, 1.5, True, [], {}, "x" * 5000, "😀" * 10, "0123456789'; DROP TABLE eventstore.events; --",
        "<script>alert(1)</script>", "０１２３４５６７８９"]


@pytest.mark.parametrize("junk", JUNK, ids=[repr(j)[:20] for j in JUNK])
def test_bad_input_is_a_domain_error_and_changes_nothing(rpc_, settings, junk):
    number = imported(rpc_)
    before = event_count(settings)
    calls = [
        lambda: rpc_.identity.legacy_login(junk, LOGIN_PW, HOME),
        lambda: rpc_.identity.legacy_login(number, junk, HOME),
        lambda: rpc_.identity.legacy_login(number, LOGIN_PW, junk if junk not in (None, {}) else "junk"),
        lambda: rpc_.identity.migration_status(junk),
        lambda: rpc_.identity.change_passwords(junk, change_body()),
        lambda: rpc_.identity.change_passwords(number, junk),
        lambda: rpc_.identity.change_passwords(number, change_body(new_login_password=junk)),
        lambda: rpc_.identity.login(junk, NEW_LOGIN, None, HOME),
        lambda: rpc_.identity.login(number, junk, None, HOME),
        lambda: rpc_.identity.login(number, NEW_LOGIN, "x" * 100, HOME),
        lambda: rpc_.identity.answer_challenge(junk, RIGHT_ANSWER, HOME),
        lambda: rpc_.identity.answer_challenge(str(uuid.uuid4()), junk, HOME) if junk not in ("😀" * 10,) else
        rpc_.identity.answer_challenge(junk, junk, HOME),
        lambda: rpc_.identity.verify_confirmation_password(number, junk),
        lambda: rpc_.identity.phones(junk),
        lambda: rpc_.identity.unlock_credential(number, junk),
    ]
    for call in calls:
        with pytest.raises(DomainError):
            call()
    assert event_count(settings) == before
    with pytest.raises(DomainError):
        rpc_.identity.legacy_login()                  # missing arguments too


# -- the command line: `tsunagi import-legacy FILE` ----------------------------------------------------

def write_csv(path: Path, rows: list[list[str]], raw_lines: list[bytes] = ()) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_number", "login_password_verifier", "confirmation_pin_verifier", "phones", "email"])
        w.writerows(rows)
    with open(path, "ab") as f:
        for line in raw_lines:
            f.write(line)


def test_r_leg_1_cli_imports_file_reports_rejects_and_is_idempotent(cluster, store, tmp_path):
    from services.cli.import_legacy import run_import

    numbers = [new_number() for _ in range(7)]
    rows = [[n, pbkdf2(LOGIN_PW), pbkdf2(PIN), "090-1111-2222;03-1234-5678", ""] for n in numbers]
    rows.insert(2, ["12345", pbkdf2(LOGIN_PW), pbkdf2(PIN), "090-1111-2222", ""])          # line 4
    rows.insert(4, [new_number(), "plaintext", pbkdf2(PIN), "090-1111-2222", ""])           # line 6
    rows.append([new_number(), pbkdf2(LOGIN_PW)])                                             # too few columns
    path = tmp_path / "legacy.csv"
    write_csv(path, rows, [f"{new_number()},{pbkdf2(LOGIN_PW)},{pbkdf2(PIN)},090-1111-2222,caf\xe9@x.jp\n".encode("latin-1")])
    summary = run_import(path, amqp_uri=cluster["AMQP_URI"], batch_size=3, parallel=2, operator="op-9", progress=False)
    assert (summary.total, summary.imported, summary.unchanged, summary.rejected) == (11, 7, 0, 4)
    rejects = list(csv.DictReader(open(path.with_name("legacy.csv.rejected.csv"), encoding="utf-8")))
    assert [(r["line"], r["reason"]) for r in rejects] == [
        ("4", "invalid_customer_number"), ("6", "unknown_verifier_scheme"), ("11", "wrong_column_count"),
        ("12", "invalid_encoding")]
    assert oct(os.stat(path.with_name("legacy.csv.rejected.csv")).st_mode & 0o777) == "0o600"
    ev = events(store, numbers[0])[0]
    assert ev.metadata["actor"] == {"kind": "operator", "id": "op-9"} and ev.metadata["reason"] == "legacy import legacy.csv"

    again = run_import(path, amqp_uri=cluster["AMQP_URI"], batch_size=500, progress=False)
    assert (again.imported, again.unchanged, again.rejected) == (0, 7, 4)


def test_r_leg_1_console_script_import_legacy(cluster, tmp_path, settings):
    """The `tsunagi import-legacy` console script end to end (own process, real RPC)."""
    number = new_number()
    path = tmp_path / "one.csv"
    write_csv(path, [[number, pbkdf2(LOGIN_PW), pbkdf2(PIN), "0172-12-3456", "a@example.jp"],
                     ["bad", "x", "y", "z", ""]])
    env = {**os.environ, "AMQP_URI": cluster["AMQP_URI"], "TSUNAGI_OPERATOR": "op-cli"}
    tsunagi = Path(sys.executable).with_name("tsunagi")
    # In a real thread: a blocking wait here would stall the hub that runs the services.
    run = lambda *a, **k: eventlet.tpool.execute(subprocess.run, *a, **k)  # noqa: E731
    result = run([str(tsunagi), "import-legacy", str(path), "--rejects", str(tmp_path / "r.csv")],
                            capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert result.returncode == 3, result.stderr
    assert "2 lines: 1 imported, 0 unchanged, 1 rejected" in result.stdout
    assert (tmp_path / "r.csv").exists()
    missing = run([str(tsunagi), "import-legacy", str(tmp_path / "nope.csv")],
                             capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_r_plt_4_read_models_rebuild_from_the_log(rpc_, store):
    """identity's projections (imports, challenges) are derived data: replay recreates them."""
    from identity import readmodels

    number = migrated(rpc_)
    challenge = rpc_.identity.login(number, NEW_LOGIN, None, ELSEWHERE)
    store.seal_all()

    def snapshot():
        with store.pool.connection() as c:
            return (c.execute("SELECT customer_number, record_digest FROM identity.legacy_imports "
                              "ORDER BY 1").fetchall(),
                    c.execute("SELECT challenge_id::text, customer_number FROM identity.login_challenges "
                              "ORDER BY 1").fetchall())

    before = snapshot()
    assert (challenge["challenge_id"], number) in before[1]
    assert readmodels.rebuild(store) > 0
    assert snapshot() == before
    assert rpc_.identity.answer_challenge(challenge["challenge_id"], RIGHT_ANSWER, ELSEWHERE)["status"] == "ok"
