"""The source chain for one symbol: the sources in order, each behind its breaker, then the
last known quote marked stale.

A source is skipped when it is misconfigured, its breaker is open (here or on another node),
it is paid and the budget is spent or the caller gave the symbol no paid request, or it is free
and Yahoo does not know the symbol. Only when no source and no stale quote answers is an error
raised: BudgetExhaustedError if the budget is what stopped the paid source, else
NoSourceAvailableError naming each source's reason. Every fetched quote passes the
plausibility gate against the symbol's last good one before it is cached and published.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from crawler.logging import get_logger
from crawler.normalizer.plausibility import QuoteGate
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol
from crawler.orchestrator.hybrid.health import SourceHealth
from crawler.sources.base import PaidQuoteSource, QuoteSource
from crawler.store.backend import CacheStore
from crawler.utils.exceptions import (
    BudgetExhaustedError,
    CircuitBreakerError,
    CrawlerError,
    ImplausibleQuoteError,
    NoSourceAvailableError,
    SourceConfigError,
    StorageError,
    UnknownSymbolError,
    UnmappableSymbolError,
)

if TYPE_CHECKING:
    from crawler.events import EventBus

__all__ = ["BudgetTeller", "SourceChain"]

log = get_logger("crawler.hybrid")


class BudgetTeller(Protocol):
    """What the chain tells about the money (`budget.BudgetNews` is one)."""

    def announce_exhausted(self) -> None: ...
    def after_paid_request(self) -> None: ...
    def error(self) -> BudgetExhaustedError: ...


@dataclass
class _Misses:
    """Why the sources asked so far did not serve a symbol."""

    reasons: dict[str, str] = field(default_factory=dict)
    budget_error: BudgetExhaustedError | None = None


class SourceChain:
    """Fetch one symbol from the first source that serves it (see the module docstring)."""

    def __init__(
        self,
        sources: Mapping[str, QuoteSource],
        health: SourceHealth,
        cache: CacheStore,
        budget: BudgetTeller,
        *,
        order: Callable[[], list[str]],
        paid_reason: Callable[[str], str],
        events: EventBus | None = None,
    ) -> None:
        self.sources = sources
        self.health = health
        self.cache = cache
        self.budget = budget
        #: Told of every quote that lands (see `crawler.events`).
        self.events = events
        #: Every fetched quote passes it against the symbol's last good one (plausibility).
        self.plausibility = QuoteGate()
        self._order = order
        self._paid_reason = paid_reason

    def fetch(
        self, sym: Symbol, tried: Mapping[str, str] | None = None, paid: bool = True
    ) -> Quote:
        """The sources in order, then the stale quote. `tried`: sources already asked for
        this symbol (by a batch), with why they did not serve it: not asked again. `paid`
        False skips the paid sources (pacing).

        The cache is held meanwhile: while fetches overlap, their puts are written together
        by the last one to finish (one transaction, not one per quote)."""
        self.cache.hold()
        try:
            return self._fetch(sym, tried, paid)
        finally:
            try:
                self.cache.unhold()
            except StorageError as exc:
                self.health.note_storage_error(exc, "quotes fetched but not cached")

    def _fetch(self, sym: Symbol, tried: Mapping[str, str] | None, paid: bool) -> Quote:
        misses = _Misses()
        for name in self._order():
            if tried and name in tried:
                misses.reasons[name] = tried[name]
                continue
            skip = self._skip_reason(name, sym, paid)
            if skip is not None:
                misses.reasons[name] = skip
                self.health.count_skip(name)
                if skip.startswith("budget"):
                    misses.budget_error = self.budget.error()
                    self.budget.announce_exhausted()
                continue
            quote = self._ask(name, sym, misses)
            if quote is not None:
                return quote
        return self._stale(sym, paid, misses)

    def refusal(self, quote: Quote) -> ImplausibleQuoteError | None:
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
            log.warning(
                "quote refused", symbol=quote.symbol, source=quote.source, reason=exc.message
            )
            return exc
        return None

    def served(self, name: str, sym: Symbol, quote: Quote, started_s: float) -> None:
        """Source `name` served `quote` (plausible): counted, cached, published."""
        health = self.health
        health.report_fetch(name, "success", started_s)
        health.count_success(name)
        health.note_free(name, sym, failed=False)
        health.note_served(name, sym.canonical)
        self._keep(quote)
        if self.events is not None:
            self.events.publish_quote(quote)
            if name in health.paid:
                self.budget.after_paid_request()

    def _skip_reason(self, name: str, sym: Symbol, paid: bool) -> str | None:
        skip = self.health.skip_reason(name)
        if skip is None and name in self.health.paid and not paid:
            skip = "not paid for: the budget policy gave it no paid request now"
        if skip is None and name not in self.health.paid and self.health.yahoo_skips(sym):
            skip = self.health.unknown_reason(sym)
        return skip

    def _ask(self, name: str, sym: Symbol, misses: _Misses) -> Quote | None:
        """Source `name`'s quote for `sym`, or None with why in `misses`."""
        health = self.health
        source = self.sources[name]
        started_s = time.perf_counter()
        fetch: Callable[[Symbol], Quote] = source.fetch
        if name in health.paid:
            reason = self._paid_reason(sym.canonical)
            fetch = functools.partial(cast(PaidQuoteSource, source).fetch_paid, reason=reason)
        try:
            quote = health.breakers[name].call(fetch, sym)
        except CircuitBreakerError as exc:  # refused: the source was never called
            misses.reasons[name] = exc.message
            health.count_skip(name)
            return None
        except StorageError as exc:  # our disk, not the source: the breaker ignored it
            health.report_fetch(name, "excluded", started_s)
            misses.reasons[name] = f"not asked: {exc.message}"
            health.count_skip(name)
            health.note_storage_error(exc)
            return None
        except (BudgetExhaustedError, UnmappableSymbolError) as exc:
            health.report_fetch(name, "excluded", started_s)
            misses.reasons[name] = exc.message
            health.count_skip(name)
            if isinstance(exc, BudgetExhaustedError):
                misses.budget_error = exc
                misses.reasons[name] = "budget exhausted"
            return None
        except CrawlerError as exc:
            self._failed(name, sym, exc, started_s)
            misses.reasons[name] = exc.message
            return None
        refused = self.refusal(quote)
        if refused is not None:  # an error for this symbol only: try the next source
            health.report_fetch(name, "failure", started_s)
            misses.reasons[name] = refused.message
            health.count_failure(name, refused)
            if name in health.paid and self.events is not None:
                self.budget.after_paid_request()  # paid for, and refused
            return None
        self.served(name, sym, quote, started_s)
        return quote

    def _failed(self, name: str, sym: Symbol, exc: CrawlerError, started_s: float) -> None:
        health = self.health
        health.report_fetch(name, "failure", started_s)
        health.count_failure(name, exc)
        health.note_free(name, sym, failed=True)
        if isinstance(exc, UnknownSymbolError):
            health.note_unknown(name, sym.canonical)
        if name in health.paid and self.events is not None:
            self.budget.after_paid_request()  # a billed failure costs money too
        if isinstance(exc, SourceConfigError):
            health.config_errors[name] = exc.message
            log.error("source misconfigured", source=name, error=exc.message)

    def _stale(self, sym: Symbol, paid: bool, misses: _Misses) -> Quote:
        """The last known quote marked stale, else the error saying why none was had."""
        last = self.cache.get_last_known(sym.canonical)
        if last is not None:
            self.health.count_stale()
            # Pacing leaves many symbols without a paid request by design: not worth a warning,
            # nor a line per symbol (a collection logs how many it served stale, once).
            level = logging.DEBUG if not paid else logging.WARNING
            log.log(
                level,
                "serving stale quote",
                symbol=sym.canonical,
                reasons="; ".join(misses.reasons.values()),
            )
            return last.with_flags(from_cache=True, stale=True)
        if misses.budget_error is not None:
            raise misses.budget_error
        raise NoSourceAvailableError(sym.canonical, misses.reasons)

    def _keep(self, quote: Quote) -> None:
        """Cache a fetched quote; a storage error loses only the cached copy (logged, counted),
        never the quote itself: the caller still gets it, and the sources are not blamed."""
        try:
            self.cache.put(quote)
        except StorageError as exc:
            self.health.note_storage_error(exc, f"{quote.symbol} fetched but not cached")
