"""TOTP per RFC 6238 (R-INI-6, R-INI-9) and the sealing of secrets at rest."""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from cryptography.exceptions import InvalidTag

from otp_service import totp

# RFC 6238 Appendix B: the SHA-1 seed is the 20 ASCII bytes "12345678901234567890", 8 digits,
# T0 = 0, X = 30 s.
RFC_SEED = base64.b32encode(b"12345678901234567890").decode()
RFC6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize("unix_time,expected", RFC6238_SHA1)
def test_rfc6238_appendix_b_sha1_vectors(unix_time, expected):
    at = datetime.fromtimestamp(unix_time, tz=timezone.utc)
    assert pyotp.TOTP(RFC_SEED, digits=8, interval=30).at(at) == expected
    assert totp.code_at_step(RFC_SEED, totp.time_step(at), digits=8) == expected
    assert totp.match_step(RFC_SEED, expected, at, digits=8) == unix_time // 30


def test_match_accepts_one_step_of_drift_either_way_R_INI_9():
    secret = totp.new_secret()
    at = datetime(2025, 1, 6, 9, 0, 15, tzinfo=timezone.utc)
    step = totp.time_step(at)
    for offset in (-1, 0, 1):
        assert totp.match_step(secret, totp.code_at_step(secret, step + offset), at) == step + offset
    for offset in (-3, -2, 2, 3):
        code = totp.code_at_step(secret, step + offset)
        # (a code may collide with a neighbouring step's code by chance: 1 in a million)
        if all(code != totp.code_at_step(secret, step + o) for o in (-1, 0, 1)):
            assert totp.match_step(secret, code, at) is None


def test_new_secrets_are_160_bit_and_random():
    secrets = {totp.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(base64.b32decode(s)) == 20 for s in secrets)


def test_provisioning_uri_is_the_key_uri_format_R_INI_6():
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, account="TK2345678ABC", issuer="青森みちのく銀行")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert uri.isascii()                                         # percent-encoded UTF-8
    assert unquote(parts.path) == "/青森みちのく銀行:TK2345678ABC"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret] and query["issuer"] == ["青森みちのく銀行"]
    parsed = pyotp.parse_uri(uri)                                # what an authenticator reads back
    assert parsed.secret == secret and parsed.issuer == "青森みちのく銀行"
    assert (parsed.digits, parsed.interval) == (6, 30)


def test_secret_box_seals_with_a_key_id_and_binds_the_token():
    box = totp.SecretBox("new:" + base64.b64encode(b"n" * 32).decode() + ",old:" + base64.b64encode(b"o" * 32).decode())
    secret = totp.new_secret()
    sealed = box.seal("TK2345678ABC", secret)
    assert sealed["kid"] == "new" and secret not in sealed["ct"]
    assert box.open("TK2345678ABC", sealed) == secret
    with pytest.raises(InvalidTag):
        box.open("TKOTHER23456", sealed)        # moved to another token: refused
    old_box = totp.SecretBox("old:" + base64.b64encode(b"o" * 32).decode())
    rotated = totp.SecretBox("new:" + base64.b64encode(b"n" * 32).decode() + ",old:" + base64.b64encode(b"o" * 32).decode())
    assert rotated.open("TK2345678ABC", old_box.seal("TK2345678ABC", secret)) == secret   # key rotation
    with pytest.raises(ValueError):
        totp.SecretBox("")
