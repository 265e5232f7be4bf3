"""An in-process gateway for HTTP-level tests, and the bare HTTP client that talks to it.

The gateway runs in a Nameko ``ServiceRunner`` with ping-only stand-ins for every service
``gateway.health`` knows, against the real PostgreSQL and RabbitMQ, so route and session tests
do not depend on the domain services.
"""
from __future__ import annotations

import http.client
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from nameko.runners import ServiceRunner

from gateway.health import SERVICES
from services.ping import PingMixin
from tests import vhosts
from tests.conftest import unique
from tests.support.net import free_port
from tests.support.services import running


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    @property
    def json(self):
        return json.loads(self.raw)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    def cookies(self) -> dict[str, str]:
        """Set-Cookie headers by name → the full header (attributes included)."""
        out = {}
        for header in self.headers.get_all("Set-Cookie") or []:
            out[header.split("=", 1)[0]] = header
        return out


class Client:
    """One connection a request (http.client): nothing pooled or retried hides what the server did."""

    def __init__(self, port: int):
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"

    def call(self, method, path, body=None, *, raw=None, headers=None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if body is not None:
            raw = json.dumps(body, ensure_ascii=False).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=raw, headers=sent,
                         encode_chunked=sent.get("Transfer-Encoding") == "chunked")
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)


def stand_in(service_name: str):
    """A service of that name that answers only ``ping`` (the chassis mixin every service uses)."""
    return type(f"StandIn_{service_name}", (PingMixin,), {"name": service_name, "__module__": __name__})


@dataclass
class RunningGateway:
    client: Client
    runner: ServiceRunner
    config: dict


@contextmanager
def running_gateway(settings, gateway_cls, *services, vhost_prefix: str, **config) -> Iterator[RunningGateway]:
    """``gateway_cls`` and ``services`` plus a stand-in for each of ``gateway.health.SERVICES``,
    on a free port; ``config`` adds to (or overrides) the base configuration.

    A vhost of the caller's own (on top of the session's): other modules run services with the
    same names, and their durable rpc-<name> queues must not answer this gateway's calls. Where
    rabbitmqctl is missing the session's vhost is used.
    """
    vhost = unique(vhost_prefix)
    own_vhost = vhosts.create(vhost)
    amqp_uri = vhosts.uri_for(settings.amqp_uri, vhost) if own_vhost else settings.amqp_uri
    port = free_port()
    config = {**settings.nameko_config(), "AMQP_URI": amqp_uri, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}",
              "DATABASE_URL": settings.database_url, "max_workers": 10, **config}
    try:
        with running(config, [gateway_cls, *services, *(stand_in(name) for name in SERVICES)]) as runner:
            yield RunningGateway(Client(port), runner, config)
    finally:
        if own_vhost:
            vhosts.delete(vhost)
