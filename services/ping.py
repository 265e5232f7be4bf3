"""The liveness RPC every service answers, so the gateway's ``/health`` can tell a service
that is running and consuming its queue from one that is not."""
from __future__ import annotations

from nameko.rpc import rpc


class PingMixin:
    """Mix into a Nameko service class (which defines ``name``)."""

    @rpc
    def ping(self):
        # No dependency is touched on purpose: a ping proves the service consumes its RPC
        # queue; the gateway checks PostgreSQL and RabbitMQ itself.
        return {"service": self.name, "ok": True}
