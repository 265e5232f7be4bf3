"""The passkeys service's shared language: biometric login with WebAuthn (SPEC R-INI-8, R-INI-9).

Stream: ``passkeys-<customer_number>`` (one per customer), owned by the ``passkeys`` service.
Each credential has an internal ``passkey_id`` (a UUID) that every event and every API answer
uses; the WebAuthn credential ID, the public key and the customer's nickname appear only in
``passkey_registered`` and are *personal fields*: a public key is no secret, but the credential
ID is what links a device to this customer, so the store encrypts them with the customer's data
key. Crypto-shredding the customer therefore also makes the credentials unusable (the key
reads as redacted) and the ``passkeys`` service forgets their rows.

Challenges are not events: asking for options is public and unauthenticated, so writing an
event for each would let anybody fill the audit log. They live in ``passkeys.challenges``
(single-use, expiring; see identity/passkeys_domain.py).

RPC ``remove_by_operator(customer_number) -> {status, removed, passkey_ids}``: operators only
(actor kind ``operator``, the reason in the context; R-LEG-4). A passkey login asks identity's
``login_standing(customer_number) -> {customer_number, standing}`` once the assertion is valid
and opens no session unless the standing is ``ok`` (identity/domain/standing.py).
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from contracts.events import register
from contracts.subscriptions import subscribe

SERVICE = "passkeys"
STREAM_CATEGORY = "passkeys"


def stream_name(customer_number: str) -> str:
    return f"{STREAM_CATEGORY}-{customer_number}"


# -- events ----------------------------------------------------------------------------------

PASSKEY_REGISTERED = register(
    "passkey_registered", SERVICE,
    personal_fields=("credential_id", "public_key", "nickname"),
    description="Step 10 (R-INI-8): after ID/password login the customer's device registered a "
                "WebAuthn credential (user verification required). data: passkey_id, "
                "customer_number, credential_id (base64url, personal), public_key (COSE, "
                "base64url, personal), nickname (personal), sign_count, aaguid, transports, "
                "backup_eligible, backed_up, attestation_format, rp_id, origin, registered_at.")
PASSKEY_LOGIN_SUCCEEDED = register(
    "passkey_login_succeeded", SERVICE,
    description="A login with a passkey instead of ID and password (R-INI-9); the gateway "
                "opened a customer session. data: passkey_id, customer_number, sign_count "
                "(the authenticator's new counter), backed_up, origin, at.")
PASSKEY_LOGIN_FAILED = register(
    "passkey_login_failed", SERVICE,
    description="A validly signed assertion over a login challenge we issued was refused "
                "(unsigned refusals are only logged, and at most one a minute per passkey is "
                "recorded until a success; see identity/passkeys_domain.py). data: passkey_id, "
                "customer_number, reason (challenge_invalid with challenge used | expired; "
                "sign_count_not_increased | passkey_suspended | login_password_change_required | "
                "login_password_locked | initial_operation_pending | customer_unknown), at; "
                "stored_sign_count and received_sign_count for sign_count_not_increased; "
                "received_sign_count for the last four (refused because of identity's login "
                "standing). Older events may also carry assertion_invalid, origin_mismatch or "
                "passkey_unusable. Not counted toward a lockout.")
PASSKEY_SUSPENDED = register(
    "passkey_suspended", SERVICE,
    description="A validly signed assertion came with a sign counter that did not increase: "
                "the credential may have been cloned, so it is refused from now on. The "
                "customer removes it and registers again after ID/password login. data: "
                "passkey_id, customer_number, reason (possible_clone), stored_sign_count, "
                "received_sign_count, at.")
PASSKEY_REMOVED = register(
    "passkey_removed", SERVICE,
    description="A passkey was removed by the customer, or by an operator (R-LEG-4, "
                "`tsunagi operator remove-passkeys`: one event per passkey, data `by: operator`, "
                "the operator and the reason in the metadata). data: passkey_id, "
                "customer_number, at[, by].")

EVENT_TYPES = tuple(t.name for t in (
    PASSKEY_REGISTERED, PASSKEY_LOGIN_SUCCEEDED, PASSKEY_LOGIN_FAILED, PASSKEY_SUSPENDED,
    PASSKEY_REMOVED))

# A crypto-shredded customer's credentials leave the lookup table too.
SHREDDED_SUBSCRIPTION = subscribe("eventstore", "subject_key_shredded", SERVICE, "on_subject_key_shredded")


# -- RPC payloads ----------------------------------------------------------------------------
# Shapes only; the rules live in identity/passkeys_domain.py. The credential is the browser's
# PublicKeyCredential JSON (base64url fields), checked by py_webauthn in the service.

CUSTOMER_NUMBER = validate.Regexp(r"^[0-9]{10}\Z", error="お客さま番号は数字10桁で入力してください。")
_REQUIRED = "必須項目です。"
_STRING = "文字列で入力してください。"
_OBJECT = "オブジェクトで指定してください。"
MAX_NICKNAME = 20   # characters; a device name such as 「わたしのiPhone」


def _str(**kw) -> fields.String:
    return fields.String(error_messages={"invalid": _STRING, "required": _REQUIRED,
                                         "null": _REQUIRED}, **kw)


def _dict(**kw) -> fields.Dict:
    return fields.Dict(keys=fields.String(), error_messages={
        "invalid": _OBJECT, "required": _REQUIRED, "null": _REQUIRED}, **kw)


class CustomerPayload(Schema):
    customer_number = _str(required=True, validate=CUSTOMER_NUMBER)


class RegisterPayload(Schema):
    customer_number = _str(required=True, validate=CUSTOMER_NUMBER)
    credential = _dict(required=True)
    nickname = _str(load_default=None, allow_none=True,
                    validate=validate.Length(max=MAX_NICKNAME,
                                             error=f"{MAX_NICKNAME}文字以内で入力してください。"))
    challenge_id = _str(load_default=None, allow_none=True, validate=validate.Length(max=64))


class LoginPayload(Schema):
    credential = _dict(required=True)
    challenge_id = _str(load_default=None, allow_none=True, validate=validate.Length(max=64))


class RemovePayload(Schema):
    customer_number = _str(required=True, validate=CUSTOMER_NUMBER)
    passkey_id = _str(required=True, validate=validate.Length(min=1, max=1400))


class PasskeySchema(Schema):
    """One registered passkey as the customer sees it (no key material)."""
    passkey_id = fields.String(required=True)
    nickname = fields.String(allow_none=True)
    status = fields.String(required=True, metadata={"description": "active | suspended"})
    registered_at = fields.String(required=True)
    last_used_at = fields.String(allow_none=True)
    backed_up = fields.Boolean(metadata={"description": "synced passkey (e.g. iCloud Keychain)"})
    aaguid = fields.String(allow_none=True)
