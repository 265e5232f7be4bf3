"""Nameko dependency providers: the event store, the request context, a logger, a clock."""
from __future__ import annotations

import uuid

from nameko.extensions import DependencyProvider

from contracts.events import Actor, Metadata
from services import logging as tlog
from services.clock import SystemClock
from services.config import Settings

# Keys of Nameko context data that the gateway sets and RPC carries to every service.
CORRELATION_ID = "correlation_id"
ACTOR_KIND = "actor_kind"
ACTOR_ID = "actor_id"
CLIENT_ADDRESS = "client_address"
REASON = "reason"


class EventStoreProvider(DependencyProvider):
    """One connection pool per service container."""

    def __init__(self, max_size: int | None = None):
        self.max_size = max_size   # None: DATABASE_POOL_SIZE
        self.store = None

    def setup(self):
        from services.eventstore import open_store
        settings = Settings()
        url = self.container.config.get("DATABASE_URL") or settings.database_url
        self.store = open_store(settings, database_url=url,
                                max_size=self.max_size or settings.database_pool_size)

    def stop(self):
        if self.store is not None:
            self.store.pool.close()

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        return self.store


def metadata_from_context(worker_ctx, service: str) -> Metadata:
    data = worker_ctx.context_data
    actor = Actor(data.get(ACTOR_KIND) or "system", data.get(ACTOR_ID) or service)
    return Metadata(actor=actor, correlation_id=data.get(CORRELATION_ID) or str(uuid.uuid4()),
                    service=service, client_address=data.get(CLIENT_ADDRESS), reason=data.get(REASON))


class RequestContext(DependencyProvider):
    """The event metadata of the current call: actor, correlation id, client address."""

    def get_dependency(self, worker_ctx):
        return metadata_from_context(worker_ctx, self.container.service_name)


class Logger(DependencyProvider):
    def get_dependency(self, worker_ctx):
        return tlog.get_logger(service=self.container.service_name,
                               correlation_id=worker_ctx.context_data.get(CORRELATION_ID),
                               entrypoint=worker_ctx.entrypoint.method_name)


class Clock(DependencyProvider):
    def setup(self):
        self.clock = SystemClock()

    def get_dependency(self, worker_ctx):
        return self.clock


class Config(DependencyProvider):
    def setup(self):
        self.settings = Settings()

    def get_dependency(self, worker_ctx):
        return self.settings
