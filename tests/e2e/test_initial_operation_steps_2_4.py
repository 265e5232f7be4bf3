"""Smartphone guide steps 2–4 and the login after migration, over HTTP against the running
system (``system``: `tsunagi run` with every service, the relay and the gateway).

SPEC R-LEG-3 (legacy login), R-INI-1 (secret questions), R-INI-2 (password change), R-INI-9
(login), R-RBA-1 (step-up with a secret question), R-RBA-2 (lockouts). Legacy customers are
seeded through ``identity.import_legacy`` over RPC with pbkdf2 verifiers computed here.

"Nothing changes" is checked as: the number of events in the customer's streams
(``customer-<n>``, ``secretq-<n>``) is the same before and after the refused request.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import uuid

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from identity.domain import messages as idmsg
from services.config import Settings

LEGACY_PASSWORD = "Michi2024Ab"
LEGACY_PIN = "Pin4821x"
NEW_LOGIN = "Tsunagi2025X"
NEW_CONFIRMATION = "kakunin99Z"
PHONE = "090-1234-5678"
ANSWERS = [{"question_id": "q01", "answer": "やまだ"},
           {"question_id": "q03", "answer": "東小学校"},
           {"question_id": "q05", "answer": "青森　りんご"}]
RIGHT = {a["question_id"]: a["answer"] for a in ANSWERS}
PASSWORD_BODY = {
    "current_login_password": LEGACY_PASSWORD, "new_login_password": NEW_LOGIN,
    "new_login_password_confirmation": NEW_LOGIN, "current_confirmation_password": LEGACY_PIN,
    "new_confirmation_password": NEW_CONFIRMATION,
    "new_confirmation_password_confirmation": NEW_CONFIRMATION}
SQLISH = "0123456789' OR '1'='1'; DROP TABLE eventstore.events; --"
SQLISH_SHORT = "1' OR '1'='1'--"

LOCKED_SECRET = ("秘密の質問の回答を所定の回数以上誤って入力されたため、ご利用を停止しています。"
                 "お手数ですが、お取引店またはネットバンキング共同受付センター（0120-892-548、9:00～21:00）"
                 "にご連絡ください。")


# -- plumbing ---------------------------------------------------------------------------------

def pbkdf2(password: str, iterations: int = 1000) -> str:
    salt = base64.b64encode(os.urandom(9)).decode()
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(key).decode()}"


@pytest.fixture(scope="module")
def rpc(system):
    with ClusterRpcProxy({"AMQP_URI": Settings().amqp_uri, "serializer": "json"}, timeout=60) as proxy:
        yield proxy


class Api:
    def __init__(self, base_url: str):
        self.base = base_url
        self.http = requests.Session()

    def call(self, method: str, path: str, body=None, *, token: str | None = None,
             device: str | None = None, data: bytes | None = None,
             content_type: str = "application/json", request_id: str | None = None):
        headers = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if device:
            headers["X-Device-ID"] = device
        if request_id:
            headers["X-Request-ID"] = request_id
        if body is not None or data is not None:
            headers["Content-Type"] = content_type
        if data is None and body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
        return self.http.request(method, self.base + path, data=data, headers=headers, timeout=60)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)


@pytest.fixture(scope="module")
def api(system):
    return Api(system.base_url)


class Customer:
    def __init__(self, number: str, api: Api, store):
        self.number = number
        self.api = api
        self.store = store
        self.device = f"dev-{uuid.uuid4().hex}"
        self.token: str | None = None

    def event_count(self) -> int:
        return (len(self.store.read_stream(f"customer-{self.number}"))
                + len(self.store.read_stream(f"secretq-{self.number}")))

    def types(self, category: str = "customer") -> list[str]:
        return [e.type for e in self.store.read_stream(f"{category}-{self.number}")]

    # the steps, each asserting success
    def legacy_login(self, password: str = LEGACY_PASSWORD):
        r = self.api.post("/api/v1/migration/login", {"customer_number": self.number, "password": password},
                          device=self.device)
        assert r.status_code == 200, r.text
        self.token = r.json()["session_token"]
        return r.json()

    def register_questions(self, answers=ANSWERS):
        r = self.api.post("/api/v1/migration/secret-questions", {"answers": answers, "confirmed": True},
                          token=self.token, device=self.device)
        assert r.status_code == 200, r.text
        return r.json()

    def change_passwords(self):
        r = self.api.post("/api/v1/migration/password", PASSWORD_BODY, token=self.token, device=self.device)
        assert r.status_code == 200, r.text
        return r.json()

    def login(self, device: str | None = None, password: str = NEW_LOGIN):
        return self.api.post("/api/v1/login", {"login_id": self.number, "password": password},
                             device=device or self.device)


def new_number() -> str:
    return f"{random.randrange(10**9, 10**10):010d}"


@pytest.fixture(scope="module")
def seed(rpc, api, store):
    def make() -> Customer:
        number = new_number()
        [result] = rpc.identity.import_legacy([{
            "line": 1, "customer_number": number, "login_password_verifier": pbkdf2(LEGACY_PASSWORD),
            "confirmation_pin_verifier": pbkdf2(LEGACY_PIN), "phones": PHONE, "email": ""}])
        assert result["status"] == "imported", result
        return Customer(number, api, store)
    return make


@pytest.fixture
def at_step_3(seed):
    c = seed()
    assert c.legacy_login()["next_step"] == "secret_questions"
    return c


@pytest.fixture
def at_step_4(at_step_3):
    at_step_3.register_questions()
    return at_step_3


@pytest.fixture
def migrated(at_step_4):
    at_step_4.change_passwords()
    return at_step_4


# Refused input changes nothing, so the tables of bad input share one customer per step (each
# case still checks that the customer's event count did not move).

@pytest.fixture(scope="module")
def shared_step_3(seed):
    c = seed()
    c.legacy_login()
    return c


@pytest.fixture(scope="module")
def shared_step_4(seed):
    c = seed()
    c.legacy_login()
    c.register_questions()
    return c


@pytest.fixture(scope="module")
def shared_migrated(seed):
    c = seed()
    c.legacy_login()
    c.register_questions()
    c.change_passwords()
    return c


def problem(r, status: int, code: str, detail: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["correlation_id"] == r.headers["X-Request-ID"]
    assert not body["detail"].isascii(), body     # Japanese, for the customer
    if detail is not None:
        assert body["detail"] == detail, body
    return body


def at(errors: dict, path: str):
    for key in path.split("."):
        errors = errors[key]
    return errors


# -- the whole walk ---------------------------------------------------------------------------

def test_r_leg_3_r_ini_1_r_ini_2_r_ini_9_r_rba_1_steps_2_to_4_then_login_with_step_up(seed, api):
    c = seed()
    # 手順3 catalogue (public)
    r = api.get("/api/v1/secret-questions/catalogue")
    assert r.status_code == 200
    catalogue = r.json()
    assert len(catalogue) >= 10 and {"id": "q01", "text": "母親の旧姓は？"} in catalogue

    # 手順2 legacy login; the correlation id of the request reaches the event's metadata
    rid = f"e2e-{uuid.uuid4().hex}"
    r = api.post("/api/v1/migration/login", {"customer_number": c.number, "password": LEGACY_PASSWORD},
                 device=c.device, request_id=rid)
    assert r.status_code == 200, r.text
    assert r.json()["next_step"] == "secret_questions"
    c.token = r.json()["session_token"]
    ev = c.store.read_stream(f"customer-{c.number}")[-1]
    assert ev.type == "legacy_login_succeeded" and ev.metadata["correlation_id"] == rid

    # step 4 cannot be done before step 3
    before = c.event_count()
    problem(api.post("/api/v1/migration/password", PASSWORD_BODY, token=c.token, device=c.device),
            409, "step_not_available")
    assert c.event_count() == before

    # 手順3 secret questions
    assert c.register_questions() == {"next_step": "password_change"}
    assert c.types("secretq") == ["secret_questions_registered"]
    # ... and cannot be repeated
    before = c.event_count()
    body = problem(api.post("/api/v1/migration/secret-questions", {"answers": ANSWERS, "confirmed": True},
                            token=c.token), 409, "step_not_available")
    assert body["next_step"] == "password_change"
    assert c.event_count() == before

    # registered phones (for step 5), masked
    r = api.get("/api/v1/me/phones", token=c.token)
    assert r.status_code == 200
    assert [p["masked"] for p in r.json()] == ["*****5678"] and r.json()[0]["phone_id"]

    # 手順4 password change
    assert c.change_passwords() == {"next_step": "otp_application"}
    assert "passwords_changed" in c.types()
    # neither step can be repeated now
    problem(api.post("/api/v1/migration/password", PASSWORD_BODY, token=c.token), 409, "step_not_available")
    problem(api.post("/api/v1/migration/secret-questions", {"answers": ANSWERS, "confirmed": True},
                     token=c.token), 409, "step_not_available")
    # the legacy password never works again; the customer is sent to the normal login
    problem(api.post("/api/v1/migration/login", {"customer_number": c.number, "password": LEGACY_PASSWORD}),
            409, "already_migrated", idmsg.ALREADY_MIGRATED)

    # login (R-INI-9) from the device of the initial operation: no challenge
    r = c.login()
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"session_token"}
    customer_token = r.json()["session_token"]
    assert api.get("/api/v1/me/phones", token=customer_token).status_code == 200
    # a customer session is not a migration session
    problem(api.post("/api/v1/migration/secret-questions", {"answers": ANSWERS, "confirmed": True},
                     token=customer_token), 403, "forbidden")

    # a new device: step-up with one of the three questions (R-RBA-1)
    other = f"dev-{uuid.uuid4().hex}"
    r = c.login(device=other)
    assert r.status_code == 200, r.text
    challenge = r.json()
    assert challenge["challenge"] == "secret_question"
    assert challenge["question"]["id"] in RIGHT and challenge["question"]["text"].endswith("？")
    assert "session_token" not in challenge
    # the answer must be 一字一句同じ: katakana instead of hiragana is wrong
    qid = challenge["question"]["id"]
    wrong = "ヤマダ" if qid == "q01" else RIGHT[qid] + "町"
    r = api.post("/api/v1/login/challenge", {"challenge_id": challenge["challenge_id"], "answer": wrong},
                 device=other)
    body = problem(r, 401, "wrong_answer")
    if not body.get("retry"):
        challenge = c.login(device=other).json()
        qid = challenge["question"]["id"]
    # the wrongly answered question is asked again (no shopping for an easier one)
    assert challenge["question"]["id"] == qid
    r = api.post("/api/v1/login/challenge", {"challenge_id": challenge["challenge_id"], "answer": RIGHT[qid]},
                 device=other)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"session_token"}
    # the environment is remembered
    r = c.login(device=other)
    assert r.status_code == 200 and set(r.json()) == {"session_token"}, r.text
    assert c.types("secretq")[-2:] == ["secret_answer_failed", "secret_answer_verified"]
    assert {"login_challenged", "challenge_passed", "login_succeeded"} <= set(c.types())


def test_r_ini_1_answers_may_use_every_kind_of_full_width_character(at_step_3):
    answers = [{"question_id": "q02", "answer": "ＰＯＣＨＩ２号"},
               {"question_id": "q08", "answer": "髙橋𠮷郎"},
               {"question_id": "q12", "answer": "（株）青森①"}]
    assert at_step_3.register_questions(answers) == {"next_step": "password_change"}


# -- step 3: every rule with its message; nothing changes ------------------------------------------

def _answers(third: str | None = None):
    answers = [dict(a) for a in ANSWERS]
    if third is not None:
        answers[2]["answer"] = third
    return answers


SECRET_QUESTION_CASES = [
    # (name, body, status, code, error field or None, the Japanese message)
    ("two questions", {"answers": ANSWERS[:2], "confirmed": True}, 422, "secret_questions_count", "answers",
     "秘密の質問は3つ選択し、それぞれに回答を入力してください。"),
    ("four questions", {"answers": ANSWERS + [{"question_id": "q07", "answer": "くるま"}], "confirmed": True},
     422, "secret_questions_count", "answers", "秘密の質問は3つ選択し、それぞれに回答を入力してください。"),
    ("the same question twice", {"answers": [ANSWERS[0], ANSWERS[0], ANSWERS[1]], "confirmed": True},
     422, "secret_questions_not_distinct", "answers", "秘密の質問はそれぞれ異なるものを3つ選択してください。"),
    ("question not in the catalogue", {"answers": [ANSWERS[0], ANSWERS[1], {"question_id": "q99", "answer": "あ"}],
                                       "confirmed": True},
     422, "secret_question_unknown", "answers.2.question_id",
     "選択された秘密の質問が正しくありません。一覧から選択してください。"),
    ("SQL-ish question id", {"answers": [ANSWERS[0], ANSWERS[1], {"question_id": "q1' OR '1'='1", "answer": "あ"}],
                             "confirmed": True},
     422, "secret_question_unknown", "answers.2.question_id",
     "選択された秘密の質問が正しくありません。一覧から選択してください。"),
    ("empty answer", {"answers": _answers(""), "confirmed": True}, 422, "secret_answer_required",
     "answers.2.answer", "回答3を入力してください。"),
    ("11 full-width characters", {"answers": _answers("あいうえおかきくけこさ"), "confirmed": True},
     422, "secret_answer_too_long", "answers.2.answer", "回答3は全角10文字以内で入力してください。"),
    ("half-width answer", {"answers": _answers("aomori"), "confirmed": True}, 422, "secret_answer_not_full_width",
     "answers.2.answer", "回答3は全角文字で入力してください。半角文字は使用できません。"),
    ("half-width katakana", {"answers": _answers("ｱｵﾓﾘ"), "confirmed": True}, 422, "secret_answer_not_full_width",
     "answers.2.answer", "回答3は全角文字で入力してください。半角文字は使用できません。"),
    ("half-width space", {"answers": _answers("青森 りんご"), "confirmed": True}, 422, "secret_answer_not_full_width",
     "answers.2.answer", "回答3は全角文字で入力してください。半角文字は使用できません。"),
    ("SQL-ish answer", {"answers": _answers("'; DROP TABLE x;--"), "confirmed": True}, 422,
     "secret_answer_not_full_width", "answers.2.answer",
     "回答3は全角文字で入力してください。半角文字は使用できません。"),
    ("emoji", {"answers": _answers("りんご🍎"), "confirmed": True}, 422, "secret_answer_invalid_character",
     "answers.2.answer", "回答3に使用できない文字（絵文字・制御文字など）が含まれています。"),
    ("control character", {"answers": _answers("りん\u0000ご"), "confirmed": True}, 422,
     "secret_answer_invalid_character", "answers.2.answer",
     "回答3に使用できない文字（絵文字・制御文字など）が含まれています。"),
    ("zero-width joiner", {"answers": _answers("りん\u200dご"), "confirmed": True}, 422,
     "secret_answer_invalid_character", "answers.2.answer",
     "回答3に使用できない文字（絵文字・制御文字など）が含まれています。"),
    ("「確認しました。」 not ticked", {"answers": ANSWERS, "confirmed": False}, 422, "confirmation_required",
     "confirmed", "回答内容をご確認のうえ、「確認しました。」にチェックしてください。"),
    # shapes and types (the gateway's schema)
    ("answers missing", {"confirmed": True}, 422, "validation_failed", "answers", "必須項目です。"),
    ("confirmed missing", {"answers": ANSWERS}, 422, "validation_failed", "confirmed", "必須項目です。"),
    ("confirmed as a string", {"answers": ANSWERS, "confirmed": "true"}, 422, "validation_failed", "confirmed",
     "true または false で指定してください。"),
    ("confirmed as 1", {"answers": ANSWERS, "confirmed": 1}, 422, "validation_failed", "confirmed",
     "true または false で指定してください。"),
    ("answers not a list", {"answers": "q01=やまだ", "confirmed": True}, 422, "validation_failed", "answers",
     "配列で指定してください。"),
    ("answer item not an object", {"answers": ["やまだ", ANSWERS[1], ANSWERS[2]], "confirmed": True}, 422,
     "validation_failed", "answers.0._schema", "オブジェクトで指定してください。"),
    ("answer as a number", {"answers": [{"question_id": "q01", "answer": 123}, ANSWERS[1], ANSWERS[2]],
                            "confirmed": True}, 422, "validation_failed", "answers.0.answer", "文字列で入力してください。"),
    ("answer null", {"answers": [{"question_id": "q01", "answer": None}, ANSWERS[1], ANSWERS[2]],
                     "confirmed": True}, 422, "validation_failed", "answers.0.answer", "値を入力してください。"),
    ("question id missing", {"answers": [{"answer": "やまだ"}, ANSWERS[1], ANSWERS[2]], "confirmed": True}, 422,
     "validation_failed", "answers.0.question_id", "必須項目です。"),
    ("question id as a number", {"answers": [{"question_id": 1, "answer": "やまだ"}, ANSWERS[1], ANSWERS[2]],
                                 "confirmed": True}, 422, "validation_failed", "answers.0.question_id",
     "文字列で入力してください。"),
    ("over-long answer", {"answers": _answers("あ" * 65), "confirmed": True}, 422, "validation_failed",
     "answers.2.answer", "64文字以内で入力してください。"),
    ("many answers", {"answers": ANSWERS * 4, "confirmed": True}, 422, "validation_failed", "answers",
     "10件以内で指定してください。"),
    ("unknown field", {"answers": ANSWERS, "confirmed": True, "customer_number": "0000000001"}, 422,
     "validation_failed", "customer_number", "この項目は指定できません。"),
    ("body is a list", [ANSWERS], 422, "validation_failed", "_schema", "オブジェクトで指定してください。"),
]


@pytest.mark.parametrize("name,body,status,code,field,message", SECRET_QUESTION_CASES,
                         ids=[c[0] for c in SECRET_QUESTION_CASES])
def test_r_ini_1_secret_question_rules_and_bad_input_change_nothing(shared_step_3, name, body, status, code,
                                                                    field, message):
    c = shared_step_3
    before = c.event_count()
    r = c.api.post("/api/v1/migration/secret-questions", body, token=c.token)
    out = problem(r, status, code)
    assert message in at(out["errors"], field), out
    if code != "validation_failed":
        assert out["detail"] == message
    assert c.event_count() == before
    assert c.types("secretq") == []


def test_bad_requests_of_every_kind_are_problems_and_change_nothing(at_step_3, api):
    c = at_step_3
    before = c.event_count()
    url = "/api/v1/migration/secret-questions"
    problem(api.post(url, data=b"{not json", token=c.token), 400, "invalid_json")
    problem(api.post(url, data='{"answers": "\u3042"}'.encode("shift_jis"), token=c.token), 400, "invalid_encoding")
    problem(api.post(url, data=b'{"answers": [], "confirmed": true}', token=c.token, content_type="text/plain"),
            415, "unsupported_media_type")
    problem(api.post(url, data=b'{"a": "' + b"x" * 70000 + b'"}', token=c.token), 413, "payload_too_large")
    problem(api.post(url, {"answers": ANSWERS, "confirmed": True}), 401, "unauthenticated")
    problem(api.post(url, {"answers": ANSWERS, "confirmed": True}, token="x" * 43), 401, "unauthenticated")
    problem(api.post(url, {"answers": ANSWERS, "confirmed": True}, token=SQLISH), 401, "unauthenticated")
    problem(api.get("/api/v1/me/phones"), 401, "unauthenticated")
    assert c.event_count() == before


# -- step 2: legacy login -------------------------------------------------------------------------

LEGACY_LOGIN_CASES = [
    ("customer number missing", {"password": LEGACY_PASSWORD}, 422, "validation_failed", "customer_number",
     "必須項目です。"),
    ("password missing", {"customer_number": "{n}"}, 422, "validation_failed", "password", "必須項目です。"),
    ("customer number as a number", {"customer_number": 123456789, "password": LEGACY_PASSWORD}, 422,
     "validation_failed", "customer_number", "文字列で入力してください。"),
    ("9 digits", {"customer_number": "012345678", "password": LEGACY_PASSWORD}, 422, "validation_failed",
     "customer_number", idmsg.CUSTOMER_NUMBER_FORMAT),
    ("full-width digits", {"customer_number": "０１２３４５６７８９", "password": LEGACY_PASSWORD}, 422,
     "validation_failed", "customer_number", idmsg.CUSTOMER_NUMBER_FORMAT),
    ("SQL-ish customer number", {"customer_number": SQLISH_SHORT, "password": LEGACY_PASSWORD}, 422,
     "validation_failed", "customer_number", idmsg.CUSTOMER_NUMBER_FORMAT),
    ("long SQL-ish customer number", {"customer_number": SQLISH, "password": LEGACY_PASSWORD}, 422,
     "validation_failed", "customer_number", idmsg.TOO_LONG.format(label="お客さま番号")),
    ("NUL in customer number", {"customer_number": "012345678\u0000", "password": LEGACY_PASSWORD}, 422,
     "validation_failed", "customer_number", "使用できない文字が含まれています。"),
    ("over-long password", {"customer_number": "{n}", "password": "A" * 200}, 422, "validation_failed",
     "password", "128文字以内で入力してください。"),
    ("emoji password", {"customer_number": "{n}", "password": "Pass🔑word"}, 422, "validation_failed",
     "password", idmsg.PASSWORD_CHARSET.format(label="ログインパスワード")),
]


@pytest.mark.parametrize("name,body,status,code,field,message", LEGACY_LOGIN_CASES,
                         ids=[c[0] for c in LEGACY_LOGIN_CASES])
def test_r_leg_3_legacy_login_bad_input_changes_nothing(seed, name, body, status, code, field, message):
    c = seed()
    body = {k: (v.replace("{n}", c.number) if isinstance(v, str) else v) for k, v in body.items()}
    before = c.event_count()
    out = problem(c.api.post("/api/v1/migration/login", body), status, code)
    assert message in out["errors"][field], out
    assert c.event_count() == before


def test_r_rba_2_legacy_password_lockout_and_unknown_numbers_answer_alike(seed, api):
    c = seed()
    unknown = new_number()
    for attempt in range(1, 6):
        mine = api.post("/api/v1/migration/login", {"customer_number": c.number, "password": "Wrong123a"})
        nobody = api.post("/api/v1/migration/login", {"customer_number": unknown, "password": "Wrong123a"})
        if attempt < 5:
            a = problem(mine, 401, "invalid_credentials", idmsg.LEGACY_INVALID_CREDENTIALS)
            b = problem(nobody, 401, "invalid_credentials", idmsg.LEGACY_INVALID_CREDENTIALS)
        else:
            a = problem(mine, 423, "credential_locked", idmsg.LOCKED["legacy_password"])
            b = problem(nobody, 423, "credential_locked", idmsg.LOCKED["legacy_password"])
        a.pop("correlation_id"), b.pop("correlation_id")
        assert a == b          # a lock does not tell whether a customer number exists
    # locked: the right password is refused too, and nothing is written for it
    before = c.event_count()
    problem(api.post("/api/v1/migration/login", {"customer_number": c.number, "password": LEGACY_PASSWORD}),
            423, "credential_locked")
    assert c.event_count() == before
    assert c.types().count("legacy_login_failed") == 5 and "credential_locked" in c.types()


# -- step 4: password rules (identity's rules, through the gateway) ----------------------------------

def _pw(**changes):
    return {**PASSWORD_BODY, **changes}


PASSWORD_CASES = [
    ("new login password too short", _pw(new_login_password="Ab1", new_login_password_confirmation="Ab1"),
     "new_login_password", idmsg.NEW_PASSWORD_FORMAT.format(label="新しいログインパスワード")),
    ("new login password too long", _pw(new_login_password="Abcdefghijk12", new_login_password_confirmation="Abcdefghijk12"),
     "new_login_password", idmsg.NEW_PASSWORD_FORMAT.format(label="新しいログインパスワード")),
    ("new login password full-width", _pw(new_login_password="Ａｂｃｄｅｆ１", new_login_password_confirmation="Ａｂｃｄｅｆ１"),
     "new_login_password", idmsg.NEW_PASSWORD_FORMAT.format(label="新しいログインパスワード")),
    ("new login password not mixed case", _pw(new_login_password="tsunagi2025", new_login_password_confirmation="tsunagi2025"),
     "new_login_password", idmsg.LOGIN_PASSWORD_MIXED_CASE),
    ("re-entry does not match", _pw(new_login_password_confirmation="Tsunagi2025Y"),
     "new_login_password_confirmation",
     idmsg.CONFIRMATION_MISMATCH.format(label="新しいログインパスワード（再入力）")),
    ("confirmation re-entry does not match", _pw(new_confirmation_password_confirmation="kakunin98Z"),
     "new_confirmation_password_confirmation",
     idmsg.CONFIRMATION_MISMATCH.format(label="新しい確認用パスワード（再入力）")),
    ("new login = current", _pw(new_login_password=LEGACY_PASSWORD, new_login_password_confirmation=LEGACY_PASSWORD),
     "new_login_password", idmsg.SAME_AS_CURRENT_LOGIN),
    ("new confirmation = current", _pw(new_confirmation_password=LEGACY_PIN,
                                       new_confirmation_password_confirmation=LEGACY_PIN),
     "new_confirmation_password", idmsg.SAME_AS_CURRENT_CONFIRMATION),
    ("new login = new confirmation", _pw(new_confirmation_password=NEW_LOGIN,
                                         new_confirmation_password_confirmation=NEW_LOGIN),
     "new_confirmation_password", idmsg.LOGIN_EQUALS_CONFIRMATION),
    ("empty current password", _pw(current_login_password=""), "current_login_password",
     idmsg.REQUIRED.format(label="現在のログインパスワード")),
    ("field missing (gateway)", {k: v for k, v in PASSWORD_BODY.items() if k != "new_confirmation_password"},
     "new_confirmation_password", "必須項目です。"),
    ("field as a number (gateway)", _pw(new_login_password=12345678), "new_login_password", "文字列で入力してください。"),
    ("over-long (gateway)", _pw(current_login_password="A" * 129), "current_login_password",
     "128文字以内で入力してください。"),
    ("SQL-ish password", _pw(new_login_password="a' OR 1=1--", new_login_password_confirmation="a' OR 1=1--"),
     "new_login_password", idmsg.NEW_PASSWORD_FORMAT.format(label="新しいログインパスワード")),
]


@pytest.mark.parametrize("name,body,field,message", PASSWORD_CASES, ids=[c[0] for c in PASSWORD_CASES])
def test_r_ini_2_password_rules_change_nothing(shared_step_4, name, body, field, message):
    c = shared_step_4
    before = c.event_count()
    out = problem(c.api.post("/api/v1/migration/password", body, token=c.token), 422, "validation_failed")
    assert message in out["errors"][field], out
    assert c.event_count() == before
    assert "passwords_changed" not in c.types()


def test_r_ini_2_wrong_current_password_is_counted(at_step_4):
    c = at_step_4
    r = c.api.post("/api/v1/migration/password", _pw(current_login_password="Wrong999a"), token=c.token)
    out = problem(r, 422, "current_password_incorrect", idmsg.CURRENT_LOGIN_WRONG)
    assert out["errors"]["current_login_password"] == [idmsg.CURRENT_LOGIN_WRONG]
    assert c.types()[-1] == "credential_check_failed"
    assert c.change_passwords() == {"next_step": "otp_application"}


# -- login after migration ----------------------------------------------------------------------------

LOGIN_CASES = [
    ("login id missing", {"password": NEW_LOGIN}, "login_id", "必須項目です。"),
    ("password null", {"login_id": "{n}", "password": None}, "password", "値を入力してください。"),
    ("login id as a list", {"login_id": ["{n}"], "password": NEW_LOGIN}, "login_id", "文字列で入力してください。"),
    ("SQL-ish login id", {"login_id": SQLISH_SHORT, "password": NEW_LOGIN}, "login_id", idmsg.LOGIN_ID_FORMAT),
    ("long SQL-ish login id", {"login_id": SQLISH, "password": NEW_LOGIN}, "login_id",
     idmsg.TOO_LONG.format(label="ログインID")),
    ("over-long password", {"login_id": "{n}", "password": "a" * 500}, "password", "128文字以内で入力してください。"),
    ("unknown field", {"login_id": "{n}", "password": NEW_LOGIN, "admin": True}, "admin", "この項目は指定できません。"),
]


@pytest.mark.parametrize("name,body,field,message", LOGIN_CASES, ids=[c[0] for c in LOGIN_CASES])
def test_r_ini_9_login_bad_input_changes_nothing(shared_migrated, name, body, field, message):
    c = shared_migrated
    body = {k: (v.replace("{n}", c.number) if isinstance(v, str) else
                [x.replace("{n}", c.number) for x in v] if isinstance(v, list) else v) for k, v in body.items()}
    before = c.event_count()
    out = problem(c.api.post("/api/v1/login", body), 422, "validation_failed")
    assert message in out["errors"][field], out
    assert c.event_count() == before


def test_r_ini_9_login_wrong_password_and_lockout(migrated):
    c = migrated
    for _ in range(4):
        problem(c.login(password="Wrong999Ab"), 401, "invalid_credentials", idmsg.INVALID_CREDENTIALS)
    problem(c.login(password="Wrong999Ab"), 423, "credential_locked", idmsg.LOCKED["login_password"])
    problem(c.login(), 423, "credential_locked")


def test_r_rba_1_challenge_bad_input(migrated, api):
    c = migrated
    other = f"dev-{uuid.uuid4().hex}"
    challenge = c.login(device=other).json()
    before = c.event_count()
    url = "/api/v1/login/challenge"
    out = problem(api.post(url, {"challenge_id": challenge["challenge_id"]}, device=other), 422, "validation_failed")
    assert out["errors"]["answer"] == ["必須項目です。"]
    out = problem(api.post(url, {"challenge_id": 5, "answer": "やまだ"}, device=other), 422, "validation_failed")
    assert out["errors"]["challenge_id"] == ["文字列で入力してください。"]
    out = problem(api.post(url, {"challenge_id": challenge["challenge_id"], "answer": "あ" * 65}, device=other),
                  422, "validation_failed")
    assert out["errors"]["answer"] == ["64文字以内で入力してください。"]
    problem(api.post(url, {"challenge_id": SQLISH, "answer": "やまだ"}, device=other), 422, "challenge_invalid")
    # someone else's environment cannot answer the challenge
    problem(api.post(url, {"challenge_id": challenge["challenge_id"], "answer": "やまだ"},
                     device=f"dev-{uuid.uuid4().hex}"), 401, "challenge_invalid")
    problem(api.post(url, {"challenge_id": str(uuid.uuid4()), "answer": "やまだ"}, device=other),
            401, "challenge_invalid")
    assert c.event_count() == before


def test_r_rba_2_secret_answers_lock_after_five_wrong_answers(migrated, api):
    c = migrated
    other = f"dev-{uuid.uuid4().hex}"
    challenge = None
    for attempt in range(1, 6):
        if challenge is None:
            r = c.login(device=other)
            assert r.status_code == 200, r.text
            challenge = r.json()
        r = api.post("/api/v1/login/challenge", {"challenge_id": challenge["challenge_id"], "answer": "ちがう"},
                     device=other)
        if attempt < 5:
            body = problem(r, 401, "wrong_answer")
            if not body.get("retry"):
                challenge = None
        else:
            body = problem(r, 423, "credential_locked", LOCKED_SECRET)
            assert body["credential"] == "secret_answers"
    assert c.types("secretq")[-2:] == ["secret_answer_failed", "secret_answers_locked"]
    # locked: a new unusual login cannot be stepped up any more ...
    problem(c.login(device=f"dev-{uuid.uuid4().hex}"), 423, "credential_locked", LOCKED_SECRET)
    # ... while the known device still logs in (only the secret answers are locked)
    r = c.login()
    assert r.status_code == 200 and "session_token" in r.json(), r.text
