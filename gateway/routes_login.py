"""Login after migration (SPEC R-INI-9) with risk-based step-up (R-RBA-1).

identity assesses the client environment and either lets the customer in or answers with a
secret-question challenge; the gateway only turns "ok" into a customer session.
"""
from __future__ import annotations

from gateway import schemas
from gateway.http import api
from gateway.routes_migration import client_of
from gateway.rpc import rpc_call

TAGS = ("login",)


class LoginRoutes:
    """Mixed into ``gateway.service.GatewayService``."""

    @api("POST", "/api/v1/login", body=schemas.LoginRequest, response=schemas.LoginResponse,
         tags=TAGS, rate_limit="login", summary="ログイン（ログインID・ログインパスワード、OTP利用者はワンタイムパスワード）")
    def login(self, req):
        """Login ID (the customer number for migrated customers) and login password, plus the
        OTP for customers with an active token. From an environment (device, or network and
        browser) never seen for the customer the answer is a `secret_question` challenge
        instead of a session. Problems: `invalid_credentials` (401), `otp_required` (401),
        `credential_locked` (423), `temporary_password_expired` (403: an operator's temporary
        password is older than 14 days; the branch issues a new one)."""
        body = req.body
        result = rpc_call(self.identity.login, body["login_id"], body["password"], body.get("otp"),
                          client_of(req, device_id=body.get("device_id")))
        return self._login_outcome(result)

    @api("POST", "/api/v1/login/challenge", body=schemas.ChallengeRequest,
         response=schemas.SessionResponse, tags=TAGS,
         summary="追加認証: 秘密の質問への回答でログインを完了")
    def login_challenge(self, req):
        """Completes a challenged login with the answer to the secret question, from the same
        environment; the environment is remembered. Problems: `wrong_answer` (401, `retry`
        tells whether the same challenge may be answered again), `challenge_invalid` (401),
        `credential_locked` (423, `credential` = `secret_answers`)."""
        result = rpc_call(self.identity.answer_challenge, req.body["challenge_id"],
                          req.body["answer"], client_of(req))
        return self._login_outcome(result)

    def _login_outcome(self, result: dict) -> dict:
        if result.get("status") == "ok":
            return {"session_token": self.sessions.create(result["customer_number"], "customer")}
        if result.get("status") == "password_change_required":
            # A temporary password from an operator (R-LEG-4): a session that can only change it.
            return {"session_token": self.sessions.create(result["customer_number"], "migration"),
                    "next_step": "login_password_change"}
        if result.get("status") == "challenge":
            question = result["question"]
            return {"challenge": "secret_question", "challenge_id": result["challenge_id"],
                    "question": {"id": question["id"], "text": question["text"]}}
        raise RuntimeError(f"unexpected login outcome {result.get('status')!r}")
