"""Gateway core (issue 2 item 9; R-PLT-3 the gateway's HTTP API, R-PLT-1 services over RPC).

The gateway and stand-in services run in-process in Nameko containers against the real
PostgreSQL test database and the real RabbitMQ, in a RabbitMQ virtual host of this run's
own. The stand-ins answer only ``ping`` (the chassis mixin every service uses), so these
tests do not depend on the domain services' progress; ``test_every_service_answers_ping``
checks that the real service classes expose the same ping.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from datetime import datetime, timedelta, timezone

import eventlet
import pytest
from marshmallow import Schema, fields, validate
from nameko.containers import get_container_cls
from nameko.rpc import RpcProxy, rpc
from openapi_spec_validator import validate as validate_openapi

from contracts.errors import Locked, ValidationFailed
from gateway.health import SERVICES
from gateway.http import api, routes_of
from gateway.openapi import build_spec
from gateway.rpc import rpc_call
from gateway.service import GatewayService
from gateway.sessions import SessionStore
from services.dependencies import RequestContext
from services.eventstore.factory import open_pool
from tests.conftest import unique
from tests.support.clock import MovableClock
from tests.support.gateway import Client, Reply, running_gateway, stand_in

FAULTS = unique("gwfaults_")
SECRET_TEXT = "hunter2-internal-detail"


# ------------------------------------------------------------ test-only services

class FaultService:
    """Raises what real services raise, so the gateway's translation can be observed."""

    name = FAULTS
    context = RequestContext()

    @rpc
    def locked(self):
        raise Locked(remaining_minutes=30)

    @rpc
    def crash(self):
        raise RuntimeError(f"connection to db failed: password={SECRET_TEXT}")

    @rpc
    def slow(self):
        eventlet.sleep(1)
        return "late"

    @rpc
    def whoami(self):
        m = self.context
        return {"correlation_id": m.correlation_id, "actor_kind": m.actor.kind,
                "actor_id": m.actor.id, "client_address": m.client_address}


class EchoSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(max=10))
    count = fields.Integer()


class PageSchema(Schema):
    size = fields.Integer(validate=validate.Range(min=1, max=50))


class ProbeRoutes:
    """A route mixin as route authors write them, exercising every path of ``@api``."""

    @api("POST", "/test/echo", body=EchoSchema, response=EchoSchema, status=201, tags=("test",))
    def echo(self, req):
        return req.body

    @api("GET", "/test/page", query=PageSchema, tags=("test",))
    def page(self, req):
        return {"query": req.query}

    @api("GET", "/test/fail/{kind}", tags=("test",))
    def fail(self, req):
        kind = req.path["kind"]
        if kind == "validation":
            raise ValidationFailed(errors={"name": ["名前を入力してください。"]})
        if kind == "locked":
            raise Locked()
        if kind == "rpc-locked":
            return rpc_call(self.faults.locked)
        if kind == "rpc-crash":
            return rpc_call(self.faults.crash)
        if kind == "rpc-timeout":
            return rpc_call(self.faults.slow, timeout=0.2)
        if kind == "unknown-service":
            return rpc_call(self.nowhere.ping, timeout=5)
        raise KeyError(f"plain failure with {SECRET_TEXT}")

    @api("GET", "/test/me", auth="customer", tags=("test",))
    def me(self, req):
        return {"customer_number": req.session.customer_number, "kind": req.session.kind,
                "device_id": req.client.device_id, "context": rpc_call(self.faults.whoami)}

    @api("GET", "/test/migration-only", auth="migration", tags=("test",))
    def migration_only(self, req):
        return {"customer_number": req.session.customer_number}

    @api("GET", "/test/any-session", auth="any", tags=("test",))
    def any_session(self, req):
        return {"kind": req.session.kind}


class GatewayUnderTest(ProbeRoutes, GatewayService):
    name = "gateway"
    faults = RpcProxy(FAULTS)
    nowhere = RpcProxy(unique("nowhere_"))


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def system(settings):
    with running_gateway(settings, GatewayUnderTest, FaultService, vhost_prefix="tsunagi_gw_",
                         HEALTH_TIMEOUT=1) as gateway:
        # Built now, started by a test: nameko's pytest plugin stops every consumer constructed
        # during a test function when that test ends, which would leave this one unstoppable.
        spare_notifier = get_container_cls(gateway.config)(stand_in("notifier"), gateway.config)
        try:
            yield {"client": gateway.client, "runner": gateway.runner, "spare_notifier": spare_notifier}
        finally:
            if getattr(spare_notifier, "started", False):
                spare_notifier.stop()


@pytest.fixture(scope="module")
def client(system) -> Client:
    return system["client"]


@pytest.fixture(scope="module")
def session_pool(settings):
    pool = open_pool(settings.database_url, max_size=2, name="test-sessions")
    yield pool
    pool.close()


def assert_problem(reply: Reply, status: int, code: str) -> dict:
    assert reply.status == status, reply.raw
    assert reply.content_type == "application/problem+json; charset=utf-8"
    body = reply.json
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"urn:tsunagi:problem:{code}"
    assert not body["detail"].isascii(), "detail must be Japanese"
    assert body["correlation_id"] == reply.headers["X-Request-ID"]
    return body


# ---------------------------------------------------------- success and request id

def test_json_route_validates_and_dumps_the_body(client):
    """R-PLT-3: a valid body reaches the route; the answer goes out as JSON with its status."""
    reply = client.post("/test/echo", {"name": "たろう", "count": 2})
    assert reply.status == 201
    assert reply.content_type == "application/json; charset=utf-8"
    assert reply.json == {"name": "たろう", "count": 2}
    assert reply.headers["Cache-Control"] == "no-store"


def test_sane_request_id_is_echoed_and_others_replaced(client):
    reply = client.get("/test/fail/locked", headers={"X-Request-ID": "front-end-0001"})
    assert reply.headers["X-Request-ID"] == "front-end-0001"
    assert reply.json["correlation_id"] == "front-end-0001"
    forged = client.get("/test/fail/locked", headers={"X-Request-ID": "x\" injected=1"})
    assert forged.headers["X-Request-ID"] != "x\" injected=1"
    assert len(forged.headers["X-Request-ID"]) == 36  # a fresh uuid


# --------------------------------------------------------------- problem+json

def test_local_domain_errors_become_problems(client):
    """R-PLT-3: errors are problem+json with a stable code and a Japanese detail."""
    body = assert_problem(client.get("/test/fail/validation"), 422, "validation_failed")
    assert body["errors"] == {"name": ["名前を入力してください。"]}
    assert_problem(client.get("/test/fail/locked"), 423, "credential_locked")


def test_domain_error_raised_in_a_service_crosses_rpc(client):
    """R-PLT-1: a service's domain error arrives as its own class, extra fields typed."""
    body = assert_problem(client.get("/test/fail/rpc-locked"), 423, "credential_locked")
    assert body["remaining_minutes"] == 30


@pytest.mark.parametrize("kind", ["rpc-crash", "plain"])
def test_unexpected_errors_are_500_without_internals(client, kind):
    reply = client.get(f"/test/fail/{kind}")
    assert_problem(reply, 500, "internal_error")
    assert SECRET_TEXT.encode() not in reply.raw
    assert not any(word in reply.raw for word in (b"RuntimeError", b"KeyError", b"Traceback"))


@pytest.mark.parametrize("kind", ["rpc-timeout", "unknown-service"])
def test_unanswered_rpc_is_503(client, kind):
    assert_problem(client.get(f"/test/fail/{kind}"), 503, "service_unavailable")


def test_unknown_path_and_wrong_method_are_problems(client):
    assert_problem(client.get("/no/such/path"), 404, "not_found")
    reply = client.call("DELETE", "/test/echo")
    assert_problem(reply, 405, "method_not_allowed")
    assert "POST" in reply.headers["Allow"]


# ------------------------------------------------------------- request bodies

def test_oversized_body_is_413(client):
    raw = json.dumps({"name": "x" * (64 * 1024)}).encode()
    reply = client.post("/test/echo", raw=raw, headers={"Content-Type": "application/json"})
    body = assert_problem(reply, 413, "payload_too_large")
    assert body["max_bytes"] == 64 * 1024


def test_chunked_bodies_are_read_and_limited_too(client):
    """A body without Content-Length is read to its end, and still capped at 64 KiB."""
    def chunks(payload: bytes, size: int = 4096):
        for i in range(0, len(payload), size):
            yield payload[i:i + size]

    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    small = client.post("/test/echo", raw=chunks(b'{"name": "chunked"}'), headers=headers)
    assert small.status == 201 and small.json == {"name": "chunked"}
    big = client.post("/test/echo", raw=chunks(json.dumps({"name": "x" * (64 * 1024)}).encode()),
                      headers=headers)
    assert_problem(big, 413, "payload_too_large")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=shift_jis"])
def test_body_must_be_sent_as_utf8_json(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    reply = client.post("/test/echo", raw=b'{"name": "a"}', headers=headers)
    assert_problem(reply, 415, "unsupported_media_type")


def test_invalid_utf8_is_400(client):
    reply = client.post("/test/echo", raw='{"name": "山田"}'.encode("shift_jis"),
                        headers={"Content-Type": "application/json"})
    assert_problem(reply, 400, "invalid_encoding")


@pytest.mark.parametrize("raw", [b'{"name": ', b"", b'{"name": "a", "count": NaN}'])
def test_invalid_json_is_400(client, raw):
    reply = client.post("/test/echo", raw=raw, headers={"Content-Type": "application/json"})
    assert_problem(reply, 400, "invalid_json")


def test_schema_errors_are_422_with_japanese_messages_per_field(client):
    body = assert_problem(client.post("/test/echo", {"name": "x" * 11, "count": "many", "extra": 1}),
                          422, "validation_failed")
    assert body["errors"] == {"name": ["10文字以内で入力してください。"],
                              "count": ["数値で入力してください。"],
                              "extra": ["この項目は受け付けられません。"]}
    body = assert_problem(client.post("/test/echo", {}), 422, "validation_failed")
    assert body["errors"] == {"name": ["入力してください。"]}


def test_query_is_validated_too(client):
    assert client.get("/test/page?size=5").json == {"query": {"size": 5}}
    body = assert_problem(client.get("/test/page?size=500"), 422, "validation_failed")
    assert body["errors"] == {"size": ["1以上50以下の値を入力してください。"]}


# ------------------------------------------------------------------- sessions

def test_session_store_idle_and_absolute_expiry(session_pool):
    """Sessions end 15 min after the last request or 2 h after login; only a hash is stored."""
    clock = MovableClock(datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc))
    store = SessionStore(session_pool, clock=clock)
    customer = unique("c")
    token = store.create(customer, "customer")
    with session_pool.connection() as conn:
        rows = conn.execute("SELECT token_hash FROM gateway.sessions WHERE customer_number = %s",
                            (customer,)).fetchall()
    assert rows == [(hashlib.sha256(token.encode()).digest(),)]

    session = store.get(token)
    assert (session.customer_number, session.kind, session.created_at) == (customer, "customer", clock.at)
    for _ in range(8):  # a request every 14 minutes keeps it alive ...
        clock.advance(minutes=14)
        assert store.get(token) is not None
    clock.advance(minutes=14)  # ... but not past 2 h from login (now 2 h 6 min)
    assert store.get(token) is None

    idle = store.create(customer, "customer")
    clock.advance(minutes=15, seconds=1)
    assert store.get(idle) is None
    assert store.get("not-a-token") is None and store.get("") is None and store.get(None) is None


def test_session_store_revocation(session_pool):
    store = SessionStore(session_pool)
    customer = unique("c")
    first, second = store.create(customer, "migration"), store.create(customer, "customer")
    assert store.revoke(first) is True
    assert store.get(first) is None and store.get(second) is not None
    assert store.revoke(first) is False
    third = store.create(customer, "customer")
    assert store.revoke_all(customer, kind="migration") == 0
    assert store.revoke_all(customer) == 2
    assert store.get(second) is None and store.get(third) is None
    with pytest.raises(ValueError):
        store.create(customer, "operator")


def test_routes_with_auth_require_a_live_session(client, session_pool):
    """R-PLT-3: bearer token or cookie; 401 without a live session, 403 for the wrong kind;
    the customer and the correlation id travel with every RPC."""
    store = SessionStore(session_pool)
    customer = unique("c")
    token = store.create(customer, "customer")

    reply = client.get("/test/me")
    assert_problem(reply, 401, "unauthenticated")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(client.get("/test/me", headers={"Authorization": "Bearer nonsense"}), 401,
                   "unauthenticated")

    reply = client.get("/test/me", headers={"Authorization": f"Bearer {token}",
                                            "X-Request-ID": "trace-me-123", "X-Device-ID": "dev-1"})
    assert reply.status == 200, reply.raw
    assert reply.json == {"customer_number": customer, "kind": "customer", "device_id": "dev-1",
                          "context": {"correlation_id": "trace-me-123", "actor_kind": "customer",
                                      "actor_id": customer, "client_address": "127.0.0.1"}}
    by_cookie = client.get("/test/any-session", headers={"Cookie": f"tsunagi_session={token}"})
    assert by_cookie.json == {"kind": "customer"}

    assert_problem(client.get("/test/migration-only", headers={"Authorization": f"Bearer {token}"}),
                   403, "forbidden")

    store.revoke(token)
    assert_problem(client.get("/test/me", headers={"Authorization": f"Bearer {token}"}), 401,
                   "unauthenticated")

    expired = SessionStore(session_pool, clock=MovableClock(datetime.now(timezone.utc) - timedelta(hours=3)))
    old = expired.create(customer, "customer")
    assert_problem(client.get("/test/me", headers={"Authorization": f"Bearer {old}"}), 401,
                   "unauthenticated")


# --------------------------------------------------------------------- health

def test_health_reports_every_dependency(client):
    """R-PLT-3/R-PLT-1: PostgreSQL, RabbitMQ and every service's RPC ping."""
    reply = client.get("/health")
    assert reply.status == 200, reply.raw
    body = reply.json
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"postgresql", "rabbitmq", *SERVICES}
    assert all(dep["ok"] is True for dep in body["dependencies"].values()), body


def test_health_is_503_while_a_service_is_down(system, client):
    notifier = system["runner"].service_map["notifier"]
    notifier.stop()
    reply = client.get("/health")
    assert reply.status == 503, reply.raw
    body = reply.json
    assert body["status"] == "degraded"
    assert body["dependencies"]["notifier"] == {"ok": False, "error": "timeout",
                                                "latency_ms": body["dependencies"]["notifier"]["latency_ms"]}
    assert all(body["dependencies"][name]["ok"] for name in body["dependencies"] if name != "notifier")

    # Another instance taking over brings the gateway back to healthy.
    system["spare_notifier"].start()
    assert client.get("/health").status == 200


def test_nameko_run_finds_only_the_gateway_in_its_module():
    """`nameko run gateway.service` must start GatewayService, not each route mixin."""
    from nameko.cli.run import import_service
    assert import_service("gateway.service") == [GatewayService]


def test_every_service_answers_ping():
    """The stand-ins above answer ``ping`` like the real services do."""
    for module, cls, name in [("identity.service", "IdentityService", "identity"),
                              ("identity.secret_questions", "SecretQuestionsService", "secret_questions"),
                              ("otp_service.service", "OtpService", "otp_service"),
                              ("phone_auth.service", "PhoneAuthService", "phone_auth"),
                              ("notifier.service", "NotifierService", "notifier")]:
        service = getattr(importlib.import_module(module), cls)
        assert service.name == name
        entrypoints = getattr(service.ping, "nameko_entrypoints", ())
        assert any(type(e).__name__ == "Rpc" for e in entrypoints), f"{module}.{cls} has no rpc ping"


# -------------------------------------------------------------------- openapi

def test_openapi_validates_and_lists_every_route(client):
    reply = client.get("/openapi.json")
    assert reply.status == 200
    spec = reply.json
    validate_openapi(spec)
    assert spec["openapi"] == "3.0.3"
    served = {(r.method.lower(), r.path) for r in routes_of(GatewayUnderTest)}
    listed = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert listed == served
    assert {("get", "/health"), ("get", "/openapi.json"), ("post", "/test/echo"),
            ("get", "/test/fail/{kind}")} <= listed

    echo = spec["paths"]["/test/echo"]["post"]
    assert echo["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Echo"}
    assert echo["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Echo"}
    assert echo["responses"]["422"]["content"]["application/problem+json"]["schema"] == \
        {"$ref": "#/components/schemas/Problem"}
    fail = spec["paths"]["/test/fail/{kind}"]["get"]
    assert fail["parameters"][0] == {"in": "path", "name": "kind", "required": True, "schema": {"type": "string"}}
    page = spec["paths"]["/test/page"]["get"]
    assert [p["name"] for p in page["parameters"] if p["in"] == "query"] == ["size"]
    me = spec["paths"]["/test/me"]["get"]
    assert me["security"] == [{"bearerAuth": []}, {"sessionCookie": []}] and "401" in me["responses"]
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "Session token returned by a login call"}
    assert {"code", "detail", "correlation_id"} <= set(spec["components"]["schemas"]["Problem"]["properties"])
    assert {"system", "test"} <= {t["name"] for t in spec["tags"]}


def test_openapi_of_the_real_gateway_validates():
    """The composed GatewayService (with every route mixin added so far) describes itself."""
    spec = build_spec(GatewayService)
    validate_openapi(spec)
    assert {"/health", "/openapi.json"} <= set(spec["paths"])
    assert not any(path.startswith("/test/") for path in spec["paths"])
