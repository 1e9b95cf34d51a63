"""The batch path: a source that answers many symbols in one request (`BatchQuoteSource`,
yfinance's batch quotes) is asked for up to `batch_size` symbols at once when it is the first
source a miss would reach, one breaker call per batch; what the answer leaves open goes down
the per-symbol chain on the pool, the batch's source not asked again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Protocol

from crawler.logging import get_logger
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol
from crawler.orchestrator.hybrid.health import SourceHealth
from crawler.orchestrator.hybrid.pool import FetchPool
from crawler.sources.base import BatchAnswer, BatchQuoteSource, QuoteSource
from crawler.utils.exceptions import (
    APIError,
    CircuitBreakerError,
    CrawlerError,
    ImplausibleQuoteError,
    TransientSourceError,
)

__all__ = ["Batcher", "Chain", "missed"]

log = get_logger("crawler.hybrid")

#: One symbol of a batch and the future its waiters hold.
Claimed = tuple[Symbol, Future[Quote]]
#: A symbol the batch did not serve, and why each source already asked did not.
_Rest = tuple[Symbol, Future[Quote], Mapping[str, str]]


class Chain(Protocol):
    """What the batch needs of the per-symbol chain (`chain.SourceChain` is one)."""

    def fetch(
        self, sym: Symbol, tried: Mapping[str, str] | None = None, paid: bool = True
    ) -> Quote: ...
    def refusal(self, quote: Quote) -> ImplausibleQuoteError | None: ...
    def served(self, name: str, sym: Symbol, quote: Quote, started_s: float) -> None: ...


def missed(key: str) -> TransientSourceError:
    return TransientSourceError(f"{key}: the batch deadline passed before it was fetched")


class Batcher:
    """Runs batches on the pool; every future of a batch is settled, whatever happens."""

    def __init__(
        self,
        pool: FetchPool,
        sources: Mapping[str, QuoteSource],
        health: SourceHealth,
        chain: Chain,
        *,
        order: Callable[[], list[str]],
        settle: Callable[[str, Future[Quote], Quote | BaseException], None],
    ) -> None:
        self._pool = pool
        self.sources = sources
        self.health = health
        self.chain = chain
        self._order = order
        self._settle = settle

    def source(self, paid: bool = True) -> BatchQuoteSource | None:
        """The batch-capable source when it is the first one a miss would be asked now
        (every source before it skipped: misconfigured, breaker open, budget spent, or `paid`
        False and the source is paid), else None."""
        for name in self._order():
            if name in self.health.paid and not paid:
                continue
            if self.health.skip_reason(name) is None:
                source = self.sources[name]
                if isinstance(source, BatchQuoteSource) and source.batch_size >= 2:
                    return source
                return None
        return None

    def run(
        self,
        source: BatchQuoteSource,
        chunk: list[Claimed],
        deadline_at_s: float | None,
        paid: bool = True,
    ) -> None:
        """One batch request for `chunk`, then the per-symbol path for what it left open.
        Runs on the pool; every future of the chunk is settled, whatever happens."""
        live = [(sym, future) for sym, future in chunk if not future.done()]
        try:
            if deadline_at_s is not None and time.monotonic() >= deadline_at_s:
                for sym, future in live:
                    self._settle(sym.canonical, future, missed(sym.canonical))
                return
            rest = self._ask(source, live)
            try:
                if rest and self._pool.aborted.is_set():
                    raise APIError("stopping")
                pool = self._pool.get()  # APIError once cleaned up (the daemon is stopping)
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

    def _ask(self, source: BatchQuoteSource, live: list[Claimed]) -> list[_Rest]:
        """The batch request: served symbols settled, the others returned with why."""
        name, health = source.name, self.health
        tried: dict[str, str] = {}
        answer: BatchAnswer | None = None
        started_s = time.perf_counter()
        try:
            answer = health.breakers[name].call(source.fetch_batch, [sym for sym, _ in live])
        except CircuitBreakerError as exc:
            tried[name] = exc.message
        except CrawlerError as exc:  # the request as a whole failed: counted once
            health.report_fetch(name, "failure", started_s)
            health.count_failure(name, exc)
            tried[name] = exc.message
            log.info("yfinance batch failed", symbols=len(live), error=exc.message)
        rest: list[_Rest] = []
        for sym, future in live:
            key = sym.canonical
            quote = answer.quotes.get(key) if answer is not None else None
            if quote is not None and self.chain.refusal(quote) is not None:
                rest.append((sym, future, tried))  # refused: the chart is asked for it
            elif quote is not None:
                self.chain.served(name, sym, quote, started_s)  # watchers see batch quotes too
                self._settle(key, future, quote)
            elif answer is not None and key in answer.errors:
                health.note_free(name, sym, failed=True)
                rest.append((sym, future, {name: answer.errors[key].message}))
            elif answer is not None and key in answer.omitted and health.unknowns is not None:
                # Yahoo leaves out what it does not know: remembered, and no chart asked.
                health.unknowns.note_unknown(key)
                rest.append((sym, future, {name: "Yahoo does not know it (left out)"}))
            else:  # left out or partial: the per-symbol chart, under the same rules
                rest.append((sym, future, tried))
        return rest

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
            self._settle(sym.canonical, future, missed(sym.canonical))
            return
        try:
            outcome: Quote | BaseException = self.chain.fetch(sym, tried, paid)
        except BaseException as exc:
            outcome = exc
        self._settle(sym.canonical, future, outcome)
