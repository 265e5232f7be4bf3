"""The read model ``phone_auth.verifications`` (deploy/sql/040_phone_auth.sql), kept by applying
the verification events to it in the transaction that appends them. Applying an event twice
(or an older one) changes nothing: each row remembers the stream version it reflects."""
from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Callable

from contracts import phone_auth as c
from services.logging import mask_phone

CallerIndex = Callable[[str], str]


def caller_index_function(secret: bytes) -> CallerIndex:
    """A keyed hash of an E.164 number: the read model can find "this phone's verification"
    without holding the number (and a leaked table is not a phone book)."""
    key = hmac.new(secret, b"tsunagi/phone_auth/caller-index/v1", hashlib.sha256).digest()

    def index(e164: str) -> str:
        return hmac.new(key, e164.encode(), hashlib.sha256).hexdigest()
    return index


_COLUMNS = ("verification_id, application_id, customer_number, caller_index, caller_masked, "
            "call_to, call_to_display, status, attempts, started_at, expires_at, stream_version")


def apply(conn, event_type: str, data: dict, stream_version: int, index: CallerIndex) -> None:
    vid = data["verification_id"]
    if event_type == c.PHONE_VERIFICATION_STARTED.name:
        conn.execute(
            f"INSERT INTO phone_auth.verifications ({_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, '{}', %s, %s, %s) "
            "ON CONFLICT (verification_id) DO NOTHING",
            (vid, data["application_id"], data["customer_number"], index(data["caller"]),
             mask_phone(data["caller"]), data["call_to"], data["call_to_display"],
             c.AWAITING_CALL, data["started_at"], data["expires_at"], stream_version))
        return
    if event_type == c.PHONE_VERIFICATION_ATTEMPT_FAILED.name:
        change, args = "attempts = array_append(attempts, %s)", (data["reason"],)
    elif event_type == c.PHONE_VERIFICATION_SUCCEEDED.name:
        change, args = "status = %s", (c.VERIFIED,)
    elif event_type == c.PHONE_VERIFICATION_EXPIRED.name:
        change, args = "status = %s", (c.EXPIRED,)
    else:
        return
    conn.execute(f"UPDATE phone_auth.verifications SET {change}, stream_version = %s, "
                 "updated_at = now() WHERE verification_id = %s AND stream_version < %s",
                 (*args, stream_version, vid, stream_version))


def as_status(row: dict) -> dict:
    """A row as the ``status`` RPC answers it (contracts.phone_auth.VerificationStatusResult)."""
    return {"verification_id": str(row["verification_id"]), "status": row["status"],
            "attempts": list(row["attempts"]), "expires_at": _iso(row["expires_at"]),
            "application_id": row["application_id"], "call_to": row["call_to_display"],
            "call_from_masked": row["caller_masked"]}


def _iso(value) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
