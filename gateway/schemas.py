"""Request and response schemas of the migration and login routes (field names as in
``shared/API.md``).

Only shapes, types and generous length caps live here — the gateway holds no domain rule.
How long a secret answer may be (全角10文字), what a password must contain, what a customer
number looks like: the services decide and answer with their own Japanese messages. The caps
only stop absurd payloads before they cost an RPC. Unknown fields are refused: a bank's API
should not silently ignore a field a front end thought it was setting.
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

REQUIRED = "必須項目です。"
NULL = "値を入力してください。"
NOT_STRING = "文字列で入力してください。"
NOT_BOOLEAN = "true または false で指定してください。"
NOT_LIST = "配列で指定してください。"
NOT_OBJECT = "オブジェクトで指定してください。"
UNKNOWN = "この項目は指定できません。"
CONTROL = "使用できない文字が含まれています。"

# Caps (characters) well above every rule of the services.
ID_MAX = 64
SECRET_MAX = 128
ANSWER_MAX = 64


def too_long(limit: int) -> str:
    return f"{limit}文字以内で入力してください。"


def _no_control(value: str) -> bool:
    # NUL and other C0 controls in identifiers: never legitimate, and PostgreSQL text refuses NUL.
    return not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


class BaseSchema(Schema):
    error_messages = {"type": NOT_OBJECT, "unknown": UNKNOWN}

    class Meta:
        unknown = RAISE


def Str(*, required: bool = True, max_len: int = ID_MAX, ident: bool = False, **kw) -> fields.String:
    validators = [validate.Length(max=max_len, error=too_long(max_len))]
    if ident:
        validators.append(_Predicate(_no_control, CONTROL))
    return fields.String(required=required, validate=validators,
                         error_messages={"required": REQUIRED, "null": NULL, "invalid": NOT_STRING,
                                         "invalid_utf8": NOT_STRING}, **kw)


class _Predicate(validate.Validator):
    def __init__(self, fn, error: str):
        self.fn = fn
        self.error = error

    def __call__(self, value):
        if not self.fn(value):
            raise validate.ValidationError(self.error)
        return value


class StrictBoolean(fields.Boolean):
    """Only JSON true/false: "true", 1, "on" are not a ticked checkbox (1 == True in Python,
    so marshmallow's truthy sets cannot tell them apart)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not bool:
            raise self.make_error("invalid", input=value)
        return value


def Bool(*, required: bool = True, **kw) -> fields.Boolean:
    return StrictBoolean(required=required,
                         error_messages={"required": REQUIRED, "null": NULL, "invalid": NOT_BOOLEAN}, **kw)


def ListOf(inner, *, max_items: int, required: bool = True, **kw) -> fields.List:
    return fields.List(inner, required=required,
                       validate=validate.Length(max=max_items, error=f"{max_items}件以内で指定してください。"),
                       error_messages={"required": REQUIRED, "null": NULL, "invalid": NOT_LIST}, **kw)


def NestedOf(schema, **kw) -> fields.Nested:
    return fields.Nested(schema, error_messages={"required": REQUIRED, "null": NULL, "type": NOT_OBJECT}, **kw)


# -- step 2: legacy login ----------------------------------------------------------------------

class MigrationLoginRequest(BaseSchema):
    customer_number = Str(ident=True, metadata={"description": "お客さま番号（数字10桁）"})
    password = Str(max_len=SECRET_MAX, metadata={"description": "『みちのくダイレクト』のログインパスワード"})


class MigrationLoginResponse(BaseSchema):
    session_token = fields.String(required=True)
    next_step = fields.String(required=True, metadata={"description": "次に進む手順"})


class NextStepResponse(BaseSchema):
    next_step = fields.String(required=True)


# -- step 3: secret questions -------------------------------------------------------------------

class QuestionSchema(BaseSchema):
    id = fields.String(required=True)
    text = fields.String(required=True)


class SecretAnswerSchema(BaseSchema):
    question_id = Str(ident=True, max_len=32)
    answer = Str(max_len=ANSWER_MAX, metadata={"description": "全角10文字以内"})


class SecretQuestionsRequest(BaseSchema):
    answers = ListOf(NestedOf(SecretAnswerSchema), max_items=10,
                     metadata={"description": "異なる3つの質問と回答"})
    confirmed = Bool(metadata={"description": "「確認しました。」のチェック"})


# -- step 4: password change ---------------------------------------------------------------------

class PasswordChangeRequest(BaseSchema):
    current_login_password = Str(max_len=SECRET_MAX)
    new_login_password = Str(max_len=SECRET_MAX)
    new_login_password_confirmation = Str(max_len=SECRET_MAX)
    current_confirmation_password = Str(max_len=SECRET_MAX)
    new_confirmation_password = Str(max_len=SECRET_MAX)
    new_confirmation_password_confirmation = Str(max_len=SECRET_MAX)


# -- registered phones ----------------------------------------------------------------------------

class PhoneSchema(BaseSchema):
    phone_id = fields.String(required=True)
    masked = fields.String(required=True, metadata={"description": "下4桁のみ表示（例: *****1234）"})


# -- login after migration (R-INI-9, R-RBA-1) ---------------------------------------------------------

class LoginRequest(BaseSchema):
    login_id = Str(ident=True)
    password = Str(max_len=SECRET_MAX)
    otp = Str(required=False, ident=True, max_len=16, allow_none=True)
    device_id = Str(required=False, ident=True, max_len=128, allow_none=True)


class LoginResponse(BaseSchema):
    """Either ``session_token`` or the step-up challenge (``challenge`` = "secret_question")."""
    session_token = fields.String()
    challenge = fields.String(metadata={"description": "secret_question"})
    challenge_id = fields.String()
    question = fields.Nested(QuestionSchema)
    next_step = fields.String(metadata={"description": "login_password_change: a temporary password "
                                                      "(R-LEG-4) must be changed first"})


class ChallengeRequest(BaseSchema):
    challenge_id = Str(ident=True, max_len=128)
    answer = Str(max_len=ANSWER_MAX)


class SessionResponse(BaseSchema):
    session_token = fields.String(required=True)
