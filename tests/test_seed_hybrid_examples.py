"""The seed's HybridDataSource examples (docs: orchestrator-guide.md) run as tests.

Each example is kept as close to verbatim as the design card allows; every adaptation is marked
`# adapted:`. The general ones:

- `src` is `crawler`.
- The fetcher is synchronous (design card). The seed's awaitable examples use
  `AsyncHybridDataSource`, the same core run in worker threads; the synchronous ones (statistics,
  troubleshooting) use `HybridDataSource` directly.
- `HybridDataSource()` with no arguments builds everything from the settings, so the environment
  points it at the fake market (FakeMarket.environment()) and a data dir in tmp_path, and
  crawler.config's cached settings are reset around each test.
- Where an example needs a situation (a spent budget, an open breaker, an unknown symbol), the
  test sets the fake market up first; the example's own lines are then run unchanged.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.config import reset_settings
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.orchestrator import AsyncHybridDataSource, HybridDataSource
from crawler.orchestrator.circuit_breaker import CircuitBreakerError
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from crawler.utils.exceptions import APIError, BudgetExhaustedError
from fakemarket import FakeMarket

COST = Decimal("0.0015")  # the seed's COST_PER_REQUEST default


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as market:
        yield market


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def env(
    market: FakeMarket, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.MonkeyPatch]:
    """The environment a user of the seed would have, pointed at the fake market."""
    for name in (
        "TOTAL_BUDGET",
        "COST_PER_REQUEST",
        "CACHE_TTL_SECONDS",
        "SOURCES_ORDER",
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
    ):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config.toml"
    config.write_text("", encoding="utf-8")  # not the repo's or the user's config.toml
    monkeypatch.setenv("CRAWLER_CONFIG", str(config))
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    for name, value in market.environment().items():
        monkeypatch.setenv(name, value)
    # Quick failures for the examples that trip a breaker.
    monkeypatch.setenv("REQUEST_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("QUOTE_DEADLINE_SECONDS", "5")
    reset_settings()
    try:
        yield monkeypatch
    finally:
        reset_settings()


def billed_cost(data_dir: Path) -> Decimal:
    """The ledger's billed spend, read from the data dir the example used."""
    ledger = BudgetLedger(data_dir / "ledger", Decimal("5.50"), COST)
    try:
        value = ledger.statistics()["billed_cost"]
        assert isinstance(value, Decimal)
        return value
    finally:
        ledger.close()


def trip_bright_data(market: FakeMarket, source: HybridDataSource) -> None:
    """Three failing Bright Data fetches: its breaker (3 failures / 120 s) opens."""
    market.bright_data.faults.set("*", status=503)
    market.yahoo.faults.set("*", status=500)
    for ticker in ("TRIP1", "TRIP2", "TRIP3"):
        with pytest.raises(APIError):
            source.get_quote(ticker, AssetClass.STOCKS)
    market.bright_data.faults.clear()
    market.yahoo.faults.clear()


# -- HybridDataSource: Usage ----------------------------------------------------------------


def test_usage_example(
    env: pytest.MonkeyPatch,
    market: FakeMarket,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    market.bright_data.set_quote("AAPL:US", price="262.36")

    async def fetch_quotes() -> None:
        source = AsyncHybridDataSource()  # adapted: seed's HybridDataSource(), awaited

        # Single quote
        quote = await source.get_quote("AAPL", AssetClass.STOCKS)
        if quote:
            print(f"{quote.symbol}: ${quote.price}")

        # Multiple quotes (concurrent)
        symbols = ["AAPL", "MSFT", "GOOGL"]
        quotes = await source.get_quotes(symbols, AssetClass.STOCKS)
        print(f"Fetched {len(quotes)} quotes")

        # Force fresh data (skip cache)
        fresh_quote = await source.get_quote("AAPL", AssetClass.STOCKS, force_fresh=True)
        assert not fresh_quote.from_cache  # adapted: added check

        # Cleanup
        await source.cleanup()

    asyncio.run(fetch_quotes())

    out = capsys.readouterr().out
    assert "AAPL:US: $262.36\n" in out
    assert "Fetched 3 quotes\n" in out
    # AAPL, then MSFT and GOOGL (AAPL came from the cache), then AAPL fresh.
    assert market.bright_data.billed_count == 4
    assert market.bright_data.billed_count * COST == billed_cost(data_dir)
    assert market.yahoo.count("chart") == 0


# -- HybridDataSource: Statistics -----------------------------------------------------------


def test_statistics_example(
    env: pytest.MonkeyPatch,
    market: FakeMarket,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = HybridDataSource()
    source.get_quote("AAPL:US")  # adapted: some traffic first (one fetch, one cache hit,
    source.get_quote("AAPL:US")  # one yfinance fallback) so the numbers mean something
    market.bright_data.set_page("MSFT:US", "bot_wall")
    source.get_quote("MSFT:US")

    stats = source.get_statistics()

    # Cache Performance
    print(f"Cache Hit Rate: {stats['cache_statistics']['hit_rate_pct']}%")

    # Source Usage
    yf_stats = stats["source_usage"]["yfinance"]
    print(f"YFinance Success Rate: {yf_stats['success_rate_pct']}%")
    print(f"YFinance Cost: ${yf_stats['total_cost']}")

    bd_stats = stats["source_usage"]["bright_data"]
    print(f"Bright Data Requests: {bd_stats['total_requests']}")
    print(f"Bright Data Cost: ${bd_stats['total_cost']}")

    # Total Cost
    cost = stats["cost_tracking"]
    print(f"Total Cost: ${cost['total_cost']}")
    print(f"Budget Used: {cost['budget_used_pct']}%")

    source.cleanup()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Cache Hit Rate: 33.33%",  # AAPL miss, AAPL hit, MSFT miss
        "YFinance Success Rate: 100.0%",
        "YFinance Cost: $0",
        "Bright Data Requests: 2",
        "Bright Data Cost: $0.003",
        "Total Cost: $0.003",
        "Budget Used: 0.05%",
    ]
    assert market.bright_data.billed_count * COST == billed_cost(data_dir) == Decimal("0.003")


# -- HybridDataSource: Error Handling, and the guide's Error Handling section ----------------


def test_error_handling_budget_example(
    env: pytest.MonkeyPatch,
    market: FakeMarket,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env.setenv("TOTAL_BUDGET", "0.0015")  # adapted: a budget of one request...
    env.setenv("SOURCES_ORDER", "bright_data")  # ...and no yfinance to fall back on
    source = AsyncHybridDataSource()  # adapted: seed's HybridDataSource()
    asyncio.run(source.get_quote("MSFT", AssetClass.STOCKS))  # adapted: spends the budget

    async def example() -> None:
        try:
            quote = await source.get_quote("AAPL", AssetClass.STOCKS)
            raise AssertionError(f"expected BudgetExhaustedError, got {quote}")  # adapted
        except BudgetExhaustedError as e:
            print(f"Budget limit reached: {e}")
            # Handle budget exhaustion (e.g., wait until reset)

        # Budget Exhaustion
        try:
            quote = await source.get_quote("AAPL", AssetClass.STOCKS)
        except BudgetExhaustedError as e:
            print(f"Budget limit: {e.current_usage}/{e.budget_limit} requests")
            print(f"Cost spent: ${e.cost_spent}")
        await source.cleanup()  # adapted: added

    asyncio.run(example())

    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Budget limit reached: daily budget exhausted: 1/1 requests")
    assert out[1:] == ["Budget limit: 1/1 requests", "Cost spent: $0.0015"]
    assert market.bright_data.billed_count == 1 == len(market.bright_data.log_requests())
    assert market.bright_data.billed_count * COST == billed_cost(data_dir)


def test_error_handling_circuit_breaker_example(
    env: pytest.MonkeyPatch, market: FakeMarket, capsys: pytest.CaptureFixture[str]
) -> None:
    source = HybridDataSource()
    trip_bright_data(market, source)  # adapted: the situation the example is about
    breaker = source.breakers["bright_data"]
    calls: list[str] = []

    def api_function() -> str:  # adapted: the seed leaves it undefined
        calls.append("called")
        return "ok"

    # Circuit Breaker Open
    try:
        result = breaker.call(api_function)
    except CircuitBreakerError as e:
        print(f"Circuit {e.state}: {e.message}")
    else:
        raise AssertionError(f"expected CircuitBreakerError, got {result}")  # adapted

    source.cleanup()
    out = capsys.readouterr().out
    # "retry in 120s" less however long the machine took since the breaker opened: a wide
    # margin (a minute), not a race against a loaded machine's clock.
    match = re.match(r"Circuit open: circuit 'bright_data' is open; retry in (\d+(?:\.\d+)?)s", out)
    assert match is not None, out
    assert 60 < float(match.group(1)) <= 120, out
    assert calls == []


def test_error_handling_api_error_example(
    env: pytest.MonkeyPatch, market: FakeMarket, capsys: pytest.CaptureFixture[str]
) -> None:
    # adapted: the fakes serve any symbol; here both say INVALID does not exist.
    market.bright_data.set_page("INVALID:US", "target_404")
    market.yahoo.unknown("INVALID")
    source = AsyncHybridDataSource()  # adapted: seed's HybridDataSource()

    async def example() -> None:
        # Generic API Error
        try:
            quote = await source.get_quote("INVALID", AssetClass.STOCKS)
            raise AssertionError(f"expected APIError, got {quote}")  # adapted
        except APIError as e:
            print(f"API Error: {e.message}")
        await source.cleanup()  # adapted: added

    asyncio.run(example())

    out = capsys.readouterr().out
    assert out.startswith("API Error: no source could serve INVALID:US (bright_data: ")
    assert "Bloomberg has no page for INVALID:US" in out and "; yfinance: " in out


# -- Best Practices -------------------------------------------------------------------------


def test_best_practice_1_cleanup_in_finally(env: pytest.MonkeyPatch, market: FakeMarket) -> None:
    seen: list[Quote] = []

    # Hybrid Source
    async def fetch() -> None:
        source = AsyncHybridDataSource()  # adapted: seed's HybridDataSource()
        try:
            # ... use source ...
            seen.append(await source.get_quote("AAPL", AssetClass.STOCKS))  # adapted
        finally:
            await source.cleanup()

    asyncio.run(fetch())
    assert seen[0].symbol == "AAPL:US"


def test_best_practice_2_monitor_circuit_breakers(
    env: pytest.MonkeyPatch, market: FakeMarket, capsys: pytest.CaptureFixture[str]
) -> None:
    source = HybridDataSource()
    trip_bright_data(market, source)  # adapted: so there is something to report

    # Check circuit breaker health
    for name, breaker in source.breakers.items():
        if not breaker.is_available():
            print(f"Warning: {name} circuit is OPEN")
            stats = breaker.get_statistics()
            print(f"  Recovery in: {stats['state_info']['recovery_in_seconds']}s")

    source.cleanup()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Warning: bright_data circuit is OPEN"
    assert out[1].startswith("  Recovery in: 1") and out[1].endswith("s")
    assert 110 < float(out[1].removeprefix("  Recovery in: ").removesuffix("s")) <= 120
    assert len(out) == 2  # yfinance is healthy: one failure each is below its threshold of 5


def test_best_practice_3_track_costs(
    env: pytest.MonkeyPatch,
    market: FakeMarket,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env.setenv("TOTAL_BUDGET", "0.006")  # adapted: four requests, so 80% is soon passed
    source = HybridDataSource()
    source.get_quotes(["AAPL", "MSFT", "GOOGL", "AMZN"])  # adapted: spend 100%

    # Regular cost monitoring
    stats = source.get_statistics()
    cost = stats["cost_tracking"]

    if cost["budget_used_pct"] > 80:
        print("Warning: 80% of budget used")
        print(f"Remaining: ${cost['budget_remaining']}")

    source.cleanup()
    assert capsys.readouterr().out.splitlines() == ["Warning: 80% of budget used", "Remaining: $0"]
    assert market.bright_data.billed_count == 4
    assert market.bright_data.billed_count * COST == billed_cost(data_dir)


def test_best_practice_4_graceful_degradation(
    env: pytest.MonkeyPatch, market: FakeMarket, data_dir: Path
) -> None:
    env.setenv("TOTAL_BUDGET", "0.0015")
    env.setenv("SOURCES_ORDER", "bright_data")
    # adapted: an AAPL quote fetched long ago sits in the data dir's cache (expired).
    old = QuoteCache(data_dir / "cache", ttl_s=900, clock=lambda: time.time() - 3600)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    old.put(
        Quote(symbol="AAPL:US", price=Decimal("250.00"), source="bright_data", as_of=an_hour_ago)
    )
    old.close()
    source = AsyncHybridDataSource()  # adapted: seed's HybridDataSource()
    asyncio.run(source.get_quote("MSFT", AssetClass.STOCKS))  # adapted: spends the budget
    symbol, asset_class = "AAPL", AssetClass.STOCKS
    fallback_used: list[bool] = []

    async def example() -> Quote:
        # Graceful degradation
        try:
            quote = await source.get_quote(symbol, asset_class)
        except BudgetExhaustedError:
            fallback_used.append(True)  # adapted: record that the fallback ran
            # Fall back to cached data only
            quote = await source.get_quote(symbol, asset_class, force_fresh=False)
        return quote

    quote = asyncio.run(example())
    # The hybrid degrades by itself: with the budget spent it serves the last known quote,
    # marked stale, instead of raising; the seed's fallback branch is not needed.
    assert fallback_used == []
    assert quote.stale and quote.from_cache and quote.price == Decimal("250.00")
    assert 3590 < quote.age_s() < 3700

    # Without any cached quote the fallback cannot help: the same error comes again.
    symbol = "GOOGL"
    with pytest.raises(BudgetExhaustedError):
        asyncio.run(example())
    assert fallback_used == [True]
    asyncio.run(source.cleanup())
    assert market.bright_data.billed_count == 1
    assert market.bright_data.billed_count * COST == billed_cost(data_dir)


# -- Troubleshooting --------------------------------------------------------------------------


def test_troubleshooting_breaker_stuck_open(
    env: pytest.MonkeyPatch, market: FakeMarket, capsys: pytest.CaptureFixture[str]
) -> None:
    source = HybridDataSource()
    trip_bright_data(market, source)  # adapted: a breaker to troubleshoot
    breaker = source.breakers["bright_data"]
    requests_before = len(market.bright_data.log_requests())

    # Check state
    print(f"State: {breaker.state}")
    print(f"Recovery in: {breaker._get_recovery_time_remaining()}s")

    # Manual reset (use with caution)
    breaker.reset()

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "State: open"
    assert 110 < float(out[1].removeprefix("Recovery in: ").removesuffix("s")) <= 120
    assert breaker.state == "closed" and breaker.is_available()
    assert source.get_quote("AAPL:US").source == "bright_data"  # requests flow again
    assert len(market.bright_data.log_requests()) == requests_before + 1
    source.cleanup()


def test_troubleshooting_high_bright_data_costs(
    env: pytest.MonkeyPatch, market: FakeMarket, capsys: pytest.CaptureFixture[str]
) -> None:
    market.bright_data.set_page("GOOGL:US", "bot_wall")
    source = HybridDataSource()
    source.get_quotes(["AAPL", "MSFT", "GOOGL"])  # adapted: some spend to analyse

    # Analyze usage
    stats = source.get_statistics()
    bd_stats = stats["source_usage"]["bright_data"]

    print(f"Requests: {bd_stats['total_requests']}")
    print(f"Cost: ${bd_stats['total_cost']}")
    print(f"Failures: {bd_stats['failures']}")

    source.cleanup()
    assert capsys.readouterr().out.splitlines() == [
        "Requests: 3",
        "Cost: $0.0045",  # the bot wall was paid for too
        "Failures: 1",
    ]


# -- Quick Start --------------------------------------------------------------------------------


def test_quick_start_option_1(
    env: pytest.MonkeyPatch,
    market: FakeMarket,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    market.bright_data.set_quote("AAPL:US", price="262.36")

    async def main() -> None:
        # Option 1: Manual fetching
        source = AsyncHybridDataSource()  # adapted: seed's HybridDataSource()
        quote = await source.get_quote("AAPL", AssetClass.STOCKS)
        print(f"{quote.symbol}: ${quote.price}")
        await source.cleanup()
        # adapted: Option 2 (DataScheduler) is the scheduler's examples, not run here.

    asyncio.run(main())

    assert capsys.readouterr().out == "AAPL:US: $262.36\n"
    assert (data_dir / "ledger").is_dir() and (data_dir / "cache").is_dir()
    assert market.bright_data.billed_count * COST == billed_cost(data_dir) == COST


def test_without_an_api_key_the_default_build_uses_yfinance_only(
    env: pytest.MonkeyPatch, market: FakeMarket
) -> None:
    env.delenv("BRIGHT_DATA_API_KEY")
    reset_settings()
    source = HybridDataSource()
    quote = source.get_quote("AAPL", AssetClass.STOCKS)
    source.cleanup()
    assert quote.source == "yfinance"
    assert list(source.sources) == ["yfinance"]
    assert market.bright_data.log_requests() == []
