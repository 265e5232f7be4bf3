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
    "401": "No live session (`unauthenticated`), or credentials refused by the service",
    "403": "Session of the wrong kind, a cross-site cookie request, or not allowed now",
    "404": "No such resource, or not the caller's (`not_found` and the service's codes)",
    "409": "Not possible in the current state, or a concurrent update (`conflict` family)",
    "413": "Body larger than allowed (`payload_too_large`)",
    "415": "Body not sent as `application/json` (`unsupported_media_type`)",
    "422": "Body or query failed validation (`validation_failed`, `errors` per field)",
    "423": "Locked after too many wrong entries (`credential_locked` and similar)",
    "429": "Too many requests from this address (`rate_limited`); wait `Retry-After` seconds",
    "500": "Unexpected failure (`internal_error`); quote the correlation id",
    "503": "A service did not answer in time (`service_unavailable`)",
}
_TAG_DESCRIPTIONS = {"system": "Health and description of the API"}
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

# Problems the services answer (contracts.errors raised in identity, otp_service, notifier,
# secret_questions; the route docstrings name the codes), per operation id. The gateway's own
# problems follow from the route itself (see ``_problem_codes``). tests/unit/test_openapi_problems.py
# keeps the keys honest; the fuzz test checks every answered status is listed. 409 wherever
# a command appends events: `concurrent_update` once its optimistic retries are used up.
_DOMAIN_PROBLEMS: dict[str, tuple[int, ...]] = {
    # invalid_credentials / otp_required / challenge_invalid / wrong_answer; before_cutover,
    # password_change_required; already_migrated; credential_locked
    "login": (401, 403, 409, 423),
    "login_challenge": (401, 409, 423),
    "migration_login": (401, 403, 409, 423),
    "webauthn_login_options": (),      # none: `{}` only (a login_id is the gateway's 422)
    "webauthn_login": (401, 403, 409, 423),
    # step_not_available, concurrent_update; current_password / confirmation locks
    "register_secret_questions": (409,),
    "change_passwords": (409, 423),
    "change_login_password": (409, 423),
    "change_confirmation_password": (409, 423),
    "my_phones": (404,),
    # OTP: phone_not_found / no_callable_phone / otp_application_in_progress / token_active;
    # activation_password_wrong, activation_not_found, activation_attempts_exceeded
    "apply_for_otp": (401, 404, 409, 423),
    "otp_application_status": (),
    "activate_otp_app": (401, 404, 409, 423),
    "set_token_display_name": (409,),     # token_not_found is a 404 of the path id
    "verify_otp_step_up": (401, 404, 409, 423),
    "release_otp_token": (401, 404, 409, 423),
    # mail OTP, authorization, select e-mail (R-MAIL-*)
    "issue_mail_otp": (409, 423),
    "authorize_transaction": (401, 404, 409, 423),
    "change_notification_addresses": (401, 404, 409, 423),
    "confirm_notification_address": (401, 404, 409, 423),
    # passkeys: webauthn_challenge_invalid, passkey_already_registered / passkey_limit_reached,
    # password_login_required, passkey_not_found
    "webauthn_register_options": (409,),
    "webauthn_register": (401, 409),
    "webauthn_remove_credential": (409,),
    "telephony_inbound_call": (),         # invalid_signature: the 403 of an unsafe method
    "demo_inbound_call": (404,),          # demo_mode_off (DEMO_MODE unset)
}


def _version() -> str:
    try:
        return metadata.version("tsunagi")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _problem_response(description: str) -> dict:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": ProblemSchema}}}


def _problem_codes(route) -> set[str]:
    """Every problem status the route can answer: the gateway's own, then the services'."""
    codes = {500, 503, *_DOMAIN_PROBLEMS.get(route.handler, ())}
    if route.body is not None:
        codes |= {400, 413, 415, 422}
    elif route.query is not None:
        codes.add(422)
    if route.auth is not None:            # no live session; a session of the other kind
        codes |= {401, 403}
    if route.method in _UNSAFE:           # the cookie transport's cross-origin / CSRF guard
        codes.add(403)
    if route.path_params:                 # unknown id, or someone else's
        codes.add(404)
    if route.rate_limit is not None:
        codes.add(429)
    return {str(c) for c in codes}


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

    if route.auth is not None:
        op["security"] = [{"bearerAuth": []}, {"sessionCookie": []}]
        op["x-session-kind"] = route.auth
    for code in sorted(_problem_codes(route)):
        op["responses"].setdefault(code, _problem_response(_PROBLEMS[code]))
    if "429" in op["responses"]:
        op["responses"]["429"]["headers"] = {"Retry-After": {
            "description": "Whole seconds until this address may try again",
            "schema": {"type": "integer", "minimum": 1}}}
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
