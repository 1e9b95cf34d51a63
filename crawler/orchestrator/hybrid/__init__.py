"""The hybrid fetcher: cache first (free), then the paid and free sources in order, each behind
its own circuit breaker, under the daily budget.

    source = HybridDataSource()                 # everything from the effective settings
    quote = source.get_quote("AAPL:US")          # cache → bright_data → yfinance
    quotes = source.get_quotes(["AAPL", "VOD:LN"])
    source.cleanup()

The parts, which do not import each other (an import-linter contract in pyproject.toml):

    source.py    HybridDataSource: holds the stores and sources, wires the parts below
    aio.py       AsyncHybridDataSource, the awaitable facade
    build.py     build_sources(settings, ledger): the sources SOURCES_ORDER names
    chain.py     one symbol: the sources in order, then the stale quote, else the error
    coalesce.py  one upstream call per symbol in flight
    batch.py     a batch-capable source asked for many symbols at once
    fanout.py    fetch_many on the bounded pool: batches, per-symbol tasks, the deadline
    cluster.py   fetch leases between nodes sharing a cache
    budget.py    budget events and the BudgetExhaustedError
    health.py    breakers, usage counters, skip reasons (below the others)
    pool.py      the worker threads and the stop flag (below the others)

Past `build.py` a source is asked what it can do (`PaidQuoteSource`: billed per request,
skipped while the budget is spent; `BatchQuoteSource`: many symbols per request), not its name.
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
