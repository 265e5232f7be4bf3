"""Field encryption for personal data in events (AES-256-GCM, per-subject data keys).

Master keys come from configuration with key ids; a data key per subject (customer) is wrapped
by the current master key and kept in ``eventstore.subject_keys``. Destroying that row
crypto-shreds every personal field of the subject while the log itself stays untouched.
"""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

REDACTED = "[redacted]"
MARK = "$pii"


def parse_master_keys(spec: str) -> dict[str, bytes]:
    """``kid:base64,kid:base64`` → {kid: key}. The first entry is the current key."""
    keys: dict[str, bytes] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kid, _, b64 = part.partition(":")
        key = base64.b64decode(b64)
        if len(key) not in (16, 24, 32):
            raise ValueError(f"master key {kid!r} must be 16, 24 or 32 bytes")
        keys[kid] = key
    if not keys:
        raise ValueError("FIELD_KEYS names no key")
    return keys


@dataclass(frozen=True)
class WrappedKey:
    master_kid: str
    wrapped: bytes


class MasterKeys:
    def __init__(self, spec: str) -> None:
        self._keys = parse_master_keys(spec)
        self.current_kid = next(iter(self._keys))

    def wrap(self, subject: str, data_key: bytes) -> WrappedKey:
        nonce = os.urandom(12)
        ct = AESGCM(self._keys[self.current_kid]).encrypt(nonce, data_key, subject.encode())
        return WrappedKey(self.current_kid, nonce + ct)

    def unwrap(self, subject: str, wk: WrappedKey) -> bytes:
        key = self._keys.get(wk.master_kid)
        if key is None:
            raise KeyError(f"master key {wk.master_kid!r} is not configured")
        return AESGCM(key).decrypt(wk.wrapped[:12], wk.wrapped[12:], subject.encode())


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal_value(data_key: bytes, subject: str, field_name: str, value) -> dict:
    """Encrypt one JSON value. The field name is authenticated so values cannot be swapped."""
    import json
    nonce = os.urandom(12)
    plaintext = json.dumps(value, ensure_ascii=False).encode()
    ct = AESGCM(data_key).encrypt(nonce, plaintext, f"{subject}/{field_name}".encode())
    return {MARK: 1, "s": subject, "c": base64.b64encode(nonce + ct).decode()}


def open_value(data_key: bytes | None, field_name: str, sealed: dict):
    import json
    if data_key is None:
        return REDACTED
    raw = base64.b64decode(sealed["c"])
    pt = AESGCM(data_key).decrypt(raw[:12], raw[12:], f"{sealed['s']}/{field_name}".encode())
    return json.loads(pt)


def is_sealed(value) -> bool:
    return isinstance(value, dict) and MARK in value
