"""Customer sessions: opaque bearer tokens, of which only a SHA-256 is stored.

A session ends after ``SESSION_IDLE_SECONDS`` (default 15 min) without a request or
``SESSION_ABSOLUTE_SECONDS`` (default 2 h) after it began, whichever comes first, or when it
is revoked (logout, password change, operator action).

The idle expiry is slid at most every ``SLIDE_SECONDS`` (30 s), so most requests read the
session with one SELECT instead of writing it: an idle session may end up to 30 s before
``SESSION_IDLE_SECONDS`` after its last request, never after. Nothing is cached in the
process: a revoked or expired session is refused at its very next request.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from nameko.extensions import DependencyProvider

from services.clock import SystemClock
from services.config import Settings
from services.eventstore.factory import open_pool

KINDS = ("migration", "customer")
IDLE_SECONDS = 15 * 60
ABSOLUTE_SECONDS = 2 * 60 * 60
# The idle expiry is slid at most this often (see SessionStore.get): a request within 30 s of
# the last slide reads the session without writing it.
SLIDE_SECONDS = 30
# 32 random bytes in urlsafe base64 are 43 characters; anything much longer is not ours and
# is refused before it reaches the database.
_MAX_TOKEN_LENGTH = 128


# SessionStore.get in one statement (one round trip). Whether to slide is decided on the row
# as read (`live`): over `slide` old, the UPDATE slides it and its result is the answer;
# otherwise the UPDATE matches nothing and writes nothing, and the row as read is the answer.
# The UPDATE re-checks revocation and expiry on the newest row version, so a revocation or
# expiry that landed since the statement's snapshot wins (as with the SELECT-then-UPDATE this
# replaces), while a request sliding the same session at the same moment does not make it fail.
_LOOKUP = """
WITH live AS (
    SELECT customer_number, kind, created_at, expires_at, last_seen_at
      FROM gateway.sessions
     WHERE token_hash = %(hash)s AND revoked_at IS NULL AND expires_at > %(now)s),
slid AS (
    UPDATE gateway.sessions s
       SET last_seen_at = %(now)s,
           expires_at = LEAST(%(now)s + %(idle)s, s.created_at + %(absolute)s)
      FROM live
     WHERE s.token_hash = %(hash)s AND s.revoked_at IS NULL AND s.expires_at > %(now)s
       AND live.last_seen_at <= %(now)s - %(slide)s
    RETURNING s.customer_number, s.kind, s.created_at, s.expires_at)
SELECT customer_number, kind, created_at, expires_at FROM slid
UNION ALL
SELECT customer_number, kind, created_at, expires_at FROM live
 WHERE last_seen_at > %(now)s - %(slide)s
"""


@dataclass(frozen=True)
class Session:
    customer_number: str
    kind: str
    created_at: datetime
    expires_at: datetime | None = None


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class SessionStore:
    def __init__(self, pool, *, clock=None, idle_seconds: int = IDLE_SECONDS,
                 absolute_seconds: int = ABSOLUTE_SECONDS, slide_seconds: int = SLIDE_SECONDS):
        self.pool = pool
        self.slide = timedelta(seconds=slide_seconds)
        self.clock = clock or SystemClock()
        self.idle = timedelta(seconds=idle_seconds)
        self.absolute = timedelta(seconds=absolute_seconds)

    def create(self, customer_number: str, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown session kind {kind!r}")
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO gateway.sessions (token_hash, customer_number, kind, created_at,"
                " last_seen_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (token_hash(token), customer_number, kind, now, now,
                 min(now + self.idle, now + self.absolute)))
        return token

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``, sliding its idle expiry; None when unknown,
        expired or revoked (the caller cannot tell which, on purpose).

        One statement (``_LOOKUP``): the idle expiry is slid (a row write, WAL) only when the
        last slide is more than ``slide_seconds`` old. The session therefore ends at
        most ``slide_seconds`` *earlier* than an exact 15 min after the last request, never
        later; revocation and expiry are read from the table on every request, so a revoked
        session stops working at its very next request (no cache)."""
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return None
        with self.pool.connection() as conn:
            row = conn.execute(_LOOKUP, {"hash": token_hash(token), "now": self.clock.now(),
                                         "slide": self.slide, "idle": self.idle,
                                         "absolute": self.absolute}).fetchone()
        return Session(*row) if row else None

    def revoke(self, token: str | None) -> bool:
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return False
        with self.pool.connection() as conn:
            cur = conn.execute(
                "UPDATE gateway.sessions SET revoked_at = %s"
                " WHERE token_hash = %s AND revoked_at IS NULL",
                (self.clock.now(), token_hash(token)))
            return cur.rowcount > 0

    def revoke_all(self, customer_number: str, kind: str | None = None) -> int:
        """End every live session of a customer (e.g. after a password change); returns how many."""
        with self.pool.connection() as conn:
            cur = conn.execute(
                "UPDATE gateway.sessions SET revoked_at = %s"
                " WHERE customer_number = %s AND revoked_at IS NULL"
                "   AND (%s::text IS NULL OR kind = %s::text)",
                (self.clock.now(), customer_number, kind, kind))
            return cur.rowcount

    def purge(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Delete rows that ended more than ``older_than`` ago (housekeeping)."""
        cutoff = self.clock.now() - older_than
        with self.pool.connection() as conn:
            cur = conn.execute(
                "DELETE FROM gateway.sessions WHERE expires_at < %s OR revoked_at < %s",
                (cutoff, cutoff))
            return cur.rowcount

    def ping(self) -> None:
        with self.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")


def _setting(config, key: str, default: int) -> int:
    value = config.get(key) or os.environ.get(key)
    return int(value) if value not in (None, "") else default


class SessionProvider(DependencyProvider):
    """The gateway's session store, on a connection pool of its own (``DATABASE_URL``)."""

    def __init__(self, max_size: int = 5):
        self.max_size = max_size
        self.store: SessionStore | None = None

    def setup(self):
        config = self.container.config
        url = config.get("DATABASE_URL") or Settings().database_url
        pool = open_pool(url, max_size=self.max_size, name="gateway-sessions")
        self.store = SessionStore(
            pool,
            idle_seconds=_setting(config, "SESSION_IDLE_SECONDS", IDLE_SECONDS),
            absolute_seconds=_setting(config, "SESSION_ABSOLUTE_SECONDS", ABSOLUTE_SECONDS))

    def stop(self):
        if self.store is not None:
            self.store.pool.close()
            self.store = None

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        return self.store
