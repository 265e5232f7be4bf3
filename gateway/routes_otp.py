"""OTP application, activation, display name and release (SPEC R-INI-3…7, R-INI-9; smartphone
guide steps 5–9). Paths and fields as ``shared/API.md``.

The gateway orchestrates only: every rule lives in otp_service (which answers with its own
Japanese problems). Two things happen here:
- the long poll of ``GET /api/v1/otp/applications/{id}?wait=SECONDS``: the page asks once and
  gets its answer within ~0.1 s of the verifying call (R-INI-4: 自動的に次画面へ遷移), polling
  the service with green sleeps so a waiting page costs no worker of otp_service;
- the OTP app's identity: header ``X-App-Instance-ID`` (one install of the app; it holds at
  most 10 tokens, R-INI-7), passed to the service as is.
"""
from __future__ import annotations

import time

import eventlet

from contracts import otp as contract
from gateway.http import api
from gateway.rpc import rpc_call

TAGS = ("otp",)
APP_TAGS = ("otp-app",)
APP_INSTANCE_HEADER = "X-App-Instance-ID"
POLL_INTERVAL = 0.05                      # seconds between two looks during a long poll
STILL_WAITING = (contract.AWAITING_CALL, contract.VERIFIED)


def app_instance_of(req) -> str | None:
    return req.request.headers.get(APP_INSTANCE_HEADER) or None


class OtpRoutes:
    """Mixed into ``gateway.service.GatewayService`` (which provides ``otp_service``)."""

    @api("POST", "/api/v1/otp/applications", body=contract.ApplicationRequest,
         response=contract.ApplicationCreated, auth="any", status=201, tags=TAGS,
         summary="手順5 ワンタイムパスワード利用申請（電話番号認証の開始）")
    def apply_for_otp(self, req):
        """メールアドレス（2回）、利用開始パスワード（数字4～8桁、2回）、電話番号（phone_id）、
        確認用パスワード。受け付けると着信認証の受付（既定 120 秒、PHONE_VERIFICATION_SECONDS）が始まり、発信元（下4桁）と
        認証先電話番号を返します。"""
        return rpc_call(self.otp_service.apply, req.session.customer_number, req.body)

    @api("GET", "/api/v1/otp/applications/{application_id}", query=contract.StatusQuery,
         response=contract.ApplicationStatus, auth="any", tags=TAGS,
         summary="手順6・7 申請の状況（?wait=秒 でロングポーリング）")
    def otp_application_status(self, req):
        """``awaiting_call`` → ``issued``（サービスID・ユーザID）または ``expired`` / ``failed``。
        ``wait`` を指定すると、状況が変わるか指定秒数（最大25秒）が過ぎるまで待って答えます。"""
        number, application_id = req.session.customer_number, req.path["application_id"]
        wait = min(float(req.query.get("wait") or 0.0), contract.LONG_POLL_MAX_SECONDS)
        deadline = time.monotonic() + wait
        status = rpc_call(self.otp_service.application_status, number, application_id)
        while status["status"] in STILL_WAITING and time.monotonic() < deadline:
            eventlet.sleep(min(POLL_INTERVAL, max(deadline - time.monotonic(), 0)))
            status = rpc_call(self.otp_service.application_status, number, application_id)
        return status

    @api("POST", "/api/v1/otp-app/activate", body=contract.ActivateRequest,
         response=contract.ActivateResult, tags=APP_TAGS, rate_limit="activation",
         summary="手順8 ワンタイムパスワード初期設定（OTPアプリ、ヘッダー X-App-Instance-ID）")
    def activate_otp_app(self, req):
        """サービスID・ユーザID・利用開始パスワード・同意で TOTP トークンを発行し、
        ``otpauth://`` URI を一度だけ返します。3つの値はこの後二度と使えません。
        ヘッダー `Idempotency-Key`（8～200文字、任意）を付けた要求は、応答が届かなかった場合に
        同じキー・同じアプリ・同じ利用開始パスワードで再送すると、トークンの初回利用前かつ
        10分以内に限り同じ応答を返します（それ以外の再利用は従来どおり拒否）。"""
        key = req.request.headers.get("Idempotency-Key")
        if key:
            return rpc_call(self.otp_service.activate, req.body, app_instance_of(req), idempotency_key=key)
        return rpc_call(self.otp_service.activate, req.body, app_instance_of(req))

    @api("PUT", "/api/v1/otp-app/tokens/{token_serial}/display-name", body=contract.DisplayNameRequest,
         response=contract.DisplayNameResult, tags=APP_TAGS,
         summary="手順9 トークン表示名の設定（OTPアプリ、ヘッダー X-App-Instance-ID）")
    def set_token_display_name(self, req):
        """表示名は「青森みちのく銀行」＋任意の追加文言（全角8文字以内）。"""
        return rpc_call(self.otp_service.set_display_name, req.path["token_serial"], req.body.get("suffix"),
                        app_instance_id=app_instance_of(req))

    @api("POST", "/api/v1/otp/verify", body=contract.StepUpRequest, response=contract.StepUpResult,
         auth="customer", tags=TAGS, summary="ワンタイムパスワードの確認（ステップアップ認証）")
    def verify_otp_step_up(self, req):
        """ログイン中のお客さまに、重要な画面（生体認証の登録、登録情報の照会など）の前で
        現在のワンタイムパスワードだけを改めて確認します（確認用パスワードは不要）。
        ±1ステップ、同じコードは一度だけ、5回続けて誤ると利用停止（ログインと共通の回数）。
        Problems: `otp_format` (422), `otp_invalid` / `otp_already_used` (401), `otp_locked` (423),
        `otp_not_in_use` (404)."""
        verified = rpc_call(self.otp_service.verify_otp, req.session.customer_number, req.body["otp"],
                            contract.STEP_UP)
        return {"verified": True, "token_serial": verified["token_serial"], "purpose": contract.STEP_UP}

    @api("POST", "/api/v1/otp/tokens/release", body=contract.ReleaseRequest, response=contract.ReleaseResult,
         auth="any", tags=TAGS, summary="トークンの利用解除（機種変更など）")
    def release_otp_token(self, req):
        """確認用パスワードと現在のワンタイムパスワードで解除します。以後、新しいトークンの
        利用開始まではメール通知パスワードをご利用いただきます。"""
        return rpc_call(self.otp_service.release_token, req.session.customer_number,
                        req.body["confirmation_password"], req.body["otp"])
