"""Clock types. Time is injected, never monkeypatched: pass `clock=` / `now=` in tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = [
    "Clock",
    "MonotonicClock",
    "WallClock",
    "epoch_us",
    "from_epoch_us",
    "monotonic",
    "utc_now",
]

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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


def epoch_us(instant: datetime) -> int:
    """Microseconds since the epoch, exactly (integers, no float rounding): how the history,
    market hours and the Redis stores keep an instant. A naive datetime is taken as UTC.

    >>> epoch_us(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    1767323045678901
    """
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return (instant - _EPOCH) // _ONE_MICROSECOND


def from_epoch_us(value: int) -> datetime:
    """The UTC instant `value` microseconds after the epoch, exactly (`epoch_us` reversed).

    >>> from_epoch_us(1767323045678901).isoformat()
    '2026-01-02T03:04:05.678901+00:00'
    """
    return _EPOCH + timedelta(microseconds=value)
