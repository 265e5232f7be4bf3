"""The read model ``phone_auth.verifications`` (deploy/sql/040_phone_auth.sql), kept by applying
the verification events to it in the transaction that appends them. Applying an event twice
(or an older one) changes nothing: each row remembers the stream version it reflects.
Rebuildable by replaying the ``phoneverif`` category (``rebuild``, used by ``tsunagi replay``)."""
from __future__ import annotations

import hashlib
import hmac
import uuid
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


_PROJECTED = frozenset(t.name for t in (c.PHONE_VERIFICATION_STARTED, c.PHONE_VERIFICATION_ATTEMPT_FAILED,
                                        c.PHONE_VERIFICATION_SUCCEEDED, c.PHONE_VERIFICATION_EXPIRED))


def settings_caller_index(settings=None) -> CallerIndex:
    """The caller index the service uses: keyed by the current master key of FIELD_KEYS."""
    from services import crypto
    from services.config import Settings
    master = next(iter(crypto.parse_master_keys((settings or Settings()).field_keys).values()))
    return caller_index_function(master)


def rebuild(store, *, batch: int = 5000, index: CallerIndex | None = None, progress=None) -> int:
    """Empty the read model and replay the sealed ``phoneverif`` category into it. Returns the
    events seen. (A verification whose customer was shredded reads its caller as redacted, so
    its rebuilt caller index matches no phone: such a row can no longer be found by a call.)

    Each verification's row is folded in memory as ``apply`` changes it event by event (an
    update only when the event's version is newer than the row's) and the table is written
    with one COPY; only the caller is opened."""
    from services.eventstore.bulk_read import copy_rows, read_events
    index = index or settings_caller_index()
    rows: dict[str, list] = {}
    with store.transaction() as conn:
        conn.execute("DELETE FROM phone_auth.verifications")
        seen = 0
        for event in read_events(conn, store.keyring, (c.VERIFICATION_CATEGORY,), reveal=("caller",),
                                 progress=progress):
            seen += 1
            if event.type not in _PROJECTED:    # (other types in the category change nothing)
                continue
            data, version = event.data, event.stream_version
            vid = str(uuid.UUID(str(data["verification_id"])))
            row = rows.get(vid)
            if event.type == c.PHONE_VERIFICATION_STARTED.name:
                if row is None:     # ON CONFLICT DO NOTHING
                    rows[vid] = [vid, data["application_id"], data["customer_number"], index(data["caller"]),
                                 mask_phone(data["caller"]), data["call_to"], data["call_to_display"],
                                 c.AWAITING_CALL, [], data["started_at"], data["expires_at"], version]
                continue
            if row is None or not row[11] < version:
                continue
            if event.type == c.PHONE_VERIFICATION_ATTEMPT_FAILED.name:
                row[8] = row[8] + [data["reason"]]
            elif event.type == c.PHONE_VERIFICATION_SUCCEEDED.name:
                row[7] = c.VERIFIED
            else:
                row[7] = c.EXPIRED
            row[11] = version
        copy_rows(conn, "phone_auth.verifications", tuple(_COLUMNS.split(", ")), map(tuple, rows.values()))
    if progress:
        progress(seen)
    return seen


def as_status(row: dict) -> dict:
    """A row as the ``status`` RPC answers it (contracts.phone_auth.VerificationStatusResult)."""
    return {"verification_id": str(row["verification_id"]), "status": row["status"],
            "attempts": list(row["attempts"]), "expires_at": _iso(row["expires_at"]),
            "application_id": row["application_id"], "call_to": row["call_to_display"],
            "call_from_masked": row["caller_masked"]}


def _iso(value) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
