"""The telephony webhook's request signature (X-Twilio-Signature; SPEC R-INI-4, DESIGN.md
"Telephony"). Vectors from Twilio's own validator test-suite."""
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.routes_telephony import (TWIML_REJECT, _port_variants, request_url,
                                      signature_valid, twilio_signature)

TOKEN = "12345"
URI = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
          "To": "+18005551212", "Caller": "+14158675309"}


def test_twilio_documented_signature():
    assert twilio_signature(TOKEN, URI, PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert signature_valid(TOKEN, URI, PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def test_repeated_parameters_are_sorted_by_value():
    params = MultiDict([("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"),
                        ("Digits", "1234")])
    assert twilio_signature(TOKEN, URI, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_port_is_tried_with_and_without():
    # Signed without a port, received with one (and the other way round).
    assert signature_valid(TOKEN, URI.replace(".com", ".com:1234"), PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert signature_valid(TOKEN, URI, PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=")            # :443
    assert signature_valid(TOKEN, URI.replace("https", "http"), PARAMS, "0ZXoZLH/DfblKGATFgpif+LLRf4=")
    assert _port_variants("http://Gw.example:8000/p?q=1") == [
        "http://Gw.example:8000/p?q=1", "http://Gw.example/p?q=1"]


def test_r_ini_4_wrong_missing_or_tampered_signatures_are_refused():
    good = twilio_signature(TOKEN, URI, PARAMS)
    assert not signature_valid(TOKEN, URI, PARAMS, None)
    assert not signature_valid(TOKEN, URI, PARAMS, "")
    assert not signature_valid("another-token", URI, PARAMS, good)
    assert not signature_valid(TOKEN, URI, {**PARAMS, "From": "+819012345678"}, good)
    assert not signature_valid(TOKEN, URI.replace("foo=1", "foo=2"), PARAMS, good)
    assert not signature_valid("", URI, PARAMS, twilio_signature("", URI, PARAMS))


def _request(path="/telephony/inbound-call", query="", host="gw.example:8000", scheme="http"):
    env = EnvironBuilder(path=path, query_string=query, base_url=f"{scheme}://{host}",
                         method="POST").get_environ()
    return Request(env)


def test_url_is_the_one_the_request_reached_us_with():
    assert request_url(_request()) == "http://gw.example:8000/telephony/inbound-call"
    assert request_url(_request(query="a=1&b=%20x")) == \
        "http://gw.example:8000/telephony/inbound-call?a=1&b=%20x"
    assert request_url(_request(scheme="https", host="bank.example")) == \
        "https://bank.example/telephony/inbound-call"


def test_url_under_a_configured_public_base():
    assert request_url(_request(query="x=1"), "https://tel.bank.example/") == \
        "https://tel.bank.example/telephony/inbound-call?x=1"


def test_r_ini_4_twiml_rejects_as_its_first_verb_and_never_answers():
    assert TWIML_REJECT.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/>')
    for verb in ("<Answer", "<Say", "<Play", "<Dial", "<Pause", "<Gather", "<Record"):
        assert verb not in TWIML_REJECT
