"""The mail notification password (メール通知パスワード) and transaction authorization — the
shared language of otp_service, the notifier and the gateway (SPEC R-MAIL-1…5; PC guide).

Service name ``otp_service`` (DESIGN.md: mail notification passwords belong to the OTP service;
the notifier delivers them). Streams:

- ``mailotp-<customer_number>`` — the customer's mail notification passwords: issued →
  (superseded | verified | voided | expired), refused entries, the lock. Only the latest code
  is valid. The code itself is never in this stream: only ``verifier`` = HMAC-SHA256 under a
  server key (``MAIL_OTP_KEYS``; key id kept) of the issue id, the customer and the code.
- ``mailotpmail-<issue_id>`` — one event, ``mail_otp_mail_requested``: what the notifier needs
  to write the mail (the code and the operation). Its personal fields are sealed with a data
  key of their own, subject ``mailotp:<issue_id>``, which otp_service destroys (crypto-shreds)
  in the same transaction that ends the code's life (used, superseded, voided, expired). From
  then on the code is unreadable everywhere in the log (the notifier's ``mail_queued`` of that
  mail is sealed under the same subject): what remains stored is the hash alone.
- ``authorization-<authorization_id>`` — ``operation_authorized``: the confirmation password
  and the second factor (OTP or mail notification password) were right for exactly this
  operation. The notifier sends the 取引受付メール from it.

Who needs what (R-MAIL-1, R-MAIL-2): a customer with an active OTP token authorizes with the
confirmation password + the OTP; a customer without one (never applied, or released the
token) with the confirmation password + the latest mail notification password. Confirming a
new mail-password destination (R-MAIL-5) always takes the mail notification password sent to
that new address.

An operation is bound *canonically*: ``canonical_operation`` turns what a front end sends into
one normal form (NFKC text, zero-padded account numbers, lower-case mail domains, both select
slots spelled out …); otp_service binds a code to ``HMAC(key, canonical JSON)``. A code issued
for one operation therefore fails for any other, however the other is spelled.

RPC interface of otp_service (besides ``contracts.otp``):
- ``authorization_method(customer_number) -> {method: "otp"|"mail_otp", fields: [...]}``
- ``issue_mail_otp(customer_number, purpose, operation=None) -> {issue_id, purpose, expires_at,
  operation}`` — ``address_confirmation`` codes are issued by the notifier (it knows the
  pending address).
- ``authorize(customer_number, operation, confirmation_password, otp=None, mail_otp=None)
  -> {authorization_id, purpose, method, authorized_at}``
- ``unlock_mail_otp(customer_number) -> {unlocked: True}`` — operators only.
"""
from __future__ import annotations

import json
import re
import unicodedata

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from contracts.errors import ValidationFailed
from contracts.events import register

SERVICE = "otp_service"
MAIL_OTP_CATEGORY = "mailotp"
MAIL_REQUEST_CATEGORY = "mailotpmail"
AUTHORIZATION_CATEGORY = "authorization"

TRANSFER = "transfer"
SETTINGS_CHANGE = "settings_change"
ADDRESS_CONFIRMATION = "address_confirmation"
PURPOSES = (TRANSFER, SETTINGS_CHANGE, ADDRESS_CONFIRMATION)

METHOD_OTP = "otp"
METHOD_MAIL_OTP = "mail_otp"
METHODS = (METHOD_OTP, METHOD_MAIL_OTP)

SELECT_EMAIL = "select_email"            # the setting changed by PUT /api/v1/notification-addresses
SELECT_SLOTS = ("select1", "select2")
REGISTERED = "registered"
# Who receives a mail notification password: the registered address and every select address
# that is used and chosen to receive it — or, for an address confirmation, that address alone.
TO_DESTINATIONS = "mail_otp_destinations"

ACCOUNT_TYPES = ("ordinary", "current", "savings")    # 普通 / 当座 / 貯蓄
MAX_AMOUNT = 99_999_999_999


def mail_otp_stream(customer_number: str) -> str:
    return f"{MAIL_OTP_CATEGORY}-{customer_number}"


def mail_request_stream(issue_id: str) -> str:
    return f"{MAIL_REQUEST_CATEGORY}-{issue_id}"


def authorization_stream(authorization_id: str) -> str:
    return f"{AUTHORIZATION_CATEGORY}-{authorization_id}"


def code_subject(issue_id: str) -> str:
    """The data-key subject sealing one code wherever it is written (see the module text)."""
    return f"mailotp:{issue_id}"


# -- events: mailotp-<customer_number> ----------------------------------------------------------------

MAIL_OTP_ISSUED = register(
    "mail_otp_issued", SERVICE,
    personal_fields=("operation", "verifier"),
    description="A mail notification password was issued for one operation (R-MAIL-1). data: "
                "issue_id, customer_number, purpose, operation (canonical, personal), "
                "operation_digest, verifier ({kid, mac}: HMAC-SHA256, personal), destination "
                "(mail_otp_destinations | select1 | select2), key_subject, ttl_seconds, "
                "expires_at, issued_at.")
MAIL_OTP_SUPERSEDED = register(
    "mail_otp_superseded", SERVICE,
    description="A newer mail notification password replaced this one; only the latest is "
                "valid (R-MAIL-1). data: issue_id, customer_number, by_issue_id, at.")
MAIL_OTP_VERIFIED = register(
    "mail_otp_verified", SERVICE,
    description="The mail notification password was entered for its operation and is used up. "
                "data: issue_id, customer_number, purpose, operation_digest, at.")
MAIL_OTP_VERIFICATION_FAILED = register(
    "mail_otp_verification_failed", SERVICE,
    description="A mail notification password was refused. data: issue_id (the latest code, or "
                "null), customer_number, reason (mismatch | other_operation | superseded | "
                "expired | used | voided), counted (counts toward voiding and the lock), "
                "failures_on_code, consecutive_failures, at.")
MAIL_OTP_VOIDED = register(
    "mail_otp_voided", SERVICE,
    description="Too many wrong entries: the code can no longer be used. data: issue_id, "
                "customer_number, reason (attempts_exceeded), at.")
MAIL_OTP_EXPIRED = register(
    "mail_otp_expired", SERVICE,
    description="The code's validity ended unused. data: issue_id, customer_number, at.")
MAIL_OTP_LOCKED = register(
    "mail_otp_locked", SERVICE,
    description="Too many consecutive wrong mail notification passwords (R-RBA-2): the "
                "credential is locked. data: customer_number, consecutive_failures, threshold, "
                "locked_at.")
MAIL_OTP_UNLOCKED = register(
    "mail_otp_unlocked", SERVICE,
    description="The mail notification password lock was lifted. data: customer_number, "
                "release (operator | timed_release), at.")

# -- events: mailotpmail-<issue_id> (sealed under code_subject(issue_id)) -----------------------------

MAIL_OTP_MAIL_REQUESTED = register(
    "mail_otp_mail_requested", SERVICE,
    personal_fields=("code", "operation"),
    description="The notifier is asked to mail a code (from otp-auth.net, R-MAIL-3). Sealed "
                "under its own key, destroyed when the code stops being valid. data: issue_id, "
                "customer_number, purpose, operation (personal), code (personal), destination, "
                "key_subject, ttl_seconds, expires_at.")

# -- events: authorization-<authorization_id> ---------------------------------------------------------

OPERATION_AUTHORIZED = register(
    "operation_authorized", SERVICE,
    personal_fields=("operation",),
    description="Confirmation password and second factor were right for exactly this operation "
                "(R-MAIL-1, R-MAIL-2); the notifier sends the 取引受付メール. data: "
                "authorization_id, customer_number, purpose, operation (canonical, personal), "
                "operation_digest, method (otp | mail_otp), mail_otp_issue_id, token_serial, "
                "authorized_at.")

EVENT_TYPES = tuple(t.name for t in (
    MAIL_OTP_ISSUED, MAIL_OTP_SUPERSEDED, MAIL_OTP_VERIFIED, MAIL_OTP_VERIFICATION_FAILED,
    MAIL_OTP_VOIDED, MAIL_OTP_EXPIRED, MAIL_OTP_LOCKED, MAIL_OTP_UNLOCKED, MAIL_OTP_MAIL_REQUESTED,
    OPERATION_AUTHORIZED))


# ====================================================================================================
# The canonical operation
# ====================================================================================================

MSG_OPERATION_INVALID = "お取引の内容が正しくありません。"
MSG_OPERATION_REQUIRED = "お取引（お手続き）の内容を指定してください。"
MSG_PURPOSE_MISMATCH = "用途とお取引の種類が一致しません。"
MSG_AMOUNT = "振込金額は1円以上の整数で指定してください。"
MSG_BANK_CODE = "金融機関コードは半角数字4桁で指定してください。"
MSG_BRANCH_CODE = "支店番号は半角数字3桁で指定してください。"
MSG_ACCOUNT_TYPE = "預金種目は ordinary（普通）・current（当座）・savings（貯蓄）から指定してください。"
MSG_ACCOUNT_NUMBER = "口座番号は半角数字7桁以内で指定してください。"
MSG_PAYEE_NAME = "受取人名を48文字以内で指定してください。"
MSG_SETTING = "変更する設定項目の指定が正しくありません。"
MSG_CHANGES = "変更内容の指定が正しくありません。"
MSG_EMAIL = "メールアドレスの形式が正しくありません。半角英数字記号で入力してください。"
MSG_SLOT = "セレクトメールアドレスは select1 または select2 で指定してください。"
MSG_BOOLEAN = "true または false で指定してください。"
MSG_UNUSED_DESTINATION = "利用しないメールアドレスはメール通知パスワードの送信先にできません。"
MSG_NO_ADDRESS = "利用するセレクトメールアドレスを入力してください。"

_DIGITS = re.compile(r"^[0-9]+\Z")
_SETTING = re.compile(r"^[a-z][a-z0-9_]{0,39}\Z")
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]{1,64}\Z")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\Z")
_TLD = re.compile(r"^[A-Za-z]{2,63}\Z")


def _invalid(field: str, message: str):
    return ValidationFailed(message, "operation_invalid", errors={field: [message]})


def normalise_email(value) -> str | None:
    """A mail address as Japanese customers have them (the local part may hold dots anywhere,
    as mobile carriers issued for years), ASCII only (the guide: 半角英数字記号). The domain is
    case-insensitive, so it is lower-cased; the local part is kept as typed. None: invalid."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if len(value) > 254 or not value.isascii():
        return None
    local, at, domain = value.rpartition("@")
    if not at or not _LOCAL.match(local):
        return None
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(lbl) for lbl in labels) or not _TLD.match(labels[-1]):
        return None
    return f"{local}@{domain.lower()}"


def _text(value, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(unicodedata.normalize("NFKC", value).split())
    if not text or len(text) > limit or any(unicodedata.category(ch)[0] == "C" for ch in text):
        return None
    return text


def _bool(value, field: str) -> bool:
    if type(value) is not bool:
        raise _invalid(field, MSG_BOOLEAN)
    return value


def _digits(value, field: str, length: int, message: str, pad: bool = False) -> str:
    if not isinstance(value, str) or not _DIGITS.match(value) or len(value) > length:
        raise _invalid(field, message)
    if pad:
        return value.zfill(length)
    if len(value) != length:
        raise _invalid(field, message)
    return value


def select_slot(value, field: str) -> dict:
    """One select address as the Select E-mail screens set it (R-MAIL-4): address (None or
    empty = none), 利用する/利用しない, メール通知パスワード送信先とする/しない."""
    if value is None:
        return {"address": None, "enabled": False, "receives_mail_otp": False}
    if not isinstance(value, dict) or set(value) - {"address", "enabled", "receives_mail_otp"}:
        raise _invalid(field, MSG_CHANGES)
    raw = value.get("address")
    address = None
    if raw not in (None, ""):
        address = normalise_email(raw)
        if address is None:
            raise _invalid(f"{field}.address", MSG_EMAIL)
    enabled = _bool(value.get("enabled", False), f"{field}.enabled")
    receives = _bool(value.get("receives_mail_otp", False), f"{field}.receives_mail_otp")
    if enabled and address is None:
        raise _invalid(f"{field}.address", MSG_NO_ADDRESS)
    if receives and not enabled:
        raise _invalid(f"{field}.receives_mail_otp", MSG_UNUSED_DESTINATION)
    return {"address": address, "enabled": enabled, "receives_mail_otp": receives}


def canonical_operation(operation, purpose: str | None = None) -> dict:
    """The one normal form of an operation; raises ValidationFailed (``operation_invalid``)."""
    if operation is None:
        raise ValidationFailed(MSG_OPERATION_REQUIRED, "operation_required",
                               errors={"operation": [MSG_OPERATION_REQUIRED]})
    if not isinstance(operation, dict):
        raise _invalid("operation", MSG_OPERATION_INVALID)
    kind = operation.get("type", purpose)
    if purpose is not None and kind != purpose:
        raise ValidationFailed(MSG_PURPOSE_MISMATCH, "operation_purpose_mismatch",
                               errors={"operation.type": [MSG_PURPOSE_MISMATCH]})
    if kind == TRANSFER:
        return _transfer(operation)
    if kind == SETTINGS_CHANGE:
        return _settings_change(operation)
    if kind == ADDRESS_CONFIRMATION:
        return _address_confirmation(operation)
    raise _invalid("operation.type", MSG_OPERATION_INVALID)


def _only(operation: dict, allowed: set, field: str = "operation") -> None:
    unknown = set(operation) - allowed
    if unknown:
        raise _invalid(f"{field}.{sorted(unknown)[0]}", MSG_OPERATION_INVALID)


def _transfer(operation: dict) -> dict:
    _only(operation, {"type", "amount", "payee"})
    amount = operation.get("amount")
    if type(amount) is not int or not 1 <= amount <= MAX_AMOUNT:
        raise _invalid("operation.amount", MSG_AMOUNT)
    payee = operation.get("payee")
    if not isinstance(payee, dict):
        raise _invalid("operation.payee", MSG_OPERATION_INVALID)
    _only(payee, {"bank_code", "branch_code", "account_type", "account_number", "name"}, "operation.payee")
    if payee.get("account_type") not in ACCOUNT_TYPES:
        raise _invalid("operation.payee.account_type", MSG_ACCOUNT_TYPE)
    name = _text(payee.get("name"), 48)
    if name is None:
        raise _invalid("operation.payee.name", MSG_PAYEE_NAME)
    return {"type": TRANSFER, "amount": amount, "payee": {
        "bank_code": _digits(payee.get("bank_code"), "operation.payee.bank_code", 4, MSG_BANK_CODE),
        "branch_code": _digits(payee.get("branch_code"), "operation.payee.branch_code", 3, MSG_BRANCH_CODE),
        "account_type": payee["account_type"],
        "account_number": _digits(payee.get("account_number"), "operation.payee.account_number", 7,
                                  MSG_ACCOUNT_NUMBER, pad=True),
        "name": name}}


def _settings_change(operation: dict) -> dict:
    _only(operation, {"type", "setting", "changes"})
    setting = operation.get("setting")
    if not isinstance(setting, str) or not _SETTING.match(setting):
        raise _invalid("operation.setting", MSG_SETTING)
    changes = operation.get("changes")
    if setting == SELECT_EMAIL:
        if changes is None:
            changes = {}
        if not isinstance(changes, dict) or set(changes) - set(SELECT_SLOTS):
            raise _invalid("operation.changes", MSG_CHANGES)
        return {"type": SETTINGS_CHANGE, "setting": SELECT_EMAIL,
                "changes": {slot: select_slot(changes.get(slot), f"operation.changes.{slot}")
                            for slot in SELECT_SLOTS}}
    # Any other setting (its own service applies it): a flat map of scalar values.
    if changes is None:
        changes = {}
    if not isinstance(changes, dict) or len(changes) > 20:
        raise _invalid("operation.changes", MSG_CHANGES)
    out = {}
    for key, value in changes.items():
        if not isinstance(key, str) or not _SETTING.match(key):
            raise _invalid("operation.changes", MSG_CHANGES)
        if isinstance(value, str):
            value = _text(value, 200)
            if value is None:
                raise _invalid(f"operation.changes.{key}", MSG_CHANGES)
        elif value is not None and type(value) not in (bool, int):
            raise _invalid(f"operation.changes.{key}", MSG_CHANGES)
        out[key] = value
    return {"type": SETTINGS_CHANGE, "setting": setting, "changes": out}


def _address_confirmation(operation: dict) -> dict:
    _only(operation, {"type", "slot", "address"})
    slot = operation.get("slot")
    if slot not in SELECT_SLOTS:
        raise _invalid("operation.slot", MSG_SLOT)
    address = normalise_email(operation.get("address"))
    if address is None:
        raise _invalid("operation.address", MSG_EMAIL)
    return {"type": ADDRESS_CONFIRMATION, "slot": slot, "address": address}


def canonical_json(operation: dict) -> str:
    """Bytes to bind to: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(operation, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# ====================================================================================================
# HTTP/RPC payloads
# ====================================================================================================

REQUIRED = "必須項目です。"
NULL = "値を入力してください。"
NOT_STRING = "文字列で入力してください。"
UNKNOWN = "この項目は指定できません。"


def _str(*, max_len: int, required: bool = True, **kw) -> fields.String:
    return fields.String(required=required,
                         validate=validate.Length(max=max_len, error=f"{max_len}文字以内で入力してください。"),
                         error_messages={"required": REQUIRED, "null": NULL, "invalid": NOT_STRING,
                                         "invalid_utf8": NOT_STRING}, **kw)


class _Strict(Schema):
    error_messages = {"type": "オブジェクトで指定してください。", "unknown": UNKNOWN}

    class Meta:
        unknown = RAISE


_OPERATION_DOC = (
    "The operation the code or authorization is bound to. Transfer: "
    "`{type: \"transfer\", amount: 50000, payee: {bank_code: \"0117\", branch_code: \"123\", "
    "account_type: \"ordinary\"|\"current\"|\"savings\", account_number: \"1234567\", name: "
    "\"ﾔﾏﾀﾞ ﾀﾛｳ\"}}`. Settings change: `{type: \"settings_change\", setting: \"select_email\", "
    "changes: {select1: {address, enabled, receives_mail_otp}, select2: {…}}}` (the values the "
    "PUT /api/v1/notification-addresses will send) or another setting with a flat `changes` map. "
    "Sent as the front end holds it; the server binds its canonical form, so a code issued for "
    "one operation fails for any other.")


class MailOtpRequest(_Strict):
    """``POST /api/v1/mail-otp``."""
    purpose = fields.String(required=True, validate=validate.OneOf(PURPOSES, error="用途の指定が正しくありません。"),
                            error_messages={"required": REQUIRED, "null": NULL, "invalid": NOT_STRING},
                            metadata={"description": "transfer | settings_change | address_confirmation "
                                                     "(re-send the code to a new mail-password destination; "
                                                     "no operation: the pending address is known)"})
    operation = fields.Dict(load_default=None, allow_none=True,
                            error_messages={"invalid": "オブジェクトで指定してください。"},
                            metadata={"description": _OPERATION_DOC})


class MailOtpIssued(Schema):
    issue_id = fields.String(required=True)
    purpose = fields.String(required=True)
    expires_at = fields.String(required=True, metadata={"description": "ISO 8601; default 10 minutes"})
    destinations = fields.List(fields.String(), metadata={
        "description": "where the code was sent, masked (t***@example.jp)"})


MSG_AUTHORIZABLE = "お取引の種類（type）は transfer または settings_change で指定してください。"


def _authorizable(operation) -> bool:
    # A new mail-password destination is confirmed through the Select E-mail routes, which
    # apply it; authorizing it here would spend its code and change nothing.
    if not isinstance(operation, dict) or operation.get("type") not in (TRANSFER, SETTINGS_CHANGE):
        raise ValidationError(MSG_AUTHORIZABLE)
    return True


class AuthorizeRequest(_Strict):
    """``POST /api/v1/transactions/authorize``."""
    operation = fields.Dict(required=True, validate=_authorizable,
                            error_messages={"required": REQUIRED, "null": NULL,
                                            "invalid": "オブジェクトで指定してください。"},
                            metadata={"description": _OPERATION_DOC})
    confirmation_password = _str(max_len=128, metadata={"description": "確認用パスワード"})
    otp = _str(max_len=16, required=False, load_default=None, allow_none=True,
               metadata={"description": "ワンタイムパスワード (method otp)"})
    mail_otp = _str(max_len=16, required=False, load_default=None, allow_none=True,
                    metadata={"description": "メール通知パスワード (method mail_otp)"})


class AuthorizationResult(Schema):
    authorization_id = fields.String(required=True)
    purpose = fields.String(required=True)
    method = fields.String(required=True, validate=validate.OneOf(METHODS))
    authorized_at = fields.String(required=True)


class AuthorizationMethod(Schema):
    method = fields.String(required=True, validate=validate.OneOf(METHODS), metadata={
        "description": "otp: an active OTP token — confirmation password + ワンタイムパスワード; "
                       "mail_otp: no active token (never applied, or released) — confirmation "
                       "password + the latest メール通知パスワード (POST /api/v1/mail-otp first)"})
    fields_ = fields.List(fields.String(), data_key="fields", attribute="fields", metadata={
        "description": "the body fields of POST /api/v1/transactions/authorize to show"})
    mail_otp_locked = fields.Boolean(metadata={"description": "mail notification password locked (R-RBA-2)"})
