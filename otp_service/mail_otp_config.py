"""Settings and keys of the mail notification password (Nameko config key, else environment
variable, else the default).

- ``MAIL_OTP_TTL_SECONDS`` (600): how long a code is valid (the guide names no figure; ten
  minutes is long enough to switch to the phone that receives the mail).
- ``MAIL_OTP_MAX_ATTEMPTS`` (5): wrong entries that void one code.
- ``MAIL_OTP_LOCK_THRESHOLD`` (5; falls back to ``LOCKOUT_THRESHOLD``): consecutive wrong
  entries, across codes, that lock the credential (R-RBA-2). Issuing new codes therefore does
  not buy an attacker new guesses.
- ``MAIL_OTP_LOCK_RELEASE_SECONDS`` (0 = only an operator unlocks).
- ``MAIL_OTP_SWEEP_SECONDS`` (15): how often expired codes are closed (and their sealing keys
  destroyed) when nobody enters them.
- ``MAIL_OTP_KEYS`` — ``kid:base64key,…`` HMAC keys (first one signs new codes; all verify).
  The default is a development key: production must set its own, kept out of the database.

Why HMAC-SHA256 with a server key, not argon2id: a code has 10^6 values, so no password hash
makes a stolen verifier safe (argon2id at ~50 ms costs an attacker 14 CPU-hours for all of
them, less on a GPU farm), while it would cost every issue and every entry real CPU in the
eventlet process. Keyed HMAC makes an offline search impossible without a key that is not in
the database or the log, costs microseconds, and binds the issue id and customer number so a
code never verifies anywhere else. The operation digest is keyed for the same reason: it is
stored in plain and must not let anyone search the small space of amounts and accounts.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from nameko.extensions import DependencyProvider

from otp_service import mail_otp
from services import crypto
from services.config import ConfigReader
from services.deployment import DEV_MAIL_OTP_KEYS   # published: refused in production


class MailOtpKeys:
    def __init__(self, spec: str):
        self._keys = crypto.parse_master_keys(spec)
        self.current_kid = next(iter(self._keys))

    def has(self, kid: str) -> bool:
        return kid in self._keys

    def _mac(self, kid: str, *parts: str) -> str:
        message = "\x1f".join(parts).encode()
        return hmac.new(self._keys[kid], message, hashlib.sha256).hexdigest()

    def code_mac(self, kid: str, customer_number: str, issue_id: str, code: str) -> str:
        return self._mac(kid, "mail-otp/v1", customer_number, issue_id, code)

    def operation_digest(self, kid: str, canonical_json: str) -> str:
        return self._mac(kid, "operation/v1", canonical_json)

    def matches(self, kid: str, mac: str, customer_number: str, issue_id: str, code: str) -> bool:
        if not self.has(kid):
            return False
        return hmac.compare_digest(self.code_mac(kid, customer_number, issue_id, code), mac)


def new_code() -> str:
    return f"{secrets.randbelow(10 ** mail_otp.CODE_DIGITS):0{mail_otp.CODE_DIGITS}d}"


@dataclass(frozen=True)
class MailOtpSettings:
    ttl: timedelta = mail_otp.DEFAULT_TTL
    max_attempts: int = mail_otp.DEFAULT_MAX_ATTEMPTS
    lock_threshold: int = mail_otp.DEFAULT_LOCK_THRESHOLD
    lock_release: timedelta | None = None
    sweep_seconds: float = 15.0
    keys_spec: str = field(default=DEV_MAIL_OTP_KEYS, repr=False)

    @classmethod
    def load(cls, config: dict | None = None) -> "MailOtpSettings":
        reader = ConfigReader(config)
        raw = reader.raw

        def number(key, default, fallback=None):
            return reader.number(key, default, fallback, kind=float)

        release = number("MAIL_OTP_LOCK_RELEASE_SECONDS", 0)
        settings = cls(
            ttl=timedelta(seconds=number("MAIL_OTP_TTL_SECONDS", mail_otp.DEFAULT_TTL.total_seconds())),
            max_attempts=int(number("MAIL_OTP_MAX_ATTEMPTS", mail_otp.DEFAULT_MAX_ATTEMPTS)),
            lock_threshold=int(number("MAIL_OTP_LOCK_THRESHOLD", mail_otp.DEFAULT_LOCK_THRESHOLD,
                                      fallback="LOCKOUT_THRESHOLD")),
            lock_release=timedelta(seconds=release) if release > 0 else None,
            sweep_seconds=number("MAIL_OTP_SWEEP_SECONDS", 15.0),
            keys_spec=raw("MAIL_OTP_KEYS") or DEV_MAIL_OTP_KEYS,
        )
        if settings.ttl <= timedelta(0):
            raise ValueError("MAIL_OTP_TTL_SECONDS must be positive")
        for name in ("max_attempts", "lock_threshold"):
            if getattr(settings, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        return settings


class MailOtpConfig(DependencyProvider):
    """``self.mail_otp_cfg.settings`` (MailOtpSettings) and ``.keys`` (MailOtpKeys)."""

    def setup(self):
        self.settings = MailOtpSettings.load(self.container.config)
        self.keys = MailOtpKeys(self.settings.keys_spec)

    def get_dependency(self, worker_ctx):
        return self
