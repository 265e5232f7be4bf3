"""Field encryption and master-key rotation (crypto-shredding building blocks)."""
from __future__ import annotations

import base64
import os

import pytest
from cryptography.exceptions import InvalidTag

from services import crypto

OLD = "old2024:" + base64.b64encode(b"o" * 32).decode()
NEW = "new2025:" + base64.b64encode(b"n" * 32).decode()


def test_key_wrapped_under_old_master_unwraps_after_rotation():
    """FIELD_KEYS gets a new current key first; keys wrapped under the old one still open."""
    before = crypto.MasterKeys(OLD)
    dk = crypto.new_data_key()
    wrapped = before.wrap("c1", dk)
    assert wrapped.master_kid == "old2024"

    after = crypto.MasterKeys(f"{NEW},{OLD}")
    assert after.current_kid == "new2025"
    assert after.unwrap("c1", wrapped) == dk
    rewrapped = after.wrap("c1", dk)
    assert rewrapped.master_kid == "new2025" and after.unwrap("c1", rewrapped) == dk

    with pytest.raises(KeyError, match="old2024"):
        crypto.MasterKeys(NEW).unwrap("c1", wrapped)     # the old key removed too early


def test_wrapped_key_is_bound_to_its_subject():
    mk = crypto.MasterKeys(NEW)
    wrapped = mk.wrap("c1", crypto.new_data_key())
    with pytest.raises(InvalidTag):
        mk.unwrap("c2", wrapped)


def test_seal_and_open_value():
    dk = crypto.new_data_key()
    sealed = crypto.seal_value(dk, "c1", "email", "taro@example.jp")
    assert crypto.is_sealed(sealed) and "taro" not in str(sealed)
    assert crypto.open_value(dk, "email", sealed) == "taro@example.jp"
    assert crypto.open_value(dk, "name", crypto.seal_value(dk, "c1", "name", "山田太郎")) == "山田太郎"
    assert crypto.open_value(dk, "x", crypto.seal_value(dk, "c1", "x", {"a": [1]})) == {"a": [1]}
    assert crypto.seal_value(dk, "c1", "email", "a") != crypto.seal_value(dk, "c1", "email", "a")


def test_sealed_value_cannot_be_moved_to_another_field():
    dk = crypto.new_data_key()
    sealed = crypto.seal_value(dk, "c1", "email", "taro@example.jp")
    with pytest.raises(InvalidTag):
        crypto.open_value(dk, "phone", sealed)
    with pytest.raises(InvalidTag):
        crypto.open_value(crypto.new_data_key(), "email", sealed)


def test_destroyed_key_reads_as_redacted():
    sealed = crypto.seal_value(crypto.new_data_key(), "c1", "email", "taro@example.jp")
    assert crypto.open_value(None, "email", sealed) == crypto.REDACTED
    assert not crypto.is_sealed("plain") and not crypto.is_sealed({"a": 1})


@pytest.mark.parametrize("spec", ["", " , ", "k:" + base64.b64encode(os.urandom(20)).decode()])
def test_bad_master_key_configuration_is_refused(spec):
    with pytest.raises(ValueError):
        crypto.MasterKeys(spec)
