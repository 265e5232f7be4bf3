"""Helpers of the security tests (fixtures are in ``conftest.py``)."""
from __future__ import annotations

import json

import requests

from tests.e2e.test_initial_operation_steps_2_4 import (ANSWERS, LEGACY_PASSWORD, LEGACY_PIN, NEW_LOGIN,  # noqa: F401
                                                        NEW_CONFIRMATION, PASSWORD_BODY, Api, Customer,
                                                        new_number, pbkdf2)

PHONE = "090-1234-5678"
# Quick rings: every signed webhook of these tests otherwise holds its answer for 2.5 s.
RING_DELAY = "0.05"


class Seeded(Customer):
    """A seeded customer (``tests.e2e`` ``Customer``) with the stages as methods."""

    def migrate(self) -> "Seeded":
        self.legacy_login()
        self.register_questions(ANSWERS)
        self.change_passwords()
        return self

    def customer_session(self) -> str:
        """A customer session from the device used during migration (a known environment)."""
        r = self.login()
        assert r.status_code == 200 and "session_token" in r.json(), r.text
        self.token = r.json()["session_token"]
        return self.token


class Customers:
    def __init__(self, rpc, api: Api, store):
        self.rpc, self.api, self.store = rpc, api, store

    def legacy(self, phones: str = PHONE) -> Seeded:
        number = new_number()
        [result] = self.rpc.identity.import_legacy([{
            "line": 1, "customer_number": number, "login_password_verifier": pbkdf2(LEGACY_PASSWORD),
            "confirmation_pin_verifier": pbkdf2(LEGACY_PIN), "phones": phones, "email": ""}])
        assert result["status"] == "imported", result
        return Seeded(number, self.api, self.store)

    def migration(self) -> Seeded:
        """At step 3 with a migration session."""
        c = self.legacy()
        c.legacy_login()
        return c

    def migrated(self) -> Seeded:
        """Steps 2–4 done; ``token`` is still the migration session."""
        return self.legacy().migrate()

    def logged_in(self) -> Seeded:
        """Migrated and logged in with the new password: ``token`` is a customer session."""
        c = self.migrated()
        c.customer_session()
        return c



def assert_problem(r: requests.Response, status: int, code: str | None = None) -> dict:
    """An RFC 9457 problem of this API: status, Content-Type, every field, Japanese detail."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/problem+json", r.headers
    body = r.json()
    for key in ("type", "title", "status", "code", "detail", "correlation_id"):
        assert key in body, (key, body)
    assert body["status"] == status
    assert body["type"] == f"urn:tsunagi:problem:{body['code']}"
    assert body["correlation_id"] == r.headers["X-Request-ID"]
    assert not body["detail"].isascii(), body          # Japanese, for the customer
    if code is not None:
        assert body["code"] == code, body
    return body


ACTIVATION_PASSWORD = "482913"


class Reply:
    """Looks enough like a ``requests.Response`` for ``assert_problem``."""

    def __init__(self, status, headers, content: bytes):
        self.status_code, self.headers, self.content = status, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)
