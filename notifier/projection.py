"""The outbox read model (deploy/sql/070_notifier.sql): which mails are due, and who is
delivering one right now. Written in the same transaction as the mail events; rebuildable by
replaying the ``mail`` category (leases start empty)."""
from __future__ import annotations

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


def rebuild(store, batch: int = 1000) -> int:
    store.seal_all()
    count = 0
    with store.transaction() as conn:
        conn.execute("DELETE FROM notifier.outbox")
        position = 0
        while True:
            events = store.read_category(contract.MAIL_CATEGORY, position, batch, conn=conn)
            if not events:
                return count
            for event in events:
                project(conn, event.stream_version, event)
                count += 1
            position = events[-1].global_position
