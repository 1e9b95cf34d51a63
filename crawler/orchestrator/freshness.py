"""How late each kind of source is, per market, learned from the quotes this daemon has seen.

    lags = SourceLags()
    lags.observe("XLON", paid=False, lag_s=905.0)    # a Yahoo quote 15 min behind its fetch
    lags.observe("XLON", paid=True, lag_s=30.0)      # a Bloomberg page 30 s behind
    lags.paid_fresher_by("XLON")                     # 875.0: paying buys 14.6 minutes here

A quote's lag is its age when a collection served it: the collection's time minus the quote's
own timestamp (`as_of`: Yahoo's `regularMarketTime`, the stream's tick time, Bloomberg's
`lastUpdate`), observed only while its market is open (a closed market's quote is the close,
however old). The median of the last `window` lags of each kind is the market's figure, so one
slow answer moves nothing.
Nothing is assumed: a market whose paid quotes were never seen has no paid figure.
"""

from __future__ import annotations

import threading
from collections import deque
from statistics import median
from typing import Any

__all__ = ["MEASURABLE_S", "SourceLags"]

#: Paid must beat free by at least this much to count as "measurably fresher": the sources'
#: timestamps are often whole minutes.
MEASURABLE_S = 60.0


class SourceLags:
    """Median lag per market of the free and the paid sources (thread-safe)."""

    def __init__(self, window: int = 20) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._window = window
        self._lock = threading.Lock()
        self._lags: dict[tuple[str, bool], deque[float]] = {}

    def observe(self, market: str, *, paid: bool, lag_s: float) -> None:
        """One quote of `market` arrived `lag_s` after its own time."""
        with self._lock:
            samples = self._lags.setdefault((market, paid), deque(maxlen=self._window))
            samples.append(max(0.0, float(lag_s)))

    def lag_s(self, market: str, *, paid: bool) -> float | None:
        """The market's median lag for that kind of source; None when none was seen."""
        with self._lock:
            samples = self._lags.get((market, paid))
            return float(median(samples)) if samples else None

    def paid_fresher_by(self, market: str) -> float | None:
        """Seconds by which the paid source is fresher than the free one in `market` (negative:
        staler); None until both were seen there."""
        free, paid = self.lag_s(market, paid=False), self.lag_s(market, paid=True)
        if free is None or paid is None:
            return None
        return free - paid

    def statistics(self) -> dict[str, Any]:
        """Per market: median free and paid lag in seconds (JSON-ready)."""
        with self._lock:
            markets = sorted({market for market, _ in self._lags})
        return {
            market: {
                "free_lag_s": self.lag_s(market, paid=False),
                "paid_lag_s": self.lag_s(market, paid=True),
            }
            for market in markets
        }
