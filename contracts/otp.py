"""The OTP service's shared language: its event types, its subscriptions and its RPC payloads
(SPEC R-INI-3…7, R-INI-9, R-RBA-2; smartphone guide steps 5–9).

Service name ``otp_service``. Streams it owns:

- ``otpapp-<application_id>`` — one OTP application (step 5): submitted → verified →
  token issued → activated, or expired / failed. Personal fields (the mail address and the
  argon2id verifier of the activation password) are encrypted with the customer's data key
  (subject = customer number), so shredding the customer removes them from the log.
- ``otptoken-<token_serial>`` — one activated token (steps 8–9): activated → display name
  set* → released. Its TOTP secret is sealed with a ``TOTP_KEYS`` master key (AES-GCM, key
  id kept) *and* is a personal field on top, so neither auditors nor a shredded customer's
  log reveal it.
- ``otpcust-<customer_number>`` — the customer's OTP use (R-INI-9, R-RBA-2): codes accepted,
  codes refused, the lock.

RPC interface (keep it stable; the gateway is built against it). Every method raises
``contracts.errors`` DomainErrors with a Japanese ``detail``:

- ``apply(customer_number, body) -> {application_id, status: "awaiting_call",
  call_from_masked, call_to, expires_at}`` — body as ``ApplicationRequest``.
- ``application_status(customer_number, application_id) -> {application_id, status, reason?,
  service_id?, user_id?, activated?, expires_at}`` — status is one of ``STATUSES``.
- ``activate(body, app_instance_id) -> {token_serial, otpauth_uri, display_name}`` — body as
  ``ActivateRequest``; ``app_instance_id`` from the OTP app (header ``X-App-Instance-ID``).
- ``set_display_name(token_serial, suffix, app_instance_id=None, customer_number=None)
  -> {token_serial, display_name}`` — the caller names the app instance or the customer
  the token belongs to.
- ``verify_otp(customer_number, code, purpose) -> {ok: True, token_serial}``
- ``has_active_token(customer_number) -> bool``
- ``release_token(customer_number, confirmation_password, otp) -> {released: True, token_serial}``
- ``unlock_otp(customer_number) -> {unlocked: True}`` — operators (actor kind ``operator``).
- ``ping()``
"""
from __future__ import annotations

from marshmallow import EXCLUDE, RAISE, Schema, fields, validate

from contracts.events import register
from contracts.subscriptions import subscribe

SERVICE = "otp_service"
APPLICATION_CATEGORY = "otpapp"
TOKEN_CATEGORY = "otptoken"
CUSTOMER_CATEGORY = "otpcust"

# What GET /api/v1/otp/applications/{id} reports.
AWAITING_CALL = "awaiting_call"
VERIFIED = "verified"
ISSUED = "issued"
EXPIRED = "expired"
FAILED = "failed"
STATUSES = (AWAITING_CALL, VERIFIED, ISSUED, EXPIRED, FAILED)

# ``reason`` of an expired or failed application.
REASON_CALL_TIMEOUT = "call_timeout"                    # no verifying call within the window
REASON_ACTIVATION_ATTEMPTS = "activation_password_attempts_exceeded"

TOKEN_ISSUER = "青森みちのく銀行"     # issuer of the otpauth URI and prefix of every display name


def application_stream(application_id: str) -> str:
    return f"{APPLICATION_CATEGORY}-{application_id}"


def token_stream(token_serial: str) -> str:
    return f"{TOKEN_CATEGORY}-{token_serial}"


def customer_stream(customer_number: str) -> str:
    return f"{CUSTOMER_CATEGORY}-{customer_number}"


# -- events: the application (otpapp-<application_id>) ------------------------------------------

OTP_APPLICATION_SUBMITTED = register(
    "otp_application_submitted", SERVICE,
    personal_fields=("email", "activation_password_verifier"),
    description="Step 5 done, the inbound-call verification started. data: application_id, "
                "customer_number, email (personal), activation_password_verifier (argon2id, "
                "personal), phone_id, verification_id, call_from_masked, call_to, expires_at, "
                "submitted_at.")
OTP_APPLICATION_VERIFIED = register(
    "otp_application_verified", SERVICE,
    description="phone_auth reported the verifying call (step 6). data: application_id, "
                "customer_number, verification_id, verified_at.")
TOKEN_ISSUED = register(
    "token_issued", SERVICE,
    personal_fields=("email",),
    description="Service ID and User ID issued for the application (R-INI-5); the notifier "
                "mails them (「トークン発行のご案内」). data: application_id, customer_number, "
                "service_id, user_id, email (personal), issued_at.")
OTP_APPLICATION_EXPIRED = register(
    "otp_application_expired", SERVICE,
    description="No verifying call within the window; the customer applies again. data: "
                "application_id, customer_number, verification_id, reason.")
OTP_ACTIVATION_FAILED = register(
    "otp_activation_failed", SERVICE,
    description="A wrong activation password in the OTP app (R-RBA-2). data: application_id, "
                "customer_number, app_instance_id, consecutive_failures, threshold, at.")
OTP_APPLICATION_VOIDED = register(
    "otp_application_voided", SERVICE,
    description="The application can no longer be activated (status failed); the customer "
                "applies again. data: application_id, customer_number, reason, at.")
OTP_APPLICATION_ACTIVATED = register(
    "otp_application_activated", SERVICE,
    description="Service ID, User ID and activation password were used (R-INI-6); they never "
                "work again. data: application_id, customer_number, token_serial, at.")

# -- events: the token (otptoken-<token_serial>) -------------------------------------------------

TOKEN_ACTIVATED = register(
    "token_activated", SERVICE,
    personal_fields=("secret",),
    description="A TOTP token is active in an OTP app (R-INI-6). data: token_serial, "
                "customer_number, application_id, app_instance_id, display_name, secret "
                "({kid, ct}: AES-GCM under a TOTP_KEYS master key; also a personal field), "
                "algorithm, digits, period, activated_at.")
TOKEN_DISPLAY_NAME_SET = register(
    "token_display_name_set", SERVICE,
    description="Step 9 (R-INI-7). data: token_serial, customer_number, suffix, display_name.")
TOKEN_RELEASED = register(
    "token_released", SERVICE,
    description="The token no longer works (e.g. phone change); the customer uses the mail "
                "notification password until a new token is active (R-MAIL-2). data: "
                "token_serial, customer_number, reason, at.")

# -- events: the customer's OTP use (otpcust-<customer_number>) --------------------------------------

OTP_VERIFIED = register(
    "otp_verified", SERVICE,
    description="A one-time password was accepted (R-INI-9). data: customer_number, "
                "token_serial, time_step, purpose, at. Resets the failure counter; a code of "
                "this or an earlier time step is never accepted again.")
OTP_VERIFICATION_FAILED = register(
    "otp_verification_failed", SERVICE,
    description="A one-time password was refused. data: customer_number, token_serial, "
                "purpose, reason (mismatch | replayed), consecutive_failures, at.")
OTP_LOCKED = register(
    "otp_locked", SERVICE,
    description="Too many consecutive refused codes (R-RBA-2): OTP is locked for the customer. "
                "data: customer_number, consecutive_failures, threshold, locked_at.")
OTP_UNLOCKED = register(
    "otp_unlocked", SERVICE,
    description="The OTP lock was lifted. data: customer_number, release (operator | "
                "timed_release), at.")

EVENT_TYPES = tuple(t.name for t in (
    OTP_APPLICATION_SUBMITTED, OTP_APPLICATION_VERIFIED, TOKEN_ISSUED, OTP_APPLICATION_EXPIRED,
    OTP_ACTIVATION_FAILED, OTP_APPLICATION_VOIDED, OTP_APPLICATION_ACTIVATED, TOKEN_ACTIVATED,
    TOKEN_DISPLAY_NAME_SET, TOKEN_RELEASED, OTP_VERIFIED, OTP_VERIFICATION_FAILED, OTP_LOCKED,
    OTP_UNLOCKED))

# -- subscriptions ----------------------------------------------------------------------------------

PHONE_VERIFIED_SUBSCRIPTION = subscribe("phone_auth", "phone_verification_succeeded",
                                        SERVICE, "on_phone_verification_succeeded")
PHONE_EXPIRED_SUBSCRIPTION = subscribe("phone_auth", "phone_verification_expired",
                                       SERVICE, "on_phone_verification_expired")


# -- RPC payloads (also the HTTP bodies of the gateway's OTP routes) ----------------------------------
# Shapes and generous caps only; the rules (matching re-entries, 4–8 digits, full-width suffix)
# live in otp_service.domain and answer with their own Japanese messages.

REQUIRED = "必須項目です。"
NULL = "値を入力してください。"
NOT_STRING = "文字列で入力してください。"
NOT_BOOLEAN = "true または false で指定してください。"
UNKNOWN = "この項目は指定できません。"


def _str(*, max_len: int, required: bool = True, **kw) -> fields.String:
    return fields.String(required=required,
                         validate=validate.Length(max=max_len, error=f"{max_len}文字以内で入力してください。"),
                         error_messages={"required": REQUIRED, "null": NULL, "invalid": NOT_STRING,
                                         "invalid_utf8": NOT_STRING}, **kw)


class _StrictBoolean(fields.Boolean):
    """Only JSON true/false count as a ticked box ("true", 1 and "on" do not)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not bool:
            raise self.make_error("invalid", input=value)
        return value


class _Strict(Schema):
    error_messages = {"type": "オブジェクトで指定してください。", "unknown": UNKNOWN}

    class Meta:
        unknown = RAISE


class ApplicationRequest(_Strict):
    """``POST /api/v1/otp/applications`` — step 5."""
    email = _str(max_len=254, metadata={"description": "トークン発行のご案内の送付先（半角英数字記号）"})
    email_confirmation = _str(max_len=254, metadata={"description": "確認のため再度入力"})
    activation_password = _str(max_len=32, metadata={"description": "利用開始パスワード（数字4～8桁）"})
    activation_password_confirmation = _str(max_len=32)
    phone_id = _str(max_len=64, metadata={"description": "GET /api/v1/me/phones の phone_id"})
    confirmation_password = _str(max_len=128, metadata={"description": "確認用パスワード"})


class ApplicationCreated(Schema):
    application_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"example": AWAITING_CALL})
    call_from_masked = fields.String(required=True, metadata={"example": "*****1234"})
    call_to = fields.String(required=True, metadata={"description": "認証先電話番号（通話料無料）",
                                                      "example": "0120-000-110"})
    expires_at = fields.String(required=True, metadata={"description": "ISO 8601"})


class ApplicationStatus(Schema):
    application_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    reason = fields.String(metadata={"description": "expired / failed only"})
    service_id = fields.String(metadata={"description": "issued only: サービスID"})
    user_id = fields.String(metadata={"description": "issued only: ユーザID"})
    activated = fields.Boolean(metadata={"description": "issued only: 初期設定済み"})
    expires_at = fields.String(metadata={"description": "end of the call window (ISO 8601)"})


LONG_POLL_MAX_SECONDS = 25.0


class StatusQuery(Schema):
    """Unknown query parameters (a front end's cache buster) are ignored, not refused."""

    class Meta:
        unknown = EXCLUDE

    wait = fields.Float(load_default=0.0, allow_nan=False,
                        validate=validate.Range(min=0, error="0 以上の秒数で指定してください。"),
                        error_messages={"invalid": "秒数で指定してください。"},
                        metadata={"description": "long poll: answer as soon as the status leaves "
                                                 "awaiting_call, or after this many seconds "
                                                 f"(at most {LONG_POLL_MAX_SECONDS:g})"})


class ActivateRequest(_Strict):
    """``POST /api/v1/otp-app/activate`` — step 8, from the OTP app."""
    service_id = _str(max_len=32, metadata={"description": "サービスID"})
    user_id = _str(max_len=32, metadata={"description": "ユーザID"})
    activation_password = _str(max_len=32, metadata={"description": "利用開始パスワード"})
    agreed = _StrictBoolean(required=True, error_messages={"required": REQUIRED, "null": NULL,
                                                            "invalid": NOT_BOOLEAN},
                            metadata={"description": "「上記の内容に同意する。」"})


class ActivateResult(Schema):
    token_serial = fields.String(required=True)
    otpauth_uri = fields.String(required=True, metadata={
        "description": "otpauth://totp/… Key URI (shown once)"})
    display_name = fields.String(required=True)


class DisplayNameRequest(_Strict):
    """``PUT /api/v1/otp-app/tokens/{token_serial}/display-name`` — step 9."""
    suffix = _str(max_len=64, required=False, allow_none=True, load_default=None,
                  metadata={"description": "追加文言（全角8文字以内、空なら表示名は「青森みちのく銀行」）"})


class DisplayNameResult(Schema):
    token_serial = fields.String()
    display_name = fields.String(required=True)


class ReleaseRequest(_Strict):
    """``POST /api/v1/otp/tokens/release``."""
    confirmation_password = _str(max_len=128)
    otp = _str(max_len=16)


class ReleaseResult(Schema):
    released = fields.Boolean(required=True)
    token_serial = fields.String(required=True)


STEP_UP = "step_up"        # purpose of POST /api/v1/otp/verify in the customer's OTP log


class StepUpRequest(_Strict):
    """``POST /api/v1/otp/verify``: the current code of the customer's OTP app."""
    otp = _str(max_len=16)


class StepUpResult(Schema):
    verified = fields.Boolean(required=True)
    token_serial = fields.String(required=True)
    purpose = fields.String(required=True)
