"""otp_service settings: Nameko config key, else environment variable, else the default.

- ``OTP_SERVICE_ID`` — the bank's Service ID that the OTP app asks for (step 8), the same for
  every token of the bank. Default ``AMBK000117``: "AMBK" and the merged bank's code 0117,
  ten characters as the guide's ``xxxxxxxxxx`` shows. Set the one the OTP app vendor assigned.
- ``TOTP_KEYS`` — ``kid:base64key,…`` master keys sealing TOTP secrets (first one seals). The
  default is a development key: production must set its own.
- ``OTP_ACTIVATION_MAX_FAILURES`` (5), ``OTP_MAX_TOKENS_PER_APP`` (10),
  ``OTP_LOCK_THRESHOLD`` (5; falls back to ``LOCKOUT_THRESHOLD``),
  ``OTP_LOCK_RELEASE_SECONDS`` (0 = only an operator unlocks; R-RBA-2 "as configured"),
  ``OTP_CALL_WINDOW_GRACE_SECONDS`` (15: how long after the call window an application still
  counts as waiting when phone_auth's expiry report is late).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from nameko.extensions import DependencyProvider

from otp_service import domain
from services.config import ConfigReader
from services.deployment import DEV_TOTP_KEYS   # published: refused in production


@dataclass(frozen=True)
class OtpSettings:
    service_id: str = "AMBK000117"
    totp_keys: str = DEV_TOTP_KEYS
    activation_max_failures: int = domain.DEFAULT_ACTIVATION_MAX_FAILURES
    max_tokens_per_app: int = domain.DEFAULT_MAX_TOKENS_PER_APP
    lock_threshold: int = domain.DEFAULT_OTP_LOCK_THRESHOLD
    lock_release: timedelta | None = None
    grace: timedelta = timedelta(seconds=15)

    @classmethod
    def load(cls, config: dict | None = None) -> "OtpSettings":
        reader = ConfigReader(config)
        raw = reader.raw

        def number(key, default, fallback=None):
            return reader.number(key, default, fallback, kind=int)

        release = number("OTP_LOCK_RELEASE_SECONDS", 0)
        settings = cls(
            service_id=raw("OTP_SERVICE_ID") or cls.service_id,
            totp_keys=raw("TOTP_KEYS") or DEV_TOTP_KEYS,
            activation_max_failures=number("OTP_ACTIVATION_MAX_FAILURES", cls.activation_max_failures),
            max_tokens_per_app=number("OTP_MAX_TOKENS_PER_APP", cls.max_tokens_per_app),
            lock_threshold=number("OTP_LOCK_THRESHOLD", cls.lock_threshold, fallback="LOCKOUT_THRESHOLD"),
            lock_release=timedelta(seconds=release) if release > 0 else None,
            grace=timedelta(seconds=number("OTP_CALL_WINDOW_GRACE_SECONDS", 15)),
        )
        for name in ("activation_max_failures", "max_tokens_per_app", "lock_threshold"):
            if getattr(settings, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        return settings


class OtpConfig(DependencyProvider):
    """``self.cfg.settings`` (OtpSettings) and ``self.cfg.box`` (the TOTP secret sealer)."""

    def setup(self):
        from otp_service.totp import SecretBox
        self.settings = OtpSettings.load(self.container.config)
        self.box = SecretBox(self.settings.totp_keys)

    def get_dependency(self, worker_ctx):
        return self
