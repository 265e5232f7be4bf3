"""identity's read models (deploy/sql/030_identity.sql): written with the events they follow,
in the same transaction, and rebuildable from the log by replay (R-PLT-4)."""
from __future__ import annotations

from contracts.events import RecordedEvent

PROJECTED = ("legacy_customer_imported", "login_challenged")


def apply(conn, stream_name: str, event_type: str, data: dict) -> None:
    """Project one event (new or replayed). Idempotent."""
    if event_type == "legacy_customer_imported":
        conn.execute("INSERT INTO identity.legacy_imports (customer_number, record_digest) "
                     "VALUES (%s, %s) ON CONFLICT (customer_number) DO NOTHING",
                     (stream_name.split("-", 1)[1], data["record_digest"]))
    elif event_type == "login_challenged":
        conn.execute("INSERT INTO identity.login_challenges (challenge_id, customer_number, expires_at) "
                     "VALUES (%s, %s, %s) ON CONFLICT (challenge_id) DO NOTHING",
                     (data["challenge_id"], stream_name.split("-", 1)[1], data["expires_at"]))


def rebuild(store, *, batch: int = 5000, progress=None) -> int:
    """Empty the projections and replay every customer event into them. Returns events seen."""
    with store.transaction() as conn:
        conn.execute("DELETE FROM identity.legacy_imports")
        conn.execute("DELETE FROM identity.login_challenges")
        position, seen = 0, 0
        while True:
            # Neither model needs a personal field: the log is read without decrypting any.
            events: list[RecordedEvent] = store.read_category("customer", position, batch, conn=conn,
                                                              reveal=False)
            if not events:
                return seen
            for ev in events:
                if ev.type in PROJECTED:
                    apply(conn, ev.stream_name, ev.type, ev.data)
            seen += len(events)
            position = events[-1].global_position
            if progress:
                progress(seen)


def challenge_owner(conn, challenge_id: str) -> str | None:
    row = conn.execute("SELECT customer_number FROM identity.login_challenges WHERE challenge_id = %s",
                       (challenge_id,)).fetchone()
    return row[0] if row else None


def imported_digests(conn, numbers: list[str]) -> dict[str, str]:
    rows = conn.execute("SELECT customer_number, record_digest FROM identity.legacy_imports "
                        "WHERE customer_number = ANY(%s)", (numbers,)).fetchall()
    return dict(rows)
