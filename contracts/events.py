"""Event envelope and the registry of event types (name, owning service, schema version,
personal fields, upcasters)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

Upcaster = Callable[[dict], dict]


@dataclass(frozen=True)
class Actor:
    kind: str          # customer | operator | system | auditor
    id: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "id": self.id}


SYSTEM = Actor("system", "tsunagi")


@dataclass(frozen=True)
class Metadata:
    """Who caused an event and in answer to what. Travels with every event."""
    actor: Actor = SYSTEM
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    causation_id: str | None = None
    service: str | None = None
    client_address: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        d = {"actor": self.actor.as_dict(), "correlation_id": self.correlation_id}
        for key in ("causation_id", "service", "client_address", "reason"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Metadata":
        actor = d.get("actor") or {}
        return cls(actor=Actor(actor.get("kind", "system"), actor.get("id", "tsunagi")),
                   correlation_id=d.get("correlation_id") or str(uuid.uuid4()),
                   causation_id=d.get("causation_id"), service=d.get("service"),
                   client_address=d.get("client_address"), reason=d.get("reason"))

    def caused_by(self, event: "RecordedEvent", service: str | None = None) -> "Metadata":
        """Metadata for an event written in reaction to ``event``: same correlation."""
        return Metadata(actor=SYSTEM, correlation_id=event.metadata.get("correlation_id", self.correlation_id),
                        causation_id=str(event.event_id), service=service or self.service)


@dataclass(frozen=True)
class NewEvent:
    type: str
    data: dict
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True)
class RecordedEvent:
    stream_name: str
    stream_version: int
    event_id: uuid.UUID
    type: str
    schema_version: int
    data: dict
    metadata: dict
    recorded_at: datetime
    global_position: int | None = None   # None until sealed into the global log

    @property
    def category(self) -> str:
        return self.stream_name.split("-", 1)[0]

    @property
    def stream_id(self) -> str:
        return self.stream_name.split("-", 1)[1]

    def as_message(self) -> dict:
        """The body the relay publishes to RabbitMQ (JSON-safe)."""
        return {
            "event_id": str(self.event_id), "global_position": self.global_position,
            "stream_name": self.stream_name, "stream_version": self.stream_version,
            "type": self.type, "schema_version": self.schema_version, "data": self.data,
            "metadata": self.metadata, "recorded_at": self.recorded_at.isoformat(),
        }

    @classmethod
    def from_message(cls, body: Mapping[str, Any]) -> "RecordedEvent":
        return cls(stream_name=body["stream_name"], stream_version=body["stream_version"],
                   event_id=uuid.UUID(body["event_id"]), type=body["type"],
                   schema_version=body["schema_version"], data=body["data"],
                   metadata=body["metadata"], recorded_at=datetime.fromisoformat(body["recorded_at"]),
                   global_position=body.get("global_position"))


@dataclass(frozen=True)
class EventType:
    name: str
    source_service: str
    version: int = 1
    personal_fields: tuple[str, ...] = ()       # encrypted per subject (crypto-shredding)
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)  # from version n to n+1
    description: str = ""

    def upcast(self, version: int, data: dict) -> dict:
        while version < self.version:
            data = self.upcasters[version](data)
            version += 1
        return data


class Registry:
    def __init__(self) -> None:
        self._types: dict[str, EventType] = {}

    def register(self, name: str, source_service: str, **kw) -> EventType:
        et = EventType(name, source_service, **kw)
        existing = self._types.get(name)
        if existing is not None and existing != et:
            raise ValueError(f"event type {name} registered twice with different definitions")
        self._types[name] = et
        return et

    def get(self, name: str) -> EventType | None:
        return self._types.get(name)

    def source_service(self, name: str) -> str:
        et = self._types.get(name)
        return et.source_service if et else "unknown"

    def __iter__(self):
        return iter(self._types.values())


REGISTRY = Registry()
register = REGISTRY.register

# Events of the chassis itself.
SUBJECT_SHREDDED = register("subject_key_shredded", "eventstore",
                            description="A customer's data key was destroyed; personal fields read as redacted.")
