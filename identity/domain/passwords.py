"""The password rules of step 4 (R-INI-2), pure. Every broken rule is reported at once, per
field, in the guide's words, so the customer can fix the whole form in one go.

From the guide (手順4):
- new login password: 半角英数字・大小文字混在の6～12桁 — half-width letters and digits, 6–12,
  upper and lower case both present. The guide does not demand a digit, so neither do we.
- new confirmation password: 半角英数字・大小文字 6～12桁 — half-width alphanumerics, 6–12; no
  mixed-case rule.
- 「現在のログインパスワード」と同一のものはご利用いただけません (same for the confirmation password).
- each new password is entered twice and both entries must match.
- the new login password and the new confirmation password must differ (SPEC R-INI-2).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.errors import ValidationFailed
from contracts.identity import PASSWORD_CHANGE_FIELDS
from identity.domain import inputs
from identity.domain import messages as msg

NEW_PASSWORD = re.compile(r"[0-9A-Za-z]{6,12}")


@dataclass(frozen=True)
class PasswordChange:
    current_login_password: str
    new_login_password: str
    current_confirmation_password: str
    new_confirmation_password: str


def _mixed_case(value: str) -> bool:
    return any(c.isupper() for c in value) and any(c.islower() for c in value)


def validate_password_change(body) -> PasswordChange:
    if not isinstance(body, dict):
        raise inputs.fail("body", msg.NOT_TEXT.format(label=msg.LABELS["body"]))
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    values: dict[str, str] = {}
    for field in PASSWORD_CHANGE_FIELDS:
        value = body.get(field)
        label = msg.LABELS[field]
        if value is None or value == "":
            add(field, msg.REQUIRED.format(label=label))
        elif not isinstance(value, str):
            add(field, msg.NOT_TEXT.format(label=label))
        elif len(value) > inputs.MAX_PASSWORD:
            add(field, msg.TOO_LONG.format(label=label))
        elif field.startswith("current_"):
            if inputs.PASSWORD_CHARS.fullmatch(value):
                values[field] = value
            else:
                add(field, msg.PASSWORD_CHARSET.format(label=label))
        else:
            values[field] = value
    for field in ("new_login_password", "new_confirmation_password"):
        value = values.get(field)
        if value is None:
            continue
        if not NEW_PASSWORD.fullmatch(value):
            add(field, msg.NEW_PASSWORD_FORMAT.format(label=msg.LABELS[field]))
        elif field == "new_login_password" and not _mixed_case(value):
            add(field, msg.LOGIN_PASSWORD_MIXED_CASE)
    for field in ("new_login_password", "new_confirmation_password"):
        again = f"{field}_confirmation"
        if field in values and again in values and values[field] != values[again]:
            add(again, msg.CONFIRMATION_MISMATCH.format(label=msg.LABELS[again]))
    if values.get("new_login_password") is not None and \
            values.get("new_login_password") == values.get("current_login_password"):
        add("new_login_password", msg.SAME_AS_CURRENT_LOGIN)
    if values.get("new_confirmation_password") is not None and \
            values.get("new_confirmation_password") == values.get("current_confirmation_password"):
        add("new_confirmation_password", msg.SAME_AS_CURRENT_CONFIRMATION)
    if values.get("new_login_password") is not None and \
            values.get("new_login_password") == values.get("new_confirmation_password"):
        add("new_confirmation_password", msg.LOGIN_EQUALS_CONFIRMATION)
    if errors:
        first = next(iter(errors.values()))[0]
        raise ValidationFailed(first, errors=errors)
    return PasswordChange(values["current_login_password"], values["new_login_password"],
                          values["current_confirmation_password"], values["new_confirmation_password"])


# -- one password at a time (the forced change after an operator procedure, R-LEG-4) ----------

@dataclass(frozen=True)
class SingleChange:
    credential: str               # "login_password" | "confirmation_password"
    current: str
    new: str


_SINGLE_FIELDS = {"login_password": ("current_login_password", "new_login_password",
                                     "new_login_password_confirmation"),
                  "confirmation_password": ("current_confirmation_password", "new_confirmation_password",
                                            "new_confirmation_password_confirmation")}


def satisfies_rules(credential: str, value: str) -> bool:
    """R-INI-2: 6–12 half-width alphanumerics; the login password in mixed case."""
    if not NEW_PASSWORD.fullmatch(value):
        return False
    return credential != "login_password" or _mixed_case(value)


def validate_single_change(credential: str, body) -> SingleChange:
    """The rules of R-INI-2 for changing one password: format, the re-entry matches, new ≠
    current. (new ≠ the other password needs its hash: the decider gets that as a fact.)"""
    if credential not in _SINGLE_FIELDS:
        raise ValueError(f"unknown credential {credential!r}")
    if not isinstance(body, dict):
        raise inputs.fail("body", msg.NOT_TEXT.format(label=msg.LABELS["body"]))
    current_f, new_f, again_f = _SINGLE_FIELDS[credential]
    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for field in (current_f, new_f, again_f):
        value = body.get(field)
        label = msg.LABELS[field]
        if value is None or value == "":
            errors.setdefault(field, []).append(msg.REQUIRED.format(label=label))
        elif not isinstance(value, str):
            errors.setdefault(field, []).append(msg.NOT_TEXT.format(label=label))
        elif len(value) > inputs.MAX_PASSWORD:
            errors.setdefault(field, []).append(msg.TOO_LONG.format(label=label))
        elif field == current_f and not inputs.PASSWORD_CHARS.fullmatch(value):
            errors.setdefault(field, []).append(msg.PASSWORD_CHARSET.format(label=label))
        else:
            values[field] = value
    new = values.get(new_f)
    if new is not None:
        if not NEW_PASSWORD.fullmatch(new):
            errors.setdefault(new_f, []).append(msg.NEW_PASSWORD_FORMAT.format(label=msg.LABELS[new_f]))
        elif credential == "login_password" and not _mixed_case(new):
            errors.setdefault(new_f, []).append(msg.LOGIN_PASSWORD_MIXED_CASE)
        if again_f in values and values[again_f] != new:
            errors.setdefault(again_f, []).append(msg.CONFIRMATION_MISMATCH.format(label=msg.LABELS[again_f]))
        if values.get(current_f) == new:
            errors.setdefault(new_f, []).append(
                msg.SAME_AS_CURRENT_LOGIN if credential == "login_password" else msg.SAME_AS_CURRENT_CONFIRMATION)
    if errors:
        first = next(iter(errors.values()))[0]
        raise ValidationFailed(first, errors=errors)
    return SingleChange(credential, values[current_f], values[new_f])
