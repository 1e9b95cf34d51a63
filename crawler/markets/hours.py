"""When a symbol's market trades, so the collection spends nothing on closed markets.

Stocks and indices follow their exchange's calendar (exchange_calendars: holidays, early
closes, lunch breaks); FX, bonds and crypto follow weekly rules; futures follow CME Globex.
What we cannot judge is treated as open: a market we do not know ("UNKNOWN"), a calendar that
fails to load, and times outside a calendar's range (about 20 years back to 1 year ahead).
Skipping a fetch we should have made is worse than paying for one we did not need.

exchange_calendars (and pandas under it) is imported on first use, not on import: the CLI
imports this module and must start fast. Each calendar is built once and cached.

Why intervals rather than ``is_open_on_minute`` / ``next_open`` / ``next_close``: the library's
``next_open``/``next_close`` skip lunch breaks (at 10:00 Tokyo ``next_close`` answers 15:30,
not 11:30) and its CMES calendar has no daily Globex halt. So each calendar's ``schedule``
(open, break_start, break_end, close per session) is turned once into sorted trading
intervals, and all three questions are answered from them by bisection: one model, always
consistent, and fast enough for simulations. A test checks the result minute by minute
against ``is_open_on_minute``.

Times: ``at`` may be in any zone (naive means UTC); answers are UTC-aware datetimes.
"""

from __future__ import annotations

import threading
import warnings
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from crawler.logging import get_logger
from crawler.markets.calendars import (
    CME,
    CME_CALENDAR,
    CRYPTO,
    UNKNOWN,
    WEEKLY_RULES,
)
from crawler.markets.calendars import (
    market_of as _market_of,
)
from crawler.normalizer.schemas import AssetClass, utc_now
from crawler.utils.clock import epoch_us as _to_us
from crawler.utils.clock import from_epoch_us as _from_us
from crawler.utils.heavy_imports import import_pandas

__all__ = ["MarketHours"]

_log = get_logger(__name__)
# Globex halts 16:00-17:00 Chicago daily; CMES sessions run 17:00 to 17:00 and omit it.
_CME_HALT = (time(16), ZoneInfo("America/Chicago"))


@dataclass(frozen=True)
class _Intervals:
    """Sorted, disjoint trading intervals [starts[i], ends[i]) in UTC microseconds."""

    starts: list[int]
    ends: list[int]

    @classmethod
    def build(cls, pairs: list[tuple[int, int]]) -> _Intervals:
        starts: list[int] = []
        ends: list[int] = []
        for start, end in sorted(pairs):
            if end <= start:
                continue
            if ends and start <= ends[-1]:  # touching or overlapping: one continuous stretch
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        return cls(starts, ends)

    def covers(self, at_us: int) -> bool:
        """Whether `at_us` is inside the span this data knows about."""
        return bool(self.starts) and self.starts[0] <= at_us < self.ends[-1]

    def window(self, at_us: int) -> tuple[bool, int | None, int | None]:
        """(open at `at_us`, first open after it, first close after it)."""
        i = bisect_right(self.starts, at_us)
        is_open = i > 0 and at_us < self.ends[i - 1]
        next_open = self.starts[i] if i < len(self.starts) else None
        j = bisect_right(self.ends, at_us)
        next_close = self.ends[j] if j < len(self.ends) else None
        return is_open, next_open, next_close


def _schedule_intervals(calendar: Any, clip_close: tuple[time, ZoneInfo] | None) -> _Intervals:
    """Trading intervals of an exchange_calendars calendar, lunch breaks cut out."""
    pd = import_pandas()  # lazy: only the daemon pays for pandas

    pairs: list[tuple[int, int]] = []
    schedule = calendar.schedule
    for label, row in zip(schedule.index, schedule.itertuples(index=False), strict=True):
        # Timestamp.value is nanoseconds whatever the column's unit.
        open_us = row.open.value // 1000
        close_us = row.close.value // 1000
        if clip_close is not None:
            local_time, zone = clip_close
            clip = datetime.combine(label.date(), local_time, zone)
            close_us = min(close_us, _to_us(clip))
        if pd.isna(row.break_start) or pd.isna(row.break_end):
            pairs.append((open_us, close_us))
        else:
            pairs.append((open_us, row.break_start.value // 1000))
            pairs.append((row.break_end.value // 1000, close_us))
    return _Intervals.build(pairs)


class MarketHours:
    """Answers "is this symbol's market open?" and "when does it next open / close?".

    Thread-safe. ``now`` is the wall clock used when ``at`` is not given.
    """

    def __init__(self, now: Callable[[], datetime] = utc_now) -> None:
        self._now = now
        self._calendars: dict[str, _Intervals | None] = {}
        self._lock = threading.Lock()

    def market_of(self, symbol: str, asset_class: AssetClass | None) -> str:
        """The market code: an exchange_calendars name ("XNYS", "XLON", "XTKS", ...) or "FX",
        "CRYPTO", "CME", "BONDS", or "UNKNOWN" (treated as always open)."""
        return _market_of(symbol, asset_class)

    def is_open(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None = None
    ) -> bool:
        """Whether the market trades at `at` (default: now). Unknown markets count as open."""
        return self._window(symbol, asset_class, at)[1]

    def next_open(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None = None
    ) -> datetime | None:
        """The first opening strictly after `at`; None if always open or beyond our knowledge."""
        return self._window(symbol, asset_class, at)[2]

    def next_close(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None = None
    ) -> datetime | None:
        """The first close (lunch breaks included) strictly after `at`; None as `next_open`."""
        return self._window(symbol, asset_class, at)[3]

    def session_status(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None = None
    ) -> dict[str, Any]:
        """JSON-ready: symbol, market, at, open, next_open and next_close (ISO 8601 or None)."""
        market, is_open, next_open, next_close = self._window(symbol, asset_class, at)
        return {
            "symbol": symbol,
            "market": market,
            "at": self._at(at).isoformat(),
            "open": is_open,
            "next_open": None if next_open is None else next_open.isoformat(),
            "next_close": None if next_close is None else next_close.isoformat(),
        }

    def last_session_start(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None = None
    ) -> datetime | None:
        """When the last session that closed before `at` opened; None for markets that never
        close (crypto), unknown ones, and beyond our knowledge."""
        last = self._last_session(symbol, asset_class, at)
        return None if last is None else _from_us(last[0])

    def last_close(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None = None
    ) -> datetime | None:
        """The latest close (lunch breaks included) at or before `at`; None when the market
        never closes (crypto, unknown) or the time is beyond our knowledge."""
        last = self._last_session(symbol, asset_class, at)
        return None if last is None else _from_us(last[1])

    def _last_session(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None
    ) -> tuple[int, int] | None:
        """(start, end) in epoch µs of the last session that closed at or before `at`; None
        for markets that never close (crypto, unknown), before the first session known and
        beyond our knowledge."""
        market = _market_of(symbol, asset_class)
        when = self._at(at)
        if market in (CRYPTO, UNKNOWN):
            return None
        intervals = self._intervals(market, when)
        at_us = _to_us(when)
        if intervals is None or not intervals.covers(at_us):
            return None
        j = bisect_right(intervals.ends, at_us)
        return (intervals.starts[j - 1], intervals.ends[j - 1]) if j > 0 else None

    def preload(self, markets: list[str]) -> None:
        """Build the named calendars now (the daemon calls this at start, off the hot path).

        Markets answered by a rule (FX, BONDS) or always open (CRYPTO, UNKNOWN) have no
        exchange calendar to build: asking for one would only log a false "no calendar".
        """
        for market in markets:
            if market in (CRYPTO, UNKNOWN) or (market in WEEKLY_RULES and market != CME):
                continue
            self._calendar(market)

    # -- internals -------------------------------------------------------------------------

    def _at(self, at: datetime | None) -> datetime:
        when = self._now() if at is None else at
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC)

    def _window(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None
    ) -> tuple[str, bool, datetime | None, datetime | None]:
        market = _market_of(symbol, asset_class)
        when = self._at(at)
        if market in (CRYPTO, UNKNOWN):
            return market, True, None, None
        intervals = self._intervals(market, when)
        at_us = _to_us(when)
        if intervals is None or not intervals.covers(at_us):
            return market, True, None, None  # cannot judge: never skip a fetch for it
        is_open, next_open, next_close = intervals.window(at_us)
        return (
            market,
            is_open,
            None if next_open is None else _from_us(next_open),
            None if next_close is None else _from_us(next_close),
        )

    def _intervals(self, market: str, when: datetime) -> _Intervals | None:
        """The trading intervals around `when`: a weekly rule, or the exchange calendar."""
        rule = WEEKLY_RULES.get(market)
        if rule is not None and market != CME:
            return self._rule_intervals(market, when)
        intervals = self._calendar(market)
        if intervals is None and rule is not None:
            intervals = self._rule_intervals(market, when)
        return intervals

    @staticmethod
    def _rule_intervals(market: str, when: datetime) -> _Intervals:
        pairs = WEEKLY_RULES[market].intervals_around(when)
        return _Intervals.build([(_to_us(start), _to_us(end)) for start, end in pairs])

    def _calendar(self, market: str) -> _Intervals | None:
        """The cached intervals of an exchange calendar; None when it cannot be had."""
        with self._lock:
            if market in self._calendars:
                return self._calendars[market]
            # Loading under the lock: two threads must not both pay ~0.3 s for one calendar.
            intervals = self._load(market)
            self._calendars[market] = intervals
            return intervals

    @staticmethod
    def _load(market: str) -> _Intervals | None:
        name = CME_CALENDAR if market == CME else market
        try:
            # exchange_calendars 4.x on pandas 3 warns about its own use of Series.values while
            # building a calendar: not ours to fix, and noise in the daemon's log. (This touches
            # the process-wide filters briefly; it runs once per market, under our lock.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                import_pandas()  # before exchange_calendars: pandas without pyarrow
                import exchange_calendars  # lazy: pulls in pandas, ~0.6 s

                calendar = exchange_calendars.get_calendar(name)
                return _schedule_intervals(calendar, _CME_HALT if market == CME else None)
        # Any failure (library missing, unknown name, bad data) leaves the market unjudged, and
        # unjudged markets are fetched: log it loudly once, never stop the collection for it.
        except Exception as exc:
            _log.warning(
                "no calendar for market; treating it as always open",
                market=name,
                error=str(exc),
            )
            return None
