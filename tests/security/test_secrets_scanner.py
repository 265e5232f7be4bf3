"""The log scanner of issue 7 item 5 (tests/soak/secrets_scan.py) can fail: every kind of
planted leak is found, and what the services are meant to log (masked forms, timestamps,
positions, ids) is not mistaken for one."""
from __future__ import annotations

import json

import pytest

from tests.soak.secrets_scan import SecretSet, scan

SECRETS = SecretSet(passwords={"Tsunagi25Sk"}, answers={"ねぶた祭"}, totp_secrets={"JBSWY3DPEHPK3PXPJBSWY3DP"},
                    emails={"soak-1a2b3c@example.jp"}, phones={"090-1234-5678"},
                    short_codes={"482913"})

CLEAN = [
    'identity | {"event": "login_succeeded", "customer": "12***89", "timestamp": "2026-11-23T11:42:25.482913Z"}',
    'notifier | {"event": "mail_queued", "to": ["s***@example.jp"], "mail_id": "a482913b-..."}',
    'otp_service | {"event": "otp_application_submitted", "call_from_masked": "*****5678", "position": 4829130}',
    'relay | {"checkpoint": 482913.5, "event": "relay_leading", "elapsed": "0:482913"}',
    'gateway | INFO nameko.web.server: 127.0.0.1 - - "POST /api/v1/login HTTP/1.1" 401 233 0.482913',
]


@pytest.mark.parametrize("line,kind", [
    ('identity | {"event": "login_failed", "password": "Tsunagi25Sk"}', "password"),
    ("secret_questions | registering answer ねぶた祭 for q06", "secret_answer"),
    ('otp_service | secret=jbswy3dpehpk3pxpjbswy3dp issuer=...', "totp_secret"),
    ("otp_service | otpauth://totp/x?secret=JBSWY3DPEHPK3PXPJBSWY3DP&issuer=y", "totp_secret"),
    ('notifier | {"to": "Soak-1A2B3C@example.jp"}', "email"),
    ('phone_auth | {"caller": "+819012345678"}', "phone"),
    ("phone_auth | caller 09012345678 unknown", "phone"),
    ("identity | phones=090-1234-5678", "phone"),
    ('identity | {"event": "login", "otp": "482913"}', "code"),
    ("otp_service | activation password 482913 wrong", "code"),
])
def test_a_planted_leak_is_found(line, kind):
    findings = scan(CLEAN + [line], SECRETS)
    assert [(f.line_no, f.kind) for f in findings] == [(len(CLEAN) + 1, kind)]


def test_masked_values_timestamps_and_ids_are_not_leaks():
    assert scan(CLEAN, SECRETS) == []


def test_the_json_escaped_form_of_a_japanese_answer_is_found_too():
    line = "secret_questions | " + json.dumps({"answer": "ねぶた祭"})        # \\u306d\\u3076...
    assert [f.kind for f in scan([line], SECRETS)] == ["secret_answer"]
