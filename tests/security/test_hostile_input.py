"""Hand-written hostile requests against the running system (issue 7 item 3; R-PLT-3, R-INI-*).

Oversized bodies (``MAX_BODY``, by Content-Length and chunked), wrong content types, invalid
UTF-8, full-width digits where half-width ones are required, control characters, very long
headers, forged and replayed telephony webhooks, another customer's session, and sessions of
the wrong kind. Every refusal is a problem+json with a Japanese ``detail`` (``assert_problem``)
unless the HTTP server itself refuses the request before the gateway sees it (over-long
request or header lines: eventlet answers 4xx itself); never a 5xx, and nothing changes.
"""
from __future__ import annotations

import http.client
import json
import time
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from contracts import phone_auth as pa
from contracts import telephony
from gateway.http import MAX_BODY
from gateway.routes_telephony import DEV_AUTH_TOKEN, PATH as WEBHOOK_PATH, twilio_signature
from identity.domain import messages as idmsg
from tests.e2e.test_initial_operation_full import call as webhook_call
from tests.e2e.test_initial_operation_full import random_mobile
from tests.security.common import (ACTIVATION_PASSWORD, ANSWERS, LEGACY_PASSWORD, NEW_CONFIRMATION, NEW_LOGIN,
                                   PASSWORD_BODY, Reply, assert_problem)


class Raw:
    """Byte-exact requests (http.client): chunked bodies, odd headers, broken encodings."""

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port

    def send(self, method: str, path: str, body=None, headers: dict | None = None, *, chunked=False):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            data = resp.read()
            return Reply(resp.status, resp.headers, data)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def raw(system) -> Raw:
    return Raw(system.base_url)


JSON_HEADERS = {"Content-Type": "application/json"}
LOGIN = "/api/v1/migration/login"


def login_body(number="0123456789", password="Abcdef12") -> bytes:
    return json.dumps({"customer_number": number, "password": password}).encode()


# -- oversized bodies ----------------------------------------------------------------------------

def test_body_over_the_limit_by_content_length_is_413(raw):
    body = b'{"customer_number": "' + b"1" * MAX_BODY + b'", "password": "x"}'
    r = raw.send("POST", LOGIN, body, {**JSON_HEADERS, "Content-Length": str(len(body))})
    assert assert_problem(r, 413, "payload_too_large")["max_bytes"] == MAX_BODY


def test_a_huge_declared_content_length_is_refused_without_waiting_for_the_body(raw):
    """Content-Length 1 GB with no body: answered from the header (else the read would hang
    until the client timeout)."""
    r = raw.send("POST", LOGIN, b"", {**JSON_HEADERS, "Content-Length": str(10**9)})
    assert_problem(r, 413, "payload_too_large")


def test_body_over_the_limit_chunked_is_413(raw):
    chunks = (b"x" * 8192 for _ in range(MAX_BODY // 8192 + 2))
    r = raw.send("POST", LOGIN, chunks, {**JSON_HEADERS, "Transfer-Encoding": "chunked"}, chunked=True)
    assert_problem(r, 413, "payload_too_large")


def test_a_chunked_body_under_the_limit_is_read(raw):
    """The limit does not refuse honest chunked requests: this one reaches identity."""
    r = raw.send("POST", LOGIN, iter([login_body()[:10], login_body()[10:]]),
                 {**JSON_HEADERS, "Transfer-Encoding": "chunked"}, chunked=True)
    assert_problem(r, 401, "invalid_credentials")


# -- content types and encodings ---------------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/json; charset=iso-8859-1", "application/jsonx", "text/json"])
def test_a_body_not_sent_as_json_is_415(raw, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    assert_problem(raw.send("POST", LOGIN, login_body(), headers), 415, "unsupported_media_type")


@pytest.mark.parametrize("body", [
    b'{"customer_number": "\xff\xfe", "password": "Abcdef12"}',          # not UTF-8 at all
    b'{"customer_number": "\xc0\xb1", "password": "Abcdef12"}',          # overlong encoding of "1"
    b'{"customer_number": "\xed\xa0\x80", "password": "Abcdef12"}',      # an encoded surrogate
    b'{"customer_number": "0123456789", "password": "Abc\x80def"}',      # a stray continuation byte
], ids=["ff-fe", "overlong", "surrogate", "continuation"])
def test_invalid_utf8_is_400(raw, body):
    assert_problem(raw.send("POST", LOGIN, body, JSON_HEADERS), 400, "invalid_encoding")


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2", b'{"a": NaN}', b'{"a": Infinity}', b"\x00", b"null"])
def test_broken_json_is_a_4xx_problem(raw, body):
    r = raw.send("POST", LOGIN, body, JSON_HEADERS)
    assert r.status_code in (400, 422), r.text
    assert_problem(r, r.status_code)


def test_a_lone_surrogate_escape_is_refused_not_a_500(raw):
    """``"\\ud800"`` is valid JSON but not a character: it must not reach a UTF-8 encoder."""
    for body in (b'{"customer_number": "\\ud800123456789", "password": "Abcdef12"}',
                 b'{"customer_number": "0123456789", "password": "Ab\\udfffcdef"}'):
        r = raw.send("POST", LOGIN, body, JSON_HEADERS)
        assert r.status_code in (400, 401, 422), r.text
        assert_problem(r, r.status_code)


# -- full-width where half-width is required ----------------------------------------------------

FULL = str.maketrans("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                     "０１２３４５６７８９ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ"
                     "ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ")


def test_full_width_customer_number_is_422_in_japanese(customers, api):
    c = customers.legacy()
    r = api.post(LOGIN, {"customer_number": c.number.translate(FULL), "password": LEGACY_PASSWORD})
    body = assert_problem(r, 422)
    assert idmsg.CUSTOMER_NUMBER_FORMAT in json.dumps(body, ensure_ascii=False), body
    assert c.event_count() == 0 or "legacy_login_succeeded" not in c.types()


def test_full_width_password_is_422_in_japanese(customers, api):
    c = customers.legacy()
    r = api.post(LOGIN, {"customer_number": c.number, "password": LEGACY_PASSWORD.translate(FULL)})
    body = assert_problem(r, 422)
    assert "半角英数字" in json.dumps(body, ensure_ascii=False), body
    assert "legacy_login_failed" not in c.types()        # not even counted as a wrong password


def test_full_width_login_id_is_refused(customers, api):
    c = customers.migrated()
    r = api.post("/api/v1/login", {"login_id": c.number.translate(FULL), "password": NEW_LOGIN},
                 device=c.device)
    assert_problem(r, 422)


@pytest.fixture(scope="module")
def otp_applicant(customers):
    """A migrated customer with a customer session, before the OTP application."""
    phone, e164 = random_mobile()
    c = customers.legacy(phones=phone).migrate()
    c.customer_session()
    r = c.api.get("/api/v1/me/phones", token=c.token, device=c.device)
    assert r.status_code == 200, r.text
    c.phone_id, c.phone_e164 = r.json()[0]["phone_id"], e164
    return c


def application_body(c, **overrides) -> dict:
    email = f"hostile-{c.number}@example.jp"
    return {"email": email, "email_confirmation": email, "activation_password": ACTIVATION_PASSWORD,
            "activation_password_confirmation": ACTIVATION_PASSWORD, "phone_id": c.phone_id,
            "confirmation_password": NEW_CONFIRMATION, **overrides}


@pytest.mark.parametrize("password", [ACTIVATION_PASSWORD.translate(FULL), "４８２9１3", "٤٨٢٩١٣", "482913\n",
                                      "48 2913", "４８２９"], ids=["full", "mixed", "arabic-indic",
                                                                   "newline", "space", "full-4"])
def test_activation_password_must_be_half_width_digits(otp_applicant, password):
    c = otp_applicant
    r = c.api.post("/api/v1/otp/applications", application_body(
        c, activation_password=password, activation_password_confirmation=password), token=c.token, device=c.device)
    body = assert_problem(r, 422)
    assert "activation_password" in json.dumps(body.get("errors", {})) or "利用開始パスワード" in body["detail"], body


@pytest.mark.parametrize("otp", ["１２３４５６", "12345６", "123456\n", "12 3456"])
def test_otp_code_must_be_half_width_digits(otp_applicant, otp):
    c = otp_applicant
    r = c.api.post("/api/v1/otp/verify", {"otp": otp}, token=c.token, device=c.device)
    assert r.status_code in (401, 404, 409, 422), r.text
    assert_problem(r, r.status_code)


# -- control characters --------------------------------------------------------------------------

CONTROLS = ["\x00", "\x07", "\x1b[2J", "\r\n", "\u202e", "\u2028", "\ufeff", "\x7f"]


@pytest.mark.parametrize("ch", CONTROLS, ids=[f"U+{ord(c[0]):04X}" for c in CONTROLS])
def test_control_characters_in_the_customer_number_and_password_are_422(api, ch):
    r = api.post(LOGIN, {"customer_number": "01234" + ch + "56789", "password": "Abcdef12"})
    assert_problem(r, 422)
    r = api.post(LOGIN, {"customer_number": "0123456789", "password": "Abc" + ch + "def12"})
    assert_problem(r, 422)


@pytest.mark.parametrize("ch", ["\x00", "\x07", "\u202e", "\r\n"], ids=["NUL", "BEL", "RLO", "CRLF"])
def test_control_characters_in_secret_answers_are_422(customers, api, ch):
    c = customers.migration()
    answers = [{"question_id": "q01", "answer": "やま" + ch + "だ"},
               {"question_id": "q03", "answer": "東小学校"}, {"question_id": "q05", "answer": "りんご"}]
    r = api.post("/api/v1/migration/secret-questions", {"answers": answers, "confirmed": True},
                 token=c.token, device=c.device)
    assert_problem(r, 422)
    assert c.types("secretq") == []


@pytest.mark.parametrize("email", ["a@example.jp\r\nBcc: victim@example.jp", "a\x00@example.jp",
                                   "a@exa\u202emple.jp", "<a@example.jp>", "a@example.jp\n"],
                         ids=["header-injection", "NUL", "RLO", "angle", "trailing-newline"])
def test_header_injection_and_control_characters_in_the_email_are_422(otp_applicant, email):
    c = otp_applicant
    r = c.api.post("/api/v1/otp/applications", application_body(c, email=email, email_confirmation=email),
                   token=c.token, device=c.device)
    assert_problem(r, 422)


@pytest.mark.parametrize("suffix", ["\x00", "本店\u202e", "\r\nX", "\u0007"], ids=["NUL", "RLO", "CRLF", "BEL"])
def test_control_characters_in_the_token_display_name_are_refused(system, suffix):
    r = requests.put(system.base_url + "/api/v1/otp-app/tokens/unknown-serial/display-name",
                     data=json.dumps({"suffix": suffix}).encode(),
                     headers={"Content-Type": "application/json", "X-App-Instance-ID": "app-hostile-0001"},
                     timeout=30)
    assert r.status_code in (404, 422), r.text
    assert_problem(r, r.status_code)


# -- very long headers, URLs, ids -----------------------------------------------------------------

@pytest.mark.parametrize("size", [8 * 1024, 64 * 1024, 1024 * 1024])
def test_a_very_long_header_is_refused_without_a_5xx(raw, size):
    """eventlet's server refuses header lines over 8 KiB itself (400, before the gateway);
    far longer ones it may cut off mid-request (connection reset). Either way: no 5xx."""
    try:
        r = raw.send("POST", LOGIN, login_body(), {**JSON_HEADERS, "X-Filler": "a" * size})
    except ConnectionResetError:
        assert size > 64 * 1024
        return
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    if r.headers.get("Content-Type", "").startswith("application/problem+json"):
        assert_problem(r, r.status_code)


def test_many_headers_are_refused_or_served_without_a_5xx(raw):
    headers = {**JSON_HEADERS, **{f"X-H{i}": "v" * 100 for i in range(500)}}
    try:
        r = raw.send("POST", LOGIN, login_body(), headers)
    except ConnectionResetError:   # eventlet gives up on the request: refused, not failed
        return
    assert r.status_code < 500, r.text[:200]


def test_a_very_long_url_is_refused_without_a_5xx(raw):
    r = raw.send("GET", "/api/v1/otp/applications/" + "a" * 100_000)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])


def test_a_long_bearer_token_is_401(raw):
    r = raw.send("GET", "/api/v1/me/phones", headers={"Authorization": "Bearer " + "A" * 4000})
    assert_problem(r, 401)


@pytest.mark.parametrize("rid", ["x" * 5000, "a\tb-12345678", "<script>-12345678", "12345678\u3042",
                                 "abcdefgh-1234 injected=1"])
def test_a_hostile_request_id_is_replaced(raw, rid):
    r = raw.send("POST", LOGIN, b"{", {**JSON_HEADERS, "X-Request-ID": rid.encode("utf-8").decode("latin-1")})
    body = assert_problem(r, 400)
    assert body["correlation_id"] != rid and str(uuid.UUID(body["correlation_id"]))


def test_openapi_and_health_answer_under_hostile_query_strings(raw):
    for path in ("/openapi.json?%00=%ff", "/health?" + "a=b&" * 2000):
        r = raw.send("GET", path)
        assert r.status_code < 500, (path[:40], r.status_code)


# -- telephony webhook: forged and replayed ---------------------------------------------------------

def webhook_form(sid=None, caller="+819012345678", called="+81120000110") -> dict:
    return {"CallSid": sid or "CA" + uuid.uuid4().hex, "AccountSid": "AC" + "0" * 32, "From": caller,
            "To": called, "CallStatus": "ringing", "Direction": "inbound"}


def post_form(system, form: dict, signature: str | None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return requests.post(system.base_url + WEBHOOK_PATH, data=form, headers=headers, timeout=30)


def token_of(system) -> str:
    return system.env.get("TELEPHONY_AUTH_TOKEN") or DEV_AUTH_TOKEN


@pytest.mark.parametrize("how", ["missing", "empty", "garbage", "other-key", "tampered-from", "other-url"])
def test_forged_webhooks_are_403(system, store, how):
    form = webhook_form()
    url = system.base_url + WEBHOOK_PATH
    signature = {
        "missing": None, "empty": "", "garbage": "bm90LWEtc2lnbmF0dXJl",
        "other-key": twilio_signature("not-the-auth-token", url, form),
        "tampered-from": twilio_signature(token_of(system), url, {**form, "From": "+819099999999"}),
        "other-url": twilio_signature(token_of(system), url + "?x=1", form),
    }[how]
    r = post_form(system, form, signature)
    assert_problem(r, 403, "invalid_signature")
    # Nothing reached phone_auth: no call stream for this CallSid.
    time.sleep(0.5)
    assert store.read_stream(pa.call_stream(telephony.call_key("webhook", form["CallSid"]))) == []


def test_a_replayed_webhook_has_one_effect(system, store, customers):
    """The same signed webhook (same CallSid) delivered three times: one inbound call, one
    verification, one issued token."""
    phone, e164 = random_mobile()
    c = customers.legacy(phones=phone).migrate()
    c.customer_session()
    phones = c.api.get("/api/v1/me/phones", token=c.token, device=c.device).json()
    c.phone_id = phones[0]["phone_id"]
    r = c.api.post("/api/v1/otp/applications", application_body(c), token=c.token, device=c.device)
    assert r.status_code == 201, r.text
    created = r.json()
    sid = "CA" + uuid.uuid4().hex
    for _ in range(3):
        r = webhook_call(system, e164, created["call_to"].replace("-", ""), sid=sid)
        assert r.status_code == 200 and "<Reject" in r.text, r.text
    r = c.api.get(f"/api/v1/otp/applications/{created['application_id']}?wait=20", token=c.token, device=c.device)
    assert r.status_code == 200 and r.json()["status"] in ("verified", "issued"), r.text
    call_events = store.read_stream(pa.call_stream(telephony.call_key("webhook", sid)))
    assert [e.type for e in call_events] == ["inbound_call_received"]
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        (verification_id,) = conn.execute("SELECT verification_id FROM otp.applications WHERE application_id = %s",
                                          (created["application_id"],)).fetchone()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        types = [e.type for e in store.read_stream(pa.verification_stream(str(verification_id)))]
        if "phone_verification_succeeded" in types:
            break
        time.sleep(0.1)
    assert types.count("phone_verification_succeeded") == 1, types
    assert "phone_verification_attempt_failed" not in types, types


# -- sessions: another customer's, the wrong kind ------------------------------------------------------

def test_another_customers_session_cannot_read_or_act_on_an_application(otp_applicant, customers):
    owner = otp_applicant
    r = owner.api.post("/api/v1/otp/applications", application_body(owner), token=owner.token, device=owner.device)
    assert r.status_code in (201, 409), r.text
    if r.status_code == 201:
        application_id = r.json()["application_id"]
    else:   # an earlier test of this module applied already
        with psycopg.connect(owner.store.pool.conninfo) as conn:
            (application_id,) = conn.execute(
                "SELECT application_id FROM otp.applications WHERE customer_number = %s ORDER BY 1 LIMIT 1",
                (owner.number,)).fetchone()
    mine = owner.api.get(f"/api/v1/otp/applications/{application_id}", token=owner.token, device=owner.device)
    assert mine.status_code == 200, mine.text
    other = customers.logged_in()
    theirs = other.api.get(f"/api/v1/otp/applications/{application_id}", token=other.token, device=other.device)
    body = assert_problem(theirs, theirs.status_code)
    assert theirs.status_code in (403, 404), theirs.text
    assert str(application_id) not in json.dumps(body) and "call_to" not in body
    # ... nor does the other customer's migration session.
    migrating = customers.migration()
    r = migrating.api.get(f"/api/v1/otp/applications/{application_id}", token=migrating.token)
    assert r.status_code in (403, 404), r.text
    assert_problem(r, r.status_code)
    # ... and a guessed id is the same answer as someone else's id (no existence oracle).
    guessed = other.api.get(f"/api/v1/otp/applications/{uuid.uuid4()}", token=other.token)
    assert (guessed.status_code, guessed.json()["code"]) == (theirs.status_code, theirs.json()["code"])


def test_phones_are_only_the_sessions_own(otp_applicant, customers):
    other = customers.logged_in()
    mine = {p["phone_id"] for p in other.api.get("/api/v1/me/phones", token=other.token).json()}
    assert otp_applicant.phone_id not in mine


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/api/v1/otp/verify", {"otp": "123456"}),
    ("POST", "/api/v1/mail-otp", {"purpose": "transfer", "operation": {"type": "transfer"}}),
    ("GET", "/api/v1/me/authorization-method", None),
    ("GET", "/api/v1/notification-addresses", None),
    ("POST", "/api/v1/transactions/authorize", {"operation": {"type": "transfer"}, "confirmation_password": "x"}),
])
def test_a_migration_session_on_customer_routes_is_403(customers, method, path, body):
    c = customers.migration()
    r = c.api.call(method, path, body, token=c.token)
    assert_problem(r, 403, "forbidden")


@pytest.mark.parametrize("path,body", [
    ("/api/v1/migration/secret-questions", {"answers": ANSWERS, "confirmed": True}),
    ("/api/v1/migration/password", PASSWORD_BODY),
])
def test_a_customer_session_on_migration_routes_is_403(customers, path, body):
    c = customers.logged_in()
    r = c.api.post(path, body, token=c.token)
    assert_problem(r, 403, "forbidden")


def test_no_session_and_a_forged_session_are_401(api):
    for token in (None, "forged-token", "Bearer", "' OR 1=1 --"):
        r = api.get("/api/v1/me/phones", token=token)
        assert_problem(r, 401, "unauthenticated")
