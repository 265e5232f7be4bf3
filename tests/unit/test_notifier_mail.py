"""Mail rendering, the mail decider and delivery errors (DESIGN.md "Mail"; SPEC R-INI-5, R-MAIL-3)."""
from __future__ import annotations

import email
import uuid
from datetime import datetime, timedelta, timezone
from email import policy

import pytest

from contracts.events import NewEvent, RecordedEvent
from notifier import outbox, smtp, templates
from notifier.config import MailSettings
from notifier.mail import TemplateError, Template, mail_id_for, message_id_for, render

NOW = datetime(2025, 1, 6, 0, 30, tzinfo=timezone.utc)
EVENT_ID = uuid.UUID("0b7f3c5e-1234-4abc-8def-0123456789ab")


def rendered_token_mail():
    sender = MailSettings.load({}).senders["otp"].as_dict()
    return render(templates.TOKEN_ISSUED, {"service_id": "AMBK000117", "user_id": "ABCDEFGHJKMNPQRS"},
                  to=["taro..yamada.@docomo.ne.jp"], sender=sender,
                  message_id=message_id_for(EVENT_ID, "tsunagi.am-bk.co.jp"), date=NOW)


def test_token_mail_mime_decodes_back_R_INI_5_R_MAIL_3():
    raw = rendered_token_mail().as_bytes()
    assert raw.isascii()                                    # 7-bit clean on the wire
    assert b"\r\n" in raw                                   # SMTP line ends
    assert "トークン".encode() not in raw                    # nothing unencoded
    assert b"=?utf-8?" in raw.lower()                        # RFC 2047 encoded-words in headers
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "【青森みちのく銀行】トークン発行のご案内"
    assert parsed["From"].addresses[0].display_name == "青森みちのく銀行"
    assert parsed["From"].addresses[0].addr_spec == "no-reply@otp-auth.net"
    assert parsed["From"].addresses[0].domain == "otp-auth.net"
    assert parsed["To"] == "taro..yamada.@docomo.ne.jp"
    assert parsed["Message-ID"] == f"<{EVENT_ID}@tsunagi.am-bk.co.jp>"
    assert parsed["Date"].datetime == NOW and parsed["Date"].datetime.utcoffset() == timedelta(hours=9)
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert parsed["Content-Transfer-Encoding"] == "base64"
    body = parsed.get_content()
    assert "サービスID：AMBK000117" in body and "ユーザID　：ABCDEFGHJKMNPQRS" in body
    assert "利用開始パスワードは、このメールには記載しておりません" in body


def test_rendering_is_deterministic_so_a_retry_sends_the_same_bytes():
    assert rendered_token_mail().as_bytes() == rendered_token_mail().as_bytes()


def test_missing_values_are_a_template_error():
    with pytest.raises(TemplateError):
        render(templates.TOKEN_ISSUED, {"service_id": "AMBK000117"}, to=["a@example.jp"],
               sender={"address": "no-reply@otp-auth.net", "display_name": "x"}, message_id="<x@y>", date=NOW)
    with pytest.raises(TemplateError):
        render(Template("t", "otp", "{nope}", "body"), {}, to=["a@example.jp"],
               sender={"address": "no-reply@otp-auth.net"}, message_id="<x@y>", date=NOW)


def test_mail_ids_derive_from_the_event():
    assert mail_id_for(EVENT_ID) == EVENT_ID
    assert mail_id_for(str(EVENT_ID)) == EVENT_ID
    select1, select2 = mail_id_for(EVENT_ID, "select1"), mail_id_for(EVENT_ID, "select2")
    assert len({EVENT_ID, select1, select2}) == 3
    assert select1 == mail_id_for(EVENT_ID, "select1")       # stable across redeliveries


def test_senders_by_domain_R_MAIL_3(monkeypatch):
    monkeypatch.delenv("MAIL_FROM_OTP", raising=False)
    settings = MailSettings.load({})
    assert settings.senders["otp"].address.endswith("@otp-auth.net")
    assert settings.senders["bank"].address.endswith("@am-bk.co.jp")
    assert MailSettings.load({"MAIL_FROM_OTP": "token@otp-auth.net"}).senders["otp"].address == "token@otp-auth.net"


def test_token_issued_recipe():
    event = RecordedEvent("otpapp-x", 3, EVENT_ID, "token_issued", 1,
                          {"application_id": "x", "customer_number": "0123456789", "service_id": "AMBK000117",
                           "user_id": "ABCDEFGHJKMNPQRS", "email": "taro@example.jp"}, {}, NOW)
    (order,) = templates.orders_for_token_issued(event)
    assert (order.template, order.to, order.slot) == ("token_issued", ("taro@example.jp",), "")
    assert order.params == {"service_id": "AMBK000117", "user_id": "ABCDEFGHJKMNPQRS"}
    shredded = RecordedEvent("otpapp-x", 3, EVENT_ID, "token_issued", 1, {**event.data, "email": "[redacted]"}, {}, NOW)
    assert templates.orders_for_token_issued(shredded) == []


# -- one mail's life: given / when / then ----------------------------------------------------------------

QUEUE = outbox.QueueMail(mail_id=str(EVENT_ID), template="token_issued", customer_number="0123456789",
                         to=("taro@example.jp",), params={"service_id": "S", "user_id": "U"},
                         sender={"address": "no-reply@otp-auth.net", "display_name": "青森みちのく銀行"},
                         message_id="<m@d>", source_event_id=str(EVENT_ID), source_event_type="token_issued", now=NOW)
QUEUED = NewEvent("mail_queued", {"mail_id": str(EVENT_ID), "template": "token_issued", "customer_number": "0123456789",
                                  "to": ["taro@example.jp"], "params": {}, "sender": {}, "message_id": "<m@d>",
                                  "queued_at": NOW.isoformat()})


def deferred(n):
    return NewEvent("mail_deferred", {"mail_id": str(EVENT_ID), "attempt": n, "error": "down",
                                      "next_attempt_at": NOW.isoformat()})


SENT = NewEvent("mail_sent", {"mail_id": str(EVENT_ID), "attempt": 1, "message_id": "<m@d>", "sent_at": NOW.isoformat()})


def attempt(outcome):
    return outbox.RecordAttempt(outcome, None if outcome == "sent" else "err", NOW, 3,
                                timedelta(seconds=30), timedelta(seconds=3600))


MAIL_CASES = [
    ("a new mail is queued", [], QUEUE, ["mail_queued"]),
    ("queued once, however often the event comes", [QUEUED], QUEUE, []),
    ("accepted by the relay", [QUEUED], attempt("sent"), ["mail_sent"]),
    ("relay down: try again later", [QUEUED], attempt("transient"), ["mail_deferred"]),
    ("still down on the last attempt: given up", [QUEUED, deferred(1), deferred(2)], attempt("transient"),
     ["mail_failed"]),
    ("a 5xx refusal is final at once", [QUEUED], attempt("permanent"), ["mail_failed"]),
    ("a sent mail is never sent again", [QUEUED, SENT], attempt("sent"), []),
    ("a sent mail records no later failure", [QUEUED, SENT], attempt("transient"), []),
    ("nothing queued, nothing to record", [], attempt("sent"), []),
]


@pytest.mark.parametrize("name,given,when,then", MAIL_CASES, ids=[c[0] for c in MAIL_CASES])
def test_mail_decider(name, given, when, then):
    assert [e.type for e in outbox.decide(when, outbox.fold(given))] == then


def test_backoff_doubles_and_is_capped():
    base, cap = timedelta(seconds=30), timedelta(seconds=3600)
    assert [outbox.backoff(n, base, cap).total_seconds() for n in range(1, 9)] == \
        [30, 60, 120, 240, 480, 960, 1920, 3600]
    events = outbox.decide(attempt("transient"), outbox.fold([QUEUED, deferred(1)]))
    assert events[0].data["attempt"] == 2
    assert datetime.fromisoformat(events[0].data["next_attempt_at"]) == NOW + timedelta(seconds=60)


def test_failed_mail_says_why_and_whether_final():
    (failed,) = outbox.decide(attempt("permanent"), outbox.fold([QUEUED]))
    assert failed.data["permanent"] is True and failed.data["attempts"] == 1 and failed.data["error"] == "err"


def test_smtp_errors_never_carry_a_full_address():
    text = smtp.scrub("550 5.1.1 <taro.yamada@example.jp>: Recipient address rejected")
    assert "taro.yamada@example.jp" not in text and "t***@example.jp" in text


def test_unreachable_relay_is_transient():
    message = rendered_token_mail()
    with pytest.raises(smtp.DeliveryError) as err:
        smtp.send(message, envelope_from="no-reply@otp-auth.net", recipients=["a@example.jp"],
                  host="127.0.0.1", port=1, timeout=2)
    assert err.value.permanent is False


def test_handlers_are_declared_in_contracts():
    from contracts.subscriptions import SUBSCRIPTIONS
    from notifier.service import NotifierService
    from services.handlers import subscriptions_of
    subs = subscriptions_of(NotifierService)
    assert subs and set(subs) <= set(SUBSCRIPTIONS)
