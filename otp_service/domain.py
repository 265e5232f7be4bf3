"""OTP tokens — the pure deciders (SPEC R-INI-3…7, R-INI-9, R-RBA-2; smartphone guide 5–9).

Three aggregates, each ``initial state / evolve / decide``:

- ``Application`` (stream ``otpapp-<id>``): the step-5 form, the inbound-call verification
  (step 6), the issued Service ID and User ID, the activation in the OTP app (step 8) with its
  own counter of wrong activation passwords.
- ``Token`` (stream ``otptoken-<serial>``): an activated TOTP token, its display name (step 9),
  its release.
- ``CustomerOtp`` (stream ``otpcust-<customer_number>``): using the token — accepted codes
  (never twice: replay protection), refused codes, the lock.

No I/O, clock or randomness here: the service hashes and checks passwords, generates ids and
secrets, reads the clock and passes the outcomes in the commands. Rules that span aggregates
(one application in flight per customer, one active token per customer, at most 10 tokens
per OTP app) arrive as facts in the commands, counted by the service under a lock.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from contracts import otp as contract
from contracts.errors import Conflict, Forbidden, Locked, NotFound, Unauthenticated, ValidationFailed
from contracts.events import NewEvent, RecordedEvent

DEFAULT_ACTIVATION_MAX_FAILURES = 5      # R-RBA-2: wrong activation passwords void the application
DEFAULT_MAX_TOKENS_PER_APP = 10          # R-INI-7: one OTP app holds at most 10 tokens
DEFAULT_OTP_LOCK_THRESHOLD = 5           # R-RBA-2: consecutive refused OTPs lock OTP use
SUFFIX_MAX_CHARS = 8                     # R-INI-7: 全角8文字以内
DISPLAY_NAME_PREFIX = contract.TOKEN_ISSUER
DISPLAY_NAME_SEPARATOR = " "             # as the guide prints it: 『青森みちのく銀行 本店用』

# -- messages (Japanese, for the customer) and their stable codes ----------------------------------

MSG_EMAIL_REQUIRED = "メールアドレスを入力してください。"
MSG_EMAIL_INVALID = "メールアドレスの形式が正しくありません。半角英数字記号で入力してください。"
MSG_EMAIL_MISMATCH = "メールアドレスと確認用のメールアドレスが一致しません。"
MSG_ACTIVATION_PASSWORD_FORMAT = "利用開始パスワードは半角数字4～8桁で入力してください。"
MSG_ACTIVATION_PASSWORD_MISMATCH = "利用開始パスワードと確認用の利用開始パスワードが一致しません。"
MSG_PHONE_REQUIRED = "電話番号認証を行う電話番号を選択してください。"
MSG_CONFIRMATION_PASSWORD_REQUIRED = "確認用パスワードを入力してください。"
MSG_FORM = "入力内容に誤りがあります。各項目のメッセージをご確認ください。"

MSG_PHONE_UNKNOWN = "選択された電話番号が正しくありません。一覧から選択してください。"
CODE_PHONE_UNKNOWN = "phone_not_registered"
MSG_NO_CALLABLE_PHONE = ("電話番号認証が可能な電話番号のご登録がありません。お手数ですが、"
                         "お取引店でお届出電話番号の変更をお手続きください。")
CODE_NO_CALLABLE_PHONE = "no_callable_phone"
MSG_APPLICATION_IN_PROGRESS = ("お申し込み中のワンタイムパスワード利用申請があります。電話番号認証を完了するか、"
                               "電話番号認証の受付時間が過ぎてからもう一度お申し込みください。")
CODE_APPLICATION_IN_PROGRESS = "otp_application_in_progress"
MSG_TOKEN_ACTIVE = ("既にワンタイムパスワードをご利用中です。機種変更などで再度お申し込みになる場合は、"
                    "トークンの利用解除を行ってからお申し込みください。")
CODE_TOKEN_ACTIVE = "otp_token_already_active"
MSG_APPLICATION_NOT_FOUND = "お申し込みが見つかりません。"
CODE_APPLICATION_NOT_FOUND = "otp_application_not_found"

MSG_NOT_AGREED = "アプリ利用上の注意をご確認のうえ、「上記の内容に同意する。」にチェックしてください。"
CODE_NOT_AGREED = "agreement_required"
MSG_ACTIVATION_NOT_FOUND = ("サービスIDまたはユーザIDが正しくありません。メールまたは申請完了画面に表示された"
                            "サービスID・ユーザIDをご確認ください。")
CODE_ACTIVATION_NOT_FOUND = "otp_activation_not_found"
MSG_ALREADY_ACTIVATED = ("このサービスID・ユーザIDは既に初期設定に使用されています。"
                         "初期設定の完了後は使用できません。")
CODE_ALREADY_ACTIVATED = "otp_already_activated"
MSG_ACTIVATION_PASSWORD_WRONG = "利用開始パスワードが正しくありません。（あと{n}回誤るとお申し込みが無効になります）"
CODE_ACTIVATION_PASSWORD_WRONG = "activation_password_mismatch"
MSG_APPLICATION_VOID = ("利用開始パスワードを所定の回数以上誤ったため、このお申し込みは無効になりました。"
                        "お手数ですが、ワンタイムパスワードの利用申請からやり直してください。")
CODE_ACTIVATION_ATTEMPTS_EXCEEDED = "activation_attempts_exceeded"
CODE_APPLICATION_VOID = "otp_application_void"
MSG_TOKEN_LIMIT = ("このアプリに登録できるトークンは{n}件までです。これ以上トークンを追加することはできません。")
CODE_TOKEN_LIMIT = "token_limit_reached"
MSG_APP_INSTANCE_INVALID = "アプリの識別情報が正しくありません。アプリを再起動してもう一度お試しください。"
CODE_APP_INSTANCE_INVALID = "app_instance_id_invalid"

MSG_SUFFIX_TOO_LONG = "追加文言は全角8文字以内で入力してください。"
CODE_SUFFIX_TOO_LONG = "display_name_suffix_too_long"
MSG_SUFFIX_HALF_WIDTH = "追加文言は全角文字で入力してください。半角文字は使用できません。"
CODE_SUFFIX_HALF_WIDTH = "display_name_suffix_not_full_width"
MSG_SUFFIX_BAD_CHAR = "追加文言に使用できない文字（絵文字・制御文字など）が含まれています。"
CODE_SUFFIX_BAD_CHAR = "display_name_suffix_invalid_character"
MSG_TOKEN_NOT_FOUND = "トークンが見つかりません。"
CODE_TOKEN_NOT_FOUND = "token_not_found"
MSG_TOKEN_RELEASED = "このトークンは利用解除されています。"
CODE_TOKEN_RELEASED = "token_released"

MSG_OTP_FORMAT = "ワンタイムパスワードは半角数字6桁で入力してください。"
CODE_OTP_FORMAT = "otp_format"
MSG_OTP_WRONG = ("ワンタイムパスワードが正しくありません。アプリに表示されている最新のワンタイムパスワードを"
                 "入力してください。")
CODE_OTP_WRONG = "otp_invalid"
MSG_OTP_REPLAYED = ("このワンタイムパスワードは既に使用されています。アプリに次のワンタイムパスワードが"
                    "表示されてから入力してください。")
CODE_OTP_REPLAYED = "otp_already_used"
MSG_OTP_LOCKED = ("ワンタイムパスワードを所定の回数以上誤ったため、ご利用を停止しています。"
                  "お取引店またはお問い合わせ窓口にご連絡ください。")
CODE_OTP_LOCKED = "otp_locked"
MSG_NO_TOKEN = "ワンタイムパスワードのご利用登録がありません。"
CODE_NO_TOKEN = "otp_not_in_use"
MSG_NOT_LOCKED = "ワンタイムパスワードはロックされていません。"
CODE_NOT_LOCKED = "otp_not_locked"


# -- input rules ---------------------------------------------------------------------------------------

# A mail address as Japanese customers have them. The local part admits dots anywhere
# (consecutive or trailing), because Japanese mobile carriers issued such addresses for years
# (「taro..yamada.@docomo.ne.jp」) and they still receive mail; the guide asks for 半角英数字記号,
# so the address is ASCII. The domain needs a dot and a letter TLD.
# \Z, not $: "$" also matches before a trailing newline, so "482913\n" and
# "a@example.jp\n" passed (issue 7).
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]{1,64}\Z")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\Z")
_TLD = re.compile(r"^[A-Za-z]{2,63}\Z")
_DIGITS = re.compile(r"^[0-9]{4,8}\Z")
_OTP = re.compile(r"^[0-9]{6}\Z")
_APP_INSTANCE = re.compile(r"^[A-Za-z0-9._:\-]{8,128}\Z")
_PURPOSE = re.compile(r"^[a-z][a-z_]{0,31}\Z")


def valid_email(address: str) -> bool:
    if not isinstance(address, str) or len(address) > 254 or not address.isascii():
        return False
    local, at, domain = address.rpartition("@")
    if not at or not _LOCAL.match(local) or local in (".", ""):
        return False
    labels = domain.split(".")
    return (len(labels) >= 2 and all(_LABEL.match(label) for label in labels)
            and bool(_TLD.match(labels[-1])) and len(domain) <= 253)


def check_application_form(body: dict) -> None:
    """Step 5's rules (R-INI-3), every field at once: ``errors`` maps field → messages."""
    errors: dict[str, list[str]] = {}
    email, again = body.get("email") or "", body.get("email_confirmation") or ""
    if not email:
        errors["email"] = [MSG_EMAIL_REQUIRED]
    elif not valid_email(email):
        errors["email"] = [MSG_EMAIL_INVALID]
    elif email != again:
        errors["email_confirmation"] = [MSG_EMAIL_MISMATCH]
    pw, pw_again = body.get("activation_password") or "", body.get("activation_password_confirmation") or ""
    if not _DIGITS.match(pw):
        errors["activation_password"] = [MSG_ACTIVATION_PASSWORD_FORMAT]
    elif pw != pw_again:
        errors["activation_password_confirmation"] = [MSG_ACTIVATION_PASSWORD_MISMATCH]
    if not (body.get("phone_id") or "").strip():
        errors["phone_id"] = [MSG_PHONE_REQUIRED]
    if not body.get("confirmation_password"):
        errors["confirmation_password"] = [MSG_CONFIRMATION_PASSWORD_REQUIRED]
    if errors:
        first = next(iter(errors.values()))[0] if len(errors) == 1 else MSG_FORM
        raise ValidationFailed(first, "validation_failed", errors=errors)


def valid_activation_password(value: str) -> bool:
    return isinstance(value, str) and bool(_DIGITS.match(value))


def check_app_instance_id(value) -> str:
    if not isinstance(value, str) or not _APP_INSTANCE.match(value):
        raise ValidationFailed(MSG_APP_INSTANCE_INVALID, CODE_APP_INSTANCE_INVALID)
    return value


def check_otp_format(code) -> str:
    if not isinstance(code, str) or not _OTP.match(code):
        raise ValidationFailed(MSG_OTP_FORMAT, CODE_OTP_FORMAT, errors={"otp": [MSG_OTP_FORMAT]})
    return code


def check_purpose(purpose) -> str:
    if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
        raise ValidationFailed("用途の指定が正しくありません。", "otp_purpose_invalid")
    return purpose


# -- what counts as a full-width character (R-INI-7: 全角8文字以内) ------------------------------------
# The same reading as the secret answers of identity (the two services share no code, so the
# rule is stated twice): graphic characters that Unicode calls Wide/Fullwidth, or that are
# double-byte in Windows-31J (○ ※ ① α); not ASCII, not half-width katakana; emoji, controls,
# format and combining characters are refused as unusable.

_NOT_GRAPHIC = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Mn", "Mc", "Me"}


def character_class(ch: str) -> str:
    """'full' (accepted), 'half' or 'invalid'."""
    cp = ord(ch)
    if unicodedata.category(ch) in _NOT_GRAPHIC:
        return "invalid"
    eaw = unicodedata.east_asian_width(ch)
    if 0x1F000 <= cp <= 0x1FAFF or (0x2000 <= cp <= 0x2BFF and eaw == "W") or cp in (0x3030, 0x303D, 0x3297, 0x3299):
        return "invalid"       # emoji (many are "Wide" in Unicode)
    if eaw in ("W", "F"):
        return "full"
    if eaw in ("H", "Na"):
        return "half"
    try:
        return "full" if len(ch.encode("cp932")) == 2 else "half"
    except UnicodeEncodeError:
        return "half"


def normalise_suffix(suffix) -> str:
    """Leading and trailing blanks (half- or full-width) mean nothing; none left = no suffix."""
    return (suffix or "").strip(" \u3000")


def check_suffix(suffix: str) -> None:
    classes = {character_class(ch) for ch in suffix}
    if "invalid" in classes:
        raise ValidationFailed(MSG_SUFFIX_BAD_CHAR, CODE_SUFFIX_BAD_CHAR, errors={"suffix": [MSG_SUFFIX_BAD_CHAR]})
    if "half" in classes:
        raise ValidationFailed(MSG_SUFFIX_HALF_WIDTH, CODE_SUFFIX_HALF_WIDTH,
                               errors={"suffix": [MSG_SUFFIX_HALF_WIDTH]})
    if len(suffix) > SUFFIX_MAX_CHARS:
        raise ValidationFailed(MSG_SUFFIX_TOO_LONG, CODE_SUFFIX_TOO_LONG, errors={"suffix": [MSG_SUFFIX_TOO_LONG]})


def display_name(suffix: str | None) -> str:
    return f"{DISPLAY_NAME_PREFIX}{DISPLAY_NAME_SEPARATOR}{suffix}" if suffix else DISPLAY_NAME_PREFIX


def _time(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _version(state, event) -> int:
    return getattr(event, "stream_version", state.version + 1)


# ====================================================================================================
# The application (otpapp-<application_id>)
# ====================================================================================================

NONE = "none"
ACTIVATED = "activated"          # internal: issued, and the IDs are used up


@dataclass(frozen=True)
class Application:
    application_id: str | None = None
    customer_number: str | None = None
    status: str = NONE
    reason: str | None = None
    email: str | None = None
    verifier: str | None = None
    phone_id: str | None = None
    verification_id: str | None = None
    expires_at: datetime | None = None
    service_id: str | None = None
    user_id: str | None = None
    activation_failures: int = 0
    token_serial: str | None = None
    version: int = 0


initial_application = Application()


def evolve_application(state: Application, event: RecordedEvent | NewEvent) -> Application:
    d, t = event.data, event.type
    if t == "otp_application_submitted":
        state = replace(state, application_id=d["application_id"], customer_number=d["customer_number"],
                        status=contract.AWAITING_CALL, email=d.get("email"),
                        verifier=d.get("activation_password_verifier"), phone_id=d.get("phone_id"),
                        verification_id=d.get("verification_id"), expires_at=_time(d.get("expires_at")))
    elif t == "otp_application_verified":
        state = replace(state, status=contract.VERIFIED)
    elif t == "token_issued":
        state = replace(state, status=contract.ISSUED, service_id=d["service_id"], user_id=d["user_id"])
    elif t == "otp_application_expired":
        state = replace(state, status=contract.EXPIRED, reason=d.get("reason"))
    elif t == "otp_activation_failed":
        state = replace(state, activation_failures=d["consecutive_failures"])
    elif t == "otp_application_voided":
        state = replace(state, status=contract.FAILED, reason=d.get("reason"))
    elif t == "otp_application_activated":
        state = replace(state, status=ACTIVATED, token_serial=d["token_serial"])
    return replace(state, version=_version(state, event))


def fold_application(events) -> Application:
    state = initial_application
    for e in events:
        state = evolve_application(state, e)
    return state


@dataclass(frozen=True)
class CustomerApplications:
    """What the service counted for one customer under the customer's lock."""
    in_flight_application: str | None = None     # an application still waiting for the call
    active_token: str | None = None


@dataclass(frozen=True)
class SubmitApplication:
    application_id: str
    customer_number: str
    email: str
    verifier: str                # argon2id of the activation password
    phone_id: str
    verification_id: str
    call_from_masked: str
    call_to: str
    expires_at: datetime
    now: datetime
    customer: CustomerApplications = CustomerApplications()


@dataclass(frozen=True)
class RecordVerification:
    verification_id: str | None
    service_id: str
    user_id: str
    now: datetime


@dataclass(frozen=True)
class RecordExpiry:
    verification_id: str | None
    now: datetime


def check_may_apply(customer: CustomerApplications) -> None:
    if customer.active_token:
        raise Conflict(MSG_TOKEN_ACTIVE, CODE_TOKEN_ACTIVE)
    if customer.in_flight_application:
        raise Conflict(MSG_APPLICATION_IN_PROGRESS, CODE_APPLICATION_IN_PROGRESS)


def decide_application(cmd, state: Application) -> list[NewEvent]:
    if isinstance(cmd, SubmitApplication):
        if state.status != NONE:
            raise Conflict(MSG_APPLICATION_IN_PROGRESS, CODE_APPLICATION_IN_PROGRESS)
        check_may_apply(cmd.customer)
        return [NewEvent(contract.OTP_APPLICATION_SUBMITTED.name, {
            "application_id": cmd.application_id, "customer_number": cmd.customer_number,
            "email": cmd.email, "activation_password_verifier": cmd.verifier,
            "phone_id": cmd.phone_id, "verification_id": cmd.verification_id,
            "call_from_masked": cmd.call_from_masked, "call_to": cmd.call_to,
            "expires_at": cmd.expires_at.isoformat(), "submitted_at": cmd.now.isoformat()})]
    if isinstance(cmd, RecordVerification):
        # phone_auth decides whether a call verifies; a late or repeated report changes nothing.
        if state.status != contract.AWAITING_CALL or not _same_verification(state, cmd.verification_id):
            return []
        base = {"application_id": state.application_id, "customer_number": state.customer_number}
        return [
            NewEvent(contract.OTP_APPLICATION_VERIFIED.name, {
                **base, "verification_id": state.verification_id, "verified_at": cmd.now.isoformat()}),
            NewEvent(contract.TOKEN_ISSUED.name, {
                **base, "service_id": cmd.service_id, "user_id": cmd.user_id, "email": state.email,
                "issued_at": cmd.now.isoformat()}),
        ]
    if isinstance(cmd, RecordExpiry):
        if state.status != contract.AWAITING_CALL or not _same_verification(state, cmd.verification_id):
            return []
        return [NewEvent(contract.OTP_APPLICATION_EXPIRED.name, {
            "application_id": state.application_id, "customer_number": state.customer_number,
            "verification_id": state.verification_id, "reason": contract.REASON_CALL_TIMEOUT})]
    raise TypeError(f"unknown command {type(cmd).__name__}")


def _same_verification(state: Application, verification_id: str | None) -> bool:
    return verification_id is None or state.verification_id is None or str(verification_id) == state.verification_id


# -- activation (step 8): the application and a new token ------------------------------------------------

@dataclass(frozen=True)
class ActivateToken:
    app_instance_id: str
    password_matched: bool                 # the service's argon2id verification
    token_serial: str
    sealed_secret: dict                    # {"kid", "ct"}: the TOTP secret under a TOTP_KEYS key
    now: datetime
    tokens_on_instance: int                # active tokens of this OTP app, counted under its lock
    customer_has_active_token: bool
    algorithm: str = "SHA1"
    digits: int = 6
    period: int = 30
    max_failures: int = DEFAULT_ACTIVATION_MAX_FAILURES
    max_tokens: int = DEFAULT_MAX_TOKENS_PER_APP
    request_key: str | None = None         # request_key_of(app, Idempotency-Key), if the app sent one


def request_key_of(app_instance_id: str, idempotency_key) -> str | None:
    """What the token remembers of the activation request's ``Idempotency-Key`` (a hash bound
    to the app instance), so that exactly this request — and no other — can be answered again."""
    if not isinstance(idempotency_key, str) or not 8 <= len(idempotency_key) <= 200:
        return None
    import hashlib
    return hashlib.sha256(f"{app_instance_id}\n{idempotency_key}".encode()).hexdigest()


def check_activatable(state: Application) -> None:
    """May these Service ID / User ID be used now? Checked before the password is."""
    if state.status == ACTIVATED:
        raise Conflict(MSG_ALREADY_ACTIVATED, CODE_ALREADY_ACTIVATED)
    if state.status == contract.FAILED:
        raise Conflict(MSG_APPLICATION_VOID, CODE_APPLICATION_VOID, reason=state.reason)
    if state.status != contract.ISSUED:
        raise NotFound(MSG_ACTIVATION_NOT_FOUND, CODE_ACTIVATION_NOT_FOUND)


# A lost answer (the reply dropped with a broker connection, the gateway's RPC deadline) must
# not strand the customer: the IDs are used up, and the secret was shown nowhere else. The
# very same request — same app instance, same Idempotency-Key, right activation password — may
# therefore be answered again, for a short while and only until the token is first used. Any
# other use of the three values stays refused (R-INI-6: never usable again).
ACTIVATION_REPLAY_SECONDS = 600


def replayable_activation(token_events, app_instance_id: str, request_key: str | None, now: datetime,
                          window: float = ACTIVATION_REPLAY_SECONDS, customer_events=()) -> dict | None:
    """The ``token_activated`` data whose answer may be repeated to this request now, or None
    (no or another key, another app, too late, or the token was used, locked or released).

    Uses and locks are recorded in the customer's stream (``otpcust-…``), not the token's:
    ``customer_events`` are that stream's events."""
    if not request_key:
        return None
    if _used_or_locked_since_activation(token_events, customer_events):
        return None
    activated, name = None, None
    for e in token_events:
        if e.type == contract.TOKEN_ACTIVATED.name:
            activated = e.data
        elif e.type == contract.TOKEN_DISPLAY_NAME_SET.name:
            name = e.data.get("display_name")
        else:
            return None
    if (activated is None or activated.get("app_instance_id") != app_instance_id
            or activated.get("request_key") != request_key):
        return None
    age = (now - datetime.fromisoformat(activated["activated_at"])).total_seconds()
    if not 0 <= age <= window:
        return None
    return {**activated, "display_name": name or activated["display_name"]}


def _used_or_locked_since_activation(token_events, customer_events) -> bool:
    activated = next((e.data for e in token_events if e.type == contract.TOKEN_ACTIVATED.name), None)
    if activated is None:
        return False
    since = datetime.fromisoformat(activated["activated_at"])
    for e in customer_events:
        if e.type == contract.OTP_VERIFIED.name and e.data.get("token_serial") == activated.get("token_serial"):
            return True
        if e.type == contract.OTP_LOCKED.name and datetime.fromisoformat(e.data["locked_at"]) >= since:
            return True
    return False


def check_token_room(cmd: ActivateToken) -> None:
    if cmd.customer_has_active_token:
        raise Conflict(MSG_TOKEN_ACTIVE, CODE_TOKEN_ACTIVE)
    if cmd.tokens_on_instance >= cmd.max_tokens:
        raise Conflict(MSG_TOKEN_LIMIT.format(n=cmd.max_tokens), CODE_TOKEN_LIMIT, limit=cmd.max_tokens)


def decide_activation(cmd: ActivateToken, state: Application) -> tuple[list[NewEvent], list[NewEvent]]:
    """→ (events of the application stream, events of the new token's stream)."""
    check_activatable(state)
    check_token_room(cmd)
    base = {"application_id": state.application_id, "customer_number": state.customer_number}
    if not cmd.password_matched:
        failures = state.activation_failures + 1
        events = [NewEvent(contract.OTP_ACTIVATION_FAILED.name, {
            **base, "app_instance_id": cmd.app_instance_id, "consecutive_failures": failures,
            "threshold": cmd.max_failures, "at": cmd.now.isoformat()})]
        if failures >= cmd.max_failures:
            events.append(NewEvent(contract.OTP_APPLICATION_VOIDED.name, {
                **base, "reason": contract.REASON_ACTIVATION_ATTEMPTS, "at": cmd.now.isoformat()}))
        return events, []
    name = display_name(None)
    return (
        [NewEvent(contract.OTP_APPLICATION_ACTIVATED.name, {
            **base, "token_serial": cmd.token_serial, "at": cmd.now.isoformat()})],
        [NewEvent(contract.TOKEN_ACTIVATED.name, {
            "token_serial": cmd.token_serial, "customer_number": state.customer_number,
            "application_id": state.application_id, "app_instance_id": cmd.app_instance_id,
            "display_name": name, "secret": cmd.sealed_secret, "algorithm": cmd.algorithm,
            "digits": cmd.digits, "period": cmd.period, "activated_at": cmd.now.isoformat(),
            **({"request_key": cmd.request_key} if cmd.request_key else {})})],
    )


def raise_activation_outcome(app_events: list[NewEvent], max_failures: int) -> None:
    """After the events are stored: tell the caller what a wrong password did."""
    types = [e.type for e in app_events]
    if contract.OTP_APPLICATION_VOIDED.name in types:
        raise Locked(MSG_APPLICATION_VOID, CODE_ACTIVATION_ATTEMPTS_EXCEEDED,
                     reason=contract.REASON_ACTIVATION_ATTEMPTS)
    for e in app_events:
        if e.type == contract.OTP_ACTIVATION_FAILED.name:
            remaining = max(max_failures - e.data["consecutive_failures"], 0)
            raise Unauthenticated(MSG_ACTIVATION_PASSWORD_WRONG.format(n=remaining),
                                  CODE_ACTIVATION_PASSWORD_WRONG, remaining_attempts=remaining)


# -- what the page sees --------------------------------------------------------------------------------

def public_status(status: str, reason: str | None, expires_at: datetime, now: datetime,
                  grace: timedelta) -> tuple[str, str | None, bool]:
    """(status, reason, activated) as GET /api/v1/otp/applications/{id} reports them.

    phone_auth reports an expired window by itself; should that report be late (phone_auth
    down), an application still waiting ``grace`` after its window closed reads as expired, so
    the page never waits for ever."""
    if status == ACTIVATED:
        return contract.ISSUED, None, True
    if status == contract.AWAITING_CALL and now > expires_at + grace:
        return contract.EXPIRED, contract.REASON_CALL_TIMEOUT, False
    return status, reason, False


def in_flight(status: str, expires_at: datetime, now: datetime, grace: timedelta) -> bool:
    return status in (contract.AWAITING_CALL, contract.VERIFIED) and now <= expires_at + grace


# ====================================================================================================
# The token (otptoken-<token_serial>)
# ====================================================================================================

ACTIVE = "active"
RELEASED = "released"


@dataclass(frozen=True)
class Token:
    token_serial: str | None = None
    customer_number: str | None = None
    application_id: str | None = None
    app_instance_id: str | None = None
    status: str = NONE
    suffix: str | None = None
    display_name: str | None = None
    version: int = 0


initial_token = Token()


def evolve_token(state: Token, event: RecordedEvent | NewEvent) -> Token:
    d, t = event.data, event.type
    if t == "token_activated":
        state = replace(state, token_serial=d["token_serial"], customer_number=d["customer_number"],
                        application_id=d["application_id"], app_instance_id=d["app_instance_id"],
                        status=ACTIVE, display_name=d["display_name"], suffix=None)
    elif t == "token_display_name_set":
        state = replace(state, suffix=d.get("suffix"), display_name=d["display_name"])
    elif t == "token_released":
        state = replace(state, status=RELEASED)
    return replace(state, version=_version(state, event))


def fold_token(events) -> Token:
    state = initial_token
    for e in events:
        state = evolve_token(state, e)
    return state


@dataclass(frozen=True)
class SetDisplayName:
    token_serial: str
    suffix: str | None
    app_instance_id: str | None = None     # the OTP app asking, or …
    customer_number: str | None = None     # … the customer (web)


@dataclass(frozen=True)
class ReleaseToken:
    token_serial: str
    customer_number: str
    reason: str
    now: datetime


RELEASE_BY_CUSTOMER = "customer_request"
RELEASE_BY_OPERATOR = "operator_procedure"     # lost phone / OTP card: the paper procedure (R-LEG-4)


def operator_release(active_serials: list[str], customer_number: str, by_operator: bool,
                     now: datetime) -> list[ReleaseToken]:
    """The operator's release of every active token of the customer (R-LEG-4): the same
    ReleaseToken rule as the customer's own release, without the OTP the customer has lost."""
    if not by_operator:
        raise Forbidden()
    if not active_serials:
        raise NotFound(MSG_NO_TOKEN, CODE_NO_TOKEN)
    return [ReleaseToken(serial, customer_number, RELEASE_BY_OPERATOR, now) for serial in active_serials]


def decide_token(cmd, state: Token) -> list[NewEvent]:
    if isinstance(cmd, SetDisplayName):
        _check_owner(state, cmd.app_instance_id, cmd.customer_number)
        if state.status == RELEASED:
            raise Conflict(MSG_TOKEN_RELEASED, CODE_TOKEN_RELEASED)
        suffix = normalise_suffix(cmd.suffix)
        check_suffix(suffix)
        return [NewEvent(contract.TOKEN_DISPLAY_NAME_SET.name, {
            "token_serial": state.token_serial, "customer_number": state.customer_number,
            "suffix": suffix or None, "display_name": display_name(suffix)})]
    if isinstance(cmd, ReleaseToken):
        _check_owner(state, None, cmd.customer_number)
        if state.status == RELEASED:
            raise Conflict(MSG_TOKEN_RELEASED, CODE_TOKEN_RELEASED)
        return [NewEvent(contract.TOKEN_RELEASED.name, {
            "token_serial": state.token_serial, "customer_number": state.customer_number,
            "reason": cmd.reason, "at": cmd.now.isoformat()})]
    raise TypeError(f"unknown command {type(cmd).__name__}")


def _check_owner(state: Token, app_instance_id: str | None, customer_number: str | None) -> None:
    if app_instance_id is None and customer_number is None:
        raise ValueError("the caller must name the app instance or the customer")
    if state.status == NONE:
        raise NotFound(MSG_TOKEN_NOT_FOUND, CODE_TOKEN_NOT_FOUND)
    # Someone else's token reads as no token at all: its existence is not revealed.
    if app_instance_id is not None and app_instance_id != state.app_instance_id:
        raise NotFound(MSG_TOKEN_NOT_FOUND, CODE_TOKEN_NOT_FOUND)
    if customer_number is not None and customer_number != state.customer_number:
        raise NotFound(MSG_TOKEN_NOT_FOUND, CODE_TOKEN_NOT_FOUND)


# ====================================================================================================
# The customer's OTP use (otpcust-<customer_number>)
# ====================================================================================================

@dataclass(frozen=True)
class CustomerOtp:
    customer_number: str | None = None
    consecutive_failures: int = 0
    locked: bool = False
    locked_at: datetime | None = None
    last_token_serial: str | None = None
    last_time_step: int | None = None       # the newest accepted step of last_token_serial
    version: int = 0


initial_customer = CustomerOtp()


def evolve_customer(state: CustomerOtp, event: RecordedEvent | NewEvent) -> CustomerOtp:
    d, t = event.data, event.type
    state = replace(state, customer_number=d.get("customer_number", state.customer_number))
    if t == "otp_verified":
        state = replace(state, consecutive_failures=0, last_token_serial=d["token_serial"],
                        last_time_step=d["time_step"])
    elif t == "otp_verification_failed":
        state = replace(state, consecutive_failures=d["consecutive_failures"])
    elif t == "otp_locked":
        state = replace(state, locked=True, locked_at=_time(d.get("locked_at")))
    elif t == "otp_unlocked":
        state = replace(state, locked=False, locked_at=None, consecutive_failures=0)
    return replace(state, version=_version(state, event))


def fold_customer(events) -> CustomerOtp:
    state = initial_customer
    for e in events:
        state = evolve_customer(state, e)
    return state


@dataclass(frozen=True)
class VerifyOtp:
    customer_number: str
    token_serial: str
    matched_step: int | None     # the time step whose code matched (±1 step), None: no match
    purpose: str
    now: datetime
    threshold: int = DEFAULT_OTP_LOCK_THRESHOLD
    release_after: timedelta | None = None     # None: only an operator unlocks


@dataclass(frozen=True)
class UnlockOtp:
    customer_number: str
    now: datetime


def lock_released(state: CustomerOtp, now: datetime, release_after: timedelta | None) -> bool:
    return (state.locked and release_after is not None and state.locked_at is not None
            and now >= state.locked_at + release_after)


def check_otp_usable(state: CustomerOtp, now: datetime, release_after: timedelta | None) -> None:
    if state.locked and not lock_released(state, now, release_after):
        raise Locked(MSG_OTP_LOCKED, CODE_OTP_LOCKED)


def is_replay(state: CustomerOtp, token_serial: str, step: int) -> bool:
    """A code is accepted once: nothing of the newest accepted step or older (RFC 6238 §5.2)."""
    return (state.last_token_serial == token_serial and state.last_time_step is not None
            and step <= state.last_time_step)


def decide_customer(cmd, state: CustomerOtp) -> list[NewEvent]:
    if isinstance(cmd, VerifyOtp):
        return _verify(cmd, state)
    if isinstance(cmd, UnlockOtp):
        if not state.locked:
            raise Conflict(MSG_NOT_LOCKED, CODE_NOT_LOCKED)
        return [NewEvent(contract.OTP_UNLOCKED.name, {
            "customer_number": cmd.customer_number, "release": "operator", "at": cmd.now.isoformat()})]
    raise TypeError(f"unknown command {type(cmd).__name__}")


def _verify(cmd: VerifyOtp, state: CustomerOtp) -> list[NewEvent]:
    check_otp_usable(state, cmd.now, cmd.release_after)
    events: list[NewEvent] = []
    failures = state.consecutive_failures
    if state.locked:    # released by time
        events.append(NewEvent(contract.OTP_UNLOCKED.name, {
            "customer_number": cmd.customer_number, "release": "timed_release", "at": cmd.now.isoformat()}))
        failures = 0
    base = {"customer_number": cmd.customer_number, "token_serial": cmd.token_serial,
            "purpose": cmd.purpose, "at": cmd.now.isoformat()}
    if cmd.matched_step is not None and not is_replay(state, cmd.token_serial, cmd.matched_step):
        events.append(NewEvent(contract.OTP_VERIFIED.name, {**base, "time_step": cmd.matched_step}))
        return events
    reason = "mismatch" if cmd.matched_step is None else "replayed"
    failures += 1
    events.append(NewEvent(contract.OTP_VERIFICATION_FAILED.name, {
        **base, "reason": reason, "consecutive_failures": failures}))
    if failures >= cmd.threshold:
        events.append(NewEvent(contract.OTP_LOCKED.name, {
            "customer_number": cmd.customer_number, "consecutive_failures": failures,
            "threshold": cmd.threshold, "locked_at": cmd.now.isoformat()}))
    return events


def raise_otp_outcome(events: list[NewEvent], threshold: int) -> None:
    """After the events are stored: a refused code becomes the caller's error."""
    by_type = {e.type: e for e in events}
    if contract.OTP_LOCKED.name in by_type:
        raise Locked(MSG_OTP_LOCKED, CODE_OTP_LOCKED)
    failed = by_type.get(contract.OTP_VERIFICATION_FAILED.name)
    if failed is not None:
        remaining = max(threshold - failed.data["consecutive_failures"], 0)
        if failed.data["reason"] == "replayed":
            raise Unauthenticated(MSG_OTP_REPLAYED, CODE_OTP_REPLAYED, remaining_attempts=remaining)
        raise Unauthenticated(MSG_OTP_WRONG, CODE_OTP_WRONG, remaining_attempts=remaining)
