"""The WebAuthn user handles survive a FIELD_KEYS rotation (review finding 8; SPEC R-INI-8):
``WEBAUTHN_USER_HANDLE_KEY`` pins the key they are derived from (identity/passkeys.py)."""
from __future__ import annotations

import base64

import pytest

from identity import passkeys

OLD = "k2025:" + base64.b64encode(b"o" * 32).decode()
NEW = "k2026:" + base64.b64encode(b"n" * 32).decode()


def handle_key(monkeypatch, field_keys: str, **config) -> bytes:
    monkeypatch.setenv("FIELD_KEYS", field_keys)
    monkeypatch.delenv("WEBAUTHN_USER_HANDLE_KEY", raising=False)
    return passkeys.load_settings(config).handle_key


def test_r_ini_8_user_handles_do_not_change_when_field_keys_rotate(monkeypatch):
    before = handle_key(monkeypatch, OLD)                    # unset: the first FIELD_KEYS entry, as always
    # Pinned to the entry that was first: every existing handle stays, before and after rotation.
    assert handle_key(monkeypatch, OLD, WEBAUTHN_USER_HANDLE_KEY=OLD) == before
    assert handle_key(monkeypatch, f"{NEW},{OLD}", WEBAUTHN_USER_HANDLE_KEY=OLD) == before
    assert handle_key(monkeypatch, NEW, WEBAUTHN_USER_HANDLE_KEY=OLD) == before     # old entry dropped
    # Unpinned, a rotation changes them (what the setting is for).
    assert handle_key(monkeypatch, f"{NEW},{OLD}") != before


def test_user_handle_key_setting_must_be_a_key_entry(monkeypatch):
    with pytest.raises(ValueError):
        handle_key(monkeypatch, OLD, WEBAUTHN_USER_HANDLE_KEY="k:" + base64.b64encode(b"short").decode())
