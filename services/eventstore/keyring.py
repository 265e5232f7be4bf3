"""Per-subject data keys, wrapped by a configured master key (crypto-shredding)."""
from __future__ import annotations

import threading
import time

from services import crypto


class KeyRing:
    """Finds, creates and destroys subject data keys.

    Unwrapped keys are cached briefly: a shred is final in the database at once and in every
    process's cache within ``ttl`` seconds.
    """

    def __init__(self, master: crypto.MasterKeys, ttl: float = 30.0):
        self.master = master
        self.ttl = ttl
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    # ``mine``: the row was written by the caller's own, still open transaction (its
    # created_at is that transaction's start time). Such a key is not cached: should the
    # transaction roll back, the key never existed, and data sealed with a cached copy of it
    # could never be opened again.
    _SELECT = ("SELECT master_kid, wrapped_key, created_at = now() AS mine "
               "FROM eventstore.subject_keys WHERE subject = %s")

    def data_key(self, conn, subject: str, *, create: bool) -> bytes | None:
        now = time.monotonic()
        hit = self._cache.get(subject)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        row = conn.execute(self._SELECT, (subject,)).fetchone()
        if row is None:
            if not create:
                return None
            wk = self.master.wrap(subject, crypto.new_data_key())
            conn.execute("INSERT INTO eventstore.subject_keys (subject, master_kid, wrapped_key) "
                         "VALUES (%s, %s, %s) ON CONFLICT (subject) DO NOTHING",
                         (subject, wk.master_kid, wk.wrapped))
            row = conn.execute(self._SELECT, (subject,)).fetchone()
        key = self.master.unwrap(subject, crypto.WrappedKey(row[0], bytes(row[1])))
        if not row[2]:
            with self._lock:
                self._cache[subject] = (now, key)
        return key

    def destroy(self, conn, subject: str) -> bool:
        with self._lock:
            self._cache.pop(subject, None)
        cur = conn.execute("DELETE FROM eventstore.subject_keys WHERE subject = %s", (subject,))
        return cur.rowcount > 0

    # -- master-key rotation (operators; needs UPDATE on subject_keys: the database owner) ----------

    def usage(self, conn) -> dict[str, int]:
        """Subject keys per master key id."""
        return dict(conn.execute("SELECT master_kid, count(*) FROM eventstore.subject_keys "
                                 "GROUP BY master_kid ORDER BY master_kid").fetchall())

    def rotate(self, conn, batch: int = 500) -> int:
        """Rewrap every subject key not under the current master key; returns how many. Each
        batch is its own transaction and locks only its rows (a concurrent shred waits for the
        batch, then deletes the rewrapped row); the data keys themselves do not change, so
        caches and every ciphertext in the log stay valid throughout."""
        old = self.master.kids[1:]     # rows under an id not configured cannot be opened at all
        done = 0
        while old:
            with conn.transaction():
                rows = conn.execute(
                    "SELECT subject, master_kid, wrapped_key FROM eventstore.subject_keys "
                    "WHERE master_kid = ANY(%s) ORDER BY subject LIMIT %s FOR UPDATE SKIP LOCKED",
                    (old, batch)).fetchall()
                for subject, kid, wrapped in rows:
                    new = self.master.rewrap(subject, crypto.WrappedKey(kid, bytes(wrapped)))
                    conn.execute("UPDATE eventstore.subject_keys SET master_kid = %s, wrapped_key = %s "
                                 "WHERE subject = %s", (new.master_kid, new.wrapped, subject))
            done += len(rows)
            if len(rows) < batch:
                break
        return done

    def forget_cache(self) -> None:
        with self._lock:
            self._cache.clear()
