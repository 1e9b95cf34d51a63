"""The protocol every quote source implements; the orchestrator depends on this, not on sources.

A source turns one symbol into one `Quote` or raises an `APIError` subclass — nothing else
escapes, so the hybrid fetcher can decide on the error's class alone:

    SourceConfigError     our key/zone is wrong: stop using this source, tell the operator
    TransientSourceError  retry later / fall back (RateLimitedError carries `retry_after_s`)
    BilledFailureError    paid, no quote: fall back, and count it against the source's health
    UnknownSymbolError    the symbol does not exist here: fall back, the source is healthy

(`BudgetExhaustedError` from the ledger also passes through a paid source untouched.)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol

__all__ = ["QuoteSource"]


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
