"""Biometric login with WebAuthn (SPEC R-INI-8, R-INI-9; paths as ``shared/API.md``).

The passkeys service builds the options and checks every attestation and assertion; the
gateway only knows sessions. Two session rules live here because only the gateway sees
sessions: registering needs a customer session that the ID/password login opened (a session
from a passkey login is marked in ``gateway.passkey_sessions`` and refused), and a passkey
login ends like the password login — a customer session, ``{session_token}`` (which the
cookie transport of the web front end moves into its HttpOnly cookie like any other).

Bodies carry the browser's own JSON (``PublicKeyCredential.toJSON()``, base64url fields)
under ``credential``; the bare credential object at the top level is accepted too.
"""
from __future__ import annotations

from marshmallow import fields, pre_load

from gateway import schemas
from gateway.http import api, session_token_of
from gateway.rpc import rpc_call
from gateway.sessions import token_hash
from contracts.errors import Forbidden, ValidationFailed
from nameko.rpc import RpcProxy

TAGS = ("webauthn",)
MAX_CREDENTIAL_BODY = 32 * 1024

_OPTIONS_DOC = ("PublicKeyCredential{kind}OptionsJSON (WebAuthn Level 3, base64url) for "
                "`PublicKeyCredential.parse{kind}OptionsFromJSON()`, plus `challenge_id` and "
                "`expires_at` (the challenge is single-use and expires, default 5 minutes)")


def _options_response(kind: str) -> dict:
    return {200: {"type": "object", "description": _OPTIONS_DOC.format(kind=kind),
                  "properties": {"challenge": {"type": "string"}, "challenge_id": {"type": "string"},
                                 "expires_at": {"type": "string", "format": "date-time"}},
                  "additionalProperties": True}}


class CredentialFields(schemas.BaseSchema):
    """``credential``: the browser's PublicKeyCredential JSON; or its members at the top level."""
    credential = fields.Dict(keys=fields.String(), load_default=None, metadata={
        "description": "PublicKeyCredential.toJSON() of navigator.credentials.create()/get()"})
    challenge_id = schemas.Str(required=False, ident=True, allow_none=True, load_default=None,
                               metadata={"description": "from the options (optional: the challenge "
                                                        "inside clientDataJSON identifies it too)"})
    id = fields.String(load_default=None)
    rawId = fields.String(load_default=None)
    type = fields.String(load_default=None)
    response = fields.Dict(keys=fields.String(), load_default=None)
    authenticatorAttachment = fields.String(load_default=None, allow_none=True)
    clientExtensionResults = fields.Dict(load_default=None)


class RegisterRequest(CredentialFields):
    nickname = schemas.Str(required=False, ident=True, allow_none=True, load_default=None, max_len=20,
                           metadata={"description": "端末の名前（20文字以内、例: わたしのiPhone）"})


LOGIN_ID_NOT_ACCEPTED = ("生体認証でのログインにログインIDは指定できません。"
                         "ログインIDを指定せず、端末に保存された生体認証を選んでください。")


class LoginOptionsRequest(schemas.BaseSchema):
    """``{}``: no fields. The former ``login_id`` form listed the customer's credential IDs, which
    told anybody which customers have passkeys; it gets its own message, as a front end written
    for it should learn what to change."""

    @pre_load
    def _no_login_id(self, data, **kwargs):
        if isinstance(data, dict) and "login_id" in data:
            raise ValidationFailed(LOGIN_ID_NOT_ACCEPTED, "validation_failed",
                                   errors={"login_id": [LOGIN_ID_NOT_ACCEPTED]})
        return data


class PasskeyView(schemas.BaseSchema):
    passkey_id = fields.String(required=True)
    nickname = fields.String(allow_none=True)
    status = fields.String(required=True, metadata={"description": "active | suspended（複製の疑いで停止）"})
    registered_at = fields.String(required=True)
    last_used_at = fields.String(allow_none=True)
    backed_up = fields.Boolean()
    aaguid = fields.String(allow_none=True)


class RemovedResponse(schemas.BaseSchema):
    removed = fields.Boolean(required=True)
    passkey_id = fields.String(required=True)


class WebAuthnSessionResponse(schemas.BaseSchema):
    session_token = fields.String(required=True)


def _credential_of(body: dict) -> dict:
    if body.get("credential") is not None:
        return body["credential"]
    bare = {k: body[k] for k in ("id", "rawId", "type", "response", "authenticatorAttachment",
                                 "clientExtensionResults") if body.get(k) is not None}
    return bare


PASSWORD_LOGIN_REQUIRED = ("password_login_required",
                           "生体認証の登録には、ログインIDとログインパスワードでのログインが必要です。"
                           "ログインし直してから、もう一度お試しください。")


class WebAuthnRoutes:
    """Mixed into ``gateway.service.GatewayService``."""

    passkeys = RpcProxy("passkeys")

    @api("POST", "/api/v1/webauthn/register/options", auth="customer", tags=TAGS,
         responses=_options_response("Creation"),
         summary="生体認証の登録（手順10）: 認証器に渡す登録オプション")
    def webauthn_register_options(self, req):
        """Step 10 (R-INI-8), after logging in with login ID and password: the options for
        `navigator.credentials.create()` — a platform authenticator, user verification
        required, resident key preferred, no attestation, the customer's passkeys excluded.
        Problems: `password_login_required` (403, a session opened by a passkey login)."""
        self._require_password_session(req)
        return rpc_call(self.passkeys.registration_options, req.session.customer_number)

    @api("POST", "/api/v1/webauthn/register", body=RegisterRequest, response=PasskeyView, auth="customer",
         status=201, tags=TAGS, max_body=MAX_CREDENTIAL_BODY, summary="生体認証の登録を確定する")
    def webauthn_register(self, req):
        """The attestation of `navigator.credentials.create()` (`credential`: its `toJSON()`),
        with an optional `nickname`. Problems: `webauthn_challenge_invalid` (401: expired, used
        or not this customer's), `webauthn_registration_invalid` (400: wrong origin or RP ID,
        no user verification, bad attestation), `passkey_already_registered` (409),
        `passkey_limit_reached` (409, default 5 per customer), `password_login_required` (403)."""
        self._require_password_session(req)
        body = req.body
        return rpc_call(self.passkeys.register, req.session.customer_number, _credential_of(body),
                        body.get("nickname"), body.get("challenge_id"))

    @api("POST", "/api/v1/webauthn/login/options", body=LoginOptionsRequest, tags=TAGS,
         rate_limit="login", responses=_options_response("Request"),
         summary="生体認証でログイン: 認証器に渡すログインオプション")
    def webauthn_login_options(self, req):
        """Options for `navigator.credentials.get()` (user verification required), body `{}`:
        no `allowCredentials`, the browser offers the passkeys it holds for this site
        (discoverable credentials). Problems: `validation_failed` (422) for a `login_id` —
        that form is not offered, since it told which customers have passkeys."""
        return rpc_call(self.passkeys.login_options)

    @api("POST", "/api/v1/webauthn/login", body=CredentialFields, response=WebAuthnSessionResponse,
         tags=TAGS, rate_limit="login", max_body=MAX_CREDENTIAL_BODY,
         summary="生体認証でログイン（ログインID・パスワードの代わりに）")
    def webauthn_login(self, req):
        """The assertion of `navigator.credentials.get()` (`credential`: its `toJSON()`) → a
        customer session, as `POST /api/v1/login` gives (R-INI-9). Problems:
        `passkey_login_failed` (401: unknown or removed credential, bad signature, wrong
        origin), `webauthn_challenge_invalid` (401: unknown, expired or already used — a
        replayed assertion), `passkey_suspended` (403: the sign counter did not increase, a possible
        clone; remove it and register again). A passkey stands in for ID and password, so it
        opens no session while they could not (identity's login standing; recorded, nothing
        suspended): `password_change_required` (403, `credential`: an operator re-issued the
        login password — log in with ID and the temporary one and change it),
        `credential_locked` (423, `credential` = `login_password`), `initial_operation_required`
        (403). Failures do not lock; only validly signed ones are recorded."""
        body = req.body
        result = rpc_call(self.passkeys.login, _credential_of(body), body.get("challenge_id"))
        token = self.sessions.create(result["customer_number"], "customer")
        with self.sessions.pool.connection() as conn:
            conn.execute("INSERT INTO gateway.passkey_sessions (token_hash, passkey_id) VALUES (%s, %s)",
                         (token_hash(token), result["passkey_id"]))
        return {"session_token": token}

    @api("GET", "/api/v1/webauthn/credentials", response=PasskeyView(many=True), auth="customer", tags=TAGS,
         summary="登録済みの生体認証の一覧")
    def webauthn_credentials(self, req):
        """The customer's passkeys: nickname, status (`suspended` after a possible clone),
        registration and last use. No key material."""
        return rpc_call(self.passkeys.list_passkeys, req.session.customer_number)

    @api("DELETE", "/api/v1/webauthn/credentials/{credential_id}", response=RemovedResponse, auth="customer",
         tags=TAGS, summary="生体認証の登録を削除する")
    def webauthn_remove_credential(self, req):
        """Removes one passkey (`credential_id`: its `passkey_id` from the list, or the WebAuthn
        credential ID); it can no longer log in. Problems: `passkey_not_found` (404)."""
        return rpc_call(self.passkeys.remove, req.session.customer_number, req.path["credential_id"])

    def _require_password_session(self, req) -> None:
        """Registration only after the ID/password login (R-INI-8): a session opened by a passkey
        login is refused. Every route that registers a passkey must call it."""
        with self.sessions.pool.connection() as conn:
            row = conn.execute("SELECT 1 FROM gateway.passkey_sessions WHERE token_hash = %s",
                               (token_hash(session_token_of(req.request) or ""),)).fetchone()
        if row is not None:
            raise Forbidden(PASSWORD_LOGIN_REQUIRED[1], PASSWORD_LOGIN_REQUIRED[0])
