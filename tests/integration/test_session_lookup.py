"""R-PLT-3 sessions: ``SessionStore.get`` reads and (when due) slides a session in one
statement. The slide must not resurrect a session revoked or expired meanwhile, and requests
of one session arriving together at the moment it is due must all be answered (the slide
decision is made on the row as read, not on a row another request has just slid)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from gateway.sessions import ABSOLUTE_SECONDS, IDLE_SECONDS, SLIDE_SECONDS, SessionStore
from services.eventstore.factory import open_pool
from tests.conftest import unique
from tests.support.clock import MovableClock

TOGETHER = 8


@pytest.fixture(scope="module")
def pool(settings):
    pool = open_pool(settings.database_url, max_size=TOGETHER, name="test-session-lookup")
    yield pool
    pool.close()


def _store(pool):
    clock = MovableClock(datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc))
    return SessionStore(pool, clock=clock), clock


def test_r_plt_3_a_session_revoked_when_its_slide_is_due_stays_ended(pool):
    store, clock = _store(pool)
    token = store.create(unique("c"), "customer")
    clock.advance(seconds=SLIDE_SECONDS + 1)
    assert store.revoke(token)
    assert store.get(token) is None
    assert store.get(token) is None


def test_r_plt_3_the_absolute_limit_holds_when_a_slide_is_due(pool):
    store, clock = _store(pool)
    token = store.create(unique("c"), "customer")
    for _ in range(ABSOLUTE_SECONDS // (IDLE_SECONDS - 60)):
        clock.advance(seconds=IDLE_SECONDS - 60)           # keep it alive, sliding each time
        session = store.get(token)
        if session is None:
            break
        assert session.expires_at <= session.created_at + timedelta(seconds=ABSOLUTE_SECONDS)
    clock.at = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc) + timedelta(seconds=ABSOLUTE_SECONDS + 1)
    assert store.get(token) is None


def test_r_plt_3_requests_arriving_together_when_the_slide_is_due_are_all_answered(pool):
    store, clock = _store(pool)
    for _ in range(5):
        token = store.create(unique("c"), "customer")
        clock.advance(seconds=SLIDE_SECONDS + 1)
        with ThreadPoolExecutor(TOGETHER) as ex:
            sessions = list(ex.map(lambda _: store.get(token), range(TOGETHER)))
        assert all(s is not None for s in sessions), sessions
        assert {s.expires_at for s in sessions} == {clock.at + timedelta(seconds=IDLE_SECONDS)}
