"""The event store: one small interface over PostgreSQL (DESIGN.md, "Event store guarantees")."""
from services.eventstore.store import ANY, NO_STREAM, EventStore, VerifyResult
from services.eventstore.factory import open_store

__all__ = ["ANY", "NO_STREAM", "EventStore", "VerifyResult", "open_store"]
