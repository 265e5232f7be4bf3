"""Scan log text for secrets and personal data the tests used (issue 7 item 5, R-PLT logging).

``scan(lines, secrets)`` returns every (line number, kind, excerpt) where a secret appears:

- passwords, secret answers, TOTP secrets, full e-mail addresses: the exact text, also as
  JSON escapes it (``\\u306d…`` for Japanese answers) (TOTP
  secrets also without their base32 padding, case-insensitive; an e-mail also
  case-insensitive);
- full phone numbers in every notation a log could hold: as given (090-1234-5678), digits only
  (09012345678), E.164 (+819012345678) and E.164 without the plus;
- short numeric secrets (OTP codes, the 6-digit activation password): the digits standing
  alone — not inside a longer number, a time of day (12:34:56.123456), a decimal or an id —
  so that an ordinary number in a log line is not mistaken for a code. Masked forms
  (``*****5678``, ``s***@example.jp``) are what the services are meant to log and never match.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field


@dataclass
class Finding:
    line_no: int
    kind: str
    excerpt: str


@dataclass
class SecretSet:
    passwords: set = field(default_factory=set)
    answers: set = field(default_factory=set)
    totp_secrets: set = field(default_factory=set)
    emails: set = field(default_factory=set)
    phones: set = field(default_factory=set)
    short_codes: set = field(default_factory=set)     # OTP codes, activation passwords

    @classmethod
    def from_loadgen(cls, s) -> "SecretSet":
        return cls(passwords=set(s.passwords), answers=set(s.answers), totp_secrets=set(s.totp_secrets),
                   emails=set(s.emails), phones=set(s.phones),
                   short_codes=set(s.otp_codes) | set(s.activation_passwords))

    def size(self) -> int:
        return sum(len(v) for v in self.__dict__.values())


EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
BASE32_RE = re.compile(r"[A-Za-z2-7]{16,}")
PHONE_RUN_RE = re.compile(r"(?<![\d-])\+?\d[\d-]{7,}\d(?![\d-])")


def _canonical_phone(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return "0" + digits[2:] if digits.startswith("81") and len(digits) >= 11 else digits


class _Matcher:
    """Set look-ups on the tokens of a line instead of one regex per secret: a soak's log has
    tens of thousands of lines and thousands of secrets."""

    def __init__(self, secrets: SecretSet):
        self.literals = []      # (kind, text): few (constants), plain substring checks
        for kind, values in (("password", secrets.passwords), ("secret_answer", secrets.answers)):
            for v in filter(None, values):
                self.literals += [(kind, form) for form in {v, json.dumps(v)[1:-1]}]
        self.emails = {e.lower() for e in secrets.emails if e}
        self.totp = {t.rstrip("=").upper() for t in secrets.totp_secrets if t}
        self.totp_lengths = sorted({len(t) for t in self.totp})
        self.phones = {_canonical_phone(p) for p in secrets.phones if len(re.sub(r"\D", "", p)) >= 10}
        self.codes = set(secrets.short_codes)
        self.code_re = None
        lengths = sorted({len(c) for c in self.codes})
        if lengths:
            # digits standing alone: not in a longer number, a time of day, a decimal or an id
            self.code_re = re.compile(r"(?<![\w.:\-+/])\d{%d,%d}(?![\w.:\-/])" % (lengths[0], lengths[-1]))

    def first(self, line: str):
        for kind, text in self.literals:
            i = line.find(text)
            if i >= 0:
                return kind, i, i + len(text)
        if self.emails:
            for m in EMAIL_RE.finditer(line):
                if m.group().lower() in self.emails:
                    return "email", m.start(), m.end()
        if self.totp:
            for m in BASE32_RE.finditer(line):
                token = m.group().upper()
                for n in self.totp_lengths:
                    if any(token[i:i + n] in self.totp for i in range(0, len(token) - n + 1)):
                        return "totp_secret", m.start(), m.end()
        if self.phones:
            for m in PHONE_RUN_RE.finditer(line):
                if _canonical_phone(m.group()) in self.phones:
                    return "phone", m.start(), m.end()
        if self.code_re is not None:
            for m in self.code_re.finditer(line):
                if m.group() in self.codes:
                    return "code", m.start(), m.end()
        return None


def scan(lines, secrets: SecretSet, limit: int = 50) -> list[Finding]:
    matcher = _Matcher(secrets)
    findings: list[Finding] = []
    for no, line in enumerate(lines, 1):
        hit = matcher.first(line)
        if hit:
            kind, start, end = hit
            findings.append(Finding(no, kind, line[max(0, start - 60):end + 40]))
            if len(findings) >= limit:
                return findings
    return findings


def scan_file(path, secrets: SecretSet, limit: int = 50) -> list[Finding]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return scan(f, secrets, limit)
