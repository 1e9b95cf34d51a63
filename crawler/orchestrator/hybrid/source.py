"""The hybrid fetcher: cache first (free), then the paid and free sources in order, each behind
its own circuit breaker, under the daily budget.

    source = HybridDataSource()                 # everything from the effective settings
    quote = source.get_quote("AAPL:US")          # cache → bright_data → yfinance
    quotes = source.get_quotes(["AAPL", "VOD:LN"])
    source.cleanup()

Order of resort for one symbol: a fresh cached quote; the sources in `sources_order`, skipping
a source that is not configured, whose breaker is open, or (Bright Data) whose budget is spent;
then the last known quote marked stale. Only when none of that yields a quote is an error
raised: BudgetExhaustedError if the budget is what stopped Bright Data, else
NoSourceAvailableError (an APIError) naming each source's reason.

Concurrent requests for one symbol share one upstream call (coalescing), so twenty threads
asking for AAPL:US at once cost one Bright Data request.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawler.logging import get_logger
from crawler.normalizer.plausibility import QuoteGate
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol, parse_symbol, to_yahoo
from crawler.orchestrator.circuit_breaker import CircuitBreaker
from crawler.orchestrator.hybrid.build import BRIGHT_DATA, YFINANCE, build_sources
from crawler.sources.base import BatchAnswer, BatchQuoteSource, PaidQuoteSource, QuoteSource
from crawler.store.backend import CacheStore, LedgerStore, Stores
from crawler.store.leases import FetchLeases
from crawler.store.ledger import micro_from_usd, usd_from_micro
from crawler.utils.exceptions import (
    APIError,
    BudgetExhaustedError,
    CircuitBreakerError,
    CrawlerError,
    ImplausibleQuoteError,
    NoSourceAvailableError,
    SourceConfigError,
    StorageError,
    SymbolError,
    TransientSourceError,
    UnknownSymbolError,
    UnmappableSymbolError,
)

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.events import EventBus
    from crawler.orchestrator.live import LiveFeed
    from crawler.store.yahoo_unknowns import YahooUnknowns

__all__ = ["NEUTRAL_ERRORS", "HybridDataSource", "SourceUsage"]

log = get_logger("crawler.hybrid")

#: The seed's breaker settings: (failure_threshold, recovery_timeout seconds).
BREAKER_SETTINGS: Mapping[str, tuple[int, float]] = {YFINANCE: (5, 60.0), BRIGHT_DATA: (3, 120.0)}
#: Errors that say nothing about a source's health: they neither trip nor heal a breaker.
NEUTRAL_ERRORS: tuple[type[BaseException], ...] = (
    UnknownSymbolError,
    UnmappableSymbolError,
    BudgetExhaustedError,
    SourceConfigError,
    # Our disk (full, read-only, locked): a healthy source must not be blamed for it. A full
    # data dir once opened both breakers and kept them open for minutes after space returned.
    StorageError,
    # One symbol's quote refused as implausible: says nothing of the source's availability.
    ImplausibleQuoteError,
)
#: How long a node waits for a quote whose fetch lease another node holds, and how often it
#: looks in the shared cache meanwhile.
LEASE_WAIT_S = 3.0
LEASE_POLL_S = 0.05


@dataclass
class SourceUsage:
    """Per-source counters for one HybridDataSource (this process, since it was built)."""

    total_requests: int = 0
    successes: int = 0
    failures: int = 0
    skipped: int = 0
    total_cost: Decimal = Decimal("0")
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        rate = 100.0 * self.successes / self.total_requests if self.total_requests else 0.0
        return {
            "total_requests": self.total_requests,
            "successes": self.successes,
            "failures": self.failures,
            "skipped": self.skipped,
            "success_rate_pct": round(rate, 2),
            "total_cost": self.total_cost,
            "last_error": self.last_error,
        }


class HybridDataSource:
    """Cache → sources in order → stale, behind per-source breakers and the daily budget.

    Every collaborator can be injected (tests point the sources at the fake market); left out,
    each is built from the effective settings (`crawler.config.get_settings()`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        cache: CacheStore | None = None,
        ledger: LedgerStore | None = None,
        stores: Stores | None = None,
        leases: FetchLeases | None = None,
        lease_ttl_s: float | None = None,
        lease_wait_s: float = LEASE_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        sources: Sequence[QuoteSource] | None = None,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        max_workers: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_breaker_change: Callable[[str, str, str], None] | None = None,
        on_fetch: Callable[[str, str, float], None] | None = None,
        events: EventBus | None = None,
        unknowns: YahooUnknowns | None = None,
    ) -> None:
        if settings is None and (cache is None or ledger is None or sources is None):
            from crawler.config import get_settings

            settings = get_settings()
        self.settings = settings
        # The stores we open we also close; injected ones belong to the caller.
        self._owned_stores: Stores | None = None
        data_dir = Path(".")
        if settings is not None:
            from crawler.store.datadir import ensure_data_dir

            data_dir = ensure_data_dir(Path(settings.data_dir))
        if stores is None and (ledger is None or cache is None):
            from crawler.store.backend import open_stores

            assert settings is not None
            stores = self._owned_stores = open_stores(settings)
        #: The backend's stores when known (status lists its nodes); None if only parts given.
        self.stores = stores
        if ledger is None or cache is None:
            if stores is None:
                raise ValueError("pass stores=, or both ledger= and cache=, or settings")
            ledger = ledger or stores.ledger
            cache = cache or stores.cache
        self.ledger: LedgerStore = ledger
        self.cache: CacheStore = cache
        # Leases only matter when other nodes share the cache: one node coalesces in memory.
        if leases is None and stores is not None and stores.shared:
            leases = stores.leases
        self.leases = leases
        interval_s = float(settings.update_interval_seconds) if settings is not None else 900.0
        self._lease_ttl_s = lease_ttl_s if lease_ttl_s is not None else interval_s
        self._lease_wait_s = lease_wait_s
        self._sleep = sleep
        self._leases_waited = 0
        self._leases_lost = 0
        self._on_fetch = on_fetch
        #: Told of every quote that lands and of paid requests (see `crawler.events`).
        self.events = events
        self._exhausted_day: str | None = None
        #: The live stream, asked before the cache and the sources (set by the daemon).
        self.live: LiveFeed | None = None
        if sources is None:
            assert settings is not None
            sources = build_sources(settings, self.ledger, data_dir=data_dir)
        self.sources: dict[str, QuoteSource] = {s.name: s for s in sources}
        self.breakers: dict[str, CircuitBreaker] = dict(breakers or {})
        #: Where breakers are shared between nodes (and processes): None when not known.
        self.breaker_board = stores.breakers if stores is not None else None
        state_change = on_breaker_change
        if self.breaker_board is not None:
            state_change = self._shared_breaker_change(on_breaker_change)
        for name in self.sources:
            if name not in self.breakers:
                threshold, recovery_s = BREAKER_SETTINGS.get(name, (5, 60.0))
                self.breakers[name] = CircuitBreaker(
                    name=name,
                    failure_threshold=threshold,
                    recovery_timeout=recovery_s,
                    clock=clock,
                    excluded=NEUTRAL_ERRORS,
                    on_state_change=state_change,
                )
        self.usage: dict[str, SourceUsage] = {name: SourceUsage() for name in self.sources}
        self.config_errors: dict[str, str] = {}
        self._max_workers = max_workers or (settings.max_workers if settings else 16)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[Quote]] = {}
        # Batch leaders not settled yet (see `_claim`), so cleanup can release their waiters.
        self._batch_leaders: dict[Future[Quote], str] = {}
        # Symbols of this node's batches whose cluster fetch lease it holds until they settle.
        self._batch_leases: set[str] = set()
        # Per symbol, how many leaders have finished (see `_coalesced_fetch`).
        self._finished: dict[str, int] = {}
        # Guards the SourceUsage counters: sources run on many threads at once.
        self._usage_lock = threading.Lock()
        self._stale_served = 0
        self._coalesced = 0
        # Symbols whose last yfinance attempt failed: first in line for paid requests.
        self._free_failing: set[str] = set()
        #: Symbols Yahoo does not know, not asked again until their retry (None: asked every
        #: time, the seed's way). With it, a symbol left out of a batch answer counts as unknown
        #: (Yahoo's way of saying so) instead of costing a chart request each.
        self.unknowns = unknowns
        # Why a paid request is made, per symbol of the fetch under way (see `fetch_many`);
        # `default_paid_reason` for the others (the seed's order, as a library).
        self._paid_reasons: dict[str, str] = {}
        self.default_paid_reason = "seed"
        # Symbols whose streamed quote is too old to answer for them (see `fetch_many`).
        self._past_live: set[str] = set()
        # Quotes served by the live stream (free serves, like cache hits).
        self._live_served = 0
        # Errors of our own disk (StorageError) met while fetching: not the sources' fault.
        self._storage_errors = 0
        self._last_storage_error: str | None = None
        self._closed = False
        #: Every fetched quote passes it against the symbol's last good one (plausibility).
        self.plausibility = QuoteGate()
        # Set by `abort()` (the daemon is stopping): batches stop waiting and cancel the rest.
        self._aborted = threading.Event()

    # -- the seed's API ---------------------------------------------------------------------
    def get_quote(
        self,
        symbol: str | Symbol,
        asset_class: AssetClass | None = None,
        force_fresh: bool = False,
        paid: bool = True,
        *,
        once_per_interval: bool = False,
    ) -> Quote:
        """One quote: cached if fresh (unless `force_fresh`), else from the first source that
        serves it, else the last known quote marked stale. Raises SymbolError for a bad
        symbol, BudgetExhaustedError or NoSourceAvailableError when nothing could serve it.
        `paid=False` leaves Bright Data out (the collection's pacing gave this symbol no paid
        request). `once_per_interval` (collections, with shared stores): a symbol another node
        already fetched this interval is not fetched again, even when forced."""
        sym = symbol if isinstance(symbol, Symbol) else parse_symbol(symbol, asset_class)
        # Read before the cache: a leader that finishes after this point bumps it, telling
        # `_coalesced_fetch` that our miss may be out of date.
        generation = self._finished.get(sym.canonical, 0)
        live = self.live
        if live is not None and sym.canonical not in self._past_live:
            # Even past `force_fresh`: a streamed tick is fresher than any source could be,
            # and asking Bright Data for it would pay for what the stream gives free.
            streamed = live.live_quote(sym.canonical)
            if streamed is not None:
                self._count_live()
                return streamed
        if not force_fresh:
            cached = self.cache.get(sym.canonical)
            if cached is not None:
                return cached
        return self._coalesced_fetch(sym, force_fresh, generation, paid, once_per_interval)

    def get_quotes(
        self, symbols: Iterable[str | Symbol], asset_class: AssetClass | None = None
    ) -> list[Quote]:
        """The quotes that could be had, in input order; failures are logged, not raised."""
        results = self.fetch_many(symbols, asset_class)
        return [r for r in results.values() if isinstance(r, Quote)]

    def fetch_many(
        self,
        symbols: Iterable[str | Symbol],
        asset_class: AssetClass | None = None,
        force_fresh: bool = False,
        on_done: Callable[[str, Quote | CrawlerError], None] | None = None,
        deadline_s: float | None = None,
        unpaid: Collection[str] = (),
        on_quote: Callable[[Quote], None] | None = None,
        once_per_interval: bool = False,
        paid_reasons: Mapping[str, str] | None = None,
        past_live: bool = False,
    ) -> dict[str, Quote | CrawlerError]:
        """Fetch concurrently on a bounded pool; one bad symbol or source never stops the rest.
        Returns canonical symbol (or the raw text, for a malformed one) → quote or error.
        Symbols whose canonical form is in `unpaid` do not use Bright Data (pacing): for them
        yfinance comes first, so they take the batch path when it exists.

        With `deadline_s`, the whole batch returns by then: quotes not yet fetched become
        TransientSourceError and those not yet started are cancelled (they cost nothing).
        Quotes already in flight finish in the background within their own deadline.

        `on_quote` is called with each quote as soon as its fetch finishes (completion order,
        on the thread that finished it), so a caller can keep it before the batch ends; on the
        per-symbol path it runs inside the fetch task, so the symbol counts as done (and the
        worker takes its next symbol) only after the hook returned. After
        `abort()` the batch returns at once: what has not finished becomes a
        TransientSourceError and what has not started is cancelled.

        `paid_reasons` (canonical -> why) is recorded with each paid request made for those
        symbols (`crawler budget` counts spend by reason); others get `default_paid_reason`.
        `past_live`: a streamed quote does not answer for these symbols (it is the one found
        too old), so with `force_fresh` they go to the sources.
        """
        given = list(symbols)
        if paid_reasons:
            with self._lock:
                self._paid_reasons.update(paid_reasons)
        if past_live:
            with self._lock:
                self._past_live.update(_names(given, asset_class))
        try:
            return self._fetch_many(
                given, asset_class, force_fresh, on_done, deadline_s, unpaid, on_quote,
                once_per_interval,
            )  # fmt: skip
        finally:
            with self._lock:
                for key in paid_reasons or ():
                    self._paid_reasons.pop(key, None)
                if past_live:
                    self._past_live.difference_update(_names(given, asset_class))

    def _fetch_many(
        self,
        symbols: Iterable[str | Symbol],
        asset_class: AssetClass | None,
        force_fresh: bool,
        on_done: Callable[[str, Quote | CrawlerError], None] | None,
        deadline_s: float | None,
        unpaid: Collection[str],
        on_quote: Callable[[Quote], None] | None,
        once_per_interval: bool,
    ) -> dict[str, Quote | CrawlerError]:
        pending: dict[str, Future[Quote]] = {}
        results: dict[str, Quote | CrawlerError] = {}
        pool = self._executor()
        deadline_at_s = None if deadline_s is None else time.monotonic() + deadline_s
        batches = {True: self._batch_source(), False: self._batch_source(paid=False)}
        leaders: dict[bool, list[tuple[Symbol, Future[Quote]]]] = {True: [], False: []}
        leased_elsewhere: list[tuple[Symbol, Future[Quote], bool]] = []
        batched: set[str] = set()
        inline: set[str] = set()  # per-symbol tasks that call `on_quote` themselves
        # Nodes sharing a cache start at different places (`_spread`); answers keep input order.
        given = list(symbols)
        rank: dict[str, int] = {}
        for index, item in self._spread(list(enumerate(given))):
            try:
                sym = item if isinstance(item, Symbol) else parse_symbol(item, asset_class)
            except SymbolError as exc:
                results[str(item)] = exc
                if on_done:
                    on_done(str(item), exc)
                continue
            rank.setdefault(sym.canonical, index)
            if sym.canonical in pending:
                continue
            paid = sym.canonical not in unpaid
            if batches[paid] is not None and _has_yahoo_form(sym) and not self._yahoo_skips(sym):
                future, leader = self._claim(sym, force_fresh)
                pending[sym.canonical] = future
                batched.add(sym.canonical)
                if leader and self._lease_for_batch(sym.canonical):
                    leaders[paid].append((sym, future))
                elif leader:  # another node is fetching it: wait for its quote, as get_quote does
                    leased_elsewhere.append((sym, future, paid))
                continue
            # `on_quote` runs inside the task, before its future completes: the worker (and
            # whoever waits for the symbol) moves on only after the hook (a paid quote's
            # history commit) is done.
            pending[sym.canonical] = pool.submit(
                _kept, on_quote, self.get_quote, sym, None, force_fresh, paid,
                once_per_interval=once_per_interval,
            )  # fmt: skip
            inline.add(sym.canonical)
        for paid, batch_source in batches.items():
            if batch_source is None or not leaders[paid]:
                continue
            size = max(1, int(batch_source.batch_size))
            chunks = leaders[paid]
            for start in range(0, len(chunks), size):
                pool.submit(self._run_batch, batch_source, chunks[start : start + size],
                            deadline_at_s, paid)  # fmt: skip
        # After our own batches: waiting on the pool for other nodes' quotes must never hold
        # up the batches they in turn wait for.
        for sym, future, paid in leased_elsewhere:
            pool.submit(self._finish_leased, sym, future, force_fresh, paid, once_per_interval)
        if on_quote is not None:
            for key, future in pending.items():
                if key not in inline:
                    future.add_done_callback(_quote_callback(on_quote))
        for key, future in pending.items():
            outcome = self._outcome_of(
                key, future, deadline_at_s, deadline_s, cancel=key not in batched
            )
            results[key] = outcome
            if on_done:
                on_done(key, outcome)
        if leaders[True] or leaders[False]:
            self._report_missed_deadline(
                batches[True] or batches[False], results, len(leaders[True]) + len(leaders[False])
            )
        if self.leases is not None:
            results = dict(sorted(results.items(), key=lambda kv: rank.get(kv[0], -1)))
        return results

    def _outcome_of(
        self,
        key: str,
        future: Future[Quote],
        deadline_at_s: float | None,
        deadline_s: float | None,
        *,
        cancel: bool = True,
    ) -> Quote | CrawlerError:
        try:
            return self._wait_for(future, deadline_at_s)
        except _AbortedError:
            if cancel:
                future.cancel()
            return TransientSourceError(f"{key}: not fetched, crawler is stopping")
        except FutureTimeout:
            # A batch leader's future is not a pool task: its worker sees the deadline itself
            # (and a cancelled leader future would break the requests coalesced onto it).
            if cancel:
                future.cancel()
            return TransientSourceError(
                f"{key}: the batch deadline of {deadline_s:g}s passed before it was fetched"
            )
        except CancelledError:
            return TransientSourceError(f"{key}: cancelled at the batch deadline")
        except CrawlerError as exc:
            # Debug only: a collection logs its failures once per cause (`collection.py`);
            # one line per symbol buried the collections' own lines (157 of the first 163).
            log.debug("fetch failed", symbol=key, error=exc.message)
            return exc
        except Exception as exc:  # a bug must not take the whole collection down
            log.exception("unexpected error fetching", symbol=key)
            return APIError(f"internal error fetching {key}: {type(exc).__name__}")

    def _wait_for(self, future: Future[Quote], deadline_at_s: float | None) -> Quote:
        """`future.result()` until the deadline, in short slices so `abort()` is seen."""
        while True:
            if self._aborted.is_set() and not future.done():
                raise _AbortedError
            slice_s = _ABORT_POLL_S
            if deadline_at_s is not None:
                slice_s = min(slice_s, max(0.0, deadline_at_s - time.monotonic()))
            try:
                return future.result(timeout=slice_s)
            except FutureTimeout:
                if deadline_at_s is not None and time.monotonic() >= deadline_at_s:
                    raise

    def abort(self) -> None:
        """The daemon is stopping: running `fetch_many` batches return now, cancelling what
        has not started (requests in flight finish in the background). Irreversible."""
        self._aborted.set()

    def get_statistics(self) -> dict[str, Any]:
        """The seed's statistics: cache_statistics, source_usage, cost_tracking, plus breakers."""
        cost = self.ledger.statistics()
        with self._usage_lock:
            usage = {name: u.as_dict() for name, u in self.usage.items()}
        for name in self.sources:
            # Read now from the source's own billed count: the copy taken after each fetch
            # can be overwritten by an older value when fetches finish out of order.
            usage[name]["total_cost"] = self._cost_of(name)
        for name in (YFINANCE, BRIGHT_DATA):
            usage.setdefault(name, SourceUsage().as_dict())
        breakers = {name: b.get_statistics() for name, b in self.breakers.items()}
        live = self.live
        if live is not None:
            breakers[live.stream.name] = live.stream.breaker.get_statistics()
        return {
            "cache_statistics": self.cache.statistics(),
            "source_usage": usage,
            "cost_tracking": cost,
            "breakers": breakers,
            "config_errors": dict(self.config_errors),
            "stale_served": self._stale_served,
            "live_served": self._live_served,
            "yahoo_unknown": self.unknowns.statistics() if self.unknowns is not None else None,
            "coalesced_requests": self._coalesced,
            "storage_errors": self._storage_errors,
            "last_storage_error": self._last_storage_error,
            "stream": live.statistics() if live is not None else None,
            # yfinance's own view: batches, crumb refreshes, and whether Yahoo throttles us.
            "yahoo": self._source_statistics(YFINANCE),
            "leases": {
                "enabled": self.leases is not None,
                "ttl_s": self._lease_ttl_s,
                "waited_for_other_node": self._leases_waited,
                "not_ready_in_time": self._leases_lost,
            },
        }

    def _source_statistics(self, name: str) -> dict[str, Any] | None:
        stats_of = getattr(self.sources.get(name), "statistics", None)
        if stats_of is None:
            return None
        try:
            stats: dict[str, Any] = stats_of()
        except Exception:  # statistics must never break status
            log.exception("source statistics failed", source=name)
            return None
        return stats

    def cleanup(self) -> None:
        """Release threads and connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        # A batch whose task was cancelled above never settled its symbols: release whoever
        # waits for them rather than leave them waiting forever.
        with self._lock:
            orphans = list(self._batch_leaders.items())
        for future, key in orphans:
            self._settle(key, future, APIError(f"{key}: the data source was cleaned up"))
        for source in self.sources.values():
            try:
                source.close()
            except Exception:  # closing must never mask the caller's own error
                log.exception("closing a source failed", source=source.name)
        if self._owned_stores is not None:
            self._owned_stores.close()

    close = cleanup

    def __enter__(self) -> HybridDataSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- internals --------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise APIError("the hybrid data source was cleaned up; build a new one")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._max_workers, thread_name_prefix="crawler-fetch"
                )
            return self._pool

    def free_source_unservable(self, sym: Symbol) -> bool:
        """Whether yfinance cannot serve `sym` now: absent, misconfigured, its breaker open, no
        Yahoo equivalent, or its last attempt for this symbol failed. Such symbols come first
        when paid requests are rationed."""
        breaker = self.breakers.get(YFINANCE)
        if YFINANCE not in self.sources or YFINANCE in self.config_errors:
            return True
        if breaker is not None and not breaker.is_available():
            return True
        try:
            to_yahoo(sym)
        except UnmappableSymbolError:
            return True
        if self._yahoo_skips(sym):
            return True
        with self._usage_lock:
            return sym.canonical in self._free_failing

    def free_need(self, sym: Symbol) -> str | None:
        """Why the free path (stream, Yahoo batch, chart) cannot serve `sym` now: "unservable"
        (no Yahoo form, or Yahoo does not know it), "free_failing" (yfinance absent or
        misconfigured, its breaker open, Yahoo's 429 pause on, or this symbol's last free
        attempt failed), or None."""
        try:
            to_yahoo(sym)
        except UnmappableSymbolError:
            return "unservable"
        if self._yahoo_skips(sym):
            return "unservable"
        if YFINANCE not in self.sources or YFINANCE in self.config_errors:
            return "free_failing"
        breaker = self.breakers.get(YFINANCE)
        if breaker is not None and not breaker.is_available():
            return "free_failing"
        throttle = getattr(self.sources[YFINANCE], "throttle", None)
        paused = getattr(throttle, "paused_for_s", None)
        if callable(paused) and paused() > 0:
            return "free_failing"
        with self._usage_lock:
            return "free_failing" if sym.canonical in self._free_failing else None

    def _yahoo_skips(self, sym: Symbol) -> bool:
        """Whether Yahoo is not to be asked about `sym` now (it did not know it lately)."""
        return self.unknowns is not None and self.unknowns.skip(sym.canonical)

    def _count_live(self) -> None:
        with self._usage_lock:
            self._live_served += 1

    def _coalesced_fetch(
        self,
        sym: Symbol,
        force_fresh: bool,
        generation: int,
        paid: bool = True,
        once: bool = False,
    ) -> Quote:
        key = sym.canonical
        with self._lock:
            future = self._inflight.get(key)
            leader = future is None
            if future is None:
                future = Future()
                self._inflight[key] = future
            else:
                self._coalesced += 1
        if not leader:
            return future.result()
        try:
            # Another leader may have filled the cache between our miss and our election. Look
            # again only then: every lookup counts in the cache's hit rate, and a second miss
            # for the same request would understate it.
            quote = None
            if not force_fresh and self._finished.get(key, 0) != generation:
                quote = self.cache.get(key)
            if quote is None:
                quote = self._fetch_leased(sym, force_fresh, paid, once)
            future.set_result(quote)
            return quote
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
                # After the cache.put in _fetch_upstream, so a reader that sees the old
                # generation is sure to see the new quote in the cache.
                self._finished[key] = self._finished.get(key, 0) + 1

    # -- the batch path (yfinance's batch quotes) -----------------------------------------
    def _batch_source(self, paid: bool = True) -> BatchQuoteSource | None:
        """The batch-capable source when it is the first one a miss would be asked now
        (every source before it skipped: no key, breaker open, budget spent, or `paid` False
        and the source is Bright Data), else None."""
        source = self.sources.get(YFINANCE)
        if not isinstance(source, BatchQuoteSource) or source.batch_size < 2:
            return None
        for name in self._order():
            if name == BRIGHT_DATA and not paid:
                continue
            if self._skip_reason(name, self.breakers[name]) is None:
                return source if name == YFINANCE else None
        return None

    def _claim(self, sym: Symbol, force_fresh: bool) -> tuple[Future[Quote], bool]:
        """(future, leader?): a fresh cached quote, the in-flight fetch of another caller to
        wait for, or a new leader future this batch must settle."""
        key = sym.canonical
        generation = self._finished.get(key, 0)
        live = self.live
        # As in get_quote: a streamed tick wins even over force_fresh; then the cache.
        ready = None
        if live is not None and key not in self._past_live:
            ready = live.live_quote(key)
        if ready is not None:
            self._count_live()
        if ready is None and not force_fresh:
            ready = self.cache.get(key)
        if ready is not None:
            done: Future[Quote] = Future()
            done.set_result(ready)
            return done, False
        with self._lock:
            existing = self._inflight.get(key)
            if existing is not None:
                self._coalesced += 1
                return existing, False
            future: Future[Quote] = Future()
            self._inflight[key] = future
            self._batch_leaders[future] = key
        if not force_fresh and self._finished.get(key, 0) != generation:
            cached = self.cache.get(key)  # a leader finished between our miss and our claim
            if cached is not None:
                self._settle(key, future, cached)
        return future, True

    def _settle(self, key: str, future: Future[Quote], outcome: Quote | BaseException) -> None:
        """End a batch leadership: the waiters get `outcome`, the symbol is free again (and
        so is its cluster lease: marked done with a fresh quote, given back otherwise)."""
        try:
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        except InvalidStateError:  # settled already (the cache answered right after the claim)
            pass
        finally:
            with self._lock:
                self._batch_leaders.pop(future, None)
                if self._inflight.get(key) is future:
                    del self._inflight[key]
                    self._finished[key] = self._finished.get(key, 0) + 1
                leased = key in self._batch_leases
                self._batch_leases.discard(key)
            if leased:
                fresh = isinstance(outcome, Quote) and not outcome.stale
                self._lease_over(key, fetched=fresh)

    def _lease_for_batch(self, key: str) -> bool:
        """Whether this node may put `key` in a batch: no cluster, Redis away (as in
        `_fetch_leased`: only free sources run then), or its fetch lease taken here."""
        if self.leases is None:
            return True
        try:
            mine = self.leases.acquire(key, self._lease_ttl_s)
        except StorageError as exc:
            log.debug("lease not checked", symbol=key, error=exc.message)
            return True
        if mine:
            with self._lock:
                self._batch_leases.add(key)
        return mine

    def _finish_leased(
        self, sym: Symbol, future: Future[Quote], force_fresh: bool, paid: bool, once: bool
    ) -> None:
        """A batch symbol another node holds the lease of: its quote from the shared cache, or
        the per-symbol path when the holder gives up (on the pool)."""
        try:
            outcome: Quote | BaseException = self._fetch_leased(sym, force_fresh, paid, once)
        except BaseException as exc:
            outcome = exc
        self._settle(sym.canonical, future, outcome)

    def _run_batch(
        self,
        source: BatchQuoteSource,
        chunk: list[tuple[Symbol, Future[Quote]]],
        deadline_at_s: float | None,
        paid: bool = True,
    ) -> None:
        """One batch request for `chunk`, then the per-symbol path for what it left open.
        Runs on the pool; every future of the chunk is settled, whatever happens."""
        live = [(sym, future) for sym, future in chunk if not future.done()]
        try:
            if deadline_at_s is not None and time.monotonic() >= deadline_at_s:
                for sym, future in live:
                    self._settle(sym.canonical, future, _missed(sym.canonical))
                return
            name, breaker, usage = YFINANCE, self.breakers[YFINANCE], self.usage[YFINANCE]
            tried: dict[str, str] = {}
            answer: BatchAnswer | None = None
            started_s = time.perf_counter()
            try:
                answer = breaker.call(source.fetch_batch, [sym for sym, _ in live])
            except CircuitBreakerError as exc:
                tried[name] = exc.message
            except CrawlerError as exc:  # the request as a whole failed: counted once
                self._report_fetch(name, "failure", started_s)
                self._count_failure(name, usage, exc)
                tried[name] = exc.message
                log.info("yfinance batch failed", symbols=len(live), error=exc.message)
            rest: list[tuple[Symbol, Future[Quote], dict[str, str]]] = []
            for sym, future in live:
                key = sym.canonical
                quote = answer.quotes.get(key) if answer is not None else None
                if quote is not None and self._refusal(quote) is not None:
                    rest.append((sym, future, tried))  # refused: the chart is asked for it
                elif quote is not None:
                    self._report_fetch(name, "success", started_s)
                    self._count_success(name, usage)
                    self._note_free(name, sym, failed=False)
                    if self.unknowns is not None:
                        self.unknowns.note_served(key)
                    self._keep_in_cache(quote)
                    if self.events is not None:
                        self.events.publish_quote(quote)  # watchers see batch quotes too
                    self._settle(key, future, quote)
                elif answer is not None and key in answer.errors:
                    self._note_free(name, sym, failed=True)
                    rest.append((sym, future, {name: answer.errors[key].message}))
                elif answer is not None and key in answer.omitted and self.unknowns is not None:
                    # Yahoo leaves out what it does not know: remembered, and no chart asked.
                    self.unknowns.note_unknown(key)
                    rest.append((sym, future, {name: "Yahoo does not know it (left out)"}))
                else:  # left out or partial: the per-symbol chart, under the same rules
                    rest.append((sym, future, tried))
            try:
                if rest and self._aborted.is_set():
                    raise APIError("stopping")
                pool = self._executor()  # APIError once cleaned up (the daemon is stopping)
            except APIError:
                # Stopping: the rest is not fetched one by one (nothing is billed for it).
                for sym, future, _ in rest:
                    stopped = TransientSourceError(
                        f"{sym.canonical}: not fetched, crawler is stopping"
                    )
                    self._settle(sym.canonical, future, stopped)
                return
            for sym, future, reasons in rest:
                pool.submit(self._finish_one, sym, future, reasons, deadline_at_s, paid)
        except BaseException as exc:
            for sym, future in live:
                if not future.done():
                    error = APIError(f"internal error fetching {sym.canonical}: {exc!r}"[:240])
                    self._settle(sym.canonical, future, error)
            if not isinstance(exc, Exception):
                raise
            log.exception("yfinance batch failed unexpectedly")

    def _finish_one(
        self,
        sym: Symbol,
        future: Future[Quote],
        tried: Mapping[str, str],
        deadline_at_s: float | None,
        paid: bool = True,
    ) -> None:
        """The per-symbol path for one symbol the batch did not serve (on the pool)."""
        if deadline_at_s is not None and time.monotonic() >= deadline_at_s:
            self._settle(sym.canonical, future, _missed(sym.canonical))
            return
        try:
            outcome: Quote | BaseException = self._fetch_upstream(sym, tried, paid)
        except BaseException as exc:
            outcome = exc
        self._settle(sym.canonical, future, outcome)

    def _report_missed_deadline(
        self,
        source: BatchQuoteSource | None,
        results: Mapping[str, Quote | CrawlerError],
        batched: int,
    ) -> None:
        """Say it loudly when the per-symbol fallbacks did not fit before the deadline."""
        missed = sum(
            1 for r in results.values() if isinstance(r, TransientSourceError) and "deadline"
            in r.message
        )  # fmt: skip
        if not missed:
            return
        throttle = getattr(source, "throttle", None)
        rate = f"{throttle.rate_per_s:g} requests/s" if throttle is not None else "no limit"
        log.warning(
            "yfinance batched symbols missed the deadline waiting for per-symbol chart "
            "fallbacks; raise YFINANCE_MAX_RPS or the interval",
            missed=missed,
            batched=batched,
            yahoo_rate_limit=rate,
        )

    def _spread(self, items: list[tuple[int, str | Symbol]]) -> list[tuple[int, str | Symbol]]:
        """Nodes sharing a watchlist start their collections at different places in it (by
        node name), so they fetch different symbols at first instead of queueing on one
        lease after another; each then finds the others' quotes in the shared cache."""
        if self.leases is None or len(items) < 2:
            return items
        digest = hashlib.sha256(self.leases.node.encode()).digest()
        start = int.from_bytes(digest[:4], "big") % len(items)
        return items[start:] + items[:start]

    def _fetch_leased(
        self, sym: Symbol, force_fresh: bool, paid: bool = True, once: bool = False
    ) -> Quote:
        """Fetch upstream, unless another node holds the symbol's lease: then wait briefly
        for its quote in the shared cache (one paid fetch per symbol per interval)."""
        if self.leases is None:
            return self._fetch_upstream(sym, paid=paid)
        key = sym.canonical
        asked_at = time.time()
        try:
            mine = self.leases.acquire(key, self._lease_ttl_s)
        except StorageError as exc:
            # Redis is away: the budget cannot be checked either, so only free sources run.
            log.debug("lease not checked", symbol=key, error=exc.message)
            return self._fetch_upstream(sym, paid=paid)
        if not mine:
            waited = self._wait_for_other_node(sym, asked_at, force_fresh, once)
            if waited is not None:
                return waited
            # Forced, and nobody is fetching it now (the lease only marks this interval's
            # fetch as done): fetch it ourselves. The ledger still guards the money.
        try:
            quote = self._fetch_upstream(sym, paid=paid)
        except BaseException:
            self._lease_over(key, fetched=False)
            raise
        self._lease_over(key, fetched=not quote.stale)
        return quote

    def _lease_over(self, key: str, *, fetched: bool) -> None:
        """Mark our lease done (the quote is in the cache), or give it back when we got no
        fresh quote, so another node (or our next collection) may try before it expires."""
        assert self.leases is not None
        with contextlib.suppress(StorageError):  # it expires by itself
            if fetched:
                self.leases.mark_done(key)
            else:
                self.leases.release(key)

    def _wait_for_other_node(
        self, sym: Symbol, asked_at: float, force_fresh: bool, once: bool = False
    ) -> Quote | None:
        """Poll the shared cache for the lease holder's quote while its fetch is in flight.

        `once` (a collection): the cluster fetches each symbol once per interval, forced or
        not, so a lease marked done means this interval's quote is already in the cache.
        Without it, a forced fetch (`crawler fetch --fresh`) only joins a fetch in flight.

        None means: fetch it yourself (forced and nothing in flight, or a collection whose
        holder gave up). Otherwise the holder's quote, or the last-known one marked stale, or
        TransientSourceError.
        """
        assert self.leases is not None
        key = sym.canonical
        with self._usage_lock:
            self._leases_waited += 1
        # A forced fetch wants the holder's new quote: one fetched at most `lease_wait_s` before
        # we asked (the holder may have sent its request just before); otherwise any fresh one.
        since = asked_at - (self._lease_wait_s if force_fresh else self.cache.ttl_s)
        waited_s = 0.0
        in_flight = True
        with contextlib.suppress(StorageError):
            in_flight = self.leases.in_flight(key)
        if force_fresh and not once and not in_flight:
            return None
        while True:
            try:
                found = self.cache.get_last_known(key)
            except StorageError:
                found = None
            if found is not None and found.fetched_at.timestamp() >= since:
                return found.with_flags(from_cache=True, stale=False)
            if not in_flight:
                if once:
                    holder = None
                    with contextlib.suppress(StorageError):
                        holder = self.leases.holder(key)
                    if holder is None:
                        return None  # the holder gave the lease back: no quote this interval
                    if found is not None:
                        # Done this interval by `holder`: its quote is the interval's quote.
                        return found.with_flags(from_cache=True, stale=False)
                break
            if waited_s >= self._lease_wait_s:
                break
            self._sleep(LEASE_POLL_S)
            waited_s += LEASE_POLL_S
            with contextlib.suppress(StorageError):
                in_flight = self.leases.in_flight(key)
        if force_fresh and not once and not in_flight:
            return None
        with self._usage_lock:
            self._leases_lost += 1
        if found is not None:
            self._stale_served += 1
            return found.with_flags(from_cache=True, stale=True)
        holder = None
        with contextlib.suppress(StorageError):
            holder = self.leases.holder(key)
        raise TransientSourceError(
            f"{key} is being fetched by node {holder or 'another node'}; its quote was not in "
            f"the shared cache within {self._lease_wait_s:g}s"
        )

    def _order(self) -> list[str]:
        order = list(self.settings.sources_order) if self.settings else [BRIGHT_DATA, YFINANCE]
        return [name for name in order if name in self.sources] + [
            name for name in self.sources if name not in order
        ]

    def _fetch_upstream(
        self, sym: Symbol, tried: Mapping[str, str] | None = None, paid: bool = True
    ) -> Quote:
        """The sources in order, then the stale quote. `tried`: sources already asked for
        this symbol (by a batch), with why they did not serve it: not asked again. `paid`
        False skips Bright Data (pacing)."""
        reasons: dict[str, str] = {}
        budget_error: BudgetExhaustedError | None = None
        for name in self._order():
            source, breaker, usage = self.sources[name], self.breakers[name], self.usage[name]
            if tried and name in tried:
                reasons[name] = tried[name]
                continue
            skip = self._skip_reason(name, breaker)
            if skip is None and name == BRIGHT_DATA and not paid:
                skip = "not paid for: the budget policy gave it no paid request now"
            if skip is None and name == YFINANCE and self._yahoo_skips(sym):
                skip = self._unknown_reason(sym)
            if skip is not None:
                reasons[name] = skip
                self._count_skip(usage)
                if skip.startswith("budget"):
                    budget_error = self._budget_error()
                    self._announce_exhausted()
                continue
            started_s = time.perf_counter()
            fetch: Callable[[Symbol], Quote] = source.fetch
            if isinstance(source, PaidQuoteSource):
                with self._lock:
                    reason = self._paid_reasons.get(sym.canonical, self.default_paid_reason)
                fetch = functools.partial(source.fetch_paid, reason=reason)
            try:
                quote = breaker.call(fetch, sym)
            except CircuitBreakerError as exc:  # refused: the source was never called
                reasons[name] = exc.message
                self._count_skip(usage)
                continue
            except StorageError as exc:  # our disk, not the source: the breaker ignored it
                self._report_fetch(name, "excluded", started_s)
                reasons[name] = f"not asked: {exc.message}"
                self._count_skip(usage)
                self._note_storage_error(exc)
                continue
            except (BudgetExhaustedError, UnmappableSymbolError) as exc:
                self._report_fetch(name, "excluded", started_s)
                reasons[name] = exc.message
                self._count_skip(usage)
                if isinstance(exc, BudgetExhaustedError):
                    budget_error = exc
                    reasons[name] = "budget exhausted"
                continue
            except CrawlerError as exc:
                self._report_fetch(name, "failure", started_s)
                reasons[name] = exc.message
                self._count_failure(name, usage, exc)
                self._note_free(name, sym, failed=True)
                if (
                    name == YFINANCE
                    and self.unknowns is not None
                    and isinstance(exc, UnknownSymbolError)
                ):
                    self.unknowns.note_unknown(sym.canonical)
                if name == BRIGHT_DATA and self.events is not None:
                    self._publish_budget()  # a billed failure costs money too
                if isinstance(exc, SourceConfigError):
                    self.config_errors[name] = exc.message
                    log.error("source misconfigured", source=name, error=exc.message)
                continue
            refused = self._refusal(quote)
            if refused is not None:  # an error for this symbol only: try the next source
                self._report_fetch(name, "failure", started_s)
                reasons[name] = refused.message
                self._count_failure(name, usage, refused)
                if name == BRIGHT_DATA and self.events is not None:
                    self._publish_budget()  # paid for, and refused
                continue
            self._report_fetch(name, "success", started_s)
            self._count_success(name, usage)
            self._note_free(name, sym, failed=False)
            if name == YFINANCE and self.unknowns is not None:
                self.unknowns.note_served(sym.canonical)
            self._keep_in_cache(quote)
            if self.events is not None:
                self.events.publish_quote(quote)
                if name == BRIGHT_DATA:
                    self._publish_budget()
            return quote
        last = self.cache.get_last_known(sym.canonical)
        if last is not None:
            self._stale_served += 1
            # Pacing leaves many symbols without a paid request by design: not worth a warning,
            # nor a line per symbol (a collection logs how many it served stale, once).
            level = logging.DEBUG if not paid else logging.WARNING
            log.log(
                level, "serving stale quote", symbol=sym.canonical,
                reasons="; ".join(reasons.values()),
            )  # fmt: skip
            return last.with_flags(from_cache=True, stale=True)
        if budget_error is not None:
            raise budget_error
        raise NoSourceAvailableError(sym.canonical, reasons)

    def _unknown_reason(self, sym: Symbol) -> str:
        entry = self.unknowns.entry(sym.canonical) if self.unknowns is not None else None
        when = entry.retry_at.strftime("%Y-%m-%d %H:%M UTC") if entry is not None else "later"
        return f"Yahoo does not know it; asked again after {when}"

    def _refusal(self, quote: Quote) -> ImplausibleQuoteError | None:
        """Why `quote` (just fetched) cannot be true next to the symbol's last good quote (the
        last one the gate let through, else the cache's last-known one), or None; see
        `crawler.normalizer.plausibility`."""
        reference = self.plausibility.last_good(quote.symbol)
        if reference is None:  # first sight of the symbol in this process: one store read
            try:
                reference = self.cache.get_last_known(quote.symbol)
            except StorageError:
                reference = None
        try:
            self.plausibility.check(quote, now=quote.fetched_at, reference=reference)
        except ImplausibleQuoteError as exc:
            log.warning("quote refused", symbol=quote.symbol, source=quote.source,
                        reason=exc.message)  # fmt: skip
            return exc
        return None

    def storage_errors(self) -> tuple[int, str | None]:
        """Storage errors met while fetching since start, and the last one's message."""
        with self._usage_lock:
            return self._storage_errors, self._last_storage_error

    def _keep_in_cache(self, quote: Quote) -> None:
        """Cache a fetched quote; a storage error loses only the cached copy (logged, counted),
        never the quote itself: the caller still gets it, and the sources are not blamed."""
        try:
            self.cache.put(quote)
        except StorageError as exc:
            self._note_storage_error(exc, f"{quote.symbol} fetched but not cached")

    def _note_storage_error(self, exc: StorageError, what: str = "") -> None:
        """Count a storage error; log the first and every hundredth (a full disk repeats)."""
        with self._usage_lock:
            self._storage_errors += 1
            count = self._storage_errors
            self._last_storage_error = exc.message
        if count == 1 or count % 100 == 0:
            log.error("storage error #%d%s: %s", count, f" ({what})" if what else "", exc.message)

    def _note_free(self, name: str, sym: Symbol, *, failed: bool) -> None:
        if name != YFINANCE:
            return
        with self._usage_lock:
            if failed:
                self._free_failing.add(sym.canonical)
            else:
                self._free_failing.discard(sym.canonical)

    def _report_fetch(self, name: str, outcome: str, started_s: float) -> None:
        if self._on_fetch is None:
            return
        try:
            self._on_fetch(name, outcome, time.perf_counter() - started_s)
        except Exception:  # metrics must never change a fetch's result
            log.exception("fetch observer failed")

    def _shared_breaker_change(
        self, then: Callable[[str, str, str], None] | None
    ) -> Callable[[str, str, str], None]:
        """A state-change callback that posts opens and closes to the breaker board first."""

        def changed(name: str, old: str, new: str) -> None:
            board = self.breaker_board
            try:
                if board is not None and new == "open":
                    board.post_open(name, self.breakers[name].recovery_timeout)
                elif board is not None and new == "closed":
                    board.post_closed(name)
            except StorageError as exc:  # the local breaker still protects this node
                log.warning(
                    "could not share breaker", source=name, state=str(new), error=exc.message
                )
            if then is not None:
                then(name, old, new)

        return changed

    def _skip_reason(self, name: str, breaker: CircuitBreaker) -> str | None:
        if name in self.config_errors:
            return f"disabled: {self.config_errors[name]}"
        if not breaker.is_available():
            remaining = breaker.recovery_remaining_s()
            if remaining > 0:
                return f"circuit open; retry in {math.ceil(remaining)}s"
            return f"circuit {breaker.state}; a trial call is in flight"
        elsewhere = None
        if self.breaker_board is not None:
            with contextlib.suppress(StorageError):
                elsewhere = self.breaker_board.open_elsewhere(name)
        if elsewhere is not None:
            return f"circuit open on node {elsewhere[0]}; retry in {math.ceil(elsewhere[1])}s"
        if name == BRIGHT_DATA:
            try:
                if not self.ledger.can_reserve():
                    return "budget exhausted"
            except StorageError as exc:
                # No paid request while the budget cannot be checked.
                return f"budget store unreachable: {exc.message}"
        return None

    def _count_skip(self, usage: SourceUsage) -> None:
        with self._usage_lock:
            usage.skipped += 1

    def _count_success(self, name: str, usage: SourceUsage) -> None:
        cost = self._cost_of(name)
        with self._usage_lock:
            usage.total_requests += 1
            usage.successes += 1
            usage.total_cost = cost

    def _count_failure(self, name: str, usage: SourceUsage, exc: CrawlerError) -> None:
        cost = self._cost_of(name)
        with self._usage_lock:
            usage.total_requests += 1
            usage.failures += 1
            usage.last_error = exc.message
            usage.total_cost = cost

    def _cost_of(self, name: str) -> Decimal:
        stats_of = getattr(self.sources[name], "statistics", None)
        if name != BRIGHT_DATA or stats_of is None:
            return Decimal("0")
        billed = int(stats_of().get("billed", 0))
        # Through micro-dollars, as the ledger does, so both print alike ("0.003", not "0.0030").
        return usd_from_micro(billed * micro_from_usd(self.ledger.cost_per_request_usd))

    def _announce_exhausted(self) -> None:
        """A `budget_exhausted` event for a day that ran out before we spent anything (a
        restart after the money was gone): once per day, not once per skipped symbol."""
        events = self.events
        if events is None or not events.watched:
            return
        day = self.ledger.day()
        if self._exhausted_day == day:
            return
        self._exhausted_day = day
        stats = self.ledger.statistics()
        events.publish(
            "budget_exhausted",
            spent_usd=str(stats["total_cost"]),
            requests_used=stats["requests_used"],
            day=day,
        )

    def _publish_budget(self) -> None:
        """A `budget` event after a paid request; `budget_exhausted` once per day at the end."""
        events = self.events
        if events is None or not events.watched:
            return
        stats = self.ledger.statistics()
        events.publish(
            "budget",
            spent_usd=str(stats["total_cost"]),
            remaining_usd=str(stats["budget_remaining"]),
            used_pct=stats["budget_used_pct"],
            requests_used=stats["requests_used"],
            requests_allowed=stats["requests_allowed"],
        )
        day = str(stats.get("day"))
        if int(stats["requests_used"]) >= int(stats["requests_allowed"]) and (
            self._exhausted_day != day
        ):
            self._exhausted_day = day
            events.publish(
                "budget_exhausted",
                spent_usd=str(stats["total_cost"]),
                requests_used=stats["requests_used"],
                day=day,
            )

    def _budget_error(self) -> BudgetExhaustedError:
        stats = self.ledger.statistics()
        frees_at = stats.get("money_frees_at")
        message = None
        if isinstance(frees_at, str):  # the ledger's rolling 24-hour rule, not "midnight"
            when = datetime.fromisoformat(frees_at).astimezone(UTC)
            message = (
                f"daily budget exhausted: {stats['requests_used']}/{stats['requests_allowed']} "
                f"requests, ${stats['total_cost']} spent; money frees up at "
                f"{when:%Y-%m-%d %H:%M} UTC, or raise TOTAL_BUDGET"
            )
        return BudgetExhaustedError(
            current_usage=int(stats["requests_used"]),
            budget_limit=int(stats["requests_allowed"]),
            cost_spent=Decimal(str(stats["total_cost"])),
            message=message,
        )


def _names(given: Iterable[str | Symbol], asset_class: AssetClass | None) -> set[str]:
    """The canonical names of `given` (malformed ones left out)."""
    names: set[str] = set()
    for item in given:
        try:
            names.add(item.canonical if isinstance(item, Symbol) else
                      parse_symbol(item, asset_class).canonical)  # fmt: skip
        except SymbolError:
            continue
    return names


def _has_yahoo_form(sym: Symbol) -> bool:
    try:
        to_yahoo(sym)
    except SymbolError:
        return False
    return True


def _missed(key: str) -> TransientSourceError:
    return TransientSourceError(f"{key}: the batch deadline passed before it was fetched")


#: How often a waiting batch looks for `abort()`.
_ABORT_POLL_S = 0.1


class _AbortedError(Exception):
    """Internal: `abort()` was called while a batch waited."""


def _kept(
    on_quote: Callable[[Quote], None] | None,
    fetch: Callable[..., Quote],
    *args: Any,
    **kwargs: Any,
) -> Quote:
    """`fetch(*args, **kwargs)`, then `on_quote` with its quote, on the same (pool) thread."""
    quote = fetch(*args, **kwargs)
    if on_quote is not None:
        try:
            on_quote(quote)
        except Exception:  # the caller's hook must not turn a quote into an error
            log.exception("on_quote hook failed")
    return quote


def _quote_callback(on_quote: Callable[[Quote], None]) -> Callable[[Future[Quote]], None]:
    def done(future: Future[Quote]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        try:
            on_quote(future.result())
        except Exception:  # the caller's hook must not break the worker that ran the fetch
            log.exception("on_quote hook failed")

    return done
