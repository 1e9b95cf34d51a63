"""Backfill: past bars from Yahoo's chart endpoint into the history, only what is missing.

    backfiller = Backfiller(yfinance_source, history_store)
    plan = backfiller.plan([parse_symbol("AAPL:US")], "1d", since=now - timedelta(days=365))
    report = backfiller.run(plan, on_progress=lambda done, total, symbol: ...)

What it does, and why:

- **Yahoo's range limits** (`INTERVALS`): 1m bars come at most 8 days a request and only for
  the last 30 days; 2m–90m (here 5m) for the last 60 days; 1h for the last 730 days; 1d as far
  back as Yahoo has them, in one request. A `since` further back than Yahoo serves is moved
  forward (with a notice), and a range is split into requests Yahoo accepts.
- **Only what is missing**: the history remembers the windows a backfill has fetched
  completely (`HistoryStore.bar_windows`), so a second run asks only for what is not covered;
  bars are also deduplicated on (symbol, source, interval, time). A bar still in progress (its
  start + interval after now: today's daily bar) is neither stored nor counted as covered, so
  the next run fetches its final values.
- **Polite**: every request goes through the yfinance source, so through the process's one
  Yahoo token bucket (`[yfinance] max_requests_per_second`); a 429 pauses every Yahoo caller
  (collections too) for its Retry-After, after which the same window is asked again. After
  `max_rate_limited` 429s in a row the run stops, saying so; what was fetched is kept, and the
  next run carries on from there.
- Requests are made one at a time: the bucket, not latency, is the limit.

Time is injected (`now`, `sleep`), bars are Quotes with `interval` set (`crawler.normalizer.
yahoo_bars`), and errors are ours: a symbol Yahoo does not know, or a failed request, is
reported per symbol and the others go on; a storage error stops the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from crawler.logging import get_logger
from crawler.normalizer.schemas import Quote, utc_now
from crawler.normalizer.symbols import Symbol, to_yahoo
from crawler.utils.exceptions import (
    APIError,
    RateLimitedError,
    SymbolError,
    UsageError,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_SINCE",
    "INTERVALS",
    "BackfillPlan",
    "BackfillReport",
    "Backfiller",
    "IntervalLimits",
    "Window",
]

log = get_logger("crawler.orchestrator.backfill")

_DAY = timedelta(days=1)


@dataclass(frozen=True)
class IntervalLimits:
    """How Yahoo serves one interval: the bar's length, the longest range one request may ask
    (None: any), and how far back it has bars (None: as far as the instrument goes)."""

    step: timedelta
    request_span: timedelta | None
    lookback: timedelta | None


#: The intervals `crawler backfill` offers, with Yahoo's limits for each.
INTERVALS: dict[str, IntervalLimits] = {
    "1m": IntervalLimits(timedelta(minutes=1), 8 * _DAY, 30 * _DAY),
    "5m": IntervalLimits(timedelta(minutes=5), 60 * _DAY, 60 * _DAY),
    "1h": IntervalLimits(timedelta(hours=1), 730 * _DAY, 730 * _DAY),
    "1d": IntervalLimits(_DAY, None, None),
}
DEFAULT_INTERVAL = "1d"
#: What `--since` is when not given: a year back.
DEFAULT_SINCE = "1y"
# Yahoo measures its look-back from its own clock, a moment after ours: keep clear of the edge.
_LOOKBACK_MARGIN = timedelta(hours=1)


class BarSource(Protocol):
    """What a backfill needs of a source (`YFinanceSource`)."""

    throttle: Any

    def fetch_bars(
        self, symbol: Symbol, interval: str, start: datetime, end: datetime
    ) -> list[Quote]: ...


class BarStore(Protocol):
    """What a backfill needs of the history (`HistoryStore`)."""

    def bar_windows(self, symbol: str, interval: str) -> list[tuple[datetime, datetime]]: ...

    def record_bars(
        self, bars: list[Quote], symbol: str, interval: str, start: datetime, end: datetime
    ) -> int: ...


@dataclass(frozen=True)
class Window:
    """One request: the bars of `symbol` that start in [start, end)."""

    symbol: Symbol
    start: datetime
    end: datetime


@dataclass
class BackfillPlan:
    """The requests a run will make, and what the planning had to say."""

    interval: str
    since: datetime
    until: datetime
    now: datetime
    windows: list[Window] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


@dataclass
class BackfillReport:
    """What a run did (JSON-safe through `to_dict`)."""

    interval: str
    since: datetime
    until: datetime
    symbols: int = 0
    requests_planned: int = 0
    requests: int = 0
    rate_limited: int = 0
    bars_added: int = 0
    bars_received: int = 0
    added: dict[str, int] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    stopped: str | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "symbols": self.symbols,
            "requests_planned": self.requests_planned,
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "bars_added": self.bars_added,
            "bars_received": self.bars_received,
            "added": dict(self.added),
            "errors": dict(self.errors),
            "notices": list(self.notices),
            "stopped": self.stopped,
            "duration_s": round(self.duration_s, 2),
        }


Progress = Callable[[int, int, str], None]


def limits_of(interval: str) -> IntervalLimits:
    """Yahoo's limits for `interval`; UsageError (exit 2) naming the offered ones."""
    try:
        return INTERVALS[interval]
    except KeyError:
        offered = ", ".join(INTERVALS)
        raise UsageError(f"--interval {interval!r} is not offered; use one of: {offered}") from None


def missing(
    wanted: tuple[datetime, datetime], covered: Sequence[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """The parts of `wanted` ([start, end)) that no range of `covered` (sorted, merged)
    holds."""
    start, end = wanted
    gaps: list[tuple[datetime, datetime]] = []
    cursor = start
    for a, b in covered:
        if b <= cursor or a >= end:
            continue
        if a > cursor:
            gaps.append((cursor, min(a, end)))
        cursor = max(cursor, b)
        if cursor >= end:
            break
    if cursor < end:
        gaps.append((cursor, end))
    return gaps


def split(
    start: datetime, end: datetime, span: timedelta | None
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive ranges of at most `span` (None: one range)."""
    if span is None:
        return [(start, end)]
    pieces = []
    cursor = start
    while cursor < end:
        pieces.append((cursor, min(cursor + span, end)))
        cursor += span
    return pieces


class Backfiller:
    """Plans and runs backfills over one bar source and one history (see the module doc)."""

    def __init__(
        self,
        source: BarSource,
        history: BarStore,
        *,
        now: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_rate_limited: int = 5,
    ) -> None:
        self.source = source
        self.history = history
        self._now = now
        self._sleep = sleep
        self._clock = clock
        self.max_rate_limited = max_rate_limited

    def plan(
        self,
        symbols: Sequence[Symbol],
        interval: str = DEFAULT_INTERVAL,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> BackfillPlan:
        """The requests that fetch the bars of `symbols` in [since, until) not yet stored."""
        limits = limits_of(interval)
        now = self._now().replace(microsecond=0)
        end = now if until is None or until > now else until
        start = since if since is not None else now - timedelta(days=365)
        plan = BackfillPlan(interval=interval, since=start, until=end, now=now)
        if limits.lookback is not None:
            earliest = now - limits.lookback + _LOOKBACK_MARGIN
            if start < earliest:
                plan.notices.append(
                    f"Yahoo keeps {interval} bars for the last {limits.lookback.days} days: "
                    f"backfilling from {earliest:%Y-%m-%d %H:%M} UTC instead of "
                    f"{start:%Y-%m-%d %H:%M}"
                )
                start = plan.since = earliest
        if start >= end:
            raise UsageError(
                f"nothing to backfill between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} "
                "UTC; --since must be before --until and before now"
            )
        for symbol in dict.fromkeys(symbols):
            plan.symbols.append(symbol)
            covered = self.history.bar_windows(symbol.canonical, interval)
            for gap_start, gap_end in missing((start, end), covered):
                # A gap at the end shorter than one bar cannot hold a finished bar yet.
                if gap_end == now and gap_end - gap_start < limits.step:
                    continue
                for a, b in split(gap_start, gap_end, limits.request_span):
                    plan.windows.append(Window(symbol, a, b))
        return plan

    def run(self, plan: BackfillPlan, on_progress: Progress | None = None) -> BackfillReport:
        """Make the plan's requests in turn and store their finished bars."""
        started_s = self._clock()
        step = limits_of(plan.interval).step
        report = BackfillReport(
            interval=plan.interval,
            since=plan.since,
            until=plan.until,
            symbols=len(plan.symbols),
            requests_planned=len(plan.windows),
            notices=list(plan.notices),
        )
        for symbol in plan.symbols:
            report.added.setdefault(symbol.canonical, 0)
        failed: set[str] = set()
        total = len(plan.windows)
        for done, window in enumerate(plan.windows, start=1):
            name = window.symbol.canonical
            if name not in failed:
                try:
                    self._fetch_window(window, plan, step, report)
                except _Stop as stop:
                    report.stopped = stop.reason
                    break
                except (APIError, SymbolError) as exc:
                    failed.add(name)
                    report.errors[name] = {"type": type(exc).__name__, "message": exc.message}
            if on_progress is not None:
                on_progress(done, total, name)
        report.duration_s = self._clock() - started_s
        log.info(
            "backfill done",
            interval=plan.interval,
            symbols=report.symbols,
            requests=report.requests,
            bars_added=report.bars_added,
            errors=len(report.errors),
            stopped=report.stopped,
        )
        return report

    def _fetch_window(
        self, window: Window, plan: BackfillPlan, step: timedelta, report: BackfillReport
    ) -> None:
        """One window, asked again after each 429 (the bucket's shared pause in between)."""
        limited = 0
        to_yahoo(window.symbol)  # no Yahoo form: the symbol's error, and no request counted
        while True:
            report.requests += 1
            try:
                bars = self.source.fetch_bars(
                    window.symbol, plan.interval, window.start, window.end
                )
            except RateLimitedError:
                report.rate_limited += 1
                limited += 1
                if limited >= self.max_rate_limited:
                    raise _Stop(
                        f"Yahoo answered 429 (rate limited) {limited} times in a row; what was "
                        "fetched is kept: run the same backfill later to fetch the rest"
                    ) from None
                self._sleep(self._pause_s(limited))
                continue
            break
        in_range: list[Quote] = []
        covered_end = window.end
        for bar in bars:
            at = bar.as_of
            if at is None or not window.start <= at < window.end:
                continue
            if at + step > plan.now:  # still in progress: its final values come later
                covered_end = min(covered_end, at)
            else:
                in_range.append(bar)
        name = window.symbol.canonical
        added = self.history.record_bars(in_range, name, plan.interval, window.start, covered_end)
        report.bars_received += len(in_range)
        report.bars_added += added
        report.added[name] = report.added.get(name, 0) + added

    def _pause_s(self, limited: int) -> float:
        """How long to wait after a 429: the bucket's pause (Retry-After), else a backoff."""
        throttle = getattr(self.source, "throttle", None)
        paused = throttle.paused_for_s() if throttle is not None else 0.0
        return float(paused) if paused > 0 else min(2.0**limited, 60.0)


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
