"""``GET /health``: is every dependency of the gateway answering right now?

PostgreSQL, RabbitMQ and an RPC ping to every service are checked concurrently, each with a
short deadline, so one dead dependency costs one timeout, not the sum of them. A load
balancer takes the gateway out of rotation on 503.
"""
from __future__ import annotations

import os
import time

import eventlet
import psycopg
from eventlet.greenpool import GreenPool
from kombu import Connection
from kombu.exceptions import OperationalError
from marshmallow import Schema, fields, validate
from nameko.exceptions import UnknownService
from nameko.extensions import DependencyProvider

from gateway.http import api
from services.config import Settings

HEALTH_TIMEOUT = 2.0
SERVICES = ("identity", "secret_questions", "passkeys", "otp_service", "phone_auth", "notifier")


class DependencyStatusSchema(Schema):
    ok = fields.Boolean(required=True)
    latency_ms = fields.Float(metadata={"description": "time the check took"})
    error = fields.String(metadata={"description": "timeout | unavailable | error (no internals)"})


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "degraded"]))
    dependencies = fields.Dict(keys=fields.String(), values=fields.Nested(DependencyStatusSchema),
                               required=True, metadata={
                                   "description": "postgresql, rabbitmq and one entry per service"})


class HealthProbe(DependencyProvider):
    """Checks against the addresses this container really uses (its Nameko config)."""

    def setup(self):
        config = self.container.config
        settings = Settings()
        self.amqp_uri = config.get("AMQP_URI") or settings.amqp_uri
        self.database_url = config.get("DATABASE_URL") or settings.database_url
        self.timeout = float(config.get("HEALTH_TIMEOUT") or os.environ.get("HEALTH_TIMEOUT")
                             or HEALTH_TIMEOUT)

    def get_dependency(self, worker_ctx):
        return self

    def postgresql(self) -> None:
        with eventlet.Timeout(self.timeout):
            with psycopg.connect(self.database_url, connect_timeout=max(1, int(self.timeout)),
                                 autocommit=True) as conn:
                conn.execute("SELECT 1")

    def rabbitmq(self) -> None:
        with eventlet.Timeout(self.timeout):
            with Connection(self.amqp_uri, connect_timeout=self.timeout) as conn:
                conn.connect()
                if not conn.connected:
                    raise ConnectionError("not connected")


def _run_check(check) -> dict:
    started = time.monotonic()
    try:
        check()
        result = {"ok": True}
    except eventlet.Timeout:
        result = {"ok": False, "error": "timeout"}
    except (UnknownService, OperationalError, ConnectionError, OSError):
        result = {"ok": False, "error": "unavailable"}
    except Exception:  # noqa: BLE001 — a health check reports, it does not raise
        result = {"ok": False, "error": "error"}
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


class HealthRoutes:
    """Needs ``health_probe = HealthProbe()`` and an RPC proxy attribute per service."""

    health_services = SERVICES

    @api("GET", "/health", response=HealthSchema, tags=("system",), responses={503: HealthSchema},
         summary="Health of the gateway and every dependency (503 when any is down)")
    def health(self, req):
        checks = {"postgresql": self.health_probe.postgresql,
                  "rabbitmq": self.health_probe.rabbitmq}
        for name in self.health_services:
            checks[name] = self._ping_check(name)
        pool = GreenPool(len(checks))
        results = dict(zip(checks, pool.imap(_run_check, checks.values())))
        healthy = all(r["ok"] for r in results.values())
        return (200 if healthy else 503,
                {"status": "ok" if healthy else "degraded", "dependencies": results})

    def _ping_check(self, name: str):
        proxy, timeout = getattr(self, name), self.health_probe.timeout

        def check():
            # Not rpc_call: the report tells a timeout from a service never seen on the bus.
            with eventlet.Timeout(timeout):
                reply = proxy.ping()
            if not (isinstance(reply, dict) and reply.get("ok") is True):
                raise ValueError("unexpected ping reply")
        return check
