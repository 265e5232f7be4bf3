"""Password hashing and verification: argon2id for everything new, the old system's schemes
(pbkdf2_sha256, bcrypt) only to check an imported verifier once before it is replaced.

argon2id parameters: **t=2 (iterations), m=19 MiB (19456 KiB), p=1 (lanes), 16-byte salt,
32-byte hash** — OWASP's Password Storage Cheat Sheet's second recommended configuration
(equivalent in strength to its m=46 MiB, t=1 choice), not argon2-cffi's default of t=3,
m=64 MiB, p=4. Why:

- The secrets are short (6–12 alphanumerics, answers ≤ 10 characters), so a memory-hard
  function matters against an offline attacker, and 19 MiB per guess already denies GPUs most
  of their parallelism.
- Cut-over day brings hundreds of thousands of logins and every login is one verify. On this
  2-core machine one verify takes 17 ms with these parameters on an idle core (median of 30;
  42 ms while other work shared the cores), against 106 ms (220 ms loaded) for argon2-cffi's
  defaults: ≈ 55 verifies per second per core instead of ≈ 9, about 110/s for the machine.
- p=1: a verify stays on one core, and throughput comes from verifying several logins in
  parallel threads; with p=4 one login would occupy every core for its whole duration.

Online guessing is stopped by the lockout (R-RBA-2), not by the hash cost.

Hashing is CPU-bound and would stall every green thread of the Nameko process (DESIGN.md
"Nameko under eventlet"), so the service calls the ``*_green`` functions, which run the work in
``eventlet.tpool`` — real OS threads; argon2-cffi, bcrypt and hashlib release the GIL.

Hashes whose parameters differ from these still verify (the parameters travel inside the hash
string), so the parameters can be raised later; ``needs_rehash`` tells which hashes to renew.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading

import bcrypt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from eventlet import tpool
from eventlet.semaphore import Semaphore

from identity.domain.legacy_record import RecordRejected, parse_verifier

TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1
HASH_LEN = 32
SALT_LEN = 16

HASHER = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM,
                        hash_len=HASH_LEN, salt_len=SALT_LEN, type=Type.ID)
PARAMETERS = {"type": "argon2id", "time_cost": TIME_COST, "memory_cost_kib": MEMORY_COST_KIB,
              "parallelism": PARALLELISM, "hash_len": HASH_LEN, "salt_len": SALT_LEN}


# -- argon2id --------------------------------------------------------------------------------

def hash_secret(secret: str) -> str:
    return HASHER.hash(secret)


def verify_secret(hashed: str | None, secret: str) -> bool:
    """Constant-time inside argon2; False for a mismatch and for anything that is not a hash."""
    if not hashed or not isinstance(hashed, str):
        return False
    try:
        return HASHER.verify(hashed, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    return HASHER.check_needs_rehash(hashed)


# A real hash of a random secret: unknown login IDs are "verified" against it so that they
# cost the same time as a wrong password (no enumeration by timing).
_DUMMY_ARGON2 = None
_dummy_lock = threading.Lock()


def dummy_argon2() -> str:
    global _DUMMY_ARGON2
    with _dummy_lock:
        if _DUMMY_ARGON2 is None:
            _DUMMY_ARGON2 = hash_secret(base64.b64encode(os.urandom(18)).decode())
        return _DUMMY_ARGON2


# -- legacy ----------------------------------------------------------------------------------

def verify_legacy(verifier: str | None, password: str) -> bool:
    """Check ``password`` against an imported verifier of the old system."""
    if not verifier or not isinstance(verifier, str):
        return False
    try:
        spec = parse_verifier(verifier)
    except RecordRejected:
        return False
    secret = password.encode()
    if spec.scheme == "pbkdf2_sha256":
        derived = hashlib.pbkdf2_hmac("sha256", secret, spec.salt.encode(), spec.cost, dklen=len(spec.key))
        _dummies.observe(spec)
        return hmac.compare_digest(derived, spec.key)
    _dummies.observe(spec)
    try:
        return bcrypt.checkpw(secret, verifier.encode())
    except ValueError:
        return False


class _LegacyDummies:
    """A verifier shaped like the legacy verifiers actually seen (same scheme and cost), used
    for unknown customer numbers so they take as long as a wrong password of a real one. The
    old system used one scheme and cost for everyone, so the last one seen is representative;
    until one is seen, pbkdf2_sha256 with 100,000 iterations stands in."""

    def __init__(self):
        self._lock = threading.Lock()
        self._shape = ("pbkdf2_sha256", 100_000)
        self._cache: dict[tuple, str] = {}

    def observe(self, spec) -> None:
        self._shape = (spec.scheme, spec.cost)

    def verifier(self) -> str:
        shape = self._shape
        with self._lock:
            if shape not in self._cache:
                scheme, cost = shape
                if scheme == "bcrypt":
                    v = bcrypt.hashpw(os.urandom(12), bcrypt.gensalt(cost)).decode()
                else:
                    salt = base64.b64encode(os.urandom(9)).decode()
                    key = hashlib.pbkdf2_hmac("sha256", os.urandom(12), salt.encode(), 1)
                    v = f"pbkdf2_sha256${cost}${salt}${base64.b64encode(key).decode()}"
                self._cache[shape] = v
            return self._cache[shape]


_dummies = _LegacyDummies()


def dummy_legacy() -> str:
    return _dummies.verifier()


# -- green wrappers: the slow work in real threads ----------------------------------------------

# At most one hash per CPU at a time. 20 concurrent argon2id runs of 19 MiB each no longer fit
# the caches and take turns on the cores, which cost ~15% more CPU per verify on this 2-core
# machine (login bench) than one run per core. Green threads over the limit wait in the hub,
# in order, which costs nothing; the work per hash is unchanged. The launcher also sizes tpool
# to one thread per CPU (services/cli/_launch.py thread_pool_size); this limit still holds where
# tpool is larger: services run in-process by tests, or an operator's EVENTLET_THREADPOOL_SIZE.
_HASH_SLOTS = Semaphore(max(1, len(os.sched_getaffinity(0))))


def _in_thread(func, *args):
    with _HASH_SLOTS:
        return tpool.execute(func, *args)


def hash_secret_green(secret: str) -> str:
    return _in_thread(hash_secret, secret)


def verify_secret_green(hashed: str | None, secret: str) -> bool:
    return _in_thread(verify_secret, hashed, secret)


def verify_legacy_green(verifier: str | None, password: str) -> bool:
    return _in_thread(verify_legacy, verifier, password)


def dummy_verify_argon2_green(secret: str) -> bool:
    verify_secret_green(dummy_argon2(), secret)
    return False


def dummy_verify_legacy_green(secret: str) -> bool:
    verifier = dummy_legacy()
    _in_thread(verify_legacy_unobserved, verifier, secret)
    return False


def verify_legacy_unobserved(verifier: str, password: str) -> bool:
    """verify_legacy without teaching the dummy shape (the dummy must not train itself)."""
    spec = parse_verifier(verifier)
    if spec.scheme == "pbkdf2_sha256":
        derived = hashlib.pbkdf2_hmac("sha256", password.encode(), spec.salt.encode(), spec.cost,
                                      dklen=len(spec.key))
        return hmac.compare_digest(derived, spec.key)
    return bcrypt.checkpw(password.encode(), verifier.encode())
