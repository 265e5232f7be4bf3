"""The ``secret_questions`` Nameko service over real RabbitMQ RPC and the real event store
(SPEC R-INI-1, R-RBA-1, R-RBA-2)."""
from __future__ import annotations

import random
import uuid
from contextlib import contextmanager
from typing import Iterator

import eventlet
import psycopg
import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from contracts.errors import Conflict, Forbidden, Locked, NotFound, ValidationFailed
from identity.secret_questions import SecretQuestionsService
from services import db
from tests import vhosts
from tests.support.services import running

ANSWERS = [{"question_id": "q01", "answer": "やまだ"},
           {"question_id": "q03", "answer": "東小学校"},
           {"question_id": "q05", "answer": "青森"}]


@contextmanager
def secret_questions_service(settings, **config) -> Iterator[dict]:
    """The service in a runner on a RabbitMQ vhost of its own; yields the RPC configuration."""
    with vhosts.own(settings.amqp_uri, "tsunagi_sq_") as amqp_uri:
        config = {"AMQP_URI": amqp_uri, "serializer": "json", "DATABASE_URL": settings.database_url, **config}
        with running(config, [SecretQuestionsService]):
            yield config


@pytest.fixture(scope="module")
def rpc_config(settings):
    with secret_questions_service(settings, max_workers=10, LOCKOUT_THRESHOLD=5) as config:
        yield config


@pytest.fixture
def operator(rpc_config):
    context = {"correlation_id": f"corr-{uuid.uuid4()}", "actor_kind": "operator", "actor_id": "op-001",
               "reason": "本人確認書類による申出"}
    with ClusterRpcProxy(rpc_config, timeout=30, context_data=context) as proxy:
        yield proxy


@pytest.fixture
def rpc(rpc_config):
    context = {"correlation_id": f"corr-{uuid.uuid4()}", "actor_kind": "customer", "actor_id": "t"}
    with ClusterRpcProxy(rpc_config, timeout=30, context_data=context) as proxy:
        proxy.correlation_id = context["correlation_id"]
        yield proxy


def new_customer() -> str:
    return f"{random.randrange(10**9, 10**10):010d}"


def stream(store, cn):
    return store.read_stream(f"secretq-{cn}")


def test_r_ini_1_catalogue_and_ping(rpc):
    cat = rpc.secret_questions.catalogue()
    assert len(cat) >= 10 and {"id": "q01", "text": "母親の旧姓は？"} in cat
    assert rpc.secret_questions.ping()["ok"] is True


def test_r_ini_1_register_stores_argon2id_verifiers_encrypted(rpc, store, settings):
    cn = new_customer()
    assert rpc.secret_questions.status(cn) == {"registered": False, "locked": False}
    assert rpc.secret_questions.register(cn, ANSWERS, True) == {"registered": True}
    assert rpc.secret_questions.status(cn) == {"registered": True, "locked": False}

    [event] = stream(store, cn)
    assert event.type == "secret_questions_registered"
    assert event.data["question_ids"] == ["q01", "q03", "q05"]
    assert all(v.startswith("$argon2id$") for v in event.data["answer_verifiers"].values())
    assert event.metadata["correlation_id"] == rpc.correlation_id
    assert event.metadata["actor"] == {"kind": "customer", "id": "t"}
    # In the database the verifiers are ciphertext (personal field), the answers nowhere.
    with psycopg.connect(db.admin_url_for(settings, settings.database_name)) as c:
        raw = c.execute("SELECT data::text FROM eventstore.events WHERE stream_name = %s",
                        (f"secretq-{cn}",)).fetchone()[0]
    assert "$argon2id$" not in raw and "やまだ" not in raw and "$pii" in raw


def test_r_ini_1_register_twice_is_409_and_changes_nothing(rpc, store):
    cn = new_customer()
    rpc.secret_questions.register(cn, ANSWERS, True)
    with pytest.raises(Conflict) as exc:
        rpc.secret_questions.register(cn, ANSWERS, True)
    assert exc.value.code == "secret_questions_already_registered"
    assert exc.value.detail == "秘密の質問は既に登録されています。"
    assert len(stream(store, cn)) == 1


@pytest.mark.parametrize("answers,confirmed,code,field", [
    (ANSWERS[:2], True, "secret_questions_count", "answers"),
    ([ANSWERS[0], ANSWERS[0], ANSWERS[1]], True, "secret_questions_not_distinct", "answers"),
    ([ANSWERS[0], ANSWERS[1], {"question_id": "q05", "answer": "aomori"}], True,
     "secret_answer_not_full_width", "answers.2.answer"),
    ([ANSWERS[0], ANSWERS[1], {"question_id": "q05", "answer": "あおもり🍎"}], True,
     "secret_answer_invalid_character", "answers.2.answer"),
    (ANSWERS, False, "confirmation_required", "confirmed"),
    # wrong types cross RPC as validation errors too (the service loads its arguments)
    ("q01", True, "validation_failed", "answers"),
    (ANSWERS, "yes", "validation_failed", "confirmed"),
    (ANSWERS, 1, "validation_failed", "confirmed"),
    ([{"question_id": 1, "answer": "あ"}] + ANSWERS[1:], True, "validation_failed", "answers.0.question_id"),
    ([{"question_id": "q01"}] + ANSWERS[1:], True, "validation_failed", "answers.0.answer"),
])
def test_r_ini_1_invalid_registration_crosses_rpc_and_changes_nothing(rpc, store, answers, confirmed, code, field):
    cn = new_customer()
    with pytest.raises(ValidationFailed) as exc:
        rpc.secret_questions.register(cn, answers, confirmed)
    assert exc.value.code == code
    errors = exc.value.extra["errors"]
    for key in field.split("."):
        errors = errors[key]
    assert errors and all(isinstance(m, str) for m in errors)
    assert exc.value.detail   # Japanese, for the customer
    assert stream(store, cn) == []


def test_bad_customer_number_is_refused(rpc):
    with pytest.raises(ValidationFailed) as exc:
        rpc.secret_questions.status("12345")
    assert exc.value.extra["errors"]["customer_number"] == ["お客さま番号は数字10桁で入力してください。"]


def test_r_rba_1_pick_and_verify_exactly(rpc, store):
    cn = new_customer()
    rpc.secret_questions.register(cn, ANSWERS, True)
    q = rpc.secret_questions.pick_question(cn)
    assert q["id"] in {"q01", "q03", "q05"} and q["text"].endswith("？")
    right = {a["question_id"]: a["answer"] for a in ANSWERS}
    # 一字一句同じ: katakana for hiragana, a trailing full-width space, half-width — all wrong
    for wrong in ("ヤマダ", "やまだ\u3000", "yamada", "やまだ "):
        assert rpc.secret_questions.verify_answer(cn, "q01", wrong) is False
    assert rpc.secret_questions.verify_answer(cn, "q01", right["q01"]) is True
    types = [e.type for e in stream(store, cn)]
    assert types == ["secret_questions_registered"] + ["secret_answer_failed"] * 4 + ["secret_answer_verified"]
    # no answer, right or wrong, is ever written
    assert all("やまだ" not in repr(e.data) and "yamada" not in repr(e.data) for e in stream(store, cn))


def test_r_rba_1_unregistered_customer_has_no_question(rpc):
    with pytest.raises(NotFound) as exc:
        rpc.secret_questions.pick_question(new_customer())
    assert exc.value.code == "secret_questions_not_registered"


def test_r_rba_2_five_wrong_answers_lock_until_operator_unlocks(rpc, operator, store):
    cn = new_customer()
    rpc.secret_questions.register(cn, ANSWERS, True)
    for _ in range(4):
        assert rpc.secret_questions.verify_answer(cn, "q03", "西小学校") is False
    with pytest.raises(Locked) as exc:
        rpc.secret_questions.verify_answer(cn, "q03", "西小学校")
    assert exc.value.code == "credential_locked"
    assert exc.value.extra == {"credential": "secret_answers"}
    assert "ご利用を停止しています" in exc.value.detail and "ご連絡ください" in exc.value.detail
    # locked: even the right answer is refused, and nothing more is written
    with pytest.raises(Locked):
        rpc.secret_questions.verify_answer(cn, "q03", "東小学校")
    with pytest.raises(Locked):
        rpc.secret_questions.pick_question(cn)
    assert rpc.secret_questions.status(cn) == {"registered": True, "locked": True}
    events = stream(store, cn)
    assert [e.type for e in events][-2:] == ["secret_answer_failed", "secret_answers_locked"]
    assert len(events) == 7
    # only an operator lifts it, and the event names the operator and the reason
    with pytest.raises(Forbidden):
        rpc.secret_questions.unlock(cn)
    assert operator.secret_questions.unlock(cn) == {"events": ["secret_answers_unlocked"]}
    unlocked = stream(store, cn)[-1]
    assert unlocked.metadata["actor"] == {"kind": "operator", "id": "op-001"}
    assert unlocked.metadata["reason"] == "本人確認書類による申出"
    assert rpc.secret_questions.verify_answer(cn, "q03", "東小学校") is True


def test_r_ini_1_operator_reset_allows_registering_again(rpc, operator):
    cn = new_customer()
    rpc.secret_questions.register(cn, ANSWERS, True)
    with pytest.raises(Forbidden):
        rpc.secret_questions.reset(cn)
    operator.secret_questions.reset(cn)
    assert rpc.secret_questions.status(cn)["registered"] is False
    other = [{"question_id": "q02", "answer": "ぽち"}, {"question_id": "q04", "answer": "たろう"},
             {"question_id": "q06", "answer": "はなこ"}]
    rpc.secret_questions.register(cn, other, True)
    assert rpc.secret_questions.verify_answer(cn, "q02", "ぽち") is True
    with pytest.raises(ValidationFailed):
        rpc.secret_questions.verify_answer(cn, "q01", "やまだ")   # no longer theirs


def test_r_ini_1_concurrent_registrations_exactly_one_wins(rpc_config, store):
    cn = new_customer()

    def attempt(_):
        with ClusterRpcProxy(rpc_config, timeout=30) as p:
            try:
                return p.secret_questions.register(cn, ANSWERS, True)
            except Conflict as exc:
                return exc.code

    results = list(eventlet.GreenPool(4).imap(attempt, range(4)))
    assert results.count({"registered": True}) == 1
    assert results.count("secret_questions_already_registered") == 3
    assert len(stream(store, cn)) == 1


def test_r_rba_2_concurrent_wrong_answers_are_all_counted(rpc_config, store):
    cn = new_customer()
    with ClusterRpcProxy(rpc_config, timeout=30) as p:
        p.secret_questions.register(cn, ANSWERS, True)

    def attempt(_):
        with ClusterRpcProxy(rpc_config, timeout=30) as p:
            try:
                return p.secret_questions.verify_answer(cn, "q01", "すずき")
            except Locked:
                return "locked"

    results = list(eventlet.GreenPool(6).imap(attempt, range(6)))
    assert results.count(False) == 4 and results.count("locked") == 2
    types = [e.type for e in stream(store, cn)]
    assert types.count("secret_answer_failed") == 5 and types.count("secret_answers_locked") == 1
    fails = [e.data["consecutive_failures"] for e in stream(store, cn) if e.type == "secret_answer_failed"]
    assert fails == [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def short_lock_config(settings):
    """A second container, configured like an operator might: 2 wrong answers lock, and the
    lock is released by time after 1 s (LOCKOUT_THRESHOLD, LOCK_RELEASE_SECONDS)."""
    with secret_questions_service(settings, max_workers=4, LOCKOUT_THRESHOLD=2, LOCK_RELEASE_SECONDS=1) as config:
        yield config


def test_r_rba_2_configured_threshold_and_timed_release(short_lock_config, store):
    cn = new_customer()
    with ClusterRpcProxy(short_lock_config, timeout=30) as p:
        p.secret_questions.register(cn, ANSWERS, True)
        assert p.secret_questions.verify_answer(cn, "q05", "弘前") is False
        with pytest.raises(Locked):
            p.secret_questions.verify_answer(cn, "q05", "弘前")
        # The release is due one second after the lock (a wait for a configured release,
        # not a speed assertion).
        eventlet.sleep(1.2)
        assert p.secret_questions.pick_question(cn)["id"] == "q05"   # the one answered wrongly
        assert p.secret_questions.verify_answer(cn, "q05", "青森") is True
    types = [e.type for e in stream(store, cn)]
    assert types[-2:] == ["secret_answers_unlocked", "secret_answer_verified"]
    assert stream(store, cn)[-2].data["release"] == "timed_release"
