"""notifier settings: Nameko config key, else environment variable, else the default.

Senders (R-MAIL-3): OTP mail from ``MAIL_FROM_OTP`` (default ``no-reply@otp-auth.net``), the
bank's other mail from ``MAIL_FROM_BANK`` (default ``no-reply@am-bk.co.jp``); display names
``MAIL_FROM_OTP_NAME`` / ``MAIL_FROM_BANK_NAME`` (default 青森みちのく銀行).
``MAIL_MESSAGE_ID_DOMAIN`` (``tsunagi.am-bk.co.jp``): right-hand side of every Message-ID.

SMTP: ``SMTP_HOST`` (127.0.0.1), ``SMTP_PORT`` (8025, aiosmtpd's default), ``SMTP_TIMEOUT_SECONDS``
(10), ``SMTP_STARTTLS`` (0/1, off: the relay is on the host or the private network).

Retries: ``MAIL_MAX_ATTEMPTS`` (8) attempts in all, waiting ``MAIL_RETRY_BASE_SECONDS`` (30)
after the first failure and doubling up to ``MAIL_RETRY_MAX_SECONDS`` (3600) — about two hours
of an unreachable relay before a mail ends as ``mail_failed``. ``MAIL_RETRY_TICK_SECONDS`` (1):
how often due mails are looked for. ``MAIL_LEASE_SECONDS`` (120): how long one sender holds
a mail it is delivering before another may take it over (a sender that died).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from nameko.extensions import DependencyProvider

DEFAULT_DISPLAY_NAME = "青森みちのく銀行"


@dataclass(frozen=True)
class Sender:
    address: str
    display_name: str

    def as_dict(self) -> dict:
        return {"address": self.address, "display_name": self.display_name}


def setting(config: dict | None, key: str, default: str | None = None) -> str | None:
    value = (config or {}).get(key)
    if value in (None, ""):
        value = os.environ.get(key)
    return default if value in (None, "") else str(value)


@dataclass(frozen=True)
class MailSettings:
    senders: dict
    message_id_domain: str = "tsunagi.am-bk.co.jp"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_timeout: float = 10.0
    smtp_starttls: bool = False
    max_attempts: int = 8
    retry_base: timedelta = timedelta(seconds=30)
    retry_max: timedelta = timedelta(seconds=3600)
    lease: timedelta = timedelta(seconds=120)

    @classmethod
    def load(cls, config: dict | None = None) -> "MailSettings":
        def get(key, default):
            return setting(config, key, default)

        settings = cls(
            senders={
                "otp": Sender(get("MAIL_FROM_OTP", "no-reply@otp-auth.net"),
                              get("MAIL_FROM_OTP_NAME", DEFAULT_DISPLAY_NAME)),
                "bank": Sender(get("MAIL_FROM_BANK", "no-reply@am-bk.co.jp"),
                               get("MAIL_FROM_BANK_NAME", DEFAULT_DISPLAY_NAME)),
            },
            message_id_domain=get("MAIL_MESSAGE_ID_DOMAIN", "tsunagi.am-bk.co.jp"),
            smtp_host=get("SMTP_HOST", "127.0.0.1"),
            smtp_port=int(get("SMTP_PORT", "8025")),
            smtp_timeout=float(get("SMTP_TIMEOUT_SECONDS", "10")),
            smtp_starttls=get("SMTP_STARTTLS", "0").lower() in ("1", "true", "yes"),
            max_attempts=int(get("MAIL_MAX_ATTEMPTS", "8")),
            retry_base=timedelta(seconds=float(get("MAIL_RETRY_BASE_SECONDS", "30"))),
            retry_max=timedelta(seconds=float(get("MAIL_RETRY_MAX_SECONDS", "3600"))),
            lease=timedelta(seconds=float(get("MAIL_LEASE_SECONDS", "120"))),
        )
        if settings.max_attempts < 1:
            raise ValueError("MAIL_MAX_ATTEMPTS must be at least 1")
        return settings


class MailConfig(DependencyProvider):
    def setup(self):
        self.settings = MailSettings.load(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.settings
