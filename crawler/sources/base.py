"""The protocol every quote source implements; the orchestrator depends on this, not on sources.

A source turns one symbol into one `Quote` or raises an `APIError` subclass — nothing else
escapes, so the hybrid fetcher can decide on the error's class alone:

    SourceConfigError     our key/zone is wrong: stop using this source, tell the operator
    TransientSourceError  retry later / fall back (RateLimitedError carries `retry_after_s`)
    BilledFailureError    paid, no quote: fall back, and count it against the source's health
    UnknownSymbolError    the symbol does not exist here: fall back, the source is healthy

(`BudgetExhaustedError` from the ledger also passes through a paid source untouched.)

A source that can answer many symbols in one request (yfinance's batch quotes) also implements
`BatchQuoteSource`: the hybrid asks it for up to `batch_size` symbols at once and falls back to
`fetch` for the symbols the `BatchAnswer` lists in `fallback`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol
from crawler.utils.exceptions import CrawlerError

__all__ = ["BatchAnswer", "BatchQuoteSource", "PaidQuoteSource", "QuoteSource"]


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """One batch request's outcome, keyed by canonical symbol.

    `quotes`: served. `fallback`: to ask `fetch` for, with why (left out of the answer, or
    answered without a price or a currency). `errors`: symbols the source cannot ask for at
    all (no form of them on this source).
    """

    quotes: dict[str, Quote] = field(default_factory=dict)
    fallback: dict[str, str] = field(default_factory=dict)
    errors: dict[str, CrawlerError] = field(default_factory=dict)
    #: Of `fallback`, the symbols left out of the answer entirely (Yahoo's way of saying it
    #: does not know them).
    omitted: frozenset[str] = frozenset()


@runtime_checkable
class QuoteSource(Protocol):
    """A place quotes come from: `name` is "bright_data" or "yfinance"."""

    name: str

    def fetch(self, symbol: Symbol) -> Quote:
        """The current quote for `symbol`; raises `APIError` subclasses only."""
        ...

    def close(self) -> None:
        """Release connections and threads; the source is not used afterwards."""
        ...


@runtime_checkable
class BatchQuoteSource(QuoteSource, Protocol):
    """A source that also answers many symbols in one request."""

    batch_size: int

    def fetch_batch(self, symbols: Sequence[Symbol]) -> BatchAnswer:
        """Up to `batch_size` symbols in one request; raises `APIError` subclasses when the
        request as a whole failed."""
        ...


@runtime_checkable
class PaidQuoteSource(QuoteSource, Protocol):
    """A source that bills per request: it records why each paid request was made."""

    def fetch_paid(self, symbol: Symbol, reason: str | None) -> Quote:
        """`fetch`, with `reason` (unservable, free_failing, free_too_old, rotation, asked,
        seed) kept with the request's charge."""
        ...
