"""Field encryption for personal data in events (AES-256-GCM, per-subject data keys).

Master keys come from configuration with key ids; a data key per subject (customer) is wrapped
by the current master key and kept in ``eventstore.subject_keys``. Destroying that row
crypto-shreds every personal field of the subject while the log itself stays untouched.

Key rotation (envelope encryption): ``FIELD_KEYS`` lists ``kid:base64key`` entries, the first
is current. Prepend a new key (``tsunagi keys new-key``) and restart: new subject keys are
wrapped by it, while every older entry still unwraps the subject keys it wrapped (each row
names its master key id, ``master_kid``). ``tsunagi keys rotate`` then rewraps the remaining
rows under the current key (the data keys, and so the ciphertext in the immutable log, stay as
they are); once ``tsunagi keys status`` shows no row under an old id, drop it from FIELD_KEYS.
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

    @property
    def kids(self) -> list[str]:
        """Configured key ids, the current one first."""
        return list(self._keys)

    def rewrap(self, subject: str, wk: WrappedKey) -> WrappedKey:
        """``wk`` wrapped by the current master key (unchanged if it already is)."""
        if wk.master_kid == self.current_kid:
            return wk
        return self.wrap(subject, self.unwrap(subject, wk))

    def wrap(self, subject: str, data_key: bytes) -> WrappedKey:
        nonce = os.urandom(12)
        ct = AESGCM(self._keys[self.current_kid]).encrypt(nonce, data_key, subject.encode())
        return WrappedKey(self.current_kid, nonce + ct)

    def unwrap(self, subject: str, wk: WrappedKey) -> bytes:
        key = self._keys.get(wk.master_kid)
        if key is None:
            raise KeyError(f"master key {wk.master_kid!r} is not configured")
        return AESGCM(key).decrypt(wk.wrapped[:12], wk.wrapped[12:], subject.encode())


def new_master_key_entry(kid: str) -> str:
    """A fresh 256-bit master key as a ``kid:base64`` entry for FIELD_KEYS / TOTP_KEYS."""
    if not kid or any(ch in kid for ch in ":, \t\n"):
        raise ValueError("a key id must be non-empty without ':', ',' or spaces")
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal_value(data_key: bytes, subject: str, field_name: str, value) -> dict:
    """Encrypt one JSON value. The field name is authenticated so values cannot be swapped."""
    import json
    nonce = os.urandom(12)
    plaintext = json.dumps(value, ensure_ascii=False).encode()
    ct = AESGCM(data_key).encrypt(nonce, plaintext, f"{subject}/{field_name}".encode())
    return {MARK: 1, "s": subject, "c": base64.b64encode(nonce + ct).decode()}


def seal_value_deterministic(data_key: bytes, subject: str, field_name: str, value) -> dict:
    """Like ``seal_value``, but the same value always gives the same ciphertext.

    For read-model columns: a rebuild by replay must produce byte-identical rows so that
    ``tsunagi replay --check`` can compare them. The nonce is an HMAC of the authenticated
    context and the plaintext under the data key (the SIV idea), so a nonce repeats only with
    the same plaintext: all an observer learns is that two rows hold equal values.
    """
    import hashlib
    import hmac
    import json
    plaintext = json.dumps(value, ensure_ascii=False).encode()
    aad = f"{subject}/{field_name}".encode()
    nonce = hmac.new(data_key, aad + b"\0" + plaintext, hashlib.sha256).digest()[:12]
    ct = AESGCM(data_key).encrypt(nonce, plaintext, aad)
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
