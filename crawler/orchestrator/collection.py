"""One collection: every tracked symbol fetched once, concurrently, and a report of what happened.

The scheduler owns *when* a collection runs; this module owns *what* one does:

1. Decide per symbol whether to fetch (market hours, with "one last fetch of the close").
2. Fetch the chosen symbols through `HybridDataSource.fetch_many` (one bad symbol or source
   never stops the rest).
3. Record the quotes that came from a source (not those served from the cache: they were
   recorded when they were fetched) into the history, if there is one, as each one lands
   (`HistoryRecorder`: batched commits, at most a second in memory; a paid quote is committed
   before its fetch worker takes the next symbol and before it counts as done). With shared
   stores (Redis) every fresh quote read is recorded, since another node may have fetched it.
4. Return a `CollectionReport`; `summary()` is the one INFO line the scheduler logs.

Market hours, per symbol: while its market is open, it is fetched every collection. Once the
market is closed, it is fetched one more time (fresh, past the cache, so the history gets the
closing price) and then skipped until the market reopens. With a `QuoteTimes` store (the
daemon's), "already fetched since the close" is judged from the persisted time of the symbol's
last quote against the market's last close, so neither a forced collection nor a restart pays
for it again. Without one, `last_fetched_open_session` remembers it in memory.

Money, per collection: with a `SpendingPolicy`, only the symbols it picks may use Bright Data
(see `crawler.orchestrator.spending`); the rest go cache -> yfinance -> stale.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from crawler.logging import get_logger
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol, parse_symbol
from crawler.orchestrator.collection_report import (
    CollectionProgress,
    CollectionReport,
    log_report,
)
from crawler.orchestrator.pacing import requests_left
from crawler.store.history_recorder import HistoryRecorder
from crawler.store.quote_times import SymbolTimes
from crawler.utils.clock import MonotonicClock, WallClock, utc_now
from crawler.utils.exceptions import CrawlerError

if TYPE_CHECKING:
    from crawler.events import EventBus
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.orchestrator.spending import SpendingPolicy
    from crawler.store.backend import QuoteTimesStore
    from crawler.store.history import HistoryStore

__all__ = ["CACHE_SOURCE", "CollectionReport", "Collector", "MarketClock"]

log = get_logger("crawler.scheduler")

#: The `sources` key for quotes served from the cache (fresh or stale) rather than a source.
CACHE_SOURCE = "cache"
#: The paid source's name (as in `crawler.orchestrator.hybrid`).


class MarketClock(Protocol):
    """What the collector needs from `crawler.markets.hours.MarketHours`."""

    def is_open(self, symbol: str, asset_class: AssetClass, at: datetime | None = None) -> bool:
        """Whether `symbol`'s market is open at `at` (default: now)."""
        ...

    def market_of(self, symbol: str, asset_class: AssetClass | None) -> str:
        """The market code of `symbol`."""
        ...

    def last_close(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None = None
    ) -> datetime | None:
        """The latest close at or before `at`; None when the market never closes."""
        ...


class Collector:
    """Runs collections and keeps the per-symbol market-hours state between them.

    `market_hours` None means every symbol is fetched every time. Thread-safe: the state is
    behind a lock, though the scheduler runs one collection at a time anyway.
    """

    def __init__(
        self,
        *,
        market_hours: MarketClock | None = None,
        now: WallClock = utc_now,
        clock: MonotonicClock = time.monotonic,
        events: EventBus | None = None,
        quote_times: QuoteTimesStore | None = None,
        spending: SpendingPolicy | None = None,
    ) -> None:
        self._market_hours = market_hours
        self._events = events
        self._now = now
        self._clock = clock
        self._quote_times = quote_times
        self._spending = spending
        self._lock = threading.Lock()
        #: symbol → whether its last successful fetch happened while its market was open.
        self.last_fetched_open_session: dict[str, bool] = {}
        #: symbol → its last paid quote's time, when there is no QuoteTimes store.
        self._last_paid: dict[str, datetime] = {}
        self._progress: CollectionProgress | None = None

    def set_market_hours(self, market_hours: MarketClock | None) -> None:
        """Skip closed markets with `market_hours` from the next collection on (None: never)."""
        self._market_hours = market_hours

    def _left_s(self, start_s: float, deadline_s: float | None) -> float | None:
        if deadline_s is None:
            return None
        return max(0.0, deadline_s - (self._clock() - start_s))

    def forget(self, symbol: str) -> None:
        """Drop the market-hours state of a symbol no longer tracked."""
        with self._lock:
            self.last_fetched_open_session.pop(symbol, None)
            self._last_paid.pop(symbol, None)
        if self._quote_times is not None:
            try:
                self._quote_times.forget(symbol)
            except CrawlerError as exc:  # a leftover entry costs nothing
                log.warning(
                    "could not forget a symbol's quote times", symbol=symbol, error=exc.message
                )

    def collect(
        self,
        hybrid: HybridDataSource,
        tracked: Sequence[tuple[str, AssetClass]],
        history: HistoryStore | None = None,
        deadline_s: float | None = None,
    ) -> CollectionReport:
        """Fetch `tracked` (canonical symbol, asset class) pairs once; see the module docstring.

        `deadline_s` bounds the whole collection (the scheduler passes its interval, so one
        collection never runs into the next). Per-symbol failures land in the report. A failing
        history write raises (StorageError): the quotes were fetched but not kept, which the
        scheduler counts as a job error. While it runs, `in_progress` says how far it is.
        """
        try:
            return self._collect(hybrid, tracked, history, deadline_s)
        finally:
            self._progress = None

    @property
    def in_progress(self) -> dict[str, Any] | None:
        """The running collection: {"started_at", "done", "total"}; None when none runs."""
        progress = self._progress
        return None if progress is None else progress.snapshot

    def _collect(
        self,
        hybrid: HybridDataSource,
        tracked: Sequence[tuple[str, AssetClass]],
        history: HistoryStore | None,
        deadline_s: float | None,
    ) -> CollectionReport:
        started_at = self._now()
        start_s = self._clock()
        log.debug("collection starting", symbols=len(tracked))
        times = self._read_times()
        due = self._due(hybrid, tracked, started_at, times)
        total = len(due.regular) + len(due.closing)
        if self._events is not None:
            self._events.publish(
                "collection_start", symbols=len(tracked), fetching=total, skipped=len(due.skipped)
            )
        progress = self._progress = CollectionProgress(started_at.isoformat(), total, self._events)
        storage_before = hybrid.storage_errors()[0]
        paid_before = _paid_requests(hybrid)
        remaining_at_start = self._remaining(hybrid)
        run = _Run(hybrid, due, started_at, times, progress, start_s, deadline_s)
        results, allowance, recorded = self._fetch_all(run, history)
        quotes = self._tally(results, due)
        self._note_times([q for q in quotes if not q.from_cache], started_at, hybrid.paid_sources)
        if self._spending is not None:
            self._count_spending(run, quotes, paid_before, remaining_at_start)
        storage_count, storage_last = hybrid.storage_errors()
        sources = Counter(CACHE_SOURCE if q.from_cache else q.source for q in quotes)
        report = CollectionReport(
            started_at=started_at,
            duration_s=max(0.0, self._clock() - start_s),
            symbols=len(tracked),
            quotes=len(quotes),
            errors=due.errors,
            skipped_closed=due.skipped,
            sources=dict(sorted(sources.items())),
            stale=sum(1 for q in quotes if q.stale),
            recorded=recorded,
            paid_allowance=allowance,
            storage_errors=storage_count - storage_before,
            storage_error=(f"storage: {storage_last}" if storage_count > storage_before else None),
        )
        log_report(report, quotes)
        if self._events is not None:
            self._events.publish("collection_end", **report.as_dict())
        return report

    def _fetch_all(
        self, run: _Run, history: HistoryStore | None
    ) -> tuple[dict[str, Quote | CrawlerError], int | None, int | None]:
        """Fetch what `run` has due, keeping each quote in the history as it lands: (the
        outcomes by symbol, the paid allowance, the history rows added)."""
        hybrid, due = run.hybrid, run.due
        results: dict[str, Quote | CrawlerError] = {}
        # Quotes go to the history as they land (batched), not when the collection ends: a
        # crash in the middle keeps what was already paid for.
        recorder = HistoryRecorder(history) if history is not None else None
        stores = getattr(hybrid, "stores", None)
        on_quote = _history_hook(
            recorder, hybrid.paid_sources, shared=stores is not None and stores.shared
        )

        def fetch(batch: _Fetch) -> dict[str, Quote | CrawlerError]:
            if not batch.symbols:
                return {}
            return hybrid.fetch_many(
                batch.symbols,
                force_fresh=batch.force_fresh,
                on_done=run.progress,
                deadline_s=self._left_s(run.start_s, run.deadline_s),
                unpaid=batch.unpaid,
                on_quote=on_quote,
                # A cluster fetches each symbol once per interval, closes included.
                once_per_interval=True,
                paid_reasons=batch.reasons,
                past_live=batch.past_live,
            )

        try:
            if self._needs_based(hybrid):
                allowance = self._fetch_needed(
                    hybrid, due.regular, due.closing, due.every, run.at, run.times, fetch, results
                )
            else:
                unpaid, allowance, reasons = self._ration(
                    hybrid, due.regular + due.closing, due.every, run.at, run.times
                )
                results.update(fetch(_Fetch(due.regular, False, unpaid, reasons)))
                # After the regular group, not beside it: closes are rare (once per market and
                # day). Past the cache: a quote cached just before the close is not the
                # closing price.
                results.update(fetch(_Fetch(due.closing, True, unpaid, reasons)))
        finally:
            recorded = recorder.close() if recorder is not None else None
        return results, allowance, recorded

    def _tally(self, results: dict[str, Quote | CrawlerError], due: _Due) -> list[Quote]:
        """The quotes among `results` (errors go to `due.errors`), remembering for each fresh
        one whether its market was open."""
        quotes: list[Quote] = []
        for key, outcome in results.items():
            if isinstance(outcome, CrawlerError):
                due.errors[key] = outcome.message
                continue
            quotes.append(outcome)
            if not outcome.stale and key in due.open_now:
                with self._lock:
                    self.last_fetched_open_session[key] = due.open_now[key]
        return quotes

    def _count_spending(
        self, run: _Run, quotes: list[Quote], paid_before: int, remaining_at_start: int | None
    ) -> None:
        """Teach the spending policy this collection's quotes, and count what it saved."""
        spending, hybrid, due = self._spending, run.hybrid, run.due
        assert spending is not None
        spending.learn(quotes, due.open_now, run.at)
        # What the seed's order would have paid for: every symbol due that the cache or the
        # stream did not answer fresh (the ledger would have stopped it at the budget).
        # Without a key the seed's order pays nothing either: nothing was saved.
        free_served = sum(1 for q in quotes if q.from_cache and not q.stale)
        seed_order = len(due.regular) + len(due.closing) - free_served
        if not hybrid.paid_sources:
            seed_order = 0
        if remaining_at_start is not None:
            seed_order = min(seed_order, remaining_at_start)
        spending.count_collection(
            run.at, seed_order=seed_order, paid=_paid_requests(hybrid) - paid_before
        )

    def _due(
        self,
        hybrid: HybridDataSource,
        tracked: Sequence[tuple[str, AssetClass]],
        at: datetime,
        times: dict[str, SymbolTimes],
    ) -> _Due:
        """Which symbols a collection at `at` fetches (open; closed but not quoted since the
        close) and which it skips (closed and quoted)."""
        due = _Due()
        for canonical, asset_class in tracked:
            try:
                sym = parse_symbol(canonical, asset_class)
            except CrawlerError as exc:  # a bad entry written to the watchlist by hand
                due.errors[canonical] = exc.message
                continue
            due.every.append(sym)
            is_open = self._is_open(sym, at)
            due.open_now[sym.canonical] = is_open
            if is_open:
                due.regular.append(sym)
            elif self._closed_and_quoted(sym, at, times, hybrid):
                due.skipped.append(sym.canonical)
            else:
                due.closing.append(sym)  # not fetched since the close (or never): once more
        return due

    def preview_allowance(
        self, hybrid: HybridDataSource, tracked: Sequence[tuple[str, AssetClass]], at: datetime
    ) -> int | None:
        """The paid allowance a collection starting at `at` would get, reckoned as `collect`
        reckons it (the same symbols due, the same share of the budget), without carrying
        anything: what `crawler status` and `crawler budget` show."""
        if self._spending is None:
            return None
        remaining = self._remaining(hybrid)
        if remaining is None:
            return None
        due = self._due(hybrid, tracked, at, self._read_times())
        count = len(due.regular) + len(due.closing)
        return self._spending.preview(count, due.every, _share_of(hybrid, remaining), at)

    # -- memory of quotes and money -----------------------------------------------------------

    def _read_times(self) -> dict[str, SymbolTimes]:
        if self._quote_times is None:
            with self._lock:
                return {name: SymbolTimes(None, at) for name, at in self._last_paid.items()}
        try:
            return self._quote_times.snapshot()
        except CrawlerError as exc:  # unreadable: fall back to fetching, never to skipping
            log.warning("quote times unreadable", error=exc.message)
            return {}

    def _closed_and_quoted(
        self,
        sym: Symbol,
        at: datetime,
        times: dict[str, SymbolTimes],
        hybrid: HybridDataSource,
    ) -> bool:
        """Whether `sym`'s market is closed and it already has a quote from after the close:
        one a collection recorded, or one any process (`crawler fetch`) left in the cache."""
        if self._quote_times is None or self._market_hours is None:
            with self._lock:
                return not self.last_fetched_open_session.get(sym.canonical, True)
        try:
            closed_at = self._market_hours.last_close(sym.canonical, sym.asset_class, at=at)
        except Exception:  # cannot judge: fetching once more beats never fetching
            log.warning("last close unknown", symbol=sym.canonical, exc_info=True)
            return False
        if closed_at is None:
            return False
        last_quote = times.get(sym.canonical, SymbolTimes()).last_quote_at
        if last_quote is not None and last_quote >= closed_at:
            return True
        try:
            known = hybrid.cache.get_last_known(sym.canonical)
        except CrawlerError:
            return False
        # A time after `at` is not trusted (a clock stepped back, or a simulated day).
        return known is not None and closed_at <= known.fetched_at <= at

    def _needs_based(self, hybrid: HybridDataSource) -> bool:
        return (
            self._spending is not None
            and self._spending.policy == "needed"
            and bool(hybrid.paid_sources)
        )

    def _remaining(self, hybrid: HybridDataSource) -> int | None:
        """Paid requests the ledger would still accept now; None when it cannot be read."""
        if not hybrid.paid_sources:
            return None
        try:
            return requests_left(hybrid.ledger.statistics())
        except CrawlerError as exc:  # the ledger still guards every reserve
            log.warning("budget unreadable for pacing", error=exc.message)
            return None

    def _fetch_needed(
        self,
        hybrid: HybridDataSource,
        regular: list[Symbol],
        closing: list[Symbol],
        every: list[Symbol],
        at: datetime,
        times: dict[str, SymbolTimes],
        fetch: Callable[[_Fetch], dict[str, Quote | CrawlerError]],
        results: dict[str, Quote | CrawlerError],
    ) -> int | None:
        """The "needed" policy (see `crawler.orchestrator.spending`): the free path first for
        every symbol without a known need, then the paid requests the needs (known before, or
        met on the free path) get from the paced allowance. Returns the allowance."""
        spending = self._spending
        assert spending is not None
        due = regular + closing
        everyone = {sym.canonical for sym in due}
        needs: dict[str, str] = {}
        for sym in due:
            need = hybrid.free_need(sym)
            if need is not None:
                needs[sym.canonical] = need
        for name in spending.freshness_needs(
            [sym for sym in regular if sym.canonical not in needs], at
        ):
            needs[name] = "free_too_old"
        # 1. The free path (stream, Yahoo batch, chart) for the rest: nothing paid.
        free_regular = [sym for sym in regular if sym.canonical not in needs]
        free_closing = [sym for sym in closing if sym.canonical not in needs]
        results.update(fetch(_Fetch(free_regular, False, everyone)))
        results.update(fetch(_Fetch(free_closing, True, everyone)))
        for sym in free_regular + free_closing:
            outcome = results.get(sym.canonical)
            if not isinstance(outcome, Quote) or outcome.stale:
                needs[sym.canonical] = hybrid.free_need(sym) or "free_failing"
        candidates = [sym for sym in due if sym.canonical in needs]
        remaining = self._remaining(hybrid)
        if remaining is None:
            return None
        if not candidates:  # nothing needs paying for: the allowance, unused, is reported
            return spending.preview(len(due), every, _share_of(hybrid, remaining), at)
        # 2. The needs, rationed by the pacing: by need, then the oldest paid quote.
        plan = spending.ration(
            needs,
            candidates,
            len(due),
            every,
            _share_of(hybrid, remaining),
            at,
            last_paid={name: t.last_paid_at for name, t in times.items()},
        )
        tried = {sym.canonical for sym in free_regular + free_closing}
        left_free = {sym.canonical for sym in plan.free}
        # Too old: past the cache and the stream (their quote is the one too old).
        fresher = [s for s in plan.paid if plan.reasons[s.canonical] == "free_too_old"]
        rest = [
            sym
            for sym in candidates
            if sym.canonical not in tried or sym.canonical in plan.reasons
            if plan.reasons.get(sym.canonical) != "free_too_old"
        ]
        opening = {sym.canonical for sym in regular}
        results.update(fetch(_Fetch(fresher, True, set(), plan.reasons, past_live=True)))
        results.update(
            fetch(
                _Fetch([s for s in rest if s.canonical in opening], False, left_free, plan.reasons)
            )
        )
        results.update(
            fetch(
                _Fetch([s for s in rest if s.canonical not in opening], True, left_free,
                       plan.reasons)
            )
        )  # fmt: skip
        return plan.allowance

    def _ration(
        self,
        hybrid: HybridDataSource,
        due: list[Symbol],
        every: list[Symbol],
        at: datetime,
        times: dict[str, SymbolTimes],
    ) -> tuple[set[str], int | None, dict[str, str]]:
        """(symbols that may not use Bright Data, the allowance, why the others may) for this
        collection under the "paced" and "seed" policies."""
        if self._spending is None or not due or not hybrid.paid_sources:
            return set(), None, {}
        remaining = self._remaining(hybrid)
        if remaining is None:
            return set(), None, {}
        remaining = _share_of(hybrid, remaining)
        plan = self._spending.plan(
            due,
            every,
            remaining,
            at,
            unservable=hybrid.free_source_unservable,
            last_paid={name: t.last_paid_at for name, t in times.items()},
        )
        return {sym.canonical for sym in plan.free}, plan.allowance, plan.reasons

    def _note_times(self, fetched: list[Quote], at: datetime, paid_sources: frozenset[str]) -> None:
        """Remember when each symbol got a quote from a source, and which ones were paid."""
        good = [q for q in fetched if not q.stale]
        if not good:
            return
        paid = [q.symbol for q in good if q.source in paid_sources]
        if self._quote_times is None:
            with self._lock:
                for name in paid:
                    self._last_paid[name] = at
            return
        try:
            self._quote_times.record({q.symbol: at for q in good}, paid=paid)
        except CrawlerError as exc:  # losing it costs at most one more fetch per symbol
            log.warning("could not record quote times", error=exc.message)

    def _is_open(self, sym: Symbol, at: datetime) -> bool:
        if self._market_hours is None:
            return True
        try:
            return bool(self._market_hours.is_open(sym.canonical, sym.asset_class, at=at))
        except Exception:  # unknown calendar etc.: fetching too often beats never fetching
            log.warning("market hours unknown; fetching it", symbol=sym.canonical, exc_info=True)
            return True


@dataclass(slots=True)
class _Due:
    """What one collection has to do, symbol by symbol (see `Collector._due`)."""

    errors: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    regular: list[Symbol] = field(default_factory=list)
    closing: list[Symbol] = field(default_factory=list)
    every: list[Symbol] = field(default_factory=list)
    open_now: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Fetch:
    """One `fetch_many` of a collection: which symbols, past the cache or not, those that may
    not pay, why the others may, and whether a streamed quote is too old to serve."""

    symbols: list[Symbol]
    force_fresh: bool
    unpaid: set[str]
    reasons: dict[str, str] = field(default_factory=dict)
    past_live: bool = False


@dataclass(frozen=True, slots=True)
class _Run:
    """One collection under way: what `Collector._collect` hands its steps."""

    hybrid: HybridDataSource
    due: _Due
    at: datetime
    times: dict[str, SymbolTimes]
    progress: CollectionProgress
    start_s: float
    deadline_s: float | None


def _history_hook(
    recorder: HistoryRecorder | None, paid_sources: frozenset[str], *, shared: bool
) -> Callable[[Quote], None] | None:
    """`fetch_many`'s `on_quote`: each quote from a source into the history as it lands.

    Alone, a cached quote was recorded when this node fetched it. In a cluster (`shared`) it
    may be another node's: every fresh quote read is recorded (history dedups repeats). A
    quote we paid for is on disk before its worker, and the collection's progress, move on: a
    kill -9 must not lose what was billed.
    """
    if recorder is None:
        return None

    def on_quote(quote: Quote) -> None:
        if not quote.from_cache or (shared and not quote.stale):
            paid = quote.source in paid_sources and not quote.from_cache
            recorder.add(quote, durable=paid)

    return on_quote


def _paid_requests(hybrid: HybridDataSource) -> int:
    """Paid requests this process made so far (billed or not)."""
    usage = hybrid.usage
    return sum(usage[name].total_requests for name in hybrid.paid_sources if name in usage)


def _share_of(hybrid: HybridDataSource, remaining: int) -> int:
    """What this node paces against: the cluster's whole `remaining`. Every node ranks the same
    shared watchlist from the same shared quote times, so the nodes choose the same symbols to
    pay for; the fetch leases then decide which node pays for each. A node's share is thereby
    the chosen work it leases. (Each taking 1/N of what was left paid for 6 of 10 symbols on a
    20-request budget with three nodes.) The ledger still caps the day."""
    return remaining
