"""TOTP (RFC 6238 with pyotp) and the sealing of TOTP secrets at rest (DESIGN.md "Security
primitives").

A token's secret is 160 random bits (the RFC 4226 recommendation for SHA-1), shown to the
customer once inside the otpauth URI and otherwise kept only sealed: AES-256-GCM under a
master key from ``TOTP_KEYS`` (``kid:base64,…``; the first key seals, every listed key
opens), with the token serial as associated data so a sealed secret cannot be moved to
another token. The AES-GCM primitives are the chassis's (``services.crypto``).
"""
from __future__ import annotations

import base64
import hmac
from datetime import datetime

import pyotp

from services import crypto

ALGORITHM = "SHA1"
DIGITS = 6
PERIOD = 30
WINDOW = 1            # ±1 time step of clock drift between the app and us


def new_secret() -> str:
    """A fresh base32 secret of 160 bits."""
    return pyotp.random_base32(length=32)


def time_step(at: datetime, period: int = PERIOD) -> int:
    return int(at.timestamp()) // period


def code_at_step(secret: str, step: int, digits: int = DIGITS) -> str:
    return pyotp.TOTP(secret, digits=digits, interval=PERIOD).generate_otp(step)


def match_step(secret: str, code: str, at: datetime, *, window: int = WINDOW, digits: int = DIGITS,
               period: int = PERIOD) -> int | None:
    """The time step (within ±``window`` of ``at``) whose code is ``code``, or None.

    Every candidate is computed and compared in constant time, so the answer's timing says
    nothing about which step (if any) matched. The newest matching step wins."""
    now_step = time_step(at, period)
    totp = pyotp.TOTP(secret, digits=digits, interval=period)
    found = None
    for step in range(now_step - window, now_step + window + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            found = step
    return found


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The Key URI authenticator apps read: ``otpauth://totp/<issuer>:<account>?secret=…&issuer=…``
    (label and parameters percent-encoded as UTF-8)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(name=account, issuer_name=issuer)


class SecretBox:
    """Seals and opens TOTP secrets with the configured master keys."""

    def __init__(self, keys_spec: str):
        if not (keys_spec or "").strip():
            raise ValueError("TOTP_KEYS names no key")
        self._keys = crypto.MasterKeys(keys_spec)

    @property
    def current_kid(self) -> str:
        return self._keys.current_kid

    @staticmethod
    def _aad(token_serial: str) -> str:
        return f"totp-secret/{token_serial}"

    def seal(self, token_serial: str, secret: str) -> dict:
        wrapped = self._keys.wrap(self._aad(token_serial), secret.encode("ascii"))
        return {"kid": wrapped.master_kid, "ct": base64.b64encode(wrapped.wrapped).decode("ascii")}

    def open(self, token_serial: str, sealed: dict) -> str:
        wrapped = crypto.WrappedKey(sealed["kid"], base64.b64decode(sealed["ct"]))
        return self._keys.unwrap(self._aad(token_serial), wrapped).decode("ascii")
