"""The read model of the mail notification password (deploy/sql/061_mail_otp.sql): the snapshot
of ``mailotp-<customer_number>``, written in the same transaction as its events and rebuildable
by replaying the ``mailotp`` category."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from psycopg.types.json import Jsonb

from contracts import mail_otp as contract
from otp_service import mail_otp


def state(conn, customer_number: str) -> mail_otp.MailOtpState:
    row = conn.execute(
        "SELECT current, previous, consecutive_failures, locked, locked_at, stream_version "
        "FROM otp.mail_otp_customers WHERE customer_number = %s", (customer_number,)).fetchone()
    if row is None:
        return mail_otp.MailOtpState(customer_number=customer_number)
    current, previous, failures, locked, locked_at, version = row
    return mail_otp.MailOtpState(
        customer_number=customer_number,
        current=mail_otp.Code.from_dict(current) if current else None,
        previous=tuple(mail_otp.Code.from_dict(p) for p in previous or ()),
        consecutive_failures=failures, locked=locked, locked_at=locked_at, version=version)


def _write(conn, s: mail_otp.MailOtpState) -> None:
    cur = s.current
    conn.execute(
        "INSERT INTO otp.mail_otp_customers (customer_number, current, previous, current_status, "
        "current_expires_at, consecutive_failures, locked, locked_at, stream_version) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (customer_number) DO UPDATE SET "
        "current = excluded.current, previous = excluded.previous, current_status = excluded.current_status, "
        "current_expires_at = excluded.current_expires_at, "
        "consecutive_failures = excluded.consecutive_failures, locked = excluded.locked, "
        "locked_at = excluded.locked_at, stream_version = excluded.stream_version, updated_at = now()",
        (s.customer_number, Jsonb(cur.as_dict()) if cur else None, Jsonb([p.as_dict() for p in s.previous]),
         cur.status if cur else None, cur.expires_at if cur else None, s.consecutive_failures, s.locked,
         s.locked_at, s.version))


def project_all(conn, customer_number: str, new_version: int, events) -> None:
    """Project events just appended; ``new_version`` is what ``EventStore.append`` returned."""
    s = state(conn, customer_number)
    first = new_version - len(events) + 1
    for offset, event in enumerate(events):
        s = mail_otp.evolve(s, event)
        s = replace(s, version=first + offset)
    _write(conn, s)


def expired(conn, now: datetime, limit: int = 200) -> list[str]:
    rows = conn.execute(
        "SELECT customer_number FROM otp.mail_otp_customers WHERE current_status = 'active' "
        "AND current_expires_at <= %s ORDER BY current_expires_at LIMIT %s", (now, limit)).fetchall()
    return [r[0] for r in rows]


def rebuild(store, batch: int = 5000, progress=None) -> int:
    """Empty the read model and replay the sealed ``mailotp`` category into it.

    Each customer's state is folded in memory and written once at the end (the same row
    ``project_all`` leaves after the same events), all rows in one COPY. Of the personal
    fields only the verifier is opened (the row keeps its kid and mac)."""
    from services.eventstore.bulk_read import copy_rows, read_events
    store.seal_all()
    count = 0
    states: dict[str, mail_otp.MailOtpState] = {}
    with store.transaction() as conn:
        conn.execute("DELETE FROM otp.mail_otp_customers")
        for event in read_events(conn, store.keyring, (contract.MAIL_OTP_CATEGORY,), reveal=("verifier",),
                                 progress=progress):
            number = event.stream_name.split("-", 1)[1]
            state = states.get(number) or mail_otp.MailOtpState(customer_number=number)
            states[number] = mail_otp.evolve(state, event)
            count += 1
        copy_rows(conn, "otp.mail_otp_customers", _COLUMNS, map(_row, states.values()))
    if progress:
        progress(count)
    return count


_COLUMNS = ("customer_number", "current", "previous", "current_status", "current_expires_at",
            "consecutive_failures", "locked", "locked_at", "stream_version")


def _row(s: mail_otp.MailOtpState) -> tuple:
    """The values ``_write`` inserts, in ``_COLUMNS`` order."""
    cur = s.current
    return (s.customer_number, Jsonb(cur.as_dict()) if cur else None, Jsonb([p.as_dict() for p in s.previous]),
            cur.status if cur else None, cur.expires_at if cur else None, s.consecutive_failures, s.locked,
            s.locked_at, s.version)
