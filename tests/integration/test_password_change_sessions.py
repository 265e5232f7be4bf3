"""A changed login password ends the sessions opened before it, even when the route's own
revocation is lost (review finding: identity commits, then the gateway fails before
``revoke_all``). The handler runs on the real database; redelivery is harmless."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from contracts.subscriptions import SUBSCRIPTIONS, Subscription
from gateway.routes_credentials import CredentialRoutes
from gateway.sessions import SessionStore


@dataclass
class _Event:          # the two fields of a RecordedEvent the handler reads
    stream_name: str
    recorded_at: datetime


def _handler(name):
    return getattr(CredentialRoutes, name).__wrapped__


def test_login_password_changed_ends_sessions_opened_before_it_only(store):
    sessions = SessionStore(store.pool)
    number = f"{uuid.uuid4().int % 10**10:010d}"
    old = sessions.create(number, "customer")
    time.sleep(0.01)
    changed = _Event(f"customer-{number}", datetime.now(timezone.utc))
    time.sleep(0.01)
    after = sessions.create(number, "customer")          # the login with the new password

    for _ in range(2):                                   # a redelivered event changes nothing more
        with store.transaction() as conn:
            _handler("on_login_password_changed")(None, changed, conn)

    assert sessions.get(old) is None
    assert sessions.get(after) is not None and sessions.get(after).customer_number == number


def test_the_gateway_subscribes_to_login_password_changed():
    assert Subscription("identity", "login_password_changed", "gateway",
                        "on_login_password_changed") in SUBSCRIPTIONS
