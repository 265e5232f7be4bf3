"""Waiting on a condition the system reaches asynchronously (tests wait on outcomes, never on the clock)."""
from __future__ import annotations

import time

import eventlet


def wait_for(predicate, what: str = "condition", timeout: float = 20.0, interval: float = 0.05):
    """``predicate()``'s first truthy value; fails the test once ``timeout`` seconds pass without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        eventlet.sleep(interval)
