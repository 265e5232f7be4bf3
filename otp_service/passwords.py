"""argon2id verifiers of activation passwords (DESIGN.md "Security primitives").

Parameters chosen deliberately: OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane) costs
a few tens of milliseconds here. An activation password has only 4–8 digits, so no hash
makes it strong on its own; what protects it is that it is worthless without the 16-character
User ID and that five wrong tries void the application. The hash keeps it out of the log in
any usable form (the verifier is also an encrypted personal field).

Hashing and verifying run in ``eventlet.tpool`` (real threads; argon2-cffi releases the GIL),
so one activation never stalls every other request of the process.
"""
from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from eventlet import tpool

_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16,
                         type=Type.ID)


def _verify(verifier: str, secret: str) -> bool:
    try:
        return _HASHER.verify(verifier, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def hash_secret(secret: str) -> str:
    return tpool.execute(_HASHER.hash, secret)


def verify_secret(verifier: str | None, secret: str) -> bool:
    if not verifier:
        return False
    return tpool.execute(_verify, verifier, secret)
