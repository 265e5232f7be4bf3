"""The phone_auth service's shared language: its event types, its subscription to inbound calls
and its RPC payloads (SPEC R-INI-4, smartphone guide step 6).

Streams, owned by the ``phone_auth`` service:
- ``phoneverif-<verification_id>``: one inbound-call verification (started → attempts →
  succeeded | expired). Its personal field — the customer's registered phone — is encrypted
  with the customer's data key (subject = customer number).
- ``inboundcall-<call key>``: every call that reached an edge, once (the key is a uuid5 of
  edge and call id, so a redelivered or replayed call cannot be recorded twice).

Normalisation of numbers and the ``inbound_call`` message itself: ``contracts.telephony``.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from contracts import telephony
from contracts.events import register
from contracts.subscriptions import subscribe

SERVICE = "phone_auth"
VERIFICATION_CATEGORY = "phoneverif"
CALL_CATEGORY = "inboundcall"

DEFAULT_WINDOW_SECONDS = 120          # R-INI-4: 120 秒以内にお電話ください
DEFAULT_TOLL_FREE_NUMBERS = ("0120-000-110", "0120-000-111")

# Statuses a verification reports (RPC ``status``).
AWAITING_CALL = "awaiting_call"
VERIFIED = "verified"
EXPIRED = "expired"

# Why a call did not verify (``phone_verification_attempt_failed.reason``).
WITHHELD = "withheld"              # 非通知: no caller ID, cannot verify
UNKNOWN_CALLER = "unknown_caller"  # a number that is not the registered one
WRONG_NUMBER = "wrong_number"      # the registered phone dialled another toll-free number
LATE = "expired"                   # the registered phone called after the window closed
FAILURE_REASONS = (WITHHELD, UNKNOWN_CALLER, WRONG_NUMBER, LATE)


def verification_stream(verification_id: str) -> str:
    return f"{VERIFICATION_CATEGORY}-{verification_id}"


def call_stream(call_key) -> str:
    return f"{CALL_CATEGORY}-{call_key}"


# -- events ------------------------------------------------------------------------------------

PHONE_VERIFICATION_STARTED = register(
    "phone_verification_started", SERVICE,
    personal_fields=("caller",),
    description="Step 6 shown: the customer must call call_to from caller before expires_at. "
                "data: verification_id, application_id, customer_number, caller (E.164, "
                "personal), call_to (E.164), call_to_display (national format), "
                "window_seconds, started_at, expires_at.")
INBOUND_CALL_RECEIVED = register(
    "inbound_call_received", SERVICE,
    personal_fields=("caller",),
    description="A call reached an edge (once per edge and call id). data: call_key, call_id, "
                "edge, caller (E.164 or null, personal), withheld, called (E.164), "
                "received_at, verification_ids (the verifications it was matched against).")
PHONE_VERIFICATION_ATTEMPT_FAILED = register(
    "phone_verification_attempt_failed", SERVICE,
    description="A call did not verify; the customer may call again inside the window. data: "
                "verification_id, application_id, customer_number, reason (withheld | "
                "unknown_caller | wrong_number | expired), call_key, at.")
PHONE_VERIFICATION_SUCCEEDED = register(
    "phone_verification_succeeded", SERVICE,
    description="The registered phone called the shown toll-free number within the window "
                "(exactly once per verification). data: verification_id, application_id, "
                "customer_number, call_key, at.")
PHONE_VERIFICATION_EXPIRED = register(
    "phone_verification_expired", SERVICE,
    description="The window closed without a verifying call; written by the service itself "
                "(timer), so the page can say so; or closed early because an operator changed "
                "the registered phones (reason: registered_phones_changed). data: "
                "verification_id, application_id, customer_number, expires_at, reason (optional).")

EVENT_TYPES = tuple(t.name for t in (
    PHONE_VERIFICATION_STARTED, INBOUND_CALL_RECEIVED, PHONE_VERIFICATION_ATTEMPT_FAILED,
    PHONE_VERIFICATION_SUCCEEDED, PHONE_VERIFICATION_EXPIRED))

# phone_auth consumes the edges' messages (not stored events; see contracts.telephony).
INBOUND_CALL_SUBSCRIPTION = subscribe(telephony.SOURCE_SERVICE, telephony.INBOUND_CALL,
                                      SERVICE, "handle_inbound_call")
# An operator's phone change closes the customer's open verifications (R-LEG-4).
PHONES_CHANGED_SUBSCRIPTION = subscribe("identity", "registered_phones_changed",
                                        SERVICE, "on_registered_phones_changed")
WITHDRAWN_PHONES_CHANGED = "registered_phones_changed"


# -- RPC payloads ------------------------------------------------------------------------------

_REQUIRED = "必須項目です。"
_STRING = "文字列で入力してください。"


def _str(**kw) -> fields.String:
    return fields.String(error_messages={"invalid": _STRING, "required": _REQUIRED,
                                         "null": _REQUIRED}, **kw)


class StartVerificationPayload(Schema):
    """``phone_auth.start_verification(application_id, customer_number, caller_e164, ttl_seconds=None)``"""
    application_id = _str(required=True, validate=validate.Length(min=1, max=64))
    customer_number = _str(required=True, validate=validate.Regexp(
        r"^[0-9]{10}\Z", error="お客さま番号は数字10桁で入力してください。"))
    caller_e164 = _str(required=True, validate=validate.Length(min=1, max=32))
    ttl_seconds = fields.Integer(load_default=None, allow_none=True,
                                 validate=validate.Range(min=1, max=3600),
                                 error_messages={"invalid": "整数で指定してください。"})


class StartVerificationResult(Schema):
    verification_id = fields.String(required=True)
    call_from_masked = fields.String(required=True, metadata={"example": "*****5678"})
    call_to = fields.String(required=True, metadata={"example": "0120-000-110"})
    expires_at = fields.String(required=True, metadata={"description": "ISO 8601"})


class VerificationStatusResult(Schema):
    verification_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf((AWAITING_CALL, VERIFIED, EXPIRED)))
    attempts = fields.List(fields.String(validate=validate.OneOf(FAILURE_REASONS)), required=True)
    expires_at = fields.String(required=True)
    application_id = fields.String()
    call_to = fields.String()
    call_from_masked = fields.String()
