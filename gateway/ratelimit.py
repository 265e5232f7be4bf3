"""Rate limiting per client address on the endpoints that guess credentials (issue 7 item 4).

The lockouts (R-RBA-2) stop guessing *one* customer's secret; they do not stop one address
from trying one password against many customer numbers, nor from locking many customers out
on purpose. So the login endpoints (legacy login of the initial operation, the normal login)
and the OTP app's activation also admit at most N requests per address within a sliding
window of S seconds, answering ``429 rate_limited`` with ``Retry-After`` beyond it.

Configuration (Nameko config key, else environment; unset or ``off`` = no limit):

- ``RATE_LIMIT_LOGIN`` — e.g. ``10/60``: 10 requests per 60 s per address, shared by
  ``POST /api/v1/migration/login``, ``POST /api/v1/login`` and the passkey login
  (``POST /api/v1/webauthn/login/options`` and ``/login``: two requests per attempt);
- ``RATE_LIMIT_ACTIVATION`` — the same for ``POST /api/v1/otp-app/activate``.

Off by default: every test, benchmark and `make run` talks from 127.0.0.1, so any default
limit would throttle them; a deployment sets both (README, configuration table).

Design choices:
- The window arithmetic (sliding-window log, the wait until the oldest counted request leaves
  the window) is pyrate-limiter's ``InMemoryBucket``, one bucket per address. Its ``Limiter``
  and ``BucketFactory`` are not used: they start a background leaker thread per factory, and
  the bucket lookup is a dict here anyway. Buckets are driven with our own monotonic clock in
  milliseconds, so a check is a few list operations on the green thread — no I/O, no real
  thread, nothing that can block eventlet's hub.
- Per gateway process, in memory: with two gateway instances behind a balancer an address
  gets up to N per instance. The alternative, a shared counter in PostgreSQL, costs a write
  per login attempt on the hot path of cut-over day, and the limit is a brake on automated
  guessing, not a quota (the lockouts are the exact, shared, durable count). Run it in the
  balancer too when one address must see exactly N across instances.
- The address is the TCP peer (``REMOTE_ADDR``), or, behind proxies named in
  ``TRUSTED_PROXIES``, the address the nearest of them saw (gateway/client_address.py). An
  unverified ``X-Forwarded-For`` is never believed: it would let anyone pick a fresh address per
  request.
- Refused requests do not count (a client that keeps hammering is told the same wait, it does
  not extend it); memory is bounded (least recently used addresses are dropped first).
"""
from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

from pyrate_limiter import InMemoryBucket, Rate, RateItem

from contracts.errors import DomainError
from services.config import ConfigReader

POLICIES = {"login": "RATE_LIMIT_LOGIN", "activation": "RATE_LIMIT_ACTIVATION"}
MAX_ADDRESSES = 100_000
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*$")
_OFF = ("off", "none", "0", "false", "disabled")


class RateLimited(DomainError):
    """Raised in the gateway only (never crosses RPC); ``retry_after`` = whole seconds."""

    status = 429
    default_code = "rate_limited"
    default_detail = ("短時間に多くのリクエストが送信されたため、一時的にご利用を制限しています。"
                      "しばらく時間をおいてから、もう一度お試しください。")


@dataclass(frozen=True)
class Limit:
    requests: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.requests}/{self.seconds:g}"


def parse_limit(text: str | None) -> Limit | None:
    """``"10/60"`` → 10 requests per 60 seconds; unset/``off`` → None (no limit)."""
    if text is None or str(text).strip().lower() in ("", *_OFF):
        return None
    m = _SPEC.match(str(text))
    if not m or int(m.group(1)) < 1 or float(m.group(2)) <= 0:
        raise ValueError(f"rate limit must look like REQUESTS/SECONDS (e.g. 10/60), not {text!r}")
    return Limit(int(m.group(1)), float(m.group(2)))


class SlidingWindow:
    """At most ``limit.requests`` admitted per ``limit.seconds`` per key (sliding window)."""

    def __init__(self, limit: Limit, *, clock=time.monotonic, max_keys: int = MAX_ADDRESSES):
        self.limit = limit
        self.rate = Rate(limit.requests, max(1, int(limit.seconds * 1000)))
        self.clock = clock
        self.max_keys = max_keys
        self.buckets: OrderedDict[str, InMemoryBucket] = OrderedDict()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def acquire(self, key: str) -> float:
        """0 if admitted (and counted), else the seconds until a request would be admitted."""
        now = self._now_ms()
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = InMemoryBucket([self.rate])
            while len(self.buckets) > self.max_keys:
                self.buckets.popitem(last=False)
        self.buckets.move_to_end(key)
        bucket.leak(now)           # forget requests that left the window (bounded memory)
        decision = bucket.put_decision(RateItem(key, now))
        if decision.allowed:
            return 0.0
        wait_ms = decision.retry_after_ms
        if wait_ms is None:
            wait_ms = bucket.waiting(RateItem(key, now))
        return max(wait_ms, 1) / 1000.0


class RateLimits:
    """The limits of one gateway process, by policy name (``@api(rate_limit=...)``)."""

    def __init__(self, limits: dict[str, Limit | None], *, clock=time.monotonic):
        self.windows = {name: SlidingWindow(limit, clock=clock)
                        for name, limit in limits.items() if limit is not None}

    @classmethod
    def from_config(cls, config: dict | None) -> "RateLimits":
        reader = ConfigReader(config)
        return cls({name: parse_limit(reader.raw(key)) for name, key in POLICIES.items()})

    def check(self, policy: str, address: str | None) -> None:
        """Count one request of ``address``; raise ``RateLimited`` (429) past the limit."""
        if policy not in POLICIES:
            raise ValueError(f"unknown rate-limit policy {policy!r}; known: {sorted(POLICIES)}")
        window = self.windows.get(policy)
        if window is None:
            return
        wait = window.acquire(address or "unknown")
        if wait:
            raise RateLimited(retry_after=max(1, math.ceil(wait)))


def limits_for(container) -> RateLimits:
    """One ``RateLimits`` per Nameko container, shared by all of its ``@api`` routes."""
    limits = getattr(container, "_tsunagi_rate_limits", None)
    if limits is None:
        limits = RateLimits.from_config(getattr(container, "config", None))
        container._tsunagi_rate_limits = limits
    return limits


def retry_after_header(error: DomainError) -> str | None:
    value = error.extra.get("retry_after") if error.code == "rate_limited" else None
    return str(value) if value is not None else None
