"""R-INI-4: caller IDs are compared in one normal form (contracts.telephony)."""
from datetime import datetime, timezone

import pytest
from marshmallow import ValidationError

from contracts import telephony as t


@pytest.mark.parametrize("raw, e164", [
    ("090-1234-5678", "+819012345678"),
    ("09012345678", "+819012345678"),
    ("+819012345678", "+819012345678"),
    ("+81 90 1234 5678", "+819012345678"),
    ("819012345678", "+819012345678"),
    ("０９０－１２３４－５６７８", "+819012345678"),     # full-width, as typed on a Japanese IME
    ("(090) 1234-5678", "+819012345678"),
    ("tel:+81-90-1234-5678", "+819012345678"),
    ("sip:09012345678@carrier.example;user=phone", "+819012345678"),
    ("03-1234-5678", "+81312345678"),
    ("0120-000-110", "+81120000110"),
    ("0120000111", "+81120000111"),
    ("+1 415 555 0100", "+14155550100"),
])
def test_r_ini_4_normal_form_is_e164(raw, e164):
    assert t.normalize_phone(raw) == e164


@pytest.mark.parametrize("raw", [None, "", "   ", "anonymous", "Restricted", "123", "abc-defg",
                                 "090-1234-567x", "非通知"])
def test_r_ini_4_not_a_number_has_no_normal_form(raw):
    assert t.normalize_phone(raw) is None


def test_r_ini_4_the_three_spellings_of_the_issue_are_the_same_number():
    assert t.same_number("090-1234-5678", "09012345678")
    assert t.same_number("09012345678", "+819012345678")
    assert not t.same_number("090-1234-5678", "090-1234-5679")
    assert not t.same_number(None, None)


def test_strict_needs_an_assigned_range():
    assert t.normalize_phone("184 090 1234 5678") is not None     # possible length …
    assert t.normalize_phone("184 090 1234 5678", strict=True) is None   # … but not valid


def test_national_format_is_what_the_page_shows():
    assert t.national_format("+81120000110") == "0120-000-110"
    assert t.national_format("09012345678") == "090-1234-5678"


@pytest.mark.parametrize("raw", ["", "anonymous", "Anonymous", "restricted", "unavailable",
                                 "unknown", "+266696687", "+7378742833", "+8656696", "+2562533",
                                 "+86282452253", "client:alice", "abc", None])
def test_r_ini_4_twilio_withheld_values_are_withheld(raw):
    assert t.classify_caller(raw) == (None, True)


def test_r_ini_4_a_real_caller_id_is_not_withheld():
    assert t.classify_caller("+819012345678") == ("+819012345678", False)
    assert t.classify_caller("090-1234-5678") == ("+819012345678", False)
    assert t.classify_caller("+14155550100") == ("+14155550100", False)


def _msg(**kw):
    body = {"call_id": "CA1", "caller": "09012345678", "withheld": False,
            "called": "0120-000-110", "received_at": "2025-01-05T08:00:00+09:00", "edge": "sip"}
    body.update(kw)
    return body


def test_inbound_call_message_is_normalized_on_receipt():
    call = t.InboundCall.from_message(_msg())
    assert call.caller == "+819012345678" and not call.withheld
    assert call.called == "+81120000110"
    assert call.received_at == datetime(2025, 1, 4, 23, 0, tzinfo=timezone.utc)
    assert t.InboundCall.from_message(call.as_message()) == call


def test_inbound_call_with_a_non_numeric_caller_counts_as_withheld():
    call = t.InboundCall.from_message(_msg(caller="anonymous"))
    assert call.caller is None and call.withheld


def test_inbound_call_key_is_deterministic_per_edge_and_call_id():
    a = t.InboundCall.from_message(_msg())
    b = t.InboundCall.from_message(_msg(caller=None, withheld=True))
    assert a.key == b.key
    assert a.key != t.InboundCall.from_message(_msg(edge="webhook")).key


@pytest.mark.parametrize("bad", [
    {"call_id": ""}, {"edge": "fax"}, {"called": "anonymous"}, {"received_at": "yesterday"},
    {"caller": None, "withheld": False}, {"withheld": "maybe"},
])
def test_malformed_inbound_call_messages_are_refused(bad):
    with pytest.raises(ValidationError):
        t.InboundCall.from_message(_msg(**bad))
