"""The notifier's shared language: its mail events, its subscriptions and its RPC payloads
(DESIGN.md "Mail"; SPEC R-INI-5, R-MAIL-3).

Service name ``notifier``. Each mail is derived from one event and lives in its own stream
``mail-<mail_id>``: ``mail_queued`` → (``mail_deferred``)* → ``mail_sent`` | ``mail_failed``.
``mail_id`` is the source event's id when an event causes one mail (its Message-ID is
``<mail_id@…>``), so a redelivered event or a retry can never produce a second mail. The
recipients and the template parameters are personal fields, encrypted with the customer's
data key — or, for a mail notification password, with that code's own key, which otp_service
destroys once the code is no longer valid (contracts.mail_otp): an unsent copy of a dead code
can then neither be read nor sent (the attempt ends as ``mail_failed``, "withdrawn").

Notification addresses (R-MAIL-4, R-MAIL-5), stream ``notifyaddr-<customer_number>``: the
Select E-mail service's select addresses 1 and 2, each used or not (``enabled``) and chosen to
receive the mail notification password or not (``receives_mail_otp``, true only once a code
sent to that very address was entered). The registered address is identity's (the legacy
record's ``email``); the notifier keeps a copy from ``legacy_customer_imported``.

RPC interface:
- ``mail_status(mail_id) -> {mail_id, status: queued|sent|failed, attempts, template,
  last_error?, message_id}`` — for operators and tests.
- ``notification_addresses(customer_number) -> NotificationAddresses``
- ``mail_otp_destinations(customer_number) -> {destinations: [masked]}`` — raises Conflict
  ``no_mail_otp_destination`` when the customer has nowhere to receive a code.
- ``change_select_addresses(customer_number, body) -> NotificationAddresses`` — body as
  ``ChangeAddressesRequest``; authorized by otp_service (confirmation password + OTP or mail
  notification password for exactly this change).
- ``request_destination_confirmation(customer_number) -> {issue_id, expires_at, destinations}``
- ``confirm_mail_otp_destination(customer_number, body) -> NotificationAddresses`` — body as
  ``ConfirmDestinationRequest``.
- ``ping()``
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from contracts.events import register
from contracts.subscriptions import subscribe

SERVICE = "notifier"
MAIL_CATEGORY = "mail"

QUEUED = "queued"
SENT = "sent"
FAILED = "failed"
MAIL_STATUSES = (QUEUED, SENT, FAILED)


def mail_stream(mail_id) -> str:
    return f"{MAIL_CATEGORY}-{mail_id}"


MAIL_QUEUED = register(
    "mail_queued", SERVICE,
    personal_fields=("to", "params"),
    description="A mail to send, derived from one event. data: mail_id, template, "
                "customer_number, to (addresses, personal), params (template values, "
                "personal), sender {address, display_name}, message_id, source_event_id, "
                "source_event_type, queued_at.")
MAIL_DEFERRED = register(
    "mail_deferred", SERVICE,
    description="A delivery attempt failed transiently (SMTP down, 4xx); retried later. data: "
                "mail_id, attempt, error, next_attempt_at.")
MAIL_SENT = register(
    "mail_sent", SERVICE,
    description="The SMTP server accepted the mail. data: mail_id, attempt, message_id, sent_at.")
MAIL_FAILED = register(
    "mail_failed", SERVICE,
    description="The mail was given up (permanent 5xx refusal, or the configured number of "
                "attempts spent) — visible to operators, never silent. data: mail_id, "
                "attempts, error, permanent, failed_at.")

EVENT_TYPES = tuple(t.name for t in (MAIL_QUEUED, MAIL_DEFERRED, MAIL_SENT, MAIL_FAILED))

# -- notification addresses (notifyaddr-<customer_number>) -------------------------------------------

ADDRESS_CATEGORY = "notifyaddr"


def address_stream(customer_number: str) -> str:
    return f"{ADDRESS_CATEGORY}-{customer_number}"


SELECT_ADDRESS_SET = register(
    "select_address_set", SERVICE,
    personal_fields=("address",),
    description="A select address (R-MAIL-4) was added or its settings changed. data: "
                "customer_number, slot (select1 | select2), address (personal), enabled, "
                "receives_mail_otp (confirmed destination), authorization_id, at.")
SELECT_ADDRESS_REMOVED = register(
    "select_address_removed", SERVICE,
    personal_fields=("address",),
    description="A select address was removed or replaced; the address is told by mail. data: "
                "customer_number, slot, address (personal), reason (removed | replaced), "
                "authorization_id, at.")
MAIL_OTP_DESTINATION_REQUESTED = register(
    "mail_otp_destination_requested", SERVICE,
    personal_fields=("address",),
    description="The customer chose a select address to receive the mail notification password; "
                "it takes effect once the code sent to that address is entered (R-MAIL-5). data: "
                "customer_number, slot, address (personal), authorization_id, at.")
MAIL_OTP_DESTINATION_CONFIRMED = register(
    "mail_otp_destination_confirmed", SERVICE,
    personal_fields=("address",),
    description="The code sent to the new destination was entered: it receives mail "
                "notification passwords from now on (R-MAIL-5). data: customer_number, slot, "
                "address (personal), authorization_id, at.")

ADDRESS_EVENT_TYPES = tuple(t.name for t in (SELECT_ADDRESS_SET, SELECT_ADDRESS_REMOVED,
                                             MAIL_OTP_DESTINATION_REQUESTED, MAIL_OTP_DESTINATION_CONFIRMED))

# -- subscriptions: which events become mails --------------------------------------------------------

TOKEN_ISSUED_SUBSCRIPTION = subscribe("otp_service", "token_issued", SERVICE, "on_token_issued")
# R-MAIL-1/3: the mail notification password, from otp-auth.net.
MAIL_OTP_SUBSCRIPTION = subscribe("otp_service", "mail_otp_mail_requested", SERVICE, "on_mail_otp_mail_requested")
# The 取引受付メール, from am-bk.co.jp, to the registered address and every used select address.
AUTHORIZED_SUBSCRIPTION = subscribe("otp_service", "operation_authorized", SERVICE, "on_operation_authorized")
# R-MAIL-4: a removed or replaced select address is told so.
REMOVED_SUBSCRIPTION = subscribe(SERVICE, "select_address_removed", SERVICE, "on_select_address_removed")
# The registered address (identity's legacy record), and its removal when a customer is shredded.
REGISTERED_SUBSCRIPTION = subscribe("identity", "legacy_customer_imported", SERVICE, "on_legacy_customer_imported")
SHREDDED_SUBSCRIPTION = subscribe("eventstore", "subject_key_shredded", SERVICE, "on_subject_key_shredded")


# -- RPC payloads ------------------------------------------------------------------------------------

class MailStatus(Schema):
    mail_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(MAIL_STATUSES))
    template = fields.String(required=True)
    attempts = fields.Integer(required=True)
    message_id = fields.String(required=True)
    last_error = fields.String(allow_none=True)


# -- Select E-mail payloads (also the HTTP bodies of /api/v1/notification-addresses) -------------------

REQUIRED = "必須項目です。"
NULL = "値を入力してください。"
NOT_STRING = "文字列で入力してください。"
NOT_BOOLEAN = "true または false で指定してください。"
NOT_OBJECT = "オブジェクトで指定してください。"
UNKNOWN = "この項目は指定できません。"


class _Strict(Schema):
    error_messages = {"type": NOT_OBJECT, "unknown": UNKNOWN}

    class Meta:
        unknown = RAISE


class _StrictBoolean(fields.Boolean):
    """Only JSON true/false count as a choice ("true", 1 and "on" do not)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not bool:
            raise self.make_error("invalid", input=value)
        return value


def _bool(description: str) -> fields.Boolean:
    return _StrictBoolean(load_default=False, error_messages={"null": NULL, "invalid": NOT_BOOLEAN},
                          metadata={"description": description})


def _secret(max_len: int, description: str, required: bool = False) -> fields.String:
    kw = {} if required else {"load_default": None, "allow_none": True}
    return fields.String(required=required, validate=validate.Length(max=max_len, error=f"{max_len}文字以内で入力してください。"),
                         error_messages={"required": REQUIRED, "null": NULL, "invalid": NOT_STRING},
                         metadata={"description": description}, **kw)


class SelectAddressInput(_Strict):
    address = fields.String(load_default=None, allow_none=True,
                            validate=validate.Length(max=254, error="254文字以内で入力してください。"),
                            error_messages={"invalid": NOT_STRING},
                            metadata={"description": "セレクトメールアドレス（空または null: 登録なし）"})
    enabled = _bool("利用状況: true = 利用する")
    receives_mail_otp = _bool("メール通知パスワード送信先として利用する（新しい送信先は、その"
                              "アドレスに送られたメール通知パスワードの入力で確定）")


class ChangeAddressesRequest(_Strict):
    """``PUT /api/v1/notification-addresses`` (R-MAIL-4, R-MAIL-5)."""
    select1 = fields.Nested(SelectAddressInput, load_default=None, allow_none=True,
                            metadata={"description": "セレクトメールアドレス1（省略・null: 登録なし）"})
    select2 = fields.Nested(SelectAddressInput, load_default=None, allow_none=True,
                            metadata={"description": "セレクトメールアドレス2"})
    confirmation_password = _secret(128, "確認用パスワード", required=True)
    mail_otp = _secret(16, "メール通知パスワード（purpose settings_change, operation {setting: "
                           "\"select_email\", changes: {select1, select2}} で発行したもの）")
    otp = _secret(16, "ワンタイムパスワード（ワンタイムパスワード利用中のお客さま）")


class ConfirmDestinationRequest(_Strict):
    """``POST /api/v1/notification-addresses/confirmation`` (R-MAIL-5)."""
    mail_otp = _secret(16, "新しい送信先アドレスに送られたメール通知パスワード", required=True)
    confirmation_password = _secret(128, "確認用パスワード", required=True)


class RegisteredAddress(Schema):
    address = fields.String(allow_none=True, metadata={"description": "登録メールアドレス"})
    receives_mail_otp = fields.Boolean()


class SelectAddress(Schema):
    address = fields.String(allow_none=True)
    enabled = fields.Boolean()
    receives_mail_otp = fields.Boolean(metadata={"description": "確定したメール通知パスワード送信先"})
    mail_otp_pending_confirmation = fields.Boolean(metadata={
        "description": "送信先の確定待ち（送られたメール通知パスワードの入力待ち）"})


class NotificationAddresses(Schema):
    registered = fields.Nested(RegisteredAddress)
    select1 = fields.Nested(SelectAddress)
    select2 = fields.Nested(SelectAddress)
    pending_confirmation = fields.String(allow_none=True, metadata={
        "description": "select1 / select2: a code was sent to this new destination; confirm with "
                       "POST /api/v1/notification-addresses/confirmation"})
    confirmation_sent_to = fields.List(fields.String(), metadata={"description": "masked"})
