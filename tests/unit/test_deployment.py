"""A production process never runs on the repository's development keys or switches
(services/deployment.py). Given the settings, when a package's process checks them, then these
findings, and in production a refusal that names them all."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from services import crypto, deployment
from services.deployment import (DEV_CSRF_KEY, DEV_FIELD_KEYS, DEV_MAIL_OTP_KEYS,
                                 DEV_TELEPHONY_AUTH_TOKEN, DEV_TOTP_KEYS, NotFitForProduction)

FRESH_FIELD = crypto.new_master_key_entry("f2026")
FRESH_TOTP = crypto.new_master_key_entry("t2026")
FRESH_MAIL = crypto.new_master_key_entry("m2026")

PRODUCTION_READY = {
    "TSUNAGI_ENV": "production",
    "FIELD_KEYS": FRESH_FIELD,
    "TOTP_KEYS": FRESH_TOTP,
    "MAIL_OTP_KEYS": FRESH_MAIL,
    "CSRF_KEY": "c" * 43,
    "TELEPHONY_AUTH_TOKEN": "t" * 32,
    "SMTP_HOST": "smtp.internal.example.jp",
    "RATE_LIMIT_LOGIN": "10/60",
    "RATE_LIMIT_ACTIVATION": "off",
}


def settings(**changes) -> dict:
    merged = {**PRODUCTION_READY, **changes}
    return {k: v for k, v in merged.items() if v is not None}


def found(package, given: dict) -> list[str]:
    return [setting for setting, _ in deployment.findings(package, given.get)]


@pytest.mark.parametrize("package, given, expected", [
    # every secret set to a fresh value: nothing to say, for every package
    (None, settings(), []),
    ("gateway", settings(), []),
    # unset secrets fall back to the development values
    ("gateway", settings(CSRF_KEY=None, TELEPHONY_AUTH_TOKEN=None), ["CSRF_KEY", "TELEPHONY_AUTH_TOKEN"]),
    ("otp_service", settings(TOTP_KEYS=None, MAIL_OTP_KEYS=None), ["TOTP_KEYS", "MAIL_OTP_KEYS"]),
    ("notifier", settings(FIELD_KEYS=None), ["FIELD_KEYS"]),
    # the development values given explicitly (docker-compose.yml's FIELD_KEYS default does so)
    ("identity", settings(FIELD_KEYS=DEV_FIELD_KEYS), ["FIELD_KEYS"]),
    ("otp_service", settings(TOTP_KEYS=DEV_TOTP_KEYS, MAIL_OTP_KEYS=DEV_MAIL_OTP_KEYS),
     ["TOTP_KEYS", "MAIL_OTP_KEYS"]),
    ("gateway", settings(CSRF_KEY=DEV_CSRF_KEY, TELEPHONY_AUTH_TOKEN=DEV_TELEPHONY_AUTH_TOKEN),
     ["CSRF_KEY", "TELEPHONY_AUTH_TOKEN"]),
    ("gateway", settings(CSRF_KEY="correct-horse", TELEPHONY_AUTH_TOKEN="t" * 31),
     ["CSRF_KEY", "TELEPHONY_AUTH_TOKEN"]),
    # the development key under another key id is still the development key
    ("relay", settings(FIELD_KEYS="prod1:" + DEV_FIELD_KEYS.partition(":")[2]), ["FIELD_KEYS"]),
    # rotating away from it: a fresh key first, the development key still listed behind it
    ("relay", settings(FIELD_KEYS=f"{FRESH_FIELD},{DEV_FIELD_KEYS}"), []),
    ("relay", settings(FIELD_KEYS=f"{DEV_FIELD_KEYS},{FRESH_FIELD}"), ["FIELD_KEYS"]),
    ("relay", settings(FIELD_KEYS="no-colon-here"), ["FIELD_KEYS"]),
    ("relay", settings(FIELD_KEYS="k1:not base64!"), ["FIELD_KEYS"]),
    # the passkey handle key is optional (it follows FIELD_KEYS), but never the development key
    ("identity", settings(WEBAUTHN_USER_HANDLE_KEY=DEV_FIELD_KEYS), ["WEBAUTHN_USER_HANDLE_KEY"]),
    ("identity", settings(WEBAUTHN_USER_HANDLE_KEY=FRESH_FIELD), []),
    # switches, read as the gateway reads them
    ("gateway", settings(DEMO_MODE="1"), ["DEMO_MODE"]),
    ("gateway", settings(DEMO_MODE="yes"), ["DEMO_MODE"]),
    ("gateway", settings(DEMO_MODE="0"), []),
    ("gateway", settings(DEMO_MODE="off"), []),
    ("gateway", settings(SESSION_COOKIE_SECURE="0"), ["SESSION_COOKIE_SECURE"]),
    ("gateway", settings(SESSION_COOKIE_SECURE="false"), ["SESSION_COOKIE_SECURE"]),
    ("gateway", settings(SESSION_COOKIE_SECURE="1"), []),
    ("notifier", settings(SMTP_HOST=None), ["SMTP_HOST"]),
    # a rate limit must be chosen, even if the choice is `off` (the balancer limits)
    ("gateway", settings(RATE_LIMIT_LOGIN=None, RATE_LIMIT_ACTIVATION=None),
     ["RATE_LIMIT_LOGIN", "RATE_LIMIT_ACTIVATION"]),
    ("gateway", settings(RATE_LIMIT_LOGIN="off", RATE_LIMIT_ACTIVATION="5/60"), []),
    ("gateway", settings(SMTP_HOST=None), []),
    # a package is only asked about what its processes read
    ("identity", settings(CSRF_KEY=None, TOTP_KEYS=None, DEMO_MODE="1"), []),
    ("gateway", settings(TOTP_KEYS=None, WEBAUTHN_USER_HANDLE_KEY=DEV_FIELD_KEYS), []),
    # None (the runner, which starts every process) is asked about everything
    (None, settings(CSRF_KEY=None, TOTP_KEYS=None, DEMO_MODE="1", SMTP_HOST=None),
     ["TOTP_KEYS", "CSRF_KEY", "DEMO_MODE", "SMTP_HOST"]),
])
def test_findings(package, given, expected):
    assert found(package, given) == expected


def test_production_refuses_naming_every_finding_at_once():
    given = settings(FIELD_KEYS=None, CSRF_KEY=DEV_CSRF_KEY, DEMO_MODE="1")
    with pytest.raises(NotFitForProduction) as refused:
        deployment.check("gateway", given.get)
    message = str(refused.value)
    for setting in ("FIELD_KEYS", "CSRF_KEY", "DEMO_MODE"):
        assert f"  {setting}: " in message
    assert "TOTP_KEYS" not in message          # the gateway does not read it


def test_production_with_every_secret_set_passes():
    assert deployment.check(None, settings().get) == []


@pytest.mark.parametrize("environment", [None, "development", "Development "])
def test_development_reports_and_goes_on(environment):
    given = settings(TSUNAGI_ENV=environment, FIELD_KEYS=None)
    assert [s for s, _ in deployment.check("notifier", given.get, warn=False)] == ["FIELD_KEYS"]


@pytest.mark.parametrize("environment", ["prod", "staging", "1"])
def test_an_unknown_environment_is_refused_even_with_good_settings(environment):
    with pytest.raises(NotFitForProduction, match="TSUNAGI_ENV"):
        deployment.check("notifier", settings(TSUNAGI_ENV=environment).get)


def test_the_services_default_to_the_values_this_module_refuses(monkeypatch):
    """One source for the published values: the services' own defaults are these."""
    from gateway import routes_telephony, web_session
    from otp_service import config as otp_config
    from otp_service import mail_otp_config
    from services.config import Settings

    for unset in ("FIELD_KEYS", "TOTP_KEYS", "MAIL_OTP_KEYS", "CSRF_KEY"):
        monkeypatch.delenv(unset, raising=False)
    assert Settings().field_keys == DEV_FIELD_KEYS
    assert otp_config.OtpSettings.load({}).totp_keys == DEV_TOTP_KEYS
    assert mail_otp_config.MailOtpSettings.load({}).keys_spec == DEV_MAIL_OTP_KEYS
    expected = hmac.new(DEV_CSRF_KEY.encode(), b"csrf:a-session-token", hashlib.sha256).hexdigest()
    assert web_session.csrf_token_for("a-session-token", {}) == expected
    assert routes_telephony.DEV_AUTH_TOKEN == DEV_TELEPHONY_AUTH_TOKEN
