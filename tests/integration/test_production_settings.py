"""With TSUNAGI_ENV=production the real processes refuse the repository's development keys and
switches before they start anything, naming every offending setting (services/deployment.py);
a production process with its own keys starts, and a development one warns and starts."""
from __future__ import annotations

import os

from services import crypto
from services.deployment import DEV_FIELD_KEYS
from tests.support.cli import run_until_ready, tsunagi

SECRETS = ("FIELD_KEYS", "TOTP_KEYS", "MAIL_OTP_KEYS", "CSRF_KEY", "TELEPHONY_AUTH_TOKEN",
           "WEBAUTHN_USER_HANDLE_KEY", "DEMO_MODE", "SESSION_COOKIE_SECURE", "SMTP_HOST", "RATE_LIMIT_LOGIN",
           "RATE_LIMIT_ACTIVATION", "TSUNAGI_ENV")


def environment(**given: str) -> dict:
    """This process's environment without any of the checked settings, plus ``given``."""
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return {**env, "PYTHONWARNINGS": "ignore", **given}


def test_a_production_gateway_without_its_secrets_does_not_start(tmp_path):
    result = tsunagi("service", "gateway", base=environment(TSUNAGI_ENV="production", DEMO_MODE="1"),
                     timeout=30)
    assert result.returncode != 0
    err = result.stderr
    for setting in ("FIELD_KEYS", "CSRF_KEY", "TELEPHONY_AUTH_TOKEN", "DEMO_MODE", "RATE_LIMIT_LOGIN"):
        assert f"  {setting}: " in err, err
    assert "TOTP_KEYS" not in err                  # read by otp_service, not by the gateway
    assert "ready: gateway" not in result.stdout
    assert "Traceback" not in err


def test_a_production_service_with_its_own_keys_starts_and_one_with_the_published_key_does_not(settings, tmp_path):
    fresh = crypto.new_master_key_entry("prod2026")
    # 127.0.0.1 stands for the bank's relay; no mail is sent while the service only starts.
    code, out = run_until_ready("notifier", tmp_path, base=environment(TSUNAGI_ENV="production", FIELD_KEYS=fresh,
                                                                   SMTP_HOST="127.0.0.1"))
    assert code == 0, out
    assert "ready: notifier" in out
    assert "development_settings" not in out

    refused = tsunagi("service", "notifier", base=environment(TSUNAGI_ENV="production", SMTP_HOST="127.0.0.1",
                                                              FIELD_KEYS=DEV_FIELD_KEYS), timeout=30)
    assert refused.returncode != 0
    assert "FIELD_KEYS: its first entry, which seals new data, is the development key" in refused.stderr


def test_a_development_service_warns_about_the_published_keys_and_starts(settings, tmp_path):
    code, out = run_until_ready("notifier", tmp_path, base=environment())
    assert code == 0, out
    warning = next(line for line in out.splitlines() if "development_settings" in line)
    assert "FIELD_KEYS" in warning


def test_tsunagi_run_refuses_before_starting_anything(tmp_path):
    run_dir = tmp_path / "run"
    result = tsunagi("run", "--run-dir", str(run_dir),
                     base=environment(TSUNAGI_ENV="production", FIELD_KEYS=crypto.new_master_key_entry("p1")),
                     timeout=30)
    assert result.returncode == 1
    for setting in ("TOTP_KEYS", "MAIL_OTP_KEYS", "CSRF_KEY", "TELEPHONY_AUTH_TOKEN", "SMTP_HOST"):
        assert f"  {setting}: " in result.stderr, result.stderr
    assert "FIELD_KEYS" not in result.stderr
    assert not run_dir.exists() or not any(run_dir.iterdir())   # no process was started


def test_a_command_that_opens_the_log_refuses_quietly_with_json(settings):
    result = tsunagi("verify", "--json", base=environment(TSUNAGI_ENV="production",
                                                          DATABASE_URL=settings.database_url))
    assert result.returncode == 1
    assert result.stdout == ""                    # nothing a JSON reader would choke on
    assert "FIELD_KEYS: unset" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_mistyped_environment_is_refused(tmp_path):
    result = tsunagi("service", "notifier", base=environment(TSUNAGI_ENV="prod",
                                                             FIELD_KEYS=crypto.new_master_key_entry("p2")),
                     timeout=30)
    assert result.returncode != 0
    assert "TSUNAGI_ENV='prod'" in result.stderr
