"""The live feed: Yahoo's stream wired to the watchlist, market hours, cache, history and events.

    feed = LiveFeed(settings, stream_endpoint, watchlist=wl, market_hours=hours,
                    cache=hybrid.cache, history=history, events=bus)
    hybrid.live = feed           # the hybrid asks it before any source
    feed.start() ... feed.stop()

What it decides (the stream itself, `crawler.sources.yahoo_stream`, knows none of this):

- **What to subscribe to**: every tracked symbol with a Yahoo form whose market is open now
  (all of them with market hours off), re-read every few seconds, so additions, removals,
  opens and closes are followed.
- **Where a streamed quote lands**: the cache (fresh and last-known, one transaction per
  flush), a `quote` event, and the history at most once per `history_interval_s` per symbol.
- **When the hybrid may skip the sources** (`live_quote`): a symbol subscribed on a connected
  stream whose last tick is younger than the cache TTL is answered with that tick, even when
  asked for a fresh quote, so a streamed symbol is never fetched from a paid source. A symbol
  unsubscribed because its market closed keeps its last tick (the close) for one TTL plus one
  collection interval, so the collection's "one last fetch of the close" does not pay for it
  either. A stream that is down answers nothing: polling is the floor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crawler.logging import get_logger
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol, parse_symbol, to_yahoo
from crawler.utils.exceptions import CrawlerError

if TYPE_CHECKING:
    from crawler.events import EventBus
    from crawler.markets.hours import MarketHours
    from crawler.orchestrator.circuit_breaker import CircuitBreaker
    from crawler.sources.yahoo_stream import YahooStream
    from crawler.store.backend import CacheStore, WatchlistStore
    from crawler.store.history import HistoryStore

__all__ = ["LiveFeed"]

log = get_logger("crawler.stream")


class LiveFeed:
    """See the module docstring. `stream` may be injected (tests); otherwise one is built."""

    def __init__(
        self,
        endpoint: str,
        *,
        watchlist: WatchlistStore,
        cache: CacheStore,
        history: HistoryStore | None = None,
        events: EventBus | None = None,
        market_hours: MarketHours | None = None,
        history_interval_s: float = 60.0,
        fresh_s: float = 900.0,
        closed_grace_s: float = 900.0,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        stream: YahooStream | None = None,
    ) -> None:
        self._watchlist = watchlist
        self._cache = cache
        self._history = history
        self._events = events
        self._hours = market_hours
        self.history_interval_s = history_interval_s
        self.fresh_s = fresh_s
        self.closed_grace_s = closed_grace_s
        self._clock = clock
        self._lock = threading.Lock()
        self._recorded_s: dict[str, float] = {}
        self._closed: set[str] = set()  # canonicals unsubscribed because their market closed
        self.recorded = 0
        if stream is None:
            from crawler.sources.yahoo_stream import YahooStream

            stream = YahooStream(
                endpoint,
                wanted=self.wanted,
                sink=self.land,
                breaker=breaker,
                clock=clock,
                on_state=self._on_state,
            )
        self.stream = stream

    def start(self) -> None:
        """Start streaming (the connection opens once something is worth subscribing to)."""
        self.stream.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Close the stream (bounded)."""
        self.stream.stop(timeout_s)

    close = stop

    # -- what to subscribe to ----------------------------------------------------------------

    def wanted(self) -> dict[str, Symbol]:
        """Yahoo id → Symbol of every tracked symbol whose market is open now."""
        wanted: dict[str, Symbol] = {}
        closed: set[str] = set()
        open_by_market: dict[str, bool] = {}
        for name, asset in self._watchlist.items():
            try:
                symbol = parse_symbol(name, asset)
                yahoo_id = to_yahoo(symbol)
            except CrawlerError:
                continue  # no Yahoo form: polling covers it
            if not self._is_open(symbol, open_by_market):
                closed.add(symbol.canonical)
                continue
            wanted[yahoo_id] = symbol
        with self._lock:
            self._closed = closed
        return wanted

    def set_market_hours(self, market_hours: MarketHours | None) -> None:
        """Skip closed markets with `market_hours`, or stream every symbol (None); applied at
        once (a configuration reload)."""
        self._hours = market_hours
        self.stream.refresh()

    def _is_open(self, symbol: Symbol, memo: dict[str, bool]) -> bool:
        hours = self._hours
        if hours is None:
            return True
        try:
            market = hours.market_of(symbol.canonical, symbol.asset_class)
            if market not in memo:
                memo[market] = hours.is_open(symbol.canonical, symbol.asset_class)
            return memo[market]
        except Exception:  # an unknown calendar: stream it (free) rather than not
            return True

    # -- where streamed quotes land ------------------------------------------------------------

    def land(self, quotes: list[Quote]) -> None:
        """Store a flush of streamed quotes: cache, events, and history when due."""
        put_many = getattr(self._cache, "put_many", None)
        if put_many is not None:
            put_many(quotes)  # one transaction for the whole flush
        else:  # a cache backend without batches
            for quote in quotes:
                self._cache.put(quote)
        if self._events is not None:
            for quote in quotes:
                self._events.publish_quote(quote)
        if self._history is None:
            return
        now_s = self._clock()
        due: list[Quote] = []
        with self._lock:
            for quote in quotes:
                last_s = self._recorded_s.get(quote.symbol)
                if last_s is None or now_s - last_s >= self.history_interval_s:
                    self._recorded_s[quote.symbol] = now_s
                    due.append(quote)
        if due:
            self.recorded += self._history.record(due)

    def _on_state(self, state: str, detail: str) -> None:
        log.info("stream state", state=state, detail=detail)
        if self._events is not None:
            self._events.publish("stream", state=state, detail=detail)

    # -- what the hybrid asks ----------------------------------------------------------------

    def live_quote(self, canonical: str) -> Quote | None:
        """The streamed quote that makes a source call unnecessary, or None (see module doc)."""
        entry = self.stream.latest(canonical)
        if entry is None:
            return None
        quote, received_s = entry
        age_s = self._clock() - received_s
        if self.stream.is_live(canonical) and age_s < self.fresh_s:
            return quote.with_flags(from_cache=True)
        with self._lock:
            closed = canonical in self._closed
        if closed and age_s < self.fresh_s + self.closed_grace_s:
            return quote.with_flags(from_cache=True)
        return None

    def statistics(self) -> dict[str, Any]:
        """The stream's statistics plus `recorded` (history rows written from the stream)."""
        return {**self.stream.statistics(), "recorded": self.recorded}
