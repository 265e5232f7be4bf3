"""Shape checks of RPC arguments: anything malformed is a ValidationFailed before any state is
read, so bad input of every kind (wrong types, over-long strings, emoji, SQL-ish text) changes
nothing. Pure functions."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from contracts.errors import ValidationFailed
from identity.domain import messages as msg

CUSTOMER_NUMBER = re.compile(r"[0-9]{10}")
LOGIN_ID = re.compile(r"[0-9A-Za-z]{6,12}")
# Passwords as typed: half-width letters and digits, the only characters the guide allows for
# every password (legacy included). The 6–12 length is not re-judged at login — a wrong length
# is simply a wrong password — only a generous maximum, so nothing absurd reaches a hash.
PASSWORD_CHARS = re.compile(r"[0-9A-Za-z]+")
MAX_PASSWORD = 64
MAX_ANSWER = 64
MAX_OTP = 16
MAX_USER_AGENT = 512


def fail(field: str, message: str, code: str = "validation_failed") -> ValidationFailed:
    return ValidationFailed(message, code, errors={field: [message]})


def label(field: str) -> str:
    return msg.LABELS.get(field, field)


def text(value, field: str, *, max_len: int, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise fail(field, msg.REQUIRED.format(label=label(field)))
        return None
    if not isinstance(value, str):
        raise fail(field, msg.NOT_TEXT.format(label=label(field)))
    if len(value) > max_len:
        raise fail(field, msg.TOO_LONG.format(label=label(field)))
    return value


def customer_number(value, field: str = "customer_number") -> str:
    value = text(value, field, max_len=32)
    if not CUSTOMER_NUMBER.fullmatch(value):
        raise fail(field, msg.CUSTOMER_NUMBER_FORMAT)
    return value


def login_id(value, field: str = "login_id") -> str:
    value = text(value, field, max_len=32)
    if not LOGIN_ID.fullmatch(value):
        raise fail(field, msg.LOGIN_ID_FORMAT)
    return value


def password(value, field: str = "password") -> str:
    value = text(value, field, max_len=MAX_PASSWORD)
    if not PASSWORD_CHARS.fullmatch(value):
        raise fail(field, msg.PASSWORD_CHARSET.format(label=label(field)))
    return value


def otp(value, field: str = "otp") -> str | None:
    return text(value, field, max_len=MAX_OTP, required=False)


def answer(value, field: str = "answer") -> str:
    # The secret-questions service judges the answer's characters (full-width rules); here
    # only its type and size, so nothing absurd is sent over the bus.
    return text(value, field, max_len=MAX_ANSWER)


def challenge_id(value, field: str = "challenge_id") -> str:
    value = text(value, field, max_len=64)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise fail(field, msg.CHALLENGE_INVALID, "challenge_invalid") from None


@dataclass(frozen=True)
class ClientInfo:
    device_id: str | None = None
    address: str | None = None
    user_agent: str | None = None

    def as_dict(self) -> dict:
        return {"device_id": self.device_id, "address": self.address, "user_agent": self.user_agent}


def client(value) -> ClientInfo:
    """The gateway's view of the caller. Missing is allowed (an empty environment); a wrong
    type is not. An over-long user agent is cut (it is a header anyone can inflate), an
    over-long device id or address is refused."""
    if value is None:
        return ClientInfo()
    if not isinstance(value, dict):
        raise fail("client", msg.CLIENT_INVALID)
    out = {}
    for key, limit in (("device_id", 200), ("address", 64), ("user_agent", None)):
        v = value.get(key)
        if v is None or v == "":
            out[key] = None
            continue
        if not isinstance(v, str):
            raise fail("client", msg.CLIENT_INVALID)
        if limit is None:
            v = v[:MAX_USER_AGENT]
        elif len(v) > limit or not v.isprintable():
            raise fail("client", msg.CLIENT_INVALID)
        out[key] = v
    return ClientInfo(**out)
