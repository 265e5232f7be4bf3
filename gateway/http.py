"""The gateway's HTTP layer: ``@api`` routes on Nameko's ``@http``, errors as problem+json.

Everything a route has in common happens here, before the route method runs: the
correlation id, the body limits and decoding, marshmallow validation, the session, and the
Nameko context data every RPC carries. The route method only orchestrates service calls;
whatever it raises becomes an RFC 9457 problem with a stable ``code`` and a Japanese
``detail``. The docstring of ``api`` below is the contract route authors rely on.
"""
from __future__ import annotations

import datetime as _dt
import decimal
import json
import re
import time
import traceback
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from eventlet.event import Event
from marshmallow import Schema, ValidationError, fields
from nameko.exceptions import ContainerBeingKilled, RemoteError
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import RequestRedirect, Rule
from werkzeug.wrappers import Request, Response

from contracts.errors import DomainError, Forbidden, NotFound, Unauthenticated, Unavailable
from services import logging as tlog
from services.config import ConfigReader
from services.dependencies import ACTOR_ID, ACTOR_KIND, CLIENT_ADDRESS, CORRELATION_ID
from gateway.sessions import Session, SessionProvider
from gateway import web_session
from gateway import ratelimit
from gateway.client_address import client_address, parse_trusted

MAX_BODY = 64 * 1024
SESSION_COOKIE = "tsunagi_session"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
AUTH_KINDS = (None, "migration", "customer", "any")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{8,128}\Z")   # \Z: "$" lets a trailing newline in

# Problems the gateway itself raises (the services' own codes live in contracts.errors).
INVALID_JSON = ("invalid_json", "リクエストの形式が正しくありません。")
INVALID_ENCODING = ("invalid_encoding", "文字コードは UTF-8 で送信してください。")
TOO_LARGE = ("payload_too_large", "送信されたデータが大きすぎます。")
UNSUPPORTED_MEDIA = ("unsupported_media_type", "Content-Type: application/json で送信してください。")
METHOD_NOT_ALLOWED = ("method_not_allowed", "この操作には対応していません。")
INTERNAL = ("internal_error",
            "システムエラーが発生しました。しばらくしてからもう一度お試しください。"
            "解決しない場合は、お問い合わせ番号を添えてお問い合わせ窓口にご連絡ください。")

_log = tlog.get_logger(service="gateway")


# --------------------------------------------------------------------------- problems

class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error of this API is sent."""

    type = fields.String(required=True, metadata={"description": "urn:tsunagi:problem:<code>"})
    title = fields.String(required=True, metadata={"description": "HTTP status phrase"})
    status = fields.Integer(required=True)
    code = fields.String(required=True, metadata={
        "description": "Stable English snake_case error code for programs"})
    detail = fields.String(required=True, metadata={
        "description": "Japanese message the customer can act on"})
    correlation_id = fields.String(required=True, metadata={
        "description": "Quote this when contacting the bank; also in the X-Request-ID header"})
    errors = fields.Dict(keys=fields.String(), values=fields.Raw(), metadata={
        "description": "validation_failed only: field name → Japanese messages"})

    class Meta:
        ordered = True


def problem(status: int, code: str, detail: str, /, **extra) -> Response:
    """A problem+json response. ``correlation_id`` (if not given) is filled in by ``@api``."""
    body: dict[str, Any] = {
        "type": f"urn:tsunagi:problem:{code}",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    for key, value in extra.items():
        body.setdefault(key, value)
    response = Response(_dumps(body), status=status, mimetype=PROBLEM_JSON)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tsunagi"'
    if status == 429 and extra.get("retry_after") is not None:
        response.headers["Retry-After"] = str(extra["retry_after"])
    return response


def problem_from_error(error: DomainError) -> Response:
    return problem(error.status, error.code, error.detail, **error.extra)


class _Problem(Exception):
    """A problem found by the gateway before the route method ran."""

    def __init__(self, status: int, code_detail: tuple[str, str], **extra):
        super().__init__(code_detail[0])
        self.status, (self.code, self.detail), self.extra = status, code_detail, extra


# --------------------------------------------------------- Japanese validation messages

_MESSAGES: list[tuple[re.Pattern, str]] = [(re.compile(p), m) for p, m in [
    (r"^Missing data for required field\.$", "入力してください。"),
    (r"^Field may not be null\.$", "入力してください。"),
    (r"^Unknown field\.$", "この項目は受け付けられません。"),
    (r"^Invalid input type\.$", "データの形式が正しくありません。"),
    (r"^Not a valid string\.$", "文字列で入力してください。"),
    (r"^Not a valid (number|integer)\.$", "数値で入力してください。"),
    (r"^Not a valid boolean\.$", "true または false で指定してください。"),
    (r"^Not a valid (list|mapping type|tuple)\.$", "データの形式が正しくありません。"),
    (r"^Not a valid (date|datetime|time|aware datetime|naive datetime)\.$", "日付・時刻の形式が正しくありません。"),
    (r"^Not a valid email address\.$", "メールアドレスの形式が正しくありません。"),
    (r"^Not a valid URL\.$", "URL の形式が正しくありません。"),
    (r"^Not a valid UUID\.$", "ID の形式が正しくありません。"),
    (r"^Number too large\.$", "数値が大きすぎます。"),
    (r"^Shorter than minimum length (\d+)\.$", r"\1文字以上で入力してください。"),
    (r"^Longer than maximum length (\d+)\.$", r"\1文字以内で入力してください。"),
    (r"^Length must be between (\d+) and (\d+)\.$", r"\1文字以上\2文字以内で入力してください。"),
    (r"^Length must be (\d+)\.$", r"\1文字で入力してください。"),
    (r"^Must be greater than or equal to (\S+)\.$", r"\1以上の値を入力してください。"),
    (r"^Must be less than or equal to (\S+)\.$", r"\1以下の値を入力してください。"),
    (r"^Must be greater than or equal to (\S+) and less than or equal to (\S+)\.$",
     r"\1以上\2以下の値を入力してください。"),
    (r"^Must be one of: .*\.$", "選択肢の中から選んでください。"),
    (r"^String does not match expected pattern\.$", "入力形式が正しくありません。"),
    (r"^Must be equal to .*\.$", "入力内容が一致しません。"),
]]
_GENERIC_INVALID = "入力内容が正しくありません。"


def japanese_message(message: str) -> str:
    """Marshmallow's English default messages in Japanese; messages a schema author wrote
    in Japanese pass through; any other English text becomes a generic Japanese message."""
    if not message.isascii():
        return message
    for pattern, replacement in _MESSAGES:
        if pattern.match(message):
            return pattern.sub(replacement, message)
    return _GENERIC_INVALID


def japanese_errors(messages: Any) -> Any:
    if isinstance(messages, dict):
        return {str(k): japanese_errors(v) for k, v in messages.items()}
    if isinstance(messages, (list, tuple)):
        return [japanese_errors(m) for m in messages]
    if isinstance(messages, str):
        return japanese_message(messages)
    return messages


def validation_problem(error: ValidationError):
    from contracts.errors import ValidationFailed
    return ValidationFailed(errors=japanese_errors(error.normalized_messages()))


# ------------------------------------------------------------------------ the request

@dataclass(frozen=True)
class ClientInfo:
    address: str | None
    user_agent: str | None
    device_id: str | None


@dataclass
class ApiRequest:
    body: Any
    query: dict
    path: dict
    session: Session | None
    client: ClientInfo
    correlation_id: str
    request: Request = field(repr=False)


@dataclass(frozen=True)
class Route:
    method: str
    path: str              # OpenAPI form: /api/v1/otp/applications/{application_id}
    rule: str              # werkzeug form: /api/v1/otp/applications/<application_id>
    path_params: tuple     # ((name, openapi type), ...)
    body: Any
    response: Any
    query: Any
    auth: str | None
    status: int
    summary: str
    description: str
    tags: tuple
    handler: str
    max_body: int
    responses: tuple = ()  # ((status, schema or JSON-schema dict), ...) documented besides `status`
    rate_limit: str | None = None  # policy of gateway.ratelimit (per client address), or None

    @property
    def operation_id(self) -> str:
        return self.handler


ROUTES: list[Route] = []
"""Every route declared with ``@api`` in this process (OpenAPI uses ``routes_of(cls)``)."""

_PARAM = re.compile(r"\{(\w+)\}|<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_CONVERTER_TYPES = {"int": "integer", "float": "number", "uuid": "string", "string": "string",
                    "path": "string", "default": "string", None: "string"}


def _split_path(path: str) -> tuple[str, str, tuple]:
    params = []

    def to_rule(m):
        if m.group(1):
            params.append((m.group(1), "string"))
            return f"<{m.group(1)}>"
        params.append((m.group(3), _CONVERTER_TYPES.get(m.group(2), "string")))
        return m.group(0)

    rule = _PARAM.sub(to_rule, path)
    openapi = _PARAM.sub(lambda m: "{" + (m.group(1) or m.group(3)) + "}", path)
    return openapi, rule, tuple(params)


def _schema(value):
    if value is None or isinstance(value, Schema):
        return value
    return value()


def api(method: str, path: str, *, body=None, response=None, auth: str | None = None,
        status: int = 200, summary: str = "", tags=(), query=None, max_body: int = MAX_BODY,
        description: str | None = None, responses: dict | None = None,
        rate_limit: str | None = None):
    """Make a mixin method an HTTP route: ``method(self, req: ApiRequest)``.

    ``body``/``response``/``query`` are marshmallow schema classes (or instances, e.g.
    ``Item(many=True)`` for a list). ``auth``: None (public), "migration", "customer" or
    "any" (either kind of session). The method returns a dict/list (sent as JSON with
    ``status``, dumped through ``response`` if given), a ``(status, payload)`` tuple, or a
    werkzeug ``Response``. ``responses`` documents other statuses the route itself returns
    with a JSON body (``{503: HealthSchema}``); problem responses are documented already.
    ``rate_limit``: a policy of ``gateway.ratelimit`` ("login", "activation"): requests per
    client address are counted before anything else and refused with 429 past the limit.
    """
    method = method.upper()
    if auth not in AUTH_KINDS:
        raise ValueError(f"auth must be one of {AUTH_KINDS}, not {auth!r}")
    if rate_limit is not None and rate_limit not in ratelimit.POLICIES:
        raise ValueError(f"rate_limit must be one of {sorted(ratelimit.POLICIES)}, not {rate_limit!r}")

    def decorate(fn):
        openapi_path, rule, params = _split_path(path)
        route = Route(
            method=method, path=openapi_path, rule=rule, path_params=params, body=body,
            response=response, query=query, auth=auth, status=status,
            summary=summary or (fn.__doc__ or "").strip().split("\n")[0],
            description=description if description is not None else (fn.__doc__ or "").strip(),
            tags=tuple(tags), handler=fn.__name__, max_body=max_body,
            responses=tuple(sorted((responses or {}).items())), rate_limit=rate_limit)
        ROUTES.append(route)
        fn.__api_route__ = route
        return ApiEntrypoint.decorator(method, rule, route=route,
                                       expected_exceptions=(DomainError,))(fn)
    return decorate


def routes_of(service_cls) -> list[Route]:
    """The routes a composed service class serves, in path order; duplicates are an error."""
    routes, seen = [], {}
    for attr in dir(service_cls):
        route = getattr(getattr(service_cls, attr, None), "__api_route__", None)
        if route is None:
            continue
        key = (route.method, re.sub(r"\{\w+\}", "{}", route.path))
        if key in seen:
            raise ValueError(f"{route.method} {route.path} is declared by both "
                             f"{seen[key]} and {route.handler}")
        seen[key] = route.handler
        routes.append(route)
    return sorted(routes, key=lambda r: (r.path, r.method))


# ------------------------------------------------------------------ the nameko parts

class ApiWsgiApp(WsgiApp):
    """Nameko's WSGI app, with unknown paths and wrong methods answered as problems too."""

    def __call__(self, environ, start_response):
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            # eventlet's input decodes chunked bodies and ends at the last chunk; telling
            # werkzeug so lets it read them (capped at the route's limit) instead of
            # silently seeing an empty body.
            environ.setdefault("wsgi.input_terminated", True)
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
            request.path_values = values
            rv = provider.handle_request(request)
        except RequestRedirect as exc:  # werkzeug's trailing-slash redirect: keep it
            rv = exc
        except HTTPException as exc:
            cid = correlation_id_of(request)
            if exc.code == 404:
                rv = problem(404, NotFound.default_code, NotFound.default_detail, correlation_id=cid)
            elif exc.code == 405:
                rv = problem(405, *METHOD_NOT_ALLOWED, correlation_id=cid)
                rv.headers["Allow"] = ", ".join(exc.valid_methods or ())
            else:
                rv = problem(exc.code or 400, "bad_request", DomainError.default_detail,
                             correlation_id=cid)
            _secure_headers(rv, cid)
        return rv(environ, start_response)


class ApiWebServer(WebServer):
    def get_wsgi_app(self):
        return ApiWsgiApp(self)

    def get_wsgi_server(self, sock, wsgi_app, *args, **kwargs):
        server = super().get_wsgi_server(sock, wsgi_app, *args, **kwargs)
        # Every request already leaves one structured line (`http_request`, with the
        # correlation id); eventlet's plain access line was a second one per request, built
        # and written at INFO. Its error lines still go to the log.
        server.log_output = False
        return server


class ApiEntrypoint(HttpRequestHandler):
    """Nameko's ``@http`` entrypoint, doing the common work of every route."""

    # Shared by every @api route of a container; a plain nameko ``@http`` would start a
    # second server on the same address, so route authors use ``@api`` only.
    server = ApiWebServer()

    def __init__(self, method, url, route: Route | None = None, **kwargs):
        self.route = route
        super().__init__(method, url, **kwargs)

    def setup(self):
        super().setup()
        self.body_schema = _schema(self.route.body)
        self.query_schema = _schema(self.route.query)
        self.response_schema = _schema(self.route.response)
        self.rate_limits = ratelimit.limits_for(self.container) if self.route.rate_limit else None
        self.trusted_proxies = parse_trusted(ConfigReader(self.container.config).raw("TRUSTED_PROXIES"))

    def get_url_rule(self):
        return Rule(self.url, methods=[self.method])

    def handle_request(self, request):
        request.shallow = False
        started = time.monotonic()
        cid = correlation_id_of(request)
        try:
            web_session.before_route(request, self.route.auth, self.container.config)
            api_request = self._prepare(request, cid)
            context_data = {CORRELATION_ID: cid, CLIENT_ADDRESS: api_request.client.address}
            if api_request.session is not None:
                context_data[ACTOR_KIND] = "customer"
                context_data[ACTOR_ID] = api_request.session.customer_number
            event = Event()
            self.container.spawn_worker(
                self, (api_request,), {}, context_data=context_data,
                handle_result=partial(self.handle_result, event))
            response = self._response_from_result(event.wait())
            response = web_session.after_route(request, response, self.container.config)
        except Exception as exc:  # every failure leaves as a problem, never as a traceback
            response = self._response_from_exception(exc, cid, request)
        _add_correlation_id(response, cid)
        _secure_headers(response, cid)
        _log.info("http_request", method=request.method, path=request.path,
                  route=self.route.handler, status=response.status_code, correlation_id=cid,
                  duration_ms=round((time.monotonic() - started) * 1000, 1))
        return response

    # -- before the worker

    def _prepare(self, request: Request, cid: str) -> ApiRequest:
        route = self.route
        address = client_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"),
                                 self.trusted_proxies)
        if self.rate_limits is not None:   # first: a refused request costs no parsing
            self.rate_limits.check(route.rate_limit, address)
        # One byte over the limit, so that reading a chunked body that is too large returns
        # more than the limit (werkzeug stops at the cap without saying so).
        request.max_content_length = route.max_body + 1
        if request.content_length is not None and request.content_length > route.max_body:
            raise _Problem(413, TOO_LARGE, max_bytes=route.max_body)
        body = None
        if self.body_schema is not None:
            body = self.body_schema.load(self._read_json(request, route))
        query = {}
        if self.query_schema is not None:
            query = self.query_schema.load(_query_data(request, self.query_schema))
        return ApiRequest(
            body=body, query=query, path=dict(request.path_values),
            session=self._session(request, route.auth), client=_client(request, address),
            correlation_id=cid, request=request)

    @staticmethod
    def _read_json(request: Request, route: Route):
        if request.mimetype != JSON:
            raise _Problem(415, UNSUPPORTED_MEDIA)
        charset = request.mimetype_params.get("charset")
        if charset and charset.lower().replace("-", "") != "utf8":
            raise _Problem(415, UNSUPPORTED_MEDIA)
        raw = request.get_data(cache=True)
        if len(raw) > route.max_body:  # a chunked body has no Content-Length to check first
            raise _Problem(413, TOO_LARGE, max_bytes=route.max_body)
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise _Problem(400, INVALID_ENCODING) from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except ValueError:
            raise _Problem(400, INVALID_JSON) from None

    def _session(self, request: Request, auth: str | None) -> Session | None:
        if auth is None:
            return None
        session = self._session_store().get(session_token_of(request))
        if session is None:
            raise Unauthenticated()
        if auth != "any" and session.kind != auth:
            raise Forbidden()
        return session

    def _session_store(self):
        for dependency in self.container.dependencies:
            if isinstance(dependency, SessionProvider):
                return dependency.store
        raise RuntimeError(f"{self.container.service_name} has routes with auth but no SessionProvider")

    # -- after the worker

    def _response_from_result(self, result) -> Response:
        if isinstance(result, Response):
            return result
        status = self.route.status
        if isinstance(result, tuple):
            status, result = result
        if self.response_schema is not None and result is not None:
            result = self.response_schema.dump(result)
        if status == 204 or result is None:
            return Response(status=status)
        return Response(_dumps(result), status=status, mimetype=JSON)

    def _response_from_exception(self, exc, cid: str, request: Request) -> Response:
        if isinstance(exc, _Problem):
            return problem(exc.status, exc.code, exc.detail, **{**exc.extra, "correlation_id": cid})
        if isinstance(exc, RequestEntityTooLarge):
            return problem(413, *TOO_LARGE, correlation_id=cid, max_bytes=self.route.max_body)
        if isinstance(exc, ValidationError):
            exc = validation_problem(exc)
        if isinstance(exc, ContainerBeingKilled) or _database_unavailable(exc):
            exc = Unavailable()
        if isinstance(exc, DomainError):
            return problem(exc.status, exc.code, exc.detail, **{**exc.extra, "correlation_id": cid})
        # A RemoteError is a service's unexpected failure; its text may hold internals, so
        # it goes to the log only. The same for anything raised in the gateway itself.
        _log.error("unhandled_error", correlation_id=cid, route=self.route.handler,
                   path=request.path, error_type=_error_type(exc),
                   traceback="".join(traceback.format_exception(exc)))
        return problem(500, *INTERNAL, correlation_id=cid)


def _database_unavailable(exc: Exception) -> bool:
    """The gateway's own database connection (sessions) went away: retryable, so a 503."""
    import psycopg
    import psycopg_pool
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout))


def _error_type(exc: Exception) -> str:
    if isinstance(exc, RemoteError):
        return f"RemoteError({exc.exc_type})"
    return type(exc).__name__


# ---------------------------------------------------------------------------- helpers

def correlation_id_of(request: Request) -> str:
    """The caller's X-Request-ID when it looks like an id (so a front end can trace its own
    calls), otherwise a new one; never anything that could forge a log line."""
    given = request.headers.get("X-Request-ID", "")
    return given if _REQUEST_ID.match(given) else str(uuid.uuid4())


def session_token_of(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(SESSION_COOKIE) or None


def _client(request: Request, address: str | None) -> ClientInfo:
    return ClientInfo(address=address,
                      user_agent=(request.headers.get("User-Agent") or None),
                      device_id=(request.headers.get("X-Device-ID") or None))


def _query_data(request: Request, schema: Schema) -> dict:
    data = {}
    for key in request.args.keys():
        is_list = isinstance(schema.fields.get(key), fields.List)
        data[key] = request.args.getlist(key) if is_list else request.args.get(key)
    return data


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _json_default(value):
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(payload) -> str:
    return json.dumps(payload, ensure_ascii=False, default=_json_default)


def _add_correlation_id(response: Response, cid: str) -> None:
    """Problems a route built itself with ``problem()`` get the correlation id too."""
    if response.mimetype != PROBLEM_JSON:
        return
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return
    if isinstance(body, dict) and "correlation_id" not in body:
        body["correlation_id"] = cid
        response.set_data(_dumps(body))


def _secure_headers(response: Response, cid: str) -> None:
    response.headers["X-Request-ID"] = cid
    # Answers carry personal data and session tokens: never cached, never sniffed.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype in (JSON, PROBLEM_JSON):
        response.headers["Content-Type"] = f"{response.mimetype}; charset=utf-8"
