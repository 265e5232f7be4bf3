"""The secret-questions service's shared language: its event types and its RPC payloads.

Stream: ``secretq-<customer_number>`` (one per customer), owned by the ``secret_questions``
service (SPEC R-INI-1, R-RBA-1, R-RBA-2).

The answers themselves never appear anywhere. Their argon2id verifiers travel in the
registration event because the stream is the only source of truth of this service; they are
a *personal field*, so the store encrypts them with the customer's data key (auditors reading
the log see ciphertext, and shredding the customer destroys them with the rest).
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from contracts.events import register

SERVICE = "secret_questions"
STREAM_CATEGORY = "secretq"


def stream_name(customer_number: str) -> str:
    return f"{STREAM_CATEGORY}-{customer_number}"


# -- events ----------------------------------------------------------------------------------

SECRET_QUESTIONS_REGISTERED = register(
    "secret_questions_registered", SERVICE,
    personal_fields=("answer_verifiers",),
    description="Step 3 done: three distinct catalogue questions chosen, answers stored as "
                "argon2id verifiers (encrypted personal field; the answers are never stored). "
                "data: customer_number, question_ids, answer_verifiers {question_id: verifier}, "
                "confirmed.")
SECRET_ANSWER_VERIFIED = register(
    "secret_answer_verified", SERVICE,
    description="A secret answer matched (risk-based step-up passed). data: customer_number, "
                "question_id. Resets the consecutive-failure counter.")
SECRET_ANSWER_FAILED = register(
    "secret_answer_failed", SERVICE,
    description="A secret answer did not match. data: customer_number, question_id, "
                "consecutive_failures.")
SECRET_ANSWERS_LOCKED = register(
    "secret_answers_locked", SERVICE,
    description="Too many consecutive wrong answers (R-RBA-2): the secret answers are locked "
                "until an operator unlocks them or a configured timed release. data: "
                "customer_number, consecutive_failures, threshold, locked_at (ISO 8601).")
SECRET_ANSWERS_UNLOCKED = register(
    "secret_answers_unlocked", SERVICE,
    description="The lock was lifted. data: customer_number, release (operator | timed_release).")
SECRET_QUESTIONS_RESET = register(
    "secret_questions_reset", SERVICE,
    description="Forgotten answers: the operator's paper procedure cleared the registration; "
                "the customer registers three questions again. data: customer_number.")

EVENT_TYPES = tuple(t.name for t in (
    SECRET_QUESTIONS_REGISTERED, SECRET_ANSWER_VERIFIED, SECRET_ANSWER_FAILED,
    SECRET_ANSWERS_LOCKED, SECRET_ANSWERS_UNLOCKED, SECRET_QUESTIONS_RESET))


# -- RPC payloads ----------------------------------------------------------------------------
# Shapes and types only (the rules of R-INI-1 live in identity/secret_questions_domain.py).
# The service loads every RPC argument through these, so a caller that sends a number where a
# string belongs gets a ValidationFailed, not a stack trace.

CUSTOMER_NUMBER = validate.Regexp(r"^[0-9]{10}\Z", error="お客さま番号は数字10桁で入力してください。")
_STRING = "文字列で入力してください。"
_REQUIRED = "必須項目です。"


def _str(**kw) -> fields.String:
    return fields.String(error_messages={"invalid": _STRING, "required": _REQUIRED,
                                         "null": _REQUIRED}, **kw)


class StrictBoolean(fields.Boolean):
    """Only a real boolean (1 == True in Python, so truthy sets cannot refuse 1 or "true")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not bool:
            raise self.make_error("invalid", input=value)
        return value


class QuestionSchema(Schema):
    id = _str(required=True)
    text = _str(required=True)


class AnswerSchema(Schema):
    question_id = _str(required=True, validate=validate.Length(max=32))
    answer = _str(required=True, validate=validate.Length(max=64))


class RegisterPayload(Schema):
    customer_number = _str(required=True, validate=CUSTOMER_NUMBER)
    answers = fields.List(fields.Nested(AnswerSchema), required=True,
                          validate=validate.Length(max=10),
                          error_messages={"invalid": "一覧の形式で入力してください。",
                                          "required": _REQUIRED, "null": _REQUIRED})
    confirmed = StrictBoolean(required=True,
                              error_messages={"invalid": "true または false で指定してください。",
                                              "required": _REQUIRED, "null": _REQUIRED})


class VerifyPayload(Schema):
    customer_number = _str(required=True, validate=CUSTOMER_NUMBER)
    question_id = _str(required=True, validate=validate.Length(max=32))
    answer = _str(required=True, validate=validate.Length(max=64))


class CustomerPayload(Schema):
    customer_number = _str(required=True, validate=CUSTOMER_NUMBER)


class StatusSchema(Schema):
    registered = fields.Boolean(required=True)
    locked = fields.Boolean()
