"""identity's read models (deploy/sql/030_identity.sql): written with the events they follow,
in the same transaction, and rebuildable from the log by replay (R-PLT-4)."""
from __future__ import annotations

import uuid

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


def rebuild(store, *, progress=None) -> int:
    """Empty the projections and replay the customer events into them. Returns the customer
    events the rebuild accounts for (the category's sealed events).

    Only the two projected types are read, none of their personal fields opened; each table is
    written with one COPY. The first event per key wins, as ON CONFLICT DO NOTHING does live."""
    from services.eventstore.bulk_read import copy_rows, count_events, read_events
    with store.transaction() as conn:
        conn.execute("DELETE FROM identity.legacy_imports")
        conn.execute("DELETE FROM identity.login_challenges")
        imports: dict[str, str] = {}
        challenges: dict[uuid.UUID, tuple] = {}
        for ev in read_events(conn, store.keyring, ("customer",), types=PROJECTED,
                              progress=progress):
            number, data = ev.stream_name.split("-", 1)[1], ev.data
            if ev.type == "legacy_customer_imported":
                imports.setdefault(number, data["record_digest"])
            else:
                challenge = uuid.UUID(str(data["challenge_id"]))
                if challenge not in challenges:
                    challenges[challenge] = (challenge, number, data["expires_at"])
        copy_rows(conn, "identity.legacy_imports", ("customer_number", "record_digest"), imports.items())
        copy_rows(conn, "identity.login_challenges", ("challenge_id", "customer_number", "expires_at"),
                  challenges.values())
        seen = count_events(conn, ("customer",))
        if progress:
            progress(seen)
        return seen


def challenge_owner(conn, challenge_id: str) -> str | None:
    row = conn.execute("SELECT customer_number FROM identity.login_challenges WHERE challenge_id = %s",
                       (challenge_id,)).fetchone()
    return row[0] if row else None


def imported_digests(conn, numbers: list[str]) -> dict[str, str]:
    rows = conn.execute("SELECT customer_number, record_digest FROM identity.legacy_imports "
                        "WHERE customer_number = ANY(%s)", (numbers,)).fetchall()
    return dict(rows)
