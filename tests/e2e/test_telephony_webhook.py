"""The webhook edge end to end over HTTP: a Twilio-compatible provider posts a signed form to
the gateway, the call reaches phone_auth over RabbitMQ, the verification moves on (SPEC
R-INI-4; DESIGN.md "Telephony").

The gateway and phone_auth run in this process (Nameko ServiceRunner) on the test session's
database and RabbitMQ vhost. If the session's whole system (`system` fixture) is up too, its
phone_auth consumes the same queue and writes to the same store: the tests only look at the
store and at phone_auth's answers, never at which instance handled a call.
"""
from __future__ import annotations

import random
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from contracts import phone_auth as c
from contracts import telephony
from gateway.routes_telephony import PATH, twilio_signature
from gateway.service import GatewayService
from phone_auth.service import PhoneAuthService
from tests.e2e.conftest import free_port
from tests.support.services import running
from tests.support.waiting import wait_for

TOKEN = f"test-token-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def edge(settings):
    port = free_port()
    cfg = {"AMQP_URI": settings.amqp_uri, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}",
           "max_workers": 10, "serializer": "json", "DATABASE_URL": settings.database_url,
           "TELEPHONY_AUTH_TOKEN": TOKEN, "TELEPHONY_RING_DELAY_SECONDS": 0.3}
    with running(cfg, [GatewayService, PhoneAuthService]), ClusterRpcProxy(cfg, timeout=30) as proxy:
        yield {"base": f"http://127.0.0.1:{port}", "rpc": proxy.phone_auth}


def post(edge, form: dict, *, signature: str | None | bool = True, url_seen: str | None = None,
         headers: dict | None = None):
    """POST the form; ``signature=True`` signs it for the URL as the gateway sees it."""
    url = edge["base"] + PATH
    data = urllib.parse.urlencode(form).encode()
    hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    if signature is True:
        signature = twilio_signature(TOKEN, url_seen or url, form)
    if signature:
        hdrs["X-Twilio-Signature"] = signature
    req = urllib.request.Request(url, data=data, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def start(edge):
    phone = f"+8190{random.randrange(10**7, 10**8)}"
    app = f"app-{uuid.uuid4().hex[:8]}"
    v = edge["rpc"].start_verification(app, f"{random.randrange(10**9, 10**10):010d}", phone)
    return v, phone


def call_form(sid, caller, called):
    return {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": caller, "To": called,
            "CallStatus": "ringing", "Direction": "inbound"}


def call_events(store, sid):
    return store.read_stream(c.call_stream(telephony.call_key("webhook", sid)))


def assert_rejected_unanswered(status, headers, body):
    assert status == 200, body
    assert headers.get_content_type() == "application/xml"
    root = ET.fromstring(body.encode())
    assert root.tag == "Response"
    verbs = [child.tag for child in root]
    # <Reject> first: the only answer with which a provider does not pick the call up.
    assert verbs == ["Reject"] and root[0].get("reason") == "busy", body
    for verb in ("Answer", "Say", "Play", "Dial", "Gather", "Record"):
        assert f"<{verb}" not in body


def test_r_ini_4_signed_call_from_the_registered_phone_verifies(edge, store):
    v, phone = start(edge)
    sid = "CA" + uuid.uuid4().hex
    request_id = f"req-{uuid.uuid4().hex}"
    status, headers, body = post(edge, call_form(sid, phone, v["call_to"].replace("-", "")),
                                 headers={"X-Request-ID": request_id})
    assert_rejected_unanswered(status, headers, body)
    assert headers["X-Request-ID"] == request_id
    st = wait_for(lambda: (s := edge["rpc"].status(v["verification_id"]))["status"] == c.VERIFIED and s,
                  "verified")
    assert st["attempts"] == []
    [received] = call_events(store, sid)
    assert received.data["edge"] == "webhook" and received.data["caller"] == phone
    assert received.data["verification_ids"] == [v["verification_id"]]
    # The provider's request, the call and the verification share one correlation id.
    succeeded = store.read_stream(c.verification_stream(v["verification_id"]))[-1]
    assert received.metadata["correlation_id"] == succeeded.metadata["correlation_id"] == request_id
    assert succeeded.metadata["actor"] == {"kind": "system", "id": "telephony.webhook"}


def test_r_ini_4_withheld_caller_is_recorded_as_withheld(edge):
    v, _ = start(edge)
    for sid_suffix, from_value in (("a", "anonymous"), ("b", "+266696687")):
        status, headers, body = post(edge, call_form(f"CA-wh-{sid_suffix}-{uuid.uuid4().hex}",
                                                     from_value, v["call_to"]))
        assert_rejected_unanswered(status, headers, body)
    st = wait_for(lambda: (s := edge["rpc"].status(v["verification_id"]))["attempts"] == [
        c.WITHHELD, c.WITHHELD] and s, "two withheld attempts")
    assert st["status"] == c.AWAITING_CALL


@pytest.mark.parametrize("signature", [None, "", "not-base64", "bad"])
def test_r_ini_4_missing_or_wrong_signature_is_403_and_has_no_effect(edge, store, signature):
    v, phone = start(edge)
    sid = "CA-forged-" + uuid.uuid4().hex
    form = call_form(sid, phone, v["call_to"])
    if signature == "bad":     # signed with another token
        signature = twilio_signature("someone-elses-token", edge["base"] + PATH, form)
    status, headers, body = post(edge, form, signature=signature)
    assert status == 403, body
    assert headers.get_content_type() == "application/problem+json"
    assert '"code": "invalid_signature"' in body and "<Response" not in body
    # A genuine call afterwards is handled; the forged one never was.
    other = "CA-genuine-" + uuid.uuid4().hex
    assert post(edge, call_form(other, "+819000000001", v["call_to"]))[0] == 200
    wait_for(lambda: call_events(store, other), "the genuine call")
    assert call_events(store, sid) == []
    assert edge["rpc"].status(v["verification_id"])["status"] == c.AWAITING_CALL


def test_r_ini_4_tampered_form_is_refused(edge, store):
    v, phone = start(edge)
    sid = "CA-tamper-" + uuid.uuid4().hex
    signed_for = call_form(sid, "+819011112222", v["call_to"])
    forged = call_form(sid, phone, v["call_to"])        # From swapped after signing
    sig = twilio_signature(TOKEN, edge["base"] + PATH, signed_for)
    status, _, body = post(edge, forged, signature=sig)
    assert status == 403, body
    # Signed for another host than the one the request reached: refused too.
    status, _, _ = post(edge, forged, url_seen="https://elsewhere.example" + PATH)
    assert status == 403
    assert call_events(store, sid) == []


def test_r_ini_4_replayed_call_sid_has_one_effect(edge, store):
    v, phone = start(edge)
    sid = "CA-replay-" + uuid.uuid4().hex
    form = call_form(sid, "+819099990000", v["call_to"])     # an unknown caller: an attempt
    for _ in range(3):
        assert_rejected_unanswered(*post(edge, form))
    wait_for(lambda: edge["rpc"].status(v["verification_id"])["attempts"], "the attempt")
    verifying = call_form("CA-ok-" + uuid.uuid4().hex, phone, v["call_to"])
    for _ in range(2):
        assert post(edge, verifying)[0] == 200
    st = wait_for(lambda: (s := edge["rpc"].status(v["verification_id"]))["status"] == c.VERIFIED and s,
                  "verified")
    assert st["attempts"] == [c.UNKNOWN_CALLER]
    assert [e.type for e in call_events(store, sid)] == ["inbound_call_received"]
    types = [e.type for e in store.read_stream(c.verification_stream(v["verification_id"]))]
    assert types == ["phone_verification_started", "phone_verification_attempt_failed",
                     "phone_verification_succeeded"]


def test_incomplete_signed_form_is_a_problem_not_a_call(edge):
    status, headers, body = post(edge, {"CallSid": "", "From": "+819012345678", "To": "0120000110"})
    assert status == 400 and '"code": "invalid_call"' in body
    status, _, body = post(edge, {"CallSid": "CA1", "From": "+819012345678", "To": "nowhere"})
    assert status == 400


def test_the_route_is_described_in_openapi(edge):
    with urllib.request.urlopen(edge["base"] + "/openapi.json", timeout=10) as r:
        doc = r.read().decode()
    assert PATH in doc
