"""R-PLT-3 sessions: the idle expiry is slid at most every ``SLIDE_SECONDS`` (a read-only
lookup otherwise), so a session may end up to that much *earlier* than 15 min after its last
request, never later; revocation still ends a session at its very next request."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gateway.sessions import IDLE_SECONDS, SLIDE_SECONDS, SessionStore, token_hash
from services.eventstore.factory import open_pool
from tests.conftest import unique
from tests.support.clock import MovableClock


@pytest.fixture(scope="module")
def pool(settings):
    pool = open_pool(settings.database_url, max_size=2, name="test-session-slide")
    yield pool
    pool.close()


def _row(pool, token):
    with pool.connection() as conn:
        return conn.execute("SELECT last_seen_at, expires_at, xmin::text FROM gateway.sessions"
                            " WHERE token_hash = %s", (token_hash(token),)).fetchone()


def test_r_plt_3_a_request_within_the_slide_interval_writes_nothing(pool):
    start = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
    clock = MovableClock(start)
    store = SessionStore(pool, clock=clock)
    token = store.create(unique("c"), "customer")
    created = _row(pool, token)

    clock.advance(seconds=SLIDE_SECONDS - 1)
    assert store.get(token) is not None
    assert _row(pool, token) == created            # same row version: no UPDATE happened

    clock.advance(seconds=2)                       # now past the interval: the expiry slides
    session = store.get(token)
    last_seen, expires, _ = _row(pool, token)
    assert last_seen == clock.at
    assert expires == clock.at + timedelta(seconds=IDLE_SECONDS) == session.expires_at


def test_r_plt_3_idle_expiry_is_at_most_the_slide_interval_early(pool):
    start = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
    clock = MovableClock(start)
    store = SessionStore(pool, clock=clock)
    unslid, slid = store.create(unique("c"), "customer"), store.create(unique("c"), "customer")

    clock.advance(seconds=SLIDE_SECONDS - 5)
    assert store.get(unslid) is not None           # inside the interval: not slid
    clock.advance(seconds=10)
    assert store.get(slid) is not None             # past it: slid to now + 15 min

    clock.at = start + timedelta(seconds=IDLE_SECONDS + 1)
    assert store.get(unslid) is None               # ended 15 min after its *slide*, 25 s early
    assert store.get(slid) is not None


def test_r_plt_3_revocation_ends_a_session_at_its_next_request(pool):
    clock = MovableClock(datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc))
    store = SessionStore(pool, clock=clock)
    customer = unique("c")
    first, second = store.create(customer, "customer"), store.create(customer, "customer")
    assert store.get(first) is not None and store.get(second) is not None
    clock.advance(seconds=1)                       # well inside the slide interval
    assert store.revoke(first) is True
    assert store.get(first) is None
    assert store.revoke_all(customer) == 1
    assert store.get(second) is None
