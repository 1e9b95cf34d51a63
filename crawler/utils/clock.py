"""Clock types. Time is injected, never monkeypatched: pass `clock=` / `now=` in tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "MonotonicClock", "WallClock", "monotonic", "utc_now"]

#: Seconds on a monotonic scale (durations, breaker timeouts, TTLs within one process).
MonotonicClock = Callable[[], float]
#: Seconds since the epoch (TTLs shared between processes through the data dir).
Clock = Callable[[], float]
#: The current UTC-aware datetime (budget day, quote timestamps).
WallClock = Callable[[], datetime]

monotonic: MonotonicClock = time.monotonic


def utc_now() -> datetime:
    """The current time, UTC-aware. The default `now` wherever a wall clock is injected."""
    return datetime.now(UTC)
