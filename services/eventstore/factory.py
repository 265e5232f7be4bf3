from __future__ import annotations

from psycopg_pool import ConnectionPool

from services import crypto
from services.config import Settings
from services.eventstore.keyring import KeyRing
from services.eventstore.store import EventStore


def open_pool(database_url: str, *, min_size: int = 1, max_size: int = 10, name: str = "tsunagi") -> ConnectionPool:
    # Connections beyond min_size are closed after a minute unused: a burst must not keep a
    # process's share of PostgreSQL's max_connections for the 10 minutes of psycopg's default.
    pool = ConnectionPool(database_url, min_size=min_size, max_size=max_size, name=name,
                          kwargs={"autocommit": True}, open=False, max_idle=60)
    pool.open(wait=True, timeout=15)
    return pool


def open_store(settings: Settings, *, max_size: int = 10, database_url: str | None = None) -> EventStore:
    pool = open_pool(database_url or settings.database_url, max_size=max_size)
    return EventStore(pool, KeyRing(crypto.MasterKeys(settings.field_keys)))
