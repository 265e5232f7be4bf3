"""Consecutive-failure counters and locks (R-RBA-2), pure.

One counter per credential. ``threshold`` consecutive failures lock the credential (default 5,
config ``LOCKOUT_THRESHOLD``); a success resets the count. A lock is released by an operator,
or — only when ``LOCK_RELEASE_SECONDS`` > 0 — by itself that long after it was set (the next
attempt after that instant records the release).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Policy:
    threshold: int = 5
    release_seconds: int = 0          # 0: only an operator releases a lock

    def __post_init__(self):
        if self.threshold < 1 or self.release_seconds < 0:
            raise ValueError("lockout threshold must be >= 1 and release seconds >= 0")


@dataclass(frozen=True)
class Counter:
    failures: int = 0
    locked_at: datetime | None = None
    release_at: datetime | None = None    # None while locked: operator release only

    @property
    def locked(self) -> bool:
        return self.locked_at is not None

    def is_locked(self, now: datetime) -> bool:
        return self.locked and (self.release_at is None or now < self.release_at)

    def release_due(self, now: datetime) -> bool:
        return self.locked and self.release_at is not None and now >= self.release_at


def after_failure(counter: Counter, policy: Policy, now: datetime) -> Counter:
    """The counter after one more failure; locked when the threshold is reached."""
    failures = counter.failures + 1
    if failures >= policy.threshold and not counter.locked:
        release_at = now + timedelta(seconds=policy.release_seconds) if policy.release_seconds else None
        return Counter(failures, now, release_at)
    return replace(counter, failures=failures)


def after_success(counter: Counter) -> Counter:
    return Counter()
