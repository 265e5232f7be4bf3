"""A clock a test moves by hand (``now()`` as the services' clocks offer it)."""
from __future__ import annotations

from datetime import datetime, timedelta


class MovableClock:
    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta):
        self.at += timedelta(**delta)
