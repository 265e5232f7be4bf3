"""The development defaults, and the one rule about them: a production process never runs on them.

Several secrets and switches default to values that let `make run` and the tests work with no
set-up. Those values are published in this repository. A production process that fell back on
one would seal personal data (FIELD_KEYS) and TOTP secrets (TOTP_KEYS) under known keys, let
stolen mail-password verifiers be searched offline (MAIL_OTP_KEYS), accept forged telephony
webhooks (TELEPHONY_AUTH_TOKEN) and CSRF tokens (CSRF_KEY), send session cookies over plain HTTP
(SESSION_COOKIE_SECURE=0), keep every mail on the machine in the development SMTP sink
(SMTP_HOST unset), leave guessing from one address unbraked because nobody chose a limit
(RATE_LIMIT_LOGIN / RATE_LIMIT_ACTIVATION unset; ``off`` is a choice and accepted), or, with
DEMO_MODE, let anyone prove a phone without calling it.

So with ``TSUNAGI_ENV=production`` a process refuses to start while a setting it uses is unset
or still development-grade, and names every such setting at once, so that one restart fixes them
all. Outside production the same findings are one warning in the log. Any other value of
``TSUNAGI_ENV`` than ``development`` (the default) or ``production`` refuses to start too: a
typo such as ``prod`` must not switch the check off quietly.

A key ring (``kid:base64key,…``) counts as development-grade only when its *first* entry, the
one that seals or signs new data, is the development key. The development key may stay listed
behind a fresh one while ``tsunagi keys rotate`` moves old data off it.

The chassis must not import the service packages, so the development values live here and the
services take their defaults from this module.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Callable

import structlog

DEV_FIELD_KEYS = "dev1:bG9jYWwtZGV2ZWxvcG1lbnQta2V5LW5vdC1wcm9kISE="
DEV_TOTP_KEYS = "totpdev1:dG90cC1zZWNyZXRzLWRldmVsb3BtZW50LWtleSEhISE="
DEV_MAIL_OTP_KEYS = "mailotpdev1:bWFpbC1vdHAtaG1hYy1kZXZlbG9wbWVudC1rZXkhISE="
DEV_CSRF_KEY = "dev-csrf-key-not-for-production"
DEV_TELEPHONY_AUTH_TOKEN = "dev-telephony-auth-token-not-for-production"

MIN_SECRET_LENGTH = 32       # a Twilio auth token has 32; `secrets.token_urlsafe(32)` gives 43

ENVIRONMENT_SETTING = "TSUNAGI_ENV"
DEVELOPMENT, PRODUCTION = "development", "production"

Read = Callable[[str], "str | None"]   # a setting's value, None when unset (services.config.ConfigReader.raw)

_log = structlog.get_logger("tsunagi.deployment")


class NotFitForProduction(Exception):
    """Raised at start-up: the message names every offending setting and why."""


def _first_key(spec: str) -> bytes | None:
    kid, sep, encoded = spec.split(",")[0].strip().partition(":")
    if not (kid and sep):
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _key_ring(development: str, *, optional: bool = False) -> Callable[[str | None], str | None]:
    dev_key = _first_key(development)

    def problem(value: str | None) -> str | None:
        if value is None:
            return None if optional else "unset, so the development key is used"
        first = _first_key(value)
        if first is None:
            return "its first entry is not kid:base64key"
        if first == dev_key:
            return "its first entry, which seals new data, is the development key"
        return None
    return problem


def _secret(development: str) -> Callable[[str | None], str | None]:
    def problem(value: str | None) -> str | None:
        if value is None:
            return "unset, so the development value is used"
        if value == development:
            return "is the development value"
        if len(value) < MIN_SECRET_LENGTH:   # an HMAC key someone could guess or type from memory
            return f"is shorter than {MIN_SECRET_LENGTH} characters"
        return None
    return problem


def is_on(value: str | None, default: bool) -> bool:
    """How the services read a switch: unset → ``default``; 0/false/no/off → off; else on."""
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def _must_be(wanted: bool, default: bool, consequence: str) -> Callable[[str | None], str | None]:
    def problem(value: str | None) -> str | None:
        return None if is_on(value, default) == wanted else consequence
    return problem


def _decided(what: str) -> Callable[[str | None], str | None]:
    def problem(value: str | None) -> str | None:
        if value is None:
            return (f"unset, so {what} requests per address are not limited "
                    f"(give REQUESTS/SECONDS, or `off` where the balancer limits them)")
        return None
    return problem


@dataclass(frozen=True)
class Rule:
    setting: str
    packages: frozenset[str] | None        # whose processes read it; None: every process
    problem: Callable[[str | None], str | None]   # why the value is not fit for production

    def applies_to(self, package: str | None) -> bool:
        return package is None or self.packages is None or package in self.packages


RULES: tuple[Rule, ...] = (
    Rule("FIELD_KEYS", None, _key_ring(DEV_FIELD_KEYS)),
    Rule("WEBAUTHN_USER_HANDLE_KEY", frozenset({"identity"}), _key_ring(DEV_FIELD_KEYS, optional=True)),
    Rule("TOTP_KEYS", frozenset({"otp_service"}), _key_ring(DEV_TOTP_KEYS)),
    Rule("MAIL_OTP_KEYS", frozenset({"otp_service"}), _key_ring(DEV_MAIL_OTP_KEYS)),
    Rule("CSRF_KEY", frozenset({"gateway"}), _secret(DEV_CSRF_KEY)),
    Rule("TELEPHONY_AUTH_TOKEN", frozenset({"gateway"}), _secret(DEV_TELEPHONY_AUTH_TOKEN)),
    Rule("DEMO_MODE", frozenset({"gateway"}),
         _must_be(False, False, "is on, so anyone could prove a phone without calling it")),
    Rule("SESSION_COOKIE_SECURE", frozenset({"gateway"}),
         _must_be(True, True, "is off, so session cookies would travel over plain HTTP")),
    # Unset means no brake on guessing across customers from one address. A deployment whose
    # balancer limits instead says so with `off`; forgetting is what is refused.
    Rule("RATE_LIMIT_LOGIN", frozenset({"gateway"}), _decided("login")),
    Rule("RATE_LIMIT_ACTIVATION", frozenset({"gateway"}), _decided("OTP app activation")),
    # Unset, the notifier mails 127.0.0.1:8025, and `tsunagi run` starts its development sink
    # there: the Service ID and User ID mails would never leave the machine.
    Rule("SMTP_HOST", frozenset({"notifier"}),
         lambda value: "unset, so mail goes to the local development sink" if value is None else None),
)


def environment(read: Read) -> str:
    value = (read(ENVIRONMENT_SETTING) or DEVELOPMENT).strip().lower()
    if value not in (DEVELOPMENT, PRODUCTION):
        raise NotFitForProduction(f"{ENVIRONMENT_SETTING}={value!r}: must be "
                                  f"{DEVELOPMENT!r} (the default) or {PRODUCTION!r}")
    return value


def findings(package: str | None, read: Read) -> list[tuple[str, str]]:
    """(setting, why) for each setting that ``package``'s processes read (every rule when None:
    the runner starts them all) and that production must not run with."""
    found = []
    for rule in RULES:
        if rule.applies_to(package):
            why = rule.problem(read(rule.setting))
            if why:
                found.append((rule.setting, why))
    return found


def check(package: str | None, read: Read, *, warn: bool = True) -> list[tuple[str, str]]:
    """Raise NotFitForProduction in production when anything is found; otherwise return the
    findings, logged as one warning unless ``warn`` is false (a command's stdout may be JSON)."""
    env = environment(read)
    found = findings(package, read)
    if found and env == PRODUCTION:
        lines = "\n".join(f"  {setting}: {why}" for setting, why in found)
        raise NotFitForProduction(f"{ENVIRONMENT_SETTING}=production, but these settings are "
                                  f"development-grade:\n{lines}\nSet them (README.md, "
                                  f"'Configuration') and start again.")
    if found and warn:
        _log.warning("development_settings", environment=env, settings=[s for s, _ in found],
                     hint=f"{ENVIRONMENT_SETTING}=production refuses to start with these")
    return found
