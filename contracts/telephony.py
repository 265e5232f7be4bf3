"""Telephone numbers and the normalized ``inbound_call`` message (DESIGN.md, "Telephony").

Every party that compares or stores a phone number uses ``normalize_phone`` (one normal form,
E.164, region JP): ``090-1234-5678``, ``09012345678``, ``+819012345678`` and full-width
``０９０－１２３４－５６７８`` are the same number. The identity import and phone_auth share it.

An edge (the Twilio-compatible webhook in the gateway, Kamailio) turns a call into one
``inbound_call`` message and publishes it straight to RabbitMQ — exchange ``telephony.events``,
routing key ``inbound_call``, JSON — the way Nameko dispatches events, so phone_auth consumes
it with an ordinary event handler. It is not a stored event: phone_auth records it itself.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import phonenumbers
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

REGION = "JP"

# The message bus address of inbound calls (a Nameko "event" of the pseudo-service telephony).
SOURCE_SERVICE = "telephony"
INBOUND_CALL = "inbound_call"
EXCHANGE = f"{SOURCE_SERVICE}.events"
EDGES = ("webhook", "sip")

# Caller-ID values that mean "no number" (非通知 / 公衆電話 / 通知不可能). Twilio sends the
# words, or on some routes their keypad spellings as fake numbers (ANONYMOUS, RESTRICTED,
# UNKNOWN, BLOCKED, UNAVAILABLE); SIP sends anonymous@anonymous.invalid (RFC 3323).
WITHHELD_WORDS = frozenset({
    "", "anonymous", "restricted", "unavailable", "unknown", "private", "blocked", "withheld",
    "payphone", "coin", "interactive", "unknown caller", "非通知", "公衆電話", "表示圏外", "通知不可能",
})
WITHHELD_SENTINELS = frozenset({"+266696687", "+7378742833", "+8656696", "+2562533",
                                "+86282452253"})

_DIGITISH = re.compile(r"^[\s0-9０-９+＋()（）.\-‐－ー]+$")


def normalize_phone(raw: str | None, region: str = REGION, *, strict: bool = False) -> str | None:
    """The one normal form of a telephone number: E.164 (``+819012345678``), or None.

    None for anything that is not a possible number of the numbering plan (words, too few
    digits). ``strict`` also requires a number that phonenumbers knows to be assigned
    (``is_valid_number``) — for imports that want to flag bad data; matching uses the lenient
    form on both sides, so a range newer than the metadata still compares equal to itself.
    ``tel:`` URIs and ``sip:`` user parts are accepted.
    """
    if raw is None:
        return None
    text = str(raw).strip()
    for prefix in ("tel:", "sip:", "sips:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):].split("@", 1)[0].split(";", 1)[0]
    if not text or not _DIGITISH.match(text):
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    if strict and not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def same_number(a: str | None, b: str | None) -> bool:
    na, nb = normalize_phone(a), normalize_phone(b)
    return na is not None and na == nb


def national_format(number: str) -> str:
    """How a Japanese customer reads a number: ``0120-000-110``, ``090-1234-5678``."""
    e164 = normalize_phone(number)
    if e164 is None:
        return number
    return phonenumbers.format_number(phonenumbers.parse(e164, REGION),
                                      phonenumbers.PhoneNumberFormat.NATIONAL)


def classify_caller(raw: str | None) -> tuple[str | None, bool]:
    """An edge's caller ID → (E.164 or None, withheld).

    Withheld when the network sent no usable number: an empty value, one of the words or
    sentinel numbers above, or anything non-numeric. A foreign or odd number is a real caller
    ID (it simply will not match a registered phone), not withheld.
    """
    text = (raw or "").strip()
    if text.lower() in WITHHELD_WORDS or text in WITHHELD_SENTINELS:
        return None, True
    e164 = normalize_phone(text)
    if e164 is None or e164 in WITHHELD_SENTINELS:
        return None, True
    return e164, False


# -- the normalized inbound_call message --------------------------------------------------------

class InboundCallSchema(Schema):
    """The body an edge publishes. ``caller`` is None exactly when ``withheld`` is true."""
    call_id = fields.String(required=True, validate=validate.Length(min=1, max=256))
    caller = fields.String(required=True, allow_none=True, validate=validate.Length(max=32))
    withheld = fields.Boolean(required=True)
    called = fields.String(required=True, validate=validate.Length(min=1, max=32))
    received_at = fields.AwareDateTime(required=True, default_timezone=timezone.utc)
    edge = fields.String(required=True, validate=validate.OneOf(EDGES))

    @validates_schema
    def _caller_or_withheld(self, data, **kwargs):
        if not data.get("withheld") and not data.get("caller"):
            raise ValidationError("caller is required unless withheld", "caller")


@dataclass(frozen=True)
class InboundCall:
    call_id: str
    caller: str | None          # E.164, None when withheld
    withheld: bool
    called: str                 # E.164 of the number dialled (a toll-free number of the pool)
    received_at: datetime
    edge: str

    @property
    def key(self) -> uuid.UUID:
        """Deterministic id of this call: a redelivered or replayed message has the same key.
        Scoped by edge so one edge cannot pre-empt another edge's call ids."""
        return call_key(self.edge, self.call_id)

    def as_message(self) -> dict:
        return {"call_id": self.call_id, "caller": self.caller, "withheld": self.withheld,
                "called": self.called, "received_at": self.received_at.isoformat(),
                "edge": self.edge}

    @classmethod
    def from_message(cls, body) -> "InboundCall":
        """Validate and normalize a message from any edge (raises marshmallow ValidationError).

        Numbers are normalized again here, so an edge that can only pass digits through
        (Kamailio) still yields the one normal form; a caller number that does not normalize
        counts as withheld, like at the edges."""
        data = InboundCallSchema().load(body)
        caller, withheld = (None, True) if data["withheld"] else classify_caller(data["caller"])
        called = normalize_phone(data["called"])
        if called is None:
            raise ValidationError("called is not a telephone number", "called")
        return cls(call_id=data["call_id"], caller=caller, withheld=withheld, called=called,
                   received_at=data["received_at"], edge=data["edge"])


CALL_KEY_NAMESPACE = uuid.UUID("5b0f7c1e-3f43-4d55-9a57-2a7f1c0e7a10")


def call_key(edge: str, call_id: str) -> uuid.UUID:
    return uuid.uuid5(CALL_KEY_NAMESPACE, f"{edge}:{call_id}")
