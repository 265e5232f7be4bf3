"""The outbox read model (deploy/sql/070_notifier.sql): which mails are due, and who is
delivering one right now. Written in the same transaction as the mail events; rebuildable by
replaying the ``mail`` category (leases start empty)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from contracts import notifier as contract


def project(conn, version: int, event) -> None:
    d, t = event.data, event.type
    if t == contract.MAIL_QUEUED.name:
        conn.execute(
            "INSERT INTO notifier.outbox (mail_id, template, customer_number, source_event_id, status, "
            "attempts, next_attempt_at, message_id, queued_at, stream_version) "
            "VALUES (%s, %s, %s, %s, 'queued', 0, %s, %s, %s, %s) ON CONFLICT (mail_id) DO NOTHING",
            (d["mail_id"], d["template"], d.get("customer_number"), d.get("source_event_id"),
             d["queued_at"], d["message_id"], d["queued_at"], version))
    elif t == contract.MAIL_DEFERRED.name:
        conn.execute(
            "UPDATE notifier.outbox SET attempts = %s, next_attempt_at = %s, last_error = %s, "
            "lease_until = NULL, stream_version = %s, updated_at = now() WHERE mail_id = %s",
            (d["attempt"], d["next_attempt_at"], d.get("error"), version, d["mail_id"]))
    elif t == contract.MAIL_SENT.name:
        conn.execute(
            "UPDATE notifier.outbox SET status = 'sent', attempts = %s, sent_at = %s, lease_until = NULL, "
            "stream_version = %s, updated_at = now() WHERE mail_id = %s",
            (d["attempt"], d["sent_at"], version, d["mail_id"]))
    elif t == contract.MAIL_FAILED.name:
        conn.execute(
            "UPDATE notifier.outbox SET status = 'failed', attempts = %s, last_error = %s, lease_until = NULL, "
            "stream_version = %s, updated_at = now() WHERE mail_id = %s",
            (d["attempts"], d.get("error"), version, d["mail_id"]))


def project_all(conn, new_version: int, events) -> None:
    first = new_version - len(events) + 1
    for offset, event in enumerate(events):
        project(conn, first + offset, event)


def claim(conn, mail_id, now: datetime, lease: timedelta) -> bool:
    """Take a due, queued mail for delivery; False when it is not due, done, or taken."""
    row = conn.execute(
        "UPDATE notifier.outbox SET lease_until = %s WHERE mail_id = %s AND status = 'queued' "
        "AND next_attempt_at <= %s AND (lease_until IS NULL OR lease_until < %s) RETURNING mail_id",
        (now + lease, mail_id, now, now)).fetchone()
    return row is not None


def release(conn, mail_id) -> None:
    conn.execute("UPDATE notifier.outbox SET lease_until = NULL WHERE mail_id = %s", (mail_id,))


def due(conn, now: datetime, limit: int = 50) -> list[str]:
    rows = conn.execute(
        "SELECT mail_id::text FROM notifier.outbox WHERE status = 'queued' AND next_attempt_at <= %s "
        "AND (lease_until IS NULL OR lease_until < %s) ORDER BY next_attempt_at LIMIT %s",
        (now, now, limit)).fetchall()
    return [r[0] for r in rows]


def status(conn, mail_id):
    return conn.execute(
        "SELECT mail_id::text, status, template, attempts, message_id, last_error FROM notifier.outbox "
        "WHERE mail_id = %s", (mail_id,)).fetchone()


def rebuild(store, batch: int = 1000, progress=None) -> int:
    """Empty the outbox and replay the sealed ``mail`` category into it: each mail's row is
    folded in memory (``_fold``: what ``project`` does event by event) and the table written
    with one COPY. No personal field is opened (the outbox keeps none). Returns the events."""
    from services.eventstore.bulk_read import copy_rows, read_events
    store.seal_all()
    rows: dict[str, dict] = {}
    with store.transaction() as conn:
        conn.execute("DELETE FROM notifier.outbox")
        count = 0
        # Only the notifier's mail event types (as the live statements, which ignore the rest).
        for event in read_events(conn, store.keyring, (contract.MAIL_CATEGORY,), types=contract.EVENT_TYPES,
                                 progress=progress):
            _fold(rows, event.stream_version, event)
            count += 1
        copy_rows(conn, "notifier.outbox", _COLUMNS, (tuple(r[c] for c in _COLUMNS) for r in rows.values()))
    if progress:
        progress(count)
    return count


_COLUMNS = ("mail_id", "template", "customer_number", "source_event_id", "status", "attempts",
            "next_attempt_at", "lease_until", "last_error", "message_id", "queued_at", "sent_at",
            "stream_version")


def _fold(rows: dict[str, dict], version: int, event) -> None:
    d, t = event.data, event.type
    key = str(uuid.UUID(str(d["mail_id"])))
    row = rows.get(key)
    if t == contract.MAIL_QUEUED.name:
        if row is None:     # ON CONFLICT DO NOTHING
            rows[key] = {"mail_id": key, "template": d["template"], "customer_number": d.get("customer_number"),
                         "source_event_id": d.get("source_event_id"), "status": "queued", "attempts": 0,
                         "next_attempt_at": d["queued_at"], "lease_until": None, "last_error": None,
                         "message_id": d["message_id"], "queued_at": d["queued_at"], "sent_at": None,
                         "stream_version": version}
        return
    if row is None:         # an UPDATE of no row
        return
    if t == contract.MAIL_DEFERRED.name:
        row.update(attempts=d["attempt"], next_attempt_at=d["next_attempt_at"], last_error=d.get("error"),
                   stream_version=version)
    elif t == contract.MAIL_SENT.name:
        row.update(status="sent", attempts=d["attempt"], sent_at=d["sent_at"], stream_version=version)
    elif t == contract.MAIL_FAILED.name:
        row.update(status="failed", attempts=d["attempts"], last_error=d.get("error"), stream_version=version)
