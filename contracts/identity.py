"""The identity service's public language: its event types and the shapes of its RPC payloads.

Service name ``identity``. Every RPC method raises ``contracts.errors`` DomainErrors whose
Japanese ``detail`` a customer can act on; validation errors carry ``errors: {field: [message]}``.

RPC interface (keep it stable; the gateway is built against it):

- ``import_legacy(records: list[dict]) -> list[dict]`` — records as ``LegacyRecordSchema``;
  answers one ``ImportResultSchema`` per record, in order. A bad record never stops the batch.
- ``legacy_login(customer_number, password, client) -> {customer_number, next_step}``
- ``migration_status(customer_number) -> {next_step, steps}``
- ``change_passwords(customer_number, body) -> {next_step}`` — body as ``PasswordChangeSchema``
  (the fields of ``POST /api/v1/migration/password``).
- ``login(login_id, password, otp, client)`` → ``{status: "ok", customer_number}`` or
  ``{status: "challenge", challenge_id, question: {id, text}}``
- ``answer_challenge(challenge_id, answer, client) -> {status: "ok", customer_number}``
- ``verify_confirmation_password(customer_number, password) -> {ok: True}``
- ``phones(customer_number) -> [{phone_id, masked}]``;
  ``phone(customer_number, phone_id) -> {phone_id, masked, e164}`` (for the OTP issue)
- ``unlock_credential(customer_number, credential)`` — operators only (actor kind ``operator``).
- Operator procedures (R-LEG-4; actor kind ``operator``, the reason in the context):
  ``reissue_login_password(customer_number) -> {status, temporary_password, next_step, unlocked}``,
  ``reset_confirmation_password(customer_number) -> {status, temporary_password, unlocked}``,
  ``change_phones(customer_number, phones: list[str]) -> {status, phones: [{phone_id, masked}]}``,
  ``initialise_login_id(customer_number) -> {status, login_id, unlocked}``.
- The customer's own changes that complete them: ``change_login_password(customer_number, body)``
  (body as ``LoginPasswordChangeSchema``) and ``change_confirmation_password(customer_number,
  body)`` (``ConfirmationPasswordChangeSchema``) ``-> {status: "changed"}``. ``login`` answers
  ``{status: "password_change_required", customer_number}`` for a re-issued temporary password.
- ``login_standing(customer_number) -> {customer_number, standing}`` — may a login without the
  login password (a passkey, R-INI-8/9) open a customer session now; ``standing`` is one of
  ``ok``, ``unknown``, ``initial_operation_pending``, ``locked``, ``password_change_required``
  (``identity/domain/standing.py``). Reads only; used by the passkeys service.
- ``ping()``

``client`` is ``ClientSchema``: what the gateway knows of the caller's environment.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from contracts.events import register
from contracts.subscriptions import subscribe

SERVICE = "identity"

# Steps of the initial operation that identity walks a customer through, in order.
NEXT_STEPS = ("secret_questions", "password_change", "otp_application", "done")
CREDENTIALS = ("legacy_password", "login_password", "confirmation_password")

_REQUIRED = {"required": "必須項目です。", "null": "必須項目です。", "invalid": "形式が正しくありません。"}


# -- events (stream ``customer-<customer number>``) ------------------------------------------
# Password verifiers and hashes are registered as personal fields too: they are encrypted per
# customer like phone numbers, so an auditor reading the log never sees a crackable hash and
# shredding a customer's key destroys them with the rest of the personal data.

LEGACY_CUSTOMER_IMPORTED = register(
    "legacy_customer_imported", SERVICE,
    personal_fields=("phones", "email", "login_password_verifier", "confirmation_pin_verifier"),
    description="A Michinoku Direct customer record was imported from the old system (R-LEG-1).")
LEGACY_LOGIN_SUCCEEDED = register(
    "legacy_login_succeeded", SERVICE,
    description="The customer logged in with customer number + legacy login password (R-LEG-3).")
LEGACY_LOGIN_FAILED = register(
    "legacy_login_failed", SERVICE,
    description="A wrong legacy login password; carries the consecutive failure count (R-RBA-2).")
CREDENTIAL_CHECK_FAILED = register(
    "credential_check_failed", SERVICE,
    description="A wrong current password outside a login (password change, confirmation "
                "password check); carries the credential and its consecutive failure count.")
CONFIRMATION_PASSWORD_VERIFIED = register(
    "confirmation_password_verified", SERVICE,
    description="The confirmation password was checked successfully (its fail counter resets).")
PASSWORDS_CHANGED = register(
    "passwords_changed", SERVICE,
    personal_fields=("login_password_hash", "confirmation_password_hash"),
    description="Step 4 done: legacy verifiers replaced by argon2id hashes (R-INI-2). "
                "From now on the login ID is the customer number and legacy login is refused.")
LOGIN_SUCCEEDED = register(
    "login_succeeded", SERVICE, description="A login after migration succeeded (R-INI-9).")
LOGIN_FAILED = register(
    "login_failed", SERVICE,
    description="A wrong login password after migration; consecutive failure count (R-RBA-2).")
LOGIN_CHALLENGED = register(
    "login_challenged", SERVICE,
    description="Right password from an unknown environment: a secret question was asked (R-RBA-1).")
CHALLENGE_PASSED = register(
    "challenge_passed", SERVICE, description="The secret question of a login challenge was answered.")
CHALLENGE_FAILED = register(
    "challenge_failed", SERVICE, description="A wrong answer to a login challenge's secret question.")
ENVIRONMENT_RECOGNISED = register(
    "environment_recognised", SERVICE,
    description="An environment (device or network + browser, as a hash) became known for the customer.")
CREDENTIAL_LOCKED = register(
    "credential_locked", SERVICE,
    description="Too many consecutive failures: the credential is locked (R-RBA-2).")
CREDENTIAL_UNLOCKED = register(
    "credential_unlocked", SERVICE,
    description="A locked credential was released by an operator or by the configured timed release.")

# -- operator procedures (R-LEG-4) and the customer's forced changes that complete them ------
# The operator and the reason are in each event's metadata (actor kind ``operator``).
LOGIN_PASSWORD_REISSUED = register(
    "login_password_reissued", SERVICE, personal_fields=("temporary_password_hash",),
    description="Operator procedure: a one-time temporary login password was issued (only its "
                "argon2id hash is kept); the customer must change it at the next login (R-LEG-4).")
CONFIRMATION_PASSWORD_RESET = register(
    "confirmation_password_reset", SERVICE, personal_fields=("temporary_password_hash",),
    description="Operator procedure: the confirmation password was reset to a one-time temporary "
                "one; it must be changed before any transaction or settings change (R-LEG-4).")
LOGIN_PASSWORD_CHANGED = register(
    "login_password_changed", SERVICE, personal_fields=("login_password_hash",),
    description="The customer changed the login password (e.g. the forced change after a "
                "re-issue); the temporary password no longer works.")
CONFIRMATION_PASSWORD_CHANGED = register(
    "confirmation_password_changed", SERVICE, personal_fields=("confirmation_password_hash",),
    description="The customer changed the confirmation password (e.g. after an operator reset).")
REGISTERED_PHONES_CHANGED = register(
    "registered_phones_changed", SERVICE, personal_fields=("phones",),
    description="Operator procedure: the registered phone numbers (E.164) were replaced (R-LEG-4); "
                "OTP applications started afterwards verify against the new numbers.")
LOGIN_ID_INITIALISED = register(
    "login_id_initialised", SERVICE,
    description="Operator procedure: the login ID was reset to the customer number (R-LEG-4).")

# The gateway ends the customer's sessions when an operator re-issues the login password, and
# when the customer changes it.
LOGIN_PASSWORD_REISSUED_SUBSCRIPTION = subscribe(
    SERVICE, "login_password_reissued", "gateway", "on_login_password_reissued")
LOGIN_PASSWORD_CHANGED_SUBSCRIPTION = subscribe(
    SERVICE, "login_password_changed", "gateway", "on_login_password_changed")


# -- RPC payloads ---------------------------------------------------------------------------

class ClientSchema(Schema):
    """The caller's environment as the gateway saw it (all optional)."""
    device_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    address = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    user_agent = fields.String(load_default=None, allow_none=True)


class LegacyRecordSchema(Schema):
    """One line of the legacy CSV as the CLI sends it (strings as read; identity validates)."""
    line = fields.Integer(required=True)
    customer_number = fields.String(required=True)
    login_password_verifier = fields.String(required=True)
    confirmation_pin_verifier = fields.String(required=True)
    phones = fields.String(required=True)
    email = fields.String(load_default="", allow_none=True)


class ImportResultSchema(Schema):
    line = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("imported", "unchanged", "rejected")))
    reason = fields.String()        # stable English code, e.g. ``invalid_customer_number``
    message = fields.String()       # Japanese, for the operator
    warnings = fields.List(fields.String())


class LegacyLoginSchema(Schema):
    """Body of ``POST /api/v1/migration/login``."""
    customer_number = fields.String(required=True, error_messages=_REQUIRED)
    password = fields.String(required=True, error_messages=_REQUIRED)


class PasswordChangeSchema(Schema):
    """Body of ``POST /api/v1/migration/password`` (R-INI-2)."""
    current_login_password = fields.String(required=True, error_messages=_REQUIRED)
    new_login_password = fields.String(required=True, error_messages=_REQUIRED)
    new_login_password_confirmation = fields.String(required=True, error_messages=_REQUIRED)
    current_confirmation_password = fields.String(required=True, error_messages=_REQUIRED)
    new_confirmation_password = fields.String(required=True, error_messages=_REQUIRED)
    new_confirmation_password_confirmation = fields.String(required=True, error_messages=_REQUIRED)


PASSWORD_CHANGE_FIELDS = tuple(PasswordChangeSchema().fields)


class LoginSchema(Schema):
    """Body of ``POST /api/v1/login``."""
    login_id = fields.String(required=True, error_messages=_REQUIRED)
    password = fields.String(required=True, error_messages=_REQUIRED)
    otp = fields.String(load_default=None, allow_none=True)
    device_id = fields.String(load_default=None, allow_none=True)


class ChallengeAnswerSchema(Schema):
    """Body of ``POST /api/v1/login/challenge``."""
    challenge_id = fields.String(required=True, error_messages=_REQUIRED)
    answer = fields.String(required=True, error_messages=_REQUIRED)


class QuestionSchema(Schema):
    id = fields.String(required=True)
    text = fields.String(required=True)


class LoginResultSchema(Schema):
    status = fields.String(required=True,
                           validate=validate.OneOf(("ok", "challenge", "password_change_required")))
    customer_number = fields.String()
    challenge_id = fields.String()
    question = fields.Nested(QuestionSchema)


class MigrationStatusSchema(Schema):
    next_step = fields.String(required=True, validate=validate.OneOf(NEXT_STEPS))
    steps = fields.Dict(keys=fields.String(), values=fields.String())


class PhoneSchema(Schema):
    phone_id = fields.String(required=True)
    masked = fields.String(required=True)


class LoginPasswordChangeSchema(Schema):
    """Body of ``POST /api/v1/me/login-password`` (the rules of R-INI-2 for the login password)."""
    current_login_password = fields.String(required=True, error_messages=_REQUIRED)
    new_login_password = fields.String(required=True, error_messages=_REQUIRED)
    new_login_password_confirmation = fields.String(required=True, error_messages=_REQUIRED)


class ConfirmationPasswordChangeSchema(Schema):
    """Body of ``POST /api/v1/me/confirmation-password``."""
    current_confirmation_password = fields.String(required=True, error_messages=_REQUIRED)
    new_confirmation_password = fields.String(required=True, error_messages=_REQUIRED)
    new_confirmation_password_confirmation = fields.String(required=True, error_messages=_REQUIRED)
