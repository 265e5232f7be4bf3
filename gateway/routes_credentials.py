"""The customer's own password changes after an operator procedure (SPEC R-LEG-4, rules of
R-INI-2), and the end of the customer's sessions when an operator re-issues the login password.

- Login with a re-issued temporary password: identity answers ``password_change_required``;
  the login route opens a *migration*-kind session (customer routes refuse it) and says
  ``next_step: login_password_change``. ``POST /api/v1/me/login-password`` changes it and ends
  every session of the customer: the next login is an ordinary one with the new password.
- A changed login password also ends them through ``login_password_changed`` (below), in
  case the route's own revocation is lost.
- After an operator reset of the confirmation password every check of it (transactions,
  settings, OTP application and release) answers 403 ``password_change_required`` until
  ``POST /api/v1/me/confirmation-password`` has set a new one.
The rules are identity's; the gateway only routes and manages sessions.
"""
from __future__ import annotations

from gateway.http import api
from gateway.rpc import rpc_call
from gateway.schemas import SECRET_MAX, BaseSchema, Str
from marshmallow import fields
from services.handlers import handles

TAGS = ("credentials",)


class LoginPasswordChangeRequest(BaseSchema):
    current_login_password = Str(max_len=SECRET_MAX, metadata={"description": "現在の（仮）ログインパスワード"})
    new_login_password = Str(max_len=SECRET_MAX)
    new_login_password_confirmation = Str(max_len=SECRET_MAX)


class ConfirmationPasswordChangeRequest(BaseSchema):
    current_confirmation_password = Str(max_len=SECRET_MAX, metadata={"description": "現在の（仮）確認用パスワード"})
    new_confirmation_password = Str(max_len=SECRET_MAX)
    new_confirmation_password_confirmation = Str(max_len=SECRET_MAX)


class PasswordChangedResponse(BaseSchema):
    status = fields.String(required=True, metadata={"description": "changed"})
    next_step = fields.String(metadata={"description": "login: ログインし直してください"})


class CredentialRoutes:
    """Mixed into ``gateway.service.GatewayService`` (``identity``, ``sessions``, ``store``)."""

    @api("POST", "/api/v1/me/login-password", body=LoginPasswordChangeRequest,
         response=PasswordChangedResponse, auth="any", tags=TAGS,
         summary="ログインパスワードの変更（仮ログインパスワードからの変更を含む）")
    def change_login_password(self, req):
        """Current login password (e.g. the temporary one an operator handed over), the new one
        twice: 6–12 half-width alphanumerics in mixed case, ≠ current, ≠ the confirmation
        password. Every session of the customer ends: log in again with the new password.
        Problems: `validation_failed` (422), `current_password_incorrect` (422, counted towards
        the lock), `credential_locked` (423), `step_not_available` (409, before step 4),
        `temporary_password_expired` (403)."""
        number = req.session.customer_number
        rpc_call(self.identity.change_login_password, number, req.body)
        self.sessions.revoke_all(number)
        return {"status": "changed", "next_step": "login"}

    @api("POST", "/api/v1/me/confirmation-password", body=ConfirmationPasswordChangeRequest,
         response=PasswordChangedResponse, auth="customer", tags=TAGS,
         summary="確認用パスワードの変更（仮確認用パスワードからの変更を含む）")
    def change_confirmation_password(self, req):
        """Current confirmation password (e.g. the temporary one after an operator reset), the
        new one twice: 6–12 half-width alphanumerics, ≠ current, ≠ the login password.
        Problems: `validation_failed` (422), `current_password_incorrect` (422, counted),
        `credential_locked` (423), `password_change_required` (403, the login password first),
        `temporary_password_expired` (403)."""
        rpc_call(self.identity.change_confirmation_password, req.session.customer_number, req.body)
        return {"status": "changed"}

    @handles("identity", "login_password_reissued")
    def on_login_password_reissued(self, event, conn):
        """R-LEG-4: a re-issued login password ends the sessions opened before it. Only those:
        a redelivered event must not end the session of the temporary-password login after it."""
        _end_sessions_opened_before(conn, event)

    @handles("identity", "login_password_changed")
    def on_login_password_changed(self, event, conn):
        """The route above ends the sessions itself, right after identity's commit; if the
        gateway fails in between (the customer sees 503, the password is changed), this makes
        sure the sessions opened with the old password still end."""
        _end_sessions_opened_before(conn, event)


def _end_sessions_opened_before(conn, event) -> None:
    conn.execute("UPDATE gateway.sessions SET revoked_at = now() "
                 "WHERE customer_number = %s AND revoked_at IS NULL AND created_at < %s",
                 (event.stream_name.split("-", 1)[1], event.recorded_at))
