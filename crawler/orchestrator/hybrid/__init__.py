"""The hybrid fetcher: cache first (free), then the paid and free sources in order, each behind
its own circuit breaker, under the daily budget.

    source = HybridDataSource()                 # everything from the effective settings
    quote = source.get_quote("AAPL:US")          # cache → bright_data → yfinance
    quotes = source.get_quotes(["AAPL", "VOD:LN"])
    source.cleanup()

`HybridDataSource` (`source.py`) is the public class; `build.py` builds the sources from the
settings (`build_sources`), `aio.py` is the awaitable facade.
"""

from __future__ import annotations

from crawler.orchestrator.hybrid.aio import AsyncHybridDataSource
from crawler.orchestrator.hybrid.build import build_sources
from crawler.orchestrator.hybrid.health import NEUTRAL_ERRORS, SourceUsage
from crawler.orchestrator.hybrid.source import HybridDataSource

__all__ = [
    "NEUTRAL_ERRORS",
    "AsyncHybridDataSource",
    "HybridDataSource",
    "SourceUsage",
    "build_sources",
]
