"""The browser's session path (issue 8 item 1: "session in an HttpOnly, SameSite cookie with CSRF
protection for the cookie path"; SPEC R-PLT-3) and the web front end's own routes.

The real gateway (``GatewayService`` with its ``@api`` hooks, ``gateway/web_session.py`` and
``gateway/routes_web.py``) runs in-process in a Nameko container against the real PostgreSQL
session store and the real RabbitMQ (a vhost of this module's own). One probe route opens a
customer session the way the login routes do (``{"session_token": …}``), others stand for any
authenticated route; the services themselves are not needed for what is tested here.
"""
from __future__ import annotations

from http.cookies import SimpleCookie

import pytest

from gateway import web_session
from gateway.http import api
from gateway.service import GatewayService
from tests.support.gateway import Client, Reply, running_gateway

COOKIE = {"X-Session-Transport": "cookie"}


class ProbeRoutes:
    @api("POST", "/test/web/session", tags=("test",))
    def open_session(self, req):
        return {"session_token": self.sessions.create("1234567890", "customer"), "next_step": "menu"}

    @api("POST", "/test/web/transfer", auth="customer", tags=("test",))
    def unsafe_probe(self, req):
        return {"done": True, "customer_number": req.session.customer_number}

    @api("GET", "/test/web/me", auth="customer", tags=("test",))
    def safe_probe(self, req):
        return {"customer_number": req.session.customer_number}


class GatewayUnderTest(ProbeRoutes, GatewayService):
    name = "gateway"


@pytest.fixture(scope="module")
def client(settings):
    with running_gateway(settings, GatewayUnderTest, vhost_prefix="tsunagi_web_", DEMO_MODE="0",
                         SESSION_COOKIE_SECURE="1", CSRF_KEY="test-csrf-key") as gateway:
        yield gateway.client


def cookie_session(client: Client) -> tuple[str, str]:
    """(session cookie value, csrf token) from a login answered on the cookie path."""
    reply = client.call("POST", "/test/web/session", {}, headers=COOKIE)
    assert reply.status == 200, reply.raw
    jar = SimpleCookie()
    for header in reply.headers.get_all("Set-Cookie"):
        jar.load(header)
    return jar[web_session.SESSION_COOKIE].value, reply.json["csrf_token"]


def assert_problem(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.raw
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    body = reply.json
    assert body["code"] == code
    assert not body["detail"].isascii(), "detail must be Japanese"


# ------------------------------------------------------------------ the cookie itself

def test_cookie_transport_moves_the_token_into_an_httponly_strict_cookie(client):
    reply = client.call("POST", "/test/web/session", {}, headers=COOKIE)
    assert reply.status == 200, reply.raw
    body = reply.json
    assert "session_token" not in body, "the token must not reach page scripts"
    assert body["session_transport"] == "cookie" and body["next_step"] == "menu"
    cookies = reply.cookies()
    session = cookies[web_session.SESSION_COOKIE]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Secure"):
        assert attribute in session, session
    csrf = cookies[web_session.CSRF_COOKIE]
    assert "HttpOnly" not in csrf and "SameSite=Strict" in csrf
    assert body["csrf_token"] in csrf


def test_api_clients_keep_the_token_in_the_body(client):
    reply = client.call("POST", "/test/web/session", {})
    assert reply.status == 200
    assert reply.json["session_token"] and "csrf_token" not in reply.json
    assert not reply.headers.get_all("Set-Cookie")


# ------------------------------------------------------------------ CSRF on the cookie path

def test_cookie_authenticated_post_without_csrf_token_is_refused(client):
    token, _ = cookie_session(client)
    reply = client.call("POST", "/test/web/transfer", {}, headers={"Cookie": f"tsunagi_session={token}"})
    assert_problem(reply, 403, "csrf_token_invalid")


def test_cookie_authenticated_post_with_a_wrong_csrf_token_is_refused(client):
    token, csrf = cookie_session(client)
    _, other = cookie_session(client)       # a valid token, but of another session
    for wrong in (other, csrf[:-1] + ("0" if csrf[-1] != "0" else "1"), "x"):
        reply = client.call("POST", "/test/web/transfer", {},
                            headers={"Cookie": f"tsunagi_session={token}", "X-CSRF-Token": wrong})
        assert_problem(reply, 403, "csrf_token_invalid")


def test_cookie_authenticated_post_with_the_csrf_token_passes(client):
    token, csrf = cookie_session(client)
    reply = client.call("POST", "/test/web/transfer", {},
                        headers={"Cookie": f"tsunagi_session={token}", "X-CSRF-Token": csrf,
                                 "Origin": client.origin})
    assert reply.status == 200, reply.raw
    assert reply.json == {"done": True, "customer_number": "1234567890"}


def test_safe_methods_need_no_csrf_token(client):
    token, _ = cookie_session(client)
    reply = client.call("GET", "/test/web/me", headers={"Cookie": f"tsunagi_session={token}"})
    assert reply.status == 200 and reply.json["customer_number"] == "1234567890"


def test_cross_origin_request_is_refused_even_with_the_token(client):
    token, csrf = cookie_session(client)
    reply = client.call("POST", "/test/web/transfer", {},
                        headers={"Cookie": f"tsunagi_session={token}", "X-CSRF-Token": csrf,
                                 "Origin": "https://evil.example"})
    assert_problem(reply, 403, "cross_origin_request")
    # asking for a cookie session from another site is refused too
    reply = client.call("POST", "/test/web/session", {}, headers={**COOKIE, "Origin": "https://evil.example"})
    assert_problem(reply, 403, "cross_origin_request")
    assert not reply.headers.get_all("Set-Cookie")


def test_bearer_path_is_unaffected(client):
    token = client.call("POST", "/test/web/session", {}).json["session_token"]
    reply = client.call("POST", "/test/web/transfer", {},
                        headers={"Authorization": f"Bearer {token}", "Origin": "https://app.example"})
    assert reply.status == 200, reply.raw
    # A bearer header wins over a cookie: a forged cookie cannot make a bearer request need CSRF.
    other, _ = cookie_session(client)
    reply = client.call("POST", "/test/web/transfer", {},
                        headers={"Authorization": f"Bearer {token}", "Cookie": f"tsunagi_session={other}"})
    assert reply.status == 200, reply.raw


def test_logout_revokes_the_session_and_clears_the_cookies(client):
    token, csrf = cookie_session(client)
    cookie = {"Cookie": f"tsunagi_session={token}"}
    assert_problem(client.call("POST", "/api/v1/logout", headers=cookie), 403, "csrf_token_invalid")
    reply = client.call("POST", "/api/v1/logout", headers={**cookie, "X-CSRF-Token": csrf})
    assert reply.status == 204, reply.raw
    cleared = reply.cookies()
    assert "Max-Age=0" in cleared[web_session.SESSION_COOKIE] or "expires=Thu, 01 Jan 1970" in cleared[web_session.SESSION_COOKIE]
    assert web_session.CSRF_COOKIE in cleared
    assert client.call("GET", "/test/web/me", headers=cookie).status == 401


# ------------------------------------------------------------------ the web front end's routes

def test_page_is_served_with_a_strict_content_security_policy(client):
    reply = client.call("GET", "/")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = reply.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    page = reply.raw.decode()
    assert '<html lang="ja">' in page and "<script>" not in page and "style=" not in page
    assert 'data-demo="0"' in page
    script = page.split('<script src="', 1)[1].split('"', 1)[0]
    asset = client.call("GET", script)
    assert asset.status == 200 and asset.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert "immutable" in asset.headers["Cache-Control"]
    etag = asset.headers["ETag"]
    assert client.call("GET", script, headers={"If-None-Match": etag}).status == 304
    # without the current version an asset is revalidated, never cached for a year
    unversioned = client.call("GET", script.split("?")[0])
    assert unversioned.status == 200 and "immutable" not in unversioned.headers["Cache-Control"]


def test_unknown_assets_and_path_tricks_are_not_found(client):
    for path in ("/static/nope.js", "/static/..%2Fweb_session.py", "/static/../routes_web.py",
                 "/static/%2e%2e/http.py"):
        reply = client.call("GET", path)
        assert reply.status == 404, (path, reply.raw[:200])


def test_demo_call_is_refused_when_demo_mode_is_off(client):
    token, csrf = cookie_session(client)
    reply = client.call("POST", "/api/v1/demo/inbound-call", {"phone_id": "p1", "call_to": "0120-000-110"},
                        headers={"Cookie": f"tsunagi_session={token}", "X-CSRF-Token": csrf})
    assert_problem(reply, 404, "demo_mode_off")


def test_page_and_assets_are_gzipped_for_browsers_that_accept_it(client):
    import gzip
    plain = client.call("GET", "/")
    packed = client.call("GET", "/", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
    assert gzip.decompress(packed.raw) == plain.raw and len(packed.raw) < len(plain.raw) / 2
    assert plain.headers.get("Content-Encoding") is None
    assert packed.headers["ETag"] != plain.headers["ETag"]
