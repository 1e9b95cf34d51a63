"""`HybridDataSource`, the seed's public class: cache first (free), then the sources in order
under the daily budget, then the last known quote marked stale.

    source = HybridDataSource()                 # everything from the effective settings
    quote = source.get_quote("AAPL:US")          # cache → bright_data → yfinance
    quotes = source.get_quotes(["AAPL", "VOD:LN"])
    source.cleanup()

A thin class: it holds the stores and sources and wires the parts beside it, which do not
import each other: `chain` (the sources in order, then stale), `health` (breakers, usage, skip
reasons), `coalesce` (one upstream call per symbol in flight), `batch` (batch-capable sources),
`fanout` (`fetch_many` on the pool), `cluster` (fetch leases between nodes), `budget` (budget
events and the exhausted error).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from crawler.logging import get_logger
from crawler.normalizer.plausibility import QuoteGate
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol, parse_symbol
from crawler.orchestrator.hybrid.batch import Batcher
from crawler.orchestrator.hybrid.budget import BudgetNews
from crawler.orchestrator.hybrid.build import build_sources, open_node_stores
from crawler.orchestrator.hybrid.chain import SourceChain
from crawler.orchestrator.hybrid.cluster import LEASE_WAIT_S, ClusterLeases
from crawler.orchestrator.hybrid.coalesce import Coalescer
from crawler.orchestrator.hybrid.fanout import FanOut, Request, canonical_names
from crawler.orchestrator.hybrid.health import SEED_ORDER, YFINANCE, SourceHealth, SourceUsage
from crawler.orchestrator.hybrid.pool import FetchPool
from crawler.sources.base import QuoteSource
from crawler.sources.circuit_breaker import CircuitBreaker
from crawler.store.backend import CacheStore, LedgerStore, Stores
from crawler.store.leases import FetchLeases
from crawler.utils.exceptions import APIError, CrawlerError

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.events import EventBus
    from crawler.orchestrator.live import LiveFeed
    from crawler.store.yahoo_unknowns import YahooUnknowns

__all__ = ["HybridDataSource"]

log = get_logger("crawler.hybrid")


class HybridDataSource:
    """Cache → sources in order → stale, behind per-source breakers and the daily budget.

    Every collaborator can be injected (the wiring passes `stores=` and `sources=`; tests point
    the sources at the fake market); left out, each is built from the effective settings
    (`crawler.config.get_settings()`): the stores by `open_stores` (closed by `cleanup`), the
    sources by `build_sources`. `cleanup` closes the sources in either case.
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
        if stores is None and (ledger is None or cache is None):
            stores = self._owned_stores = open_node_stores(settings)
        if ledger is None or cache is None:
            assert stores is not None
            ledger, cache = ledger or stores.ledger, cache or stores.cache
        #: The backend's stores when known (status lists its nodes); None if only parts given.
        self.stores = stores
        self.ledger: LedgerStore = ledger
        self.cache: CacheStore = cache
        if sources is None:
            assert settings is not None
            sources = build_sources(settings, ledger)
        self.sources: dict[str, QuoteSource] = {s.name: s for s in sources}
        #: The live stream, asked before the cache and the sources (set by the daemon).
        self.live: LiveFeed | None = None
        #: Why a paid request is made for the default symbol (the seed's order, as a library).
        self.default_paid_reason = "seed"
        self.health = SourceHealth(
            self.sources,
            ledger,
            breakers=breakers,
            board=stores.breakers if stores is not None else None,
            clock=clock,
            on_breaker_change=on_breaker_change,
            on_fetch=on_fetch,
        )
        self._budget = BudgetNews(ledger, events)
        self._chain = SourceChain(
            self.sources,
            self.health,
            cache,
            self._budget,
            order=self._order,
            paid_reason=self._paid_reason,
            events=events,
        )
        self._wire_many(settings, stores, leases, lease_ttl_s, lease_wait_s, sleep, max_workers)
        self.events = events
        self.unknowns = unknowns

    def _wire_many(
        self,
        settings: Settings | None,
        stores: Stores | None,
        leases: FetchLeases | None,
        lease_ttl_s: float | None,
        lease_wait_s: float,
        sleep: Callable[[float], None],
        max_workers: int | None,
    ) -> None:
        """The parts behind `fetch_many` and `get_quote`'s coalescing and leases."""
        # Leases only matter when other nodes share the cache: one node coalesces in memory.
        if leases is None and stores is not None and stores.shared:
            leases = stores.leases
        interval_s = float(settings.update_interval_seconds) if settings is not None else 900.0
        self._cluster = ClusterLeases(
            leases,
            self.cache,
            ttl_s=lease_ttl_s if lease_ttl_s is not None else interval_s,
            wait_s=lease_wait_s,
            sleep=sleep,
            count_stale=self.health.count_stale,
        )
        self._coalescer = Coalescer(on_settled=self._cluster.settled)
        self._pool = FetchPool(max_workers or (settings.max_workers if settings else 16))
        self._closed = False
        self._lock = threading.Lock()
        # Per symbol of the `fetch_many` under way: why a paid request is made for it.
        self._paid_reasons: dict[str, str] = {}
        # Symbols whose streamed quote is too old to answer for them (see `fetch_many`).
        self._past_live: set[str] = set()
        self._batches = Batcher(
            self._pool,
            self.sources,
            self.health,
            self._chain,
            order=self._order,
            settle=self._coalescer.settle,
        )
        self._fanout = FanOut(
            self._cluster,
            batch_source=self._batches.source,
            run_batch=self._batches.run,
            claim=self._claim,
            get_quote=self.get_quote,
            finish_leased=self._finish_leased,
            skips=self.health.yahoo_skips,
            pool=self._pool,
        )

    # -- the parts' state, as the seed and the callers read it ------------------------------
    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return self.health.breakers

    @property
    def usage(self) -> dict[str, SourceUsage]:
        return self.health.usage

    @property
    def paid_sources(self) -> frozenset[str]:
        """The names of the sources that bill per request (empty: nothing is ever spent)."""
        return self.health.paid

    @property
    def config_errors(self) -> dict[str, str]:
        return self.health.config_errors

    @property
    def leases(self) -> FetchLeases | None:
        return self._cluster.leases

    @property
    def plausibility(self) -> QuoteGate:
        """Every fetched quote passes it against the symbol's last good one."""
        return self._chain.plausibility

    @property
    def events(self) -> EventBus | None:
        """Told of every quote that lands and of paid requests (see `crawler.events`)."""
        return self._chain.events

    @events.setter
    def events(self, events: EventBus | None) -> None:
        self._chain.events = self._budget.events = events

    @property
    def unknowns(self) -> YahooUnknowns | None:
        """Symbols Yahoo does not know, not asked again until their retry (None: asked every
        time, the seed's way). With it, a symbol left out of a batch answer counts as unknown
        (Yahoo's way of saying so) instead of costing a chart request each."""
        return self.health.unknowns

    @unknowns.setter
    def unknowns(self, unknowns: YahooUnknowns | None) -> None:
        self.health.unknowns = unknowns

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
        `paid=False` leaves the paid sources out (the collection's pacing gave this symbol no
        paid request). `once_per_interval` (collections, with shared stores): a symbol another
        node already fetched this interval is not fetched again, even when forced."""
        sym = symbol if isinstance(symbol, Symbol) else parse_symbol(symbol, asset_class)
        key = sym.canonical
        # Read before the cache: a leader that finishes after this point bumps it, telling
        # the coalescer that our miss may be out of date.
        generation = self._coalescer.generation(key)
        ready = self._ready(key, force_fresh)
        if ready is not None:
            return ready

        def fetch(moved: bool) -> Quote:
            # Another leader may have filled the cache between our miss and our election. Look
            # again only then: every lookup counts in the cache's hit rate, and a second miss
            # for the same request would understate it.
            quote = self.cache.get(key) if moved and not force_fresh else None
            if quote is None:
                quote = self._fetch_leased(sym, force_fresh, paid, once_per_interval)
            return quote

        return self._coalescer.run(key, generation, fetch)

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
        Symbols whose canonical form is in `unpaid` do not use the paid sources (pacing): for
        them the free source comes first, so they take the batch path when it exists.

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
        past = canonical_names(given, asset_class) if past_live else set()
        with self._lock:
            self._paid_reasons.update(paid_reasons or {})
            self._past_live.update(past)
        request = Request(
            asset_class, force_fresh, on_done, deadline_s, unpaid, on_quote, once_per_interval
        )
        try:
            return self._fanout.fetch(given, request)
        finally:
            with self._lock:
                for key in paid_reasons or ():
                    self._paid_reasons.pop(key, None)
                self._past_live.difference_update(past)

    def abort(self) -> None:
        """The daemon is stopping: running `fetch_many` batches return now, cancelling what
        has not started (requests in flight finish in the background). Irreversible."""
        self._pool.abort()

    def get_statistics(self) -> dict[str, Any]:
        """The seed's statistics: cache_statistics, source_usage, cost_tracking, plus breakers."""
        cost = self.ledger.statistics()
        health = self.health.statistics()
        live = self.live
        if live is not None:
            health["breakers"][live.stream.name] = live.stream.breaker.get_statistics()
        return {
            "cache_statistics": self.cache.statistics(),
            "source_usage": health["source_usage"],
            "cost_tracking": cost,
            "breakers": health["breakers"],
            "config_errors": health["config_errors"],
            "stale_served": health["stale_served"],
            "live_served": health["live_served"],
            "yahoo_unknown": self.unknowns.statistics() if self.unknowns is not None else None,
            "coalesced_requests": self._coalescer.coalesced,
            "storage_errors": health["storage_errors"],
            "last_storage_error": health["last_storage_error"],
            "stream": live.statistics() if live is not None else None,
            # yfinance's own view: batches, crumb refreshes, and whether Yahoo throttles us.
            "yahoo": self.health.source_statistics(YFINANCE),
            "leases": self._cluster.statistics(),
        }

    def cleanup(self) -> None:
        """Release threads and connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        # A batch whose task was cancelled above never settled its symbols: release whoever
        # waits for them rather than leave them waiting forever.
        for future, key in self._coalescer.orphans():
            self._coalescer.settle(key, future, APIError(f"{key}: the data source was cleaned up"))
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

    # -- what the collection asks ------------------------------------------------------------
    def free_source_unservable(self, sym: Symbol) -> bool:
        """Whether the free path cannot serve `sym` now: no free source usable (absent,
        misconfigured, its breaker open), no Yahoo equivalent, Yahoo does not know it, or its
        last free attempt failed. Such symbols come first when paid requests are rationed."""
        return self.health.free_need(sym, throttled=False) is not None

    def free_need(self, sym: Symbol) -> str | None:
        """Why the free path (stream, Yahoo batch, chart) cannot serve `sym` now: "unservable"
        (no Yahoo form, or Yahoo does not know it), "free_failing" (no free source usable, or
        Yahoo's 429 pause on, or this symbol's last free attempt failed), or None."""
        return self.health.free_need(sym)

    def storage_errors(self) -> tuple[int, str | None]:
        """Storage errors met while fetching since start, and the last one's message."""
        return self.health.storage_errors()

    # -- internals --------------------------------------------------------------------------
    def _order(self) -> list[str]:
        """The sources' names in `sources_order` (read per quote: a reload may change it),
        those it does not name last."""
        order = list(self.settings.sources_order if self.settings else SEED_ORDER)
        return [name for name in order if name in self.sources] + [
            name for name in self.sources if name not in order
        ]

    def _paid_reason(self, key: str) -> str:
        with self._lock:
            return self._paid_reasons.get(key, self.default_paid_reason)

    def _ready(self, key: str, force_fresh: bool) -> Quote | None:
        """A quote at hand: the stream's (even past `force_fresh`: a streamed tick is fresher
        than any source could be, and asking Bright Data for it would pay for what the stream
        gives free), else the cache's when not forced."""
        live = self.live
        if live is not None and key not in self._past_live:
            streamed = live.live_quote(key)
            if streamed is not None:
                self.health.count_live()
                return streamed
        return None if force_fresh else self.cache.get(key)

    def _claim(self, sym: Symbol, force_fresh: bool) -> tuple[Future[Quote], bool]:
        """(future, leader?) for a batch symbol: a quote at hand, another caller's fetch to
        wait for, or a leader future the batch must settle."""
        key = sym.canonical
        generation = self._coalescer.generation(key)
        future, leader = self._coalescer.claim(key, self._ready(key, force_fresh))
        if leader and not force_fresh and self._coalescer.generation(key) != generation:
            cached = self.cache.get(key)  # a leader finished between our miss and our claim
            if cached is not None:
                self._coalescer.settle(key, future, cached)
        return future, leader

    def _fetch_leased(self, sym: Symbol, force_fresh: bool, paid: bool, once: bool) -> Quote:
        return self._cluster.fetch(
            sym, lambda: self._chain.fetch(sym, paid=paid), force_fresh, once
        )

    def _finish_leased(
        self, sym: Symbol, future: Future[Quote], force_fresh: bool, paid: bool, once: bool
    ) -> None:
        """A batch symbol another node holds the lease of: its quote from the shared cache, or
        the per-symbol path when the holder gives up (on the pool)."""
        try:
            outcome: Quote | BaseException = self._fetch_leased(sym, force_fresh, paid, once)
        except BaseException as exc:
            outcome = exc
        self._coalescer.settle(sym.canonical, future, outcome)
