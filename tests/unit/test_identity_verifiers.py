"""Password hashing (DESIGN.md "Security primitives"): argon2id with the chosen parameters, the
old system's schemes checked once, and slow hashing kept off the eventlet hub."""
from __future__ import annotations

import base64
import hashlib

import bcrypt
import eventlet

from identity import verifiers


def pbkdf2(password: str, salt: str = "NaCl1234", iterations: int = 1000) -> str:
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(key).decode()}"


def test_argon2id_parameters_are_the_chosen_ones():
    h = verifiers.hash_secret("NewPass12")
    assert h.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verifiers.verify_secret(h, "NewPass12")
    assert not verifiers.verify_secret(h, "newpass12")
    assert not verifiers.needs_rehash(h)
    for junk in (None, "", "plain", "$argon2id$broken"):
        assert not verifiers.verify_secret(junk, "NewPass12")


def test_legacy_pbkdf2_verifier():
    v = pbkdf2("OldPass1")
    assert verifiers.verify_legacy(v, "OldPass1")
    assert not verifiers.verify_legacy(v, "oldpass1")


def test_legacy_bcrypt_verifiers_all_variants():
    h = bcrypt.hashpw(b"OldPass1", bcrypt.gensalt(4)).decode()
    for prefix in ("$2a$", "$2b$", "$2y$"):
        v = prefix + h[4:]
        assert verifiers.verify_legacy(v, "OldPass1")
        assert not verifiers.verify_legacy(v, "OldPass2")


def test_unusable_verifiers_never_match():
    for v in (None, "", "OldPass1", "[redacted]", "pbkdf2_sha256$99999999$s$" + "A" * 44):
        assert not verifiers.verify_legacy(v, "OldPass1")


def test_dummy_verifiers_take_the_shape_of_real_ones():
    verifiers.verify_legacy(pbkdf2("x", iterations=1234), "x")
    assert verifiers.dummy_legacy().startswith("pbkdf2_sha256$1234$")
    assert verifiers.dummy_verify_legacy_green("anything") is False
    assert verifiers.dummy_verify_argon2_green("anything") is False


def test_hashing_in_tpool_does_not_block_other_green_threads():
    """A verify runs in a real thread: while it runs, other green threads keep being served."""
    h = verifiers.hash_secret("NewPass12")
    ticks = []
    done = eventlet.event.Event()

    def ticker():
        while not done.ready():
            ticks.append(1)
            eventlet.sleep(0.001)

    eventlet.spawn(ticker)
    results = [verifiers.verify_secret_green(h, "NewPass12") for _ in range(3)]
    done.send(True)
    assert results == [True, True, True]
    assert len(ticks) > 3   # a blocking verify would have let the ticker run at most once per call
