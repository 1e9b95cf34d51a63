"""One token bucket for all of the process's Yahoo traffic, paused by a 429 for every worker.

    throttle = YahooThrottle(rate_per_s=2)           # [yfinance] max_requests_per_second
    throttle.acquire(deadline_at_s=clock() + 30)     # waits for a token; False: not in time
    throttle.on_rate_limited("7")                    # Yahoo said 429: everyone waits 7 s
    throttle.on_answer()                             # any other answer: the backoff resets

Requests are spaced evenly, one every 1/rate seconds (a bucket of one token: no bursts), so
Yahoo never sees more than the configured rate over any window. A 429 stops every caller until its
`Retry-After` (seconds or an HTTP date); without one, for an exponential backoff (2, 4, 8 ...
seconds, capped at 5 minutes) with jitter, so that a fleet of daemons does not come back in
step. The pause is shared: a worker that got its token before the 429 waits for the pause too.

Time is injected (`clock` monotonic seconds, `sleep`, `now` for HTTP dates, `random`), so the
bucket is tested without sleeping. `shared_throttle(rate)` is the process-wide instance.
"""

from __future__ import annotations

import email.utils
import math
import random as _random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from crawler.utils.clock import utc_now

__all__ = ["YahooThrottle", "parse_retry_after", "shared_throttle"]

#: Backoff after a 429 without Retry-After: 2 s, doubled per consecutive 429, at most 5 min.
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0
#: A Retry-After longer than this is treated as this (a typo must not stop us for a day).
RETRY_AFTER_CAP_S = 3600.0


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when
    absent or unreadable. Negative or past values become 0."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


class YahooThrottle:
    """A thread-safe token bucket with a shared pause (see the module docstring)."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = utc_now,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not rate_per_s > 0 or not math.isfinite(rate_per_s):
            raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
        self._clock = clock
        self._sleep = sleep
        self._now = now
        self._random = random
        self._lock = threading.Lock()
        self._rate_per_s = float(rate_per_s)
        # GCRA with no burst: `_tat_s` is the earliest time the next request may go.
        self._tat_s = clock()
        self._paused_until_s = 0.0
        self._consecutive_429 = 0
        self.granted = 0
        self.rate_limited = 0
        self.refused = 0
        self.waited_s = 0.0
        self._last_pause_s = 0.0
        self._last_429_at: datetime | None = None

    @property
    def rate_per_s(self) -> float:
        return self._rate_per_s

    def now_s(self) -> float:
        """The throttle's clock (deadlines passed to `acquire` are in it)."""
        return self._clock()

    def set_rate(self, rate_per_s: float) -> None:
        """Change the rate (the process-wide bucket follows the latest settings)."""
        if not rate_per_s > 0 or not math.isfinite(rate_per_s):
            raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
        with self._lock:
            self._rate_per_s = float(rate_per_s)

    def acquire(self, deadline_at_s: float | None = None) -> bool:
        """Wait for a token (and for any 429 pause); False, without taking one, when it could
        not be had by `deadline_at_s` (monotonic seconds)."""
        while True:
            with self._lock:
                now_s = self._clock()
                go_at_s = max(now_s, self._tat_s, self._paused_until_s)
                if deadline_at_s is not None and go_at_s > deadline_at_s:
                    self.refused += 1
                    return False
                self._tat_s = go_at_s + 1.0 / self._rate_per_s
                self.granted += 1
            wait_s = go_at_s - now_s
            if wait_s > 0:
                self._sleep(wait_s)
                with self._lock:
                    self.waited_s += wait_s
                    paused_until_s = self._paused_until_s
                # A 429 while we slept: our token predates the pause, so wait it out too.
                if paused_until_s > self._clock():
                    with self._lock:
                        self.granted -= 1
                    continue
            return True

    def on_rate_limited(self, retry_after: str | None = None) -> float:
        """Yahoo answered 429: pause every caller; returns the pause in seconds."""
        told_s = parse_retry_after(retry_after, self._now())
        with self._lock:
            self._consecutive_429 += 1
            self.rate_limited += 1
            self._last_429_at = self._now()
            if told_s is None:
                backoff_s = min(BACKOFF_BASE_S * 2 ** (self._consecutive_429 - 1), BACKOFF_CAP_S)
                # Jitter in [0.5, 1.0) of the backoff: spread out, never shorter than half.
                pause_s: float = backoff_s * (0.5 + self._random() / 2)
            else:
                pause_s = told_s
            self._paused_until_s = max(self._paused_until_s, self._clock() + pause_s)
            self._last_pause_s = pause_s
            return pause_s

    def on_answer(self) -> None:
        """Any answer other than 429: consecutive 429s no longer grow the backoff."""
        if self._consecutive_429:
            with self._lock:
                self._consecutive_429 = 0

    def paused_for_s(self) -> float:
        """Seconds left in the current 429 pause (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until_s - self._clock())

    def statistics(self) -> dict[str, Any]:
        """For `crawler status`: the rate, whether Yahoo is throttling us now, the counters."""
        with self._lock:
            paused_s = max(0.0, self._paused_until_s - self._clock())
            return {
                "max_requests_per_second": self._rate_per_s,
                "throttled": paused_s > 0,
                "paused_for_s": round(paused_s, 1),
                "rate_limited_total": self.rate_limited,
                "last_rate_limited_at": (
                    self._last_429_at.isoformat() if self._last_429_at else None
                ),
                "last_pause_s": round(self._last_pause_s, 1),
                "requests_granted": self.granted,
                "refused_at_deadline": self.refused,
                "waited_s": round(self.waited_s, 1),
            }


_shared_lock = threading.Lock()
_shared: YahooThrottle | None = None


def shared_throttle(rate_per_s: float) -> YahooThrottle:
    """The process-wide bucket, made on first use; a later call sets its rate."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = YahooThrottle(rate_per_s)
        elif _shared.rate_per_s != rate_per_s:
            _shared.set_rate(rate_per_s)
        return _shared
