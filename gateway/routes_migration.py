"""Initial operation, smartphone guide steps 2–4 (SPEC R-LEG-2/3, R-INI-1, R-INI-2) and the
registered phones of step 5 (R-INI-3).

The gateway orchestrates only. Which step comes next is identity's rule; the rules of each
step belong to identity (legacy login, passwords) and secret_questions (step 3). The one
thing checked here is that the step this route is about to perform is the step identity
says is next — so a customer cannot jump to or repeat step 3 through the gateway.
"""
from __future__ import annotations

from contracts.errors import Conflict
from gateway import schemas
from gateway.http import api
from gateway.rpc import rpc_call

TAGS = ("initial-operation",)
STEP_SECRET_QUESTIONS = "secret_questions"

# The same code and words identity uses when it refuses a step out of order, so a front end
# sees one answer whichever side noticed.
STEP_NOT_AVAILABLE = "step_not_available"
MSG_STEP_NOT_AVAILABLE = "この手続きは現在行えません。画面の案内に従って、次の手続きにお進みください。"


def client_of(req, device_id: str | None = None) -> dict:
    """The client environment identity assesses (R-RBA-1): device, network, browser."""
    c = req.client
    return {"device_id": device_id or getattr(c, "device_id", None),
            "address": getattr(c, "address", None), "user_agent": getattr(c, "user_agent", None)}


class MigrationRoutes:
    """Mixed into ``gateway.service.GatewayService`` (which provides ``identity``,
    ``secret_questions`` and ``sessions``)."""

    @api("POST", "/api/v1/migration/login", body=schemas.MigrationLoginRequest,
         response=schemas.MigrationLoginResponse, tags=TAGS, rate_limit="login",
         summary="手順2 ログイン: 『みちのくダイレクト』のお客さま番号とログインパスワード")
    def migration_login(self, req):
        """Starts the initial operation with the old service's customer number (10 digits) and
        login password; returns a migration session and the step to go to. Problems:
        `before_cutover` (403, before the cut-over instant), `invalid_credentials` (401; unknown
        numbers and wrong passwords answer alike), `credential_locked` (423),
        `already_migrated` (409, the new login must be used)."""
        result = rpc_call(self.identity.legacy_login, req.body["customer_number"],
                          req.body["password"], client_of(req))
        token = self.sessions.create(result["customer_number"], "migration")
        return {"session_token": token, "next_step": result["next_step"]}

    @api("GET", "/api/v1/secret-questions/catalogue", response=schemas.QuestionSchema(many=True),
         tags=TAGS, summary="手順3 秘密の質問の一覧")
    def secret_question_catalogue(self, req):
        """The fixed catalogue of secret questions (stable ids) to choose three from."""
        return rpc_call(self.secret_questions.catalogue)

    @api("POST", "/api/v1/migration/secret-questions", body=schemas.SecretQuestionsRequest,
         response=schemas.NextStepResponse, auth="migration", tags=TAGS,
         summary="手順3 秘密の質問・回答の登録（3つ、全角10文字以内、「確認しました。」）")
    def register_secret_questions(self, req):
        """Registers three distinct catalogue questions with answers of 1–10 full-width
        characters (no half-width characters, emoji or control characters); `confirmed` is the
        「確認しました。」 checkbox and must be `true`. Answers must later be typed exactly the
        same (一字一句同じ). Problems: `step_not_available` (409, not the current step — also
        when already registered), `secret_questions_count`, `secret_questions_not_distinct`,
        `secret_question_unknown`, `secret_answer_required`, `secret_answer_too_long`,
        `secret_answer_not_full_width`, `secret_answer_invalid_character`,
        `confirmation_required` (422, with `errors` per field)."""
        number = req.session.customer_number
        self._require_current_step(number, STEP_SECRET_QUESTIONS)
        rpc_call(self.secret_questions.register, number, req.body["answers"], req.body["confirmed"])
        return {"next_step": rpc_call(self.identity.migration_status, number)["next_step"]}

    @api("POST", "/api/v1/migration/password", body=schemas.PasswordChangeRequest,
         response=schemas.NextStepResponse, auth="migration", tags=TAGS,
         summary="手順4 ログインパスワード・確認用パスワードの変更")
    def change_passwords(self, req):
        """Step 4: replaces the old login password and confirmation PIN with new passwords
        (6–12 half-width alphanumerics, the login password in mixed case, new ≠ current, the
        re-entries match, login ≠ confirmation). Problems: `validation_failed` (422, every
        broken rule per field), `current_password_incorrect` (422, counted towards the lock),
        `credential_locked` (423), `step_not_available` (409)."""
        # identity checks the step order and every rule of R-INI-2 itself.
        result = rpc_call(self.identity.change_passwords, req.session.customer_number, req.body)
        return {"next_step": result["next_step"]}

    @api("GET", "/api/v1/me/phones", response=schemas.PhoneSchema(many=True), auth="any",
         tags=TAGS, summary="お届出の電話番号（下4桁のみ表示）")
    def my_phones(self, req):
        """The customer's registered phone numbers, only the last four digits shown."""
        return rpc_call(self.identity.phones, req.session.customer_number)

    def _require_current_step(self, customer_number: str, step: str) -> None:
        status = rpc_call(self.identity.migration_status, customer_number)
        if status.get("next_step") != step:
            raise Conflict(MSG_STEP_NOT_AVAILABLE, STEP_NOT_AVAILABLE, next_step=status.get("next_step"))
