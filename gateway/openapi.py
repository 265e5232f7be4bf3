"""``GET /openapi.json``, generated from the ``@api`` routes and their marshmallow schemas
(apispec + MarshmallowPlugin), so the description cannot drift from what is served."""
from __future__ import annotations

import functools
from importlib import metadata

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from werkzeug.http import HTTP_STATUS_CODES

from gateway.http import JSON, PROBLEM_JSON, SESSION_COOKIE, ProblemSchema, api, routes_of

TITLE = "tsunagi gateway API"
DESCRIPTION = (
    "HTTP API of the authentication and migration back end. JSON in and out. Errors are "
    "RFC 9457 `application/problem+json` with a stable English `code` and a Japanese "
    "`detail` for the customer. Every response carries `X-Request-ID` (the caller's own if "
    "it sent a sane one), which is also the problem's `correlation_id`. Sessions are opaque "
    f"bearer tokens (`Authorization: Bearer …`) or the HttpOnly cookie `{SESSION_COOKIE}`.")
OPENAPI_VERSION = "3.0.3"

_PROBLEMS = {
    "400": "Malformed request (`invalid_json`, `invalid_encoding`)",
    "401": "No live session (`unauthenticated`)",
    "403": "Session of the wrong kind, or not allowed (`forbidden`)",
    "413": "Body larger than allowed (`payload_too_large`)",
    "415": "Body not sent as `application/json` (`unsupported_media_type`)",
    "422": "Body or query failed validation (`validation_failed`, `errors` per field)",
    "500": "Unexpected failure (`internal_error`); quote the correlation id",
    "503": "A service did not answer in time (`service_unavailable`)",
}
_TAG_DESCRIPTIONS = {"system": "Health and description of the API"}


def _version() -> str:
    try:
        return metadata.version("tsunagi")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _problem_response(description: str) -> dict:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": ProblemSchema}}}


def _operation(route) -> dict:
    op = {"operationId": route.operation_id, "summary": route.summary or route.handler,
          "tags": list(route.tags) or ["default"], "responses": {}}
    if route.description and route.description != route.summary:
        op["description"] = route.description
    parameters = [{"in": "path", "name": name, "required": True, "schema": {"type": typ}}
                  for name, typ in route.path_params]
    if route.query is not None:
        parameters.append({"in": "query", "schema": route.query})
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": route.body}}}

    success = {"description": HTTP_STATUS_CODES.get(route.status, "Success")}
    if route.response is not None and route.status != 204:
        success["content"] = {JSON: {"schema": route.response}}
    op["responses"][str(route.status)] = success
    for status, schema in route.responses:
        op["responses"][str(status)] = {"description": HTTP_STATUS_CODES.get(status, "Other"),
                                        "content": {JSON: {"schema": schema}}}

    codes = ["500", "503"]
    if route.body is not None:
        codes += ["400", "413", "415", "422"]
    elif route.query is not None:
        codes += ["422"]
    if route.auth is not None:
        codes += ["401", "403"]
        op["security"] = [{"bearerAuth": []}, {"sessionCookie": []}]
        op["x-session-kind"] = route.auth
    for code in sorted(set(codes)):
        op["responses"].setdefault(code, _problem_response(_PROBLEMS[code]))
    return op


@functools.lru_cache(maxsize=8)
def build_spec(service_cls) -> dict:
    """The OpenAPI document of a composed gateway service class."""
    spec = APISpec(title=TITLE, version=_version(), openapi_version=OPENAPI_VERSION,
                   plugins=[MarshmallowPlugin()], info={"description": DESCRIPTION})
    spec.components.schema("Problem", schema=ProblemSchema)
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer",
        "description": "Session token returned by a login call"})
    spec.components.security_scheme("sessionCookie", {
        "type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
        "description": "The same token in an HttpOnly, SameSite=Strict cookie"})
    routes = routes_of(service_cls)
    for tag in sorted({t for r in routes for t in r.tags}):
        spec.tag({"name": tag, **({"description": _TAG_DESCRIPTIONS[tag]} if tag in _TAG_DESCRIPTIONS else {})})
    for route in routes:
        spec.path(path=route.path, operations={route.method.lower(): _operation(route)})
    return spec.to_dict()


class OpenApiRoutes:
    @api("GET", "/openapi.json", tags=("system",), summary="This description (OpenAPI 3.0)",
         responses={200: {"type": "object", "description": "An OpenAPI 3.0.3 document"}})
    def openapi(self, req):
        return build_spec(type(self))
