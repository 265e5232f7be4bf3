"""Key rotation of the field-encryption master key (issue 7 item 5; SPEC R-PLT-2 personal data
encrypted at rest; services/crypto.py, services/eventstore/keyring.py, `tsunagi keys`).

A new master key becomes current by being put first in FIELD_KEYS: personal fields written
before still read (their subject keys name the old key id), subject keys created after are
wrapped by the new key, `tsunagi keys rotate` rewraps the old rows, and then the old key can
go. TOTP_KEYS rotates the same way (the sealed secret carries its kid).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

from contracts.events import Actor, Metadata, NewEvent, register
from otp_service.totp import SecretBox
from services import crypto
from services.eventstore import NO_STREAM, EventStore
from services.eventstore.factory import open_pool
from services.eventstore.keyring import KeyRing
from tests.conftest import unique
from tests.e2e.conftest import ROOT

META = Metadata(actor=Actor("system", "test"), service="test")
PERSON = register(unique("test_rotation_person_"), "test_identity", personal_fields=("email", "phone"))
OLD = crypto.new_master_key_entry("old2025")
NEW = crypto.new_master_key_entry("new2026")


def store_with(url: str, spec: str) -> EventStore:
    return EventStore(open_pool(url, max_size=2), KeyRing(crypto.MasterKeys(spec), ttl=0))


def person(email: str) -> NewEvent:
    return NewEvent(PERSON.name, {"email": email, "phone": "+819011112222", "plan": "basic"})


def key_rows(url: str) -> dict[str, tuple[str, bytes]]:
    with psycopg.connect(url) as conn:
        return {s: (k, bytes(w)) for s, k, w in conn.execute(
            "SELECT subject, master_kid, wrapped_key FROM eventstore.subject_keys")}


def keys_cli(url: str, spec: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "FIELD_KEYS": spec}
    return subprocess.run([sys.executable, "-m", "services.cli", "keys", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_r_plt_2_field_key_rotation_old_reads_new_writes_then_rewrap(scratch_db):
    a, b = unique("c"), unique("c")
    old_store = store_with(scratch_db, OLD)
    old_store.append(f"person-{a}", [person("a-rotation@example.jp")], NO_STREAM, META)
    old_store.pool.close()
    rows = key_rows(scratch_db)
    assert rows[a][0] == "old2025"

    # The new key first, the old one still listed: old ciphertext reads, new subjects use new.
    rotated = store_with(scratch_db, f"{NEW},{OLD}")
    (ea,) = rotated.read_stream(f"person-{a}")
    assert ea.data["email"] == "a-rotation@example.jp"
    rotated.append(f"person-{b}", [person("b-rotation@example.jp")], NO_STREAM, META)
    rows = key_rows(scratch_db)
    assert rows[b][0] == "new2026" and rows[a][0] == "old2025"
    # Really the new key: a reader with only the old key cannot open b's key.
    only_old = store_with(scratch_db, OLD)
    with pytest.raises(KeyError):
        only_old.read_stream(f"person-{b}")
    only_old.pool.close()

    # `tsunagi keys status` names both ids; `rotate` rewraps a's row under the current key.
    r = keys_cli(scratch_db, f"{NEW},{OLD}", "status", "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["current"] == "new2026" and status["subject_keys"] == {"new2026": 1, "old2025": 1}
    r = keys_cli(scratch_db, f"{NEW},{OLD}", "rotate", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rewrapped"] == 1
    after = key_rows(scratch_db)
    assert after[a][0] == "new2026" and after[a][1] != rows[a][1]
    assert after[b] == rows[b]                               # already current: untouched
    assert keys_cli(scratch_db, f"{NEW},{OLD}", "rotate", "--json").stdout.count('"rewrapped": 0') == 1

    # The old key can go: both customers' fields read with the new key alone, the log unchanged.
    rotated.pool.close()
    new_only = store_with(scratch_db, NEW)
    assert new_only.read_stream(f"person-{a}")[0].data["email"] == "a-rotation@example.jp"
    assert new_only.read_stream(f"person-{b}")[0].data["email"] == "b-rotation@example.jp"
    new_only.pool.close()
    verify = subprocess.run([sys.executable, "-m", "services.cli", "verify"], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "DATABASE_URL": scratch_db}, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_keys_status_fails_when_a_row_is_under_a_key_that_is_not_configured(scratch_db):
    s = store_with(scratch_db, OLD)
    s.append(f"person-{unique('c')}", [person("x-rotation@example.jp")], NO_STREAM, META)
    s.pool.close()
    r = keys_cli(scratch_db, NEW, "status", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["unknown"] == ["old2025"]


def test_rewrap_keeps_the_data_key_and_moves_it_to_the_current_master():
    old, both = crypto.MasterKeys(OLD), crypto.MasterKeys(f"{NEW},{OLD}")
    data_key = crypto.new_data_key()
    wk = old.wrap("c1", data_key)
    moved = both.rewrap("c1", wk)
    assert moved.master_kid == "new2026" and crypto.MasterKeys(NEW).unwrap("c1", moved) == data_key
    assert both.rewrap("c1", moved) is moved
    with pytest.raises(Exception):               # the subject is authenticated: no swapping rows
        both.unwrap("c2", moved)


def test_totp_keys_rotate_the_same_way():
    old_box = SecretBox(OLD)
    sealed = old_box.seal("SER0001", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    box = SecretBox(f"{NEW},{OLD}")
    assert box.open("SER0001", sealed) == "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    fresh = box.seal("SER0002", "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU")
    assert fresh["kid"] == "new2026" and sealed["kid"] == "old2025"
    with pytest.raises(Exception):
        SecretBox(OLD).open("SER0002", fresh)


def test_new_master_key_entry_is_a_valid_field_keys_entry():
    entry = crypto.new_master_key_entry("k2026")
    assert crypto.MasterKeys(entry).current_kid == "k2026"
    with pytest.raises(ValueError):
        crypto.new_master_key_entry("bad:id")
