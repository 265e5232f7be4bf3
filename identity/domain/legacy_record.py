"""One legacy customer record (R-LEG-1): validation and normalisation, pure.

Verifier schemes of the old system:
- ``pbkdf2_sha256$<iterations>$<salt>$<base64 of the derived key>`` (Django's layout);
  iterations 1 … 10,000,000 (more is refused: a verify would take minutes and could be used
  to stall the service).
- bcrypt ``$2a$`` / ``$2b$`` / ``$2y$`` with cost 4 … 16.
Anything else — plaintext included — is refused: we never import a password we could read.

Phones: ``;``-separated Japanese numbers in any common notation (``03-1234-5678``,
``(03)1234-5678``, ``090 1234 5678``, full-width ``０９０－１２３４－５６７８``, ``+81-90-…``), normalised
to E.164 with ``phonenumbers``. Numbers that are not valid Japanese numbers are dropped with a
warning; a record needs at least one valid number (the OTP application needs one to call from).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field

import phonenumbers

from identity.domain import messages as msg

FIELDS = ("customer_number", "login_password_verifier", "confirmation_pin_verifier", "phones", "email")
MAX_FIELD = {"customer_number": 32, "login_password_verifier": 255, "confirmation_pin_verifier": 255,
             "phones": 500, "email": 254}
MAX_PHONES = 10
PBKDF2_MAX_ITERATIONS = 10_000_000
BCRYPT_COST = (4, 16)

_PBKDF2 = re.compile(r"pbkdf2_sha256\$([0-9]{1,9})\$([^$\s]{1,128})\$([A-Za-z0-9+/]+={0,2})")
_BCRYPT = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)"
                    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
# Separators people write inside phone numbers that NFKC does not turn into ASCII.
_PHONE_NOISE = re.compile(r"[\s\-‐‑‒–—―ー−‐()（）.]")


class RecordRejected(Exception):
    def __init__(self, reason: str, **fmt):
        self.reason = reason
        self.message = msg.IMPORT_REASONS[reason].format(**fmt)
        super().__init__(reason)


@dataclass(frozen=True)
class VerifierSpec:
    scheme: str         # pbkdf2_sha256 | bcrypt
    cost: int           # iterations | log2 rounds
    salt: str = ""
    key: bytes = b""


def parse_verifier(text: str, field_name: str = "verifier") -> VerifierSpec:
    if _PBKDF2.fullmatch(text):
        m = _PBKDF2.fullmatch(text)
        iterations = int(m.group(1))
        if not 1 <= iterations <= PBKDF2_MAX_ITERATIONS:
            raise RecordRejected("verifier_cost_out_of_range", field=field_name)
        try:
            key = base64.b64decode(m.group(3), validate=True)
        except (binascii.Error, ValueError):
            raise RecordRejected("invalid_verifier", field=field_name) from None
        if not 16 <= len(key) <= 64:
            raise RecordRejected("invalid_verifier", field=field_name)
        return VerifierSpec("pbkdf2_sha256", iterations, m.group(2), key)
    if text.startswith("pbkdf2_sha256$"):
        raise RecordRejected("invalid_verifier", field=field_name)
    m = _BCRYPT.fullmatch(text)
    if m:
        cost = int(m.group(1))
        if not BCRYPT_COST[0] <= cost <= BCRYPT_COST[1]:
            raise RecordRejected("verifier_cost_out_of_range", field=field_name)
        return VerifierSpec("bcrypt", cost)
    if re.match(r"\$2[aby]\$", text):
        raise RecordRejected("invalid_verifier", field=field_name)
    raise RecordRejected("unknown_verifier_scheme", field=field_name)


def normalise_phone(raw: str) -> str | None:
    """E.164 of a valid Japanese number, or None."""
    cleaned = _PHONE_NOISE.sub("", unicodedata.normalize("NFKC", raw))
    if not cleaned or len(cleaned) > 20 or not re.fullmatch(r"\+?[0-9]+", cleaned):
        return None
    try:
        number = phonenumbers.parse(cleaned, "JP")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number) or phonenumbers.region_code_for_number(number) != "JP":
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """``*****1234``: only the last four digits, as the OTP application screen shows them."""
    return "*****" + e164[-4:]


def phone_id(customer_number: str, e164: str) -> str:
    """Stable while the number stays registered, whatever the list's order."""
    return hashlib.sha256(f"{customer_number}:{e164}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LegacyRecord:
    customer_number: str
    login_password_verifier: str
    confirmation_pin_verifier: str
    phones: tuple[str, ...]
    email: str | None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def digest(self) -> str:
        """Identity of the content, for idempotent re-imports. Covers the verifiers (random
        salts) so the digest cannot be used to confirm a guessed phone number or address."""
        canonical = json.dumps([self.customer_number, self.login_password_verifier,
                                self.confirmation_pin_verifier, sorted(self.phones), self.email],
                               ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def event_data(self) -> dict:
        return {"customer_number": self.customer_number,
                "login_password_verifier": self.login_password_verifier,
                "confirmation_pin_verifier": self.confirmation_pin_verifier,
                "phones": list(self.phones), "email": self.email, "record_digest": self.digest}


def validate_record(raw) -> LegacyRecord:
    """A raw record (strings as read from the CSV) → a normalised LegacyRecord, or
    RecordRejected naming the first problem."""
    if not isinstance(raw, dict):
        raise RecordRejected("invalid_record")
    values: dict[str, str] = {}
    for name in FIELDS:
        value = raw.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise RecordRejected("invalid_record")
        value = value.strip()
        if not value and name != "email":
            raise RecordRejected("missing_field", field=name)
        if len(value) > MAX_FIELD[name]:
            raise RecordRejected("field_too_long", field=name)
        values[name] = value
    number = values["customer_number"]
    if not re.fullmatch(r"[0-9]{10}", number):
        raise RecordRejected("invalid_customer_number")
    parse_verifier(values["login_password_verifier"], "login_password_verifier")
    parse_verifier(values["confirmation_pin_verifier"], "confirmation_pin_verifier")

    raw_phones = [p for p in unicodedata.normalize("NFKC", values["phones"]).split(";") if p.strip()]
    if len(raw_phones) > MAX_PHONES:
        raise RecordRejected("too_many_phones", max=MAX_PHONES)
    phones: list[str] = []
    warnings: list[str] = []
    for index, raw_phone in enumerate(raw_phones, start=1):
        e164 = normalise_phone(raw_phone)
        if e164 is None:
            digits = "".join(c for c in raw_phone if c.isdigit())
            warnings.append(msg.INVALID_PHONE_WARNING.format(
                index=index, masked="*****" + digits[-4:] if len(digits) >= 4 else "***"))
        elif e164 not in phones:
            phones.append(e164)
    if not phones:
        raise RecordRejected("no_valid_phone")

    email = values["email"] or None
    if email is not None:
        if not _EMAIL.fullmatch(email):
            raise RecordRejected("invalid_email")
        local, _, domain = email.rpartition("@")
        email = f"{local}@{domain.lower()}"
    return LegacyRecord(number, values["login_password_verifier"], values["confirmation_pin_verifier"],
                        tuple(phones), email, tuple(warnings))
