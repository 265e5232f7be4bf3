"""Who listens to which event. The relay declares these queues (named as Nameko names them)
before it publishes, so an event is kept even when its consumer has never run yet."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Subscription:
    source_service: str
    event_type: str
    handler_service: str
    method: str

    @property
    def queue_name(self) -> str:  # nameko.events.EventHandler, SERVICE_POOL
        return f"evt-{self.source_service}-{self.event_type}--{self.handler_service}.{self.method}"


SUBSCRIPTIONS: list[Subscription] = []


def subscribe(source_service: str, event_type: str, handler_service: str, method: str) -> Subscription:
    sub = Subscription(source_service, event_type, handler_service, method)
    if sub not in SUBSCRIPTIONS:
        SUBSCRIPTIONS.append(sub)
    return sub
