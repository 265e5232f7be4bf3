"""services/green_wait.py: psycopg's wait on eventlet's own listener (R-PLT-1, DESIGN.md
"Nameko under eventlet"). The concurrency proof for the whole process is
test_green_psycopg.test_concurrent_queries_overlap_under_eventlet, which runs on this wait
function (conftest installs it, as the launcher does). Here: each kind of wait psycopg asks for,
on real sockets and a real PostgreSQL."""
from __future__ import annotations

import socket
import time

import eventlet
import psycopg
import psycopg.waiting
import pytest
from psycopg import errors
from psycopg.waiting import Ready, Wait

from services import green_wait


def _asks(*states):
    """A psycopg-style generator: yields each state, records what it was sent, returns them."""
    got = []
    for state in states:
        got.append((yield state))
    return got


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_installed_for_this_process():
    assert psycopg.waiting.wait is green_wait.wait_green


def test_read_wait_returns_when_data_arrives_and_other_green_threads_run(pair):
    a, b = pair
    ticks = []

    def ticker():
        for _ in range(5):
            ticks.append(time.monotonic())
            eventlet.sleep(0.01)
        b.send(b"x")

    eventlet.spawn(ticker)
    started = time.monotonic()
    assert green_wait.wait_green(_asks(Wait.R), a.fileno()) == [Ready.R]
    assert len(ticks) == 5                          # the hub ran the ticker while we waited
    assert time.monotonic() - started >= 0.04


def test_write_and_read_or_write_waits_on_a_writable_socket(pair):
    a, _ = pair
    got = green_wait.wait_green(_asks(Wait.W, Wait.RW), a.fileno())
    assert got[0] == Ready.W
    assert got[1] & Ready.W and not got[1] & Ready.R     # writable, nothing to read


def test_read_or_write_reports_readable_when_only_that(pair):
    a, b = pair
    a.setblocking(False)
    try:                                             # fill a's send buffer: not writable
        while True:
            a.send(b"\0" * 65536)
    except BlockingIOError:
        pass
    b.send(b"y")
    [ready] = green_wait.wait_green(_asks(Wait.RW), a.fileno(), timeout=2)
    assert ready == Ready.R


def test_timeout_tells_the_generator_nothing_arrived_then_raises(pair):
    a, _ = pair
    sent = []

    def gen():
        sent.append((yield Wait.R))
        sent.append((yield Wait.R))

    started = time.monotonic()
    with pytest.raises(errors._WaitTimeout):
        green_wait.wait_green(gen(), a.fileno(), timeout=0.1)
    assert 0.09 <= time.monotonic() - started < 1.0
    assert sent == [Ready.NONE]


def test_unknown_wait_state_is_refused(pair):
    a, _ = pair
    with pytest.raises(ValueError):
        green_wait.wait_green(_asks(7), a.fileno())


def test_a_statement_larger_than_the_send_buffer(settings):
    """libpq cannot send 32 MiB at once: psycopg waits for read-or-write until it is out."""
    big = "あ" * (32 * 1024 * 1024 // 3)
    asked = []
    real = green_wait._ready

    def spy(fileno, state, left):
        asked.append(state)
        return real(fileno, state, left)

    green_wait._ready = spy
    try:
        with psycopg.connect(settings.admin_database_url, autocommit=True) as conn:
            assert conn.execute("SELECT length(%s::text)", (big,)).fetchone()[0] == len(big)
    finally:
        green_wait._ready = real
    assert Wait.RW in asked


def test_notifies_with_a_timeout(settings):
    """psycopg's own timeouts (here: waiting for notifications) end the wait on time, and a
    notification sent meanwhile is received."""
    with psycopg.connect(settings.admin_database_url, autocommit=True) as listener, \
            psycopg.connect(settings.admin_database_url, autocommit=True) as sender:
        listener.execute("LISTEN tsunagi_green_wait_test")
        started = time.monotonic()
        assert list(listener.notifies(timeout=0.2)) == []
        assert 0.15 <= time.monotonic() - started < 2.0
        eventlet.spawn_after(0.05, sender.execute, "NOTIFY tsunagi_green_wait_test, 'hello'")
        got = [n.payload for n in listener.notifies(timeout=2.0, stop_after=1)]
        assert got == ["hello"]
