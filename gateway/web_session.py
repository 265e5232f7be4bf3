"""The browser's path to a session: an HttpOnly cookie instead of a bearer token, with CSRF
protection (issue 8; API.md: "the web front end may carry it in an HttpOnly cookie instead").

API clients get ``session_token`` in JSON bodies and send ``Authorization: Bearer``; nothing
here changes that. A request that carries ``X-Session-Transport: cookie`` asks for the other
path: any answer of such a request whose JSON body holds ``session_token`` leaves with the
token moved into the cookie ``tsunagi_session`` (HttpOnly, SameSite=Strict, Path=/, Secure
unless ``SESSION_COOKIE_SECURE=0``) and out of the body, so page scripts never see it.

A cookie is sent by the browser whoever made the page, so a request authenticated by the
cookie alone (no Authorization header) with an unsafe method must prove it comes from our
own pages: ``X-CSRF-Token`` must equal HMAC-SHA256(``CSRF_KEY``, session token) — handed to
the page in the login answer (``csrf_token``) and in the JS-readable cookie ``tsunagi_csrf``
(a signed double submit: another site can neither read the cookie nor compute the value) —
and an ``Origin`` header, when present, must be our own. Otherwise 403 problem, nothing done.

Chromium treats http://127.0.0.1 and http://localhost as secure contexts and keeps Secure
cookies set there (checked by the browser tests), so Secure is the default even for the
local demo; ``SESSION_COOKIE_SECURE=0`` exists for other plain-HTTP host names in a lab.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

from contracts.errors import Forbidden
from services import deployment

SESSION_COOKIE = "tsunagi_session"
CSRF_COOKIE = "tsunagi_csrf"
TRANSPORT_HEADER = "X-Session-Transport"
CSRF_HEADER = "X-CSRF-Token"
COOKIE_TRANSPORT = "cookie"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEV_CSRF_KEY = deployment.DEV_CSRF_KEY   # published: services/deployment.py refuses it in production

CSRF_FAILED = ("csrf_token_invalid",
               "画面の有効期限が切れたか、正しくない画面からの操作です。"
               "お手数ですが、画面を再読み込みしてからもう一度操作してください。")
CROSS_ORIGIN = ("cross_origin_request",
                "他のサイトからの操作は受け付けられません。"
                "青森みちのく銀行の画面から操作してください。")


def setting(config, key: str, default: str | None = None) -> str | None:
    """A Nameko config key, else the environment, else ``default``."""
    value = (config or {}).get(key)
    if value in (None, ""):
        value = os.environ.get(key)
    return str(value) if value not in (None, "") else default


def flag(config, key: str, default: bool) -> bool:
    return deployment.is_on(setting(config, key), default)


def csrf_token_for(session_token: str, config=None) -> str:
    key = setting(config, "CSRF_KEY", DEV_CSRF_KEY).encode()
    return hmac.new(key, b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()


def wants_cookie(request: Request) -> bool:
    return request.headers.get(TRANSPORT_HEADER, "").strip().lower() == COOKIE_TRANSPORT


def _bearer_given(request: Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def cookie_token(request: Request) -> str | None:
    """The session token when the cookie (and not an Authorization header) authenticates."""
    if _bearer_given(request):
        return None
    return request.cookies.get(SESSION_COOKIE) or None


def _own_origin(request: Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def _origin_allowed(request: Request, config) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True           # same-origin GETs and older browsers send none; the token decides
    origin = origin.strip().lower()
    allowed = {_own_origin(request)}
    public = setting(config, "PUBLIC_ORIGIN")   # behind a TLS-terminating proxy
    if public:
        allowed.add(public.strip().rstrip("/").lower())
    parts = urlsplit(origin)
    return bool(parts.scheme and parts.netloc) and origin in allowed


def before_route(request: Request, auth: str | None, config=None) -> None:
    """Raises Forbidden (403) for a cross-site or unproven cookie request; see the module text."""
    if wants_cookie(request) and request.method in UNSAFE_METHODS and not _origin_allowed(request, config):
        raise Forbidden(CROSS_ORIGIN[1], CROSS_ORIGIN[0])
    if auth is None or request.method not in UNSAFE_METHODS:
        return
    token = cookie_token(request)
    if token is None:
        return                # bearer clients (or no session at all: the route answers 401)
    if not _origin_allowed(request, config):
        raise Forbidden(CROSS_ORIGIN[1], CROSS_ORIGIN[0])
    given = request.headers.get(CSRF_HEADER, "").strip()
    if not given or not hmac.compare_digest(given.encode(), csrf_token_for(token, config).encode()):
        raise Forbidden(CSRF_FAILED[1], CSRF_FAILED[0])


def set_session_cookies(response: Response, token: str, config=None) -> str:
    secure = flag(config, "SESSION_COOKIE_SECURE", True)
    csrf = csrf_token_for(token, config)
    response.set_cookie(SESSION_COOKIE, token, path="/", secure=secure, httponly=True, samesite="Strict")
    response.set_cookie(CSRF_COOKIE, csrf, path="/", secure=secure, httponly=False, samesite="Strict")
    return csrf


def clear_session_cookies(response: Response, config=None) -> None:
    secure = flag(config, "SESSION_COOKIE_SECURE", True)
    for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=secure, httponly=httponly, samesite="Strict")


def after_route(request: Request, response: Response, config=None) -> Response:
    """For a cookie-transport request: a ``session_token`` in a JSON answer moves into the
    cookie; the body says ``session_transport: cookie`` and carries the ``csrf_token``."""
    if not wants_cookie(request) or response.mimetype != "application/json" or response.status_code >= 300:
        return response
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return response
    if not isinstance(body, dict) or not isinstance(body.get("session_token"), str):
        return response
    token = body.pop("session_token")
    body["session_transport"] = COOKIE_TRANSPORT
    body["csrf_token"] = set_session_cookies(response, token, config)
    response.set_data(json.dumps(body, ensure_ascii=False))
    return response
