"""The hybrid asks a source what it can do (paid: `PaidQuoteSource`, batch: `BatchQuoteSource`),
not its name: the real sources, renamed, against the fake market over HTTP. And the parts of
`crawler.orchestrator.hybrid` are wired by the class, not by importing each other (the
import-linter contract in pyproject.toml; `tests/test_layers.py` runs it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crawler.orchestrator.hybrid import HybridDataSource
from crawler.sources.base import QuoteSource
from crawler.sources.bright_data import BrightDataSource
from crawler.sources.yfinance_source import YFinanceSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from fakemarket.brightdata import BrightDataFake
from fakemarket.yahoo import YahooFake

KEY = "test-key"  # the conftest fake's key
ZONE = "web_unlocker1"
COST = Decimal("0.0015")


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[QuoteCache]:
    cache = QuoteCache(tmp_path / "cache", ttl_s=900)
    yield cache
    cache.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[BudgetLedger]:
    ledger = BudgetLedger(tmp_path / "ledger", 1 * COST, COST)  # room for one request
    yield ledger
    ledger.close()


@pytest.fixture
def paid(bright_data_fake: BrightDataFake, ledger: BudgetLedger) -> BrightDataSource:
    source = BrightDataSource(bright_data_fake.url, KEY, ZONE, ledger, sleep=lambda _s: None)
    source.name = "bloomberg_eu"
    return source


@pytest.fixture
def free(yahoo_fake: YahooFake, tmp_path: Path) -> YFinanceSource:
    source = YFinanceSource(
        endpoint=yahoo_fake.url, cache_dir=tmp_path / "yf", timeout_s=3, deadline_s=10
    )
    source.name = "yahoo_quotes"
    return source


@pytest.fixture
def make_hybrid(
    cache: QuoteCache, ledger: BudgetLedger
) -> Iterator[Callable[..., HybridDataSource]]:
    made: list[HybridDataSource] = []

    def make(*sources: QuoteSource, **overrides: Any) -> HybridDataSource:
        hybrid = HybridDataSource(sources=list(sources), cache=cache, ledger=ledger, **overrides)
        made.append(hybrid)
        return hybrid

    yield make
    for hybrid in made:
        hybrid.cleanup()


def test_a_paid_source_under_another_name_is_skipped_when_the_budget_is_spent(
    bright_data_fake: BrightDataFake,
    paid: BrightDataSource,
    free: YFinanceSource,
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(paid, free)  # no settings: the order given
    assert hybrid.get_quote("AAPL:US").source == "bright_data"  # the page's source field
    quote = hybrid.get_quote("MSFT:US")  # the budget is spent: the free source serves it

    assert quote.source == "yfinance"
    assert len(bright_data_fake.log_requests()) == 1
    usage = hybrid.get_statistics()["source_usage"]
    assert usage["bloomberg_eu"]["successes"] == 1 and usage["bloomberg_eu"]["skipped"] == 1
    assert usage["bloomberg_eu"]["total_cost"] == COST  # its billed requests are its cost
    assert usage["yahoo_quotes"]["successes"] == 1


def test_unpaid_symbols_skip_a_paid_source_under_another_name(
    bright_data_fake: BrightDataFake,
    paid: BrightDataSource,
    free: YFinanceSource,
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(paid, free)
    results = hybrid.fetch_many(["AAPL:US", "MSFT:US"], unpaid={"AAPL:US", "MSFT:US"})

    assert {key: getattr(r, "source", r) for key, r in results.items()} == {
        "AAPL:US": "yfinance",
        "MSFT:US": "yfinance",
    }
    assert bright_data_fake.log_requests() == []


def test_a_batch_source_under_another_name_answers_in_one_request(
    yahoo_fake: YahooFake,
    free: YFinanceSource,
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(free)
    symbols = [f"S{i:04d}:US" for i in range(5)]
    results = hybrid.fetch_many(symbols)

    assert {getattr(r, "source", r) for r in results.values()} == {"yfinance"}
    assert (yahoo_fake.count("quote"), yahoo_fake.count("chart")) == (1, 0)
