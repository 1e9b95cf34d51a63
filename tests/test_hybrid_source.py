"""HybridDataSource end to end: real HTTP against the fake market, real ledger and cache in
tmp_path, the breakers' clock injected (nothing sleeps to wait out a breaker).

Money is checked wherever Bright Data is involved: the fake's own billed count times the cost
equals the ledger's billed spend to the micro-dollar, with no reservation left open.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crawler.normalizer.schemas import Quote
from crawler.orchestrator.circuit_breaker import CircuitBreaker
from crawler.orchestrator.hybrid import NEUTRAL_ERRORS, HybridDataSource
from crawler.sources.base import QuoteSource
from crawler.sources.bright_data import BrightDataSource
from crawler.sources.yfinance_source import YFinanceSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from crawler.utils.exceptions import (
    APIError,
    BudgetExhaustedError,
    CrawlerError,
    NoSourceAvailableError,
    TransientSourceError,
)
from fakemarket.brightdata import BrightDataFake
from fakemarket.yahoo import YahooFake

KEY = "test-key"  # the conftest fake's key
ZONE = "web_unlocker1"
COST = Decimal("0.0015")
TTL_S = 900.0


# -- clocks and fixtures -------------------------------------------------------------------


class ManualClock:
    """An injected clock (monotonic for breakers, epoch seconds for the cache); `advance` it."""

    def __init__(self, start: float) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def breaker_clock() -> ManualClock:
    return ManualClock(10_000.0)


@pytest.fixture
def cache_clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
def cache(tmp_path: Path, cache_clock: ManualClock) -> Iterator[QuoteCache]:
    cache = QuoteCache(tmp_path / "cache", ttl_s=TTL_S, clock=cache_clock)
    try:
        yield cache
    finally:
        cache.close()


class LedgerFactory:
    """Ledgers in tmp_path; the default one has room for plenty of requests."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self.made: list[BudgetLedger] = []

    def __call__(self, requests_allowed: int = 1_000) -> BudgetLedger:
        ledger = BudgetLedger(
            self._tmp_path / f"ledger{len(self.made)}", requests_allowed * COST, COST
        )
        self.made.append(ledger)
        return ledger


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[LedgerFactory]:
    factory = LedgerFactory(tmp_path)
    try:
        yield factory
    finally:
        for ledger in factory.made:
            ledger.close()


@pytest.fixture
def ledger(ledgers: LedgerFactory) -> BudgetLedger:
    return ledgers()


@pytest.fixture
def fake(bright_data_fake: BrightDataFake) -> BrightDataFake:
    return bright_data_fake


@pytest.fixture
def make_bd(
    fake: BrightDataFake, ledger: BudgetLedger
) -> Iterator[Callable[..., BrightDataSource]]:
    """A BrightDataSource pointed at the fake; backoff waits are recorded, not slept."""
    made: list[BrightDataSource] = []

    def make(**overrides: Any) -> BrightDataSource:
        options: dict[str, Any] = {
            "connect_timeout_s": 1,
            "read_timeout_s": 2,
            "deadline_s": 5,
            "sleep": lambda _s: None,
            "rng": lambda: 0.5,
        }
        options.update(overrides)
        source = BrightDataSource(
            options.pop("endpoint", fake.url),
            options.pop("api_key", KEY),
            options.pop("zone", ZONE),
            options.pop("ledger", ledger),
            **options,
        )
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


@pytest.fixture
def make_yf(yahoo_fake: YahooFake, tmp_path: Path) -> Iterator[Callable[..., YFinanceSource]]:
    made: list[YFinanceSource] = []

    def make(**overrides: Any) -> YFinanceSource:
        options: dict[str, Any] = {
            "endpoint": yahoo_fake.url,
            "cache_dir": tmp_path / "yfinance",
            "timeout_s": 2,
            "deadline_s": 5,
        }
        options.update(overrides)
        source = YFinanceSource(**options)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


@pytest.fixture
def make_hybrid(
    cache: QuoteCache, ledger: BudgetLedger, breaker_clock: ManualClock
) -> Iterator[Callable[..., HybridDataSource]]:
    """A HybridDataSource over the given sources, the test's cache and ledger and clock."""
    made: list[HybridDataSource] = []

    def make(*sources: QuoteSource, **overrides: Any) -> HybridDataSource:
        options: dict[str, Any] = {"cache": cache, "ledger": ledger, "clock": breaker_clock}
        options.update(overrides)
        hybrid = HybridDataSource(sources=list(sources), **options)
        made.append(hybrid)
        return hybrid

    yield make
    for hybrid in made:
        hybrid.cleanup()


def assert_money_matches(fake: BrightDataFake, ledger: BudgetLedger) -> None:
    stats = ledger.statistics()
    assert stats["open_reservations"] == 0
    assert fake.billed_count * COST == stats["billed_cost"]
    assert stats["total_cost"] == stats["billed_cost"]
    assert stats["requests_billed"] == fake.billed_count


def outcomes(fake: BrightDataFake) -> list[str]:
    return [request.outcome for request in fake.log_requests()]


def charts(yahoo: YahooFake, symbol: str | None = None) -> int:
    return yahoo.count("chart", symbol)


def run_concurrently(count: int, work: Callable[[int], Quote]) -> list[Quote | BaseException]:
    """`work(i)` on `count` threads released together by a barrier; results or errors."""
    barrier = threading.Barrier(count)

    def task(i: int) -> Quote | BaseException:
        barrier.wait(timeout=10)
        try:
            return work(i)
        except Exception as exc:  # collected, so the test can look at every outcome
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(task, range(count)))


# -- Bright Data's outcome classes through the hybrid -----------------------------------------


def test_billed_success_is_cached_and_counted(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.set_quote("AAPL:US", price="262.36", currency="USD")
    hybrid = make_hybrid(make_bd())

    quote = hybrid.get_quote("AAPL:US")

    assert (quote.symbol, quote.price, quote.source) == (
        "AAPL:US",
        Decimal("262.36"),
        "bright_data",
    )
    assert not quote.from_cache and not quote.stale
    assert outcomes(fake) == ["billed:quote"]
    assert_money_matches(fake, ledger)
    usage = hybrid.get_statistics()["source_usage"]["bright_data"]
    assert (usage["total_requests"], usage["failures"], usage["success_rate_pct"]) == (1, 0, 100.0)
    assert usage["total_cost"] == COST == ledger.statistics()["billed_cost"]


@pytest.mark.parametrize(
    ("page", "outcome", "reason"),
    [
        ("bot_wall", "billed:bot_wall", "BOT WALL"),
        ("no_quote", "billed:no_quote", "paid for AAPL:US but got no quote"),
        ("target_404", "billed:target_404", "Bloomberg has no page for AAPL:US"),
        ("target_500", "billed:target_500", "Bloomberg answered HTTP 500"),
    ],
)
def test_billed_failures_are_paid_for_and_named(
    page: Any,
    outcome: str,
    reason: str,
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.set_page("AAPL:US", page)
    hybrid = make_hybrid(make_bd())

    with pytest.raises(NoSourceAvailableError) as caught:
        hybrid.get_quote("AAPL:US")

    assert reason in caught.value.reasons["bright_data"]
    assert isinstance(caught.value, APIError) and "bright_data" in caught.value.message
    assert outcomes(fake) == [outcome]  # billed failures are not retried
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["billed_cost"] == COST
    usage = hybrid.get_statistics()["source_usage"]["bright_data"]
    assert (usage["total_requests"], usage["failures"], usage["success_rate_pct"]) == (1, 1, 0.0)
    assert usage["total_cost"] == COST


def test_bad_key_is_a_config_error_recorded_not_retried(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(make_bd(api_key="wrong-key"))

    with pytest.raises(NoSourceAvailableError, match="401"):
        hybrid.get_quote("AAPL:US")
    assert outcomes(fake) == ["unbilled:bad_key"]
    # Not retried later either: the source is disabled until the operator fixes the key.
    with pytest.raises(NoSourceAvailableError, match="disabled"):
        hybrid.get_quote("MSFT:US")
    assert outcomes(fake) == ["unbilled:bad_key"]

    stats = hybrid.get_statistics()
    assert "401" in stats["config_errors"]["bright_data"]
    assert "wrong-key" not in repr(stats)
    # A bad key says nothing about Bright Data's health: the breaker stays closed.
    assert hybrid.breakers["bright_data"].is_available()
    assert hybrid.breakers["bright_data"].get_statistics()["state"] == "closed"
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["total_cost"] == 0


@pytest.mark.parametrize("kind", ["unlocker_error", "outer_503", "timeout"])
def test_transient_failures_cost_what_they_may_have_billed(
    kind: str,
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    """An unlocker error proves no charge and costs nothing; a plain 503 or a timeout after
    sending may have been billed, so each attempt counts as spent (issue 13 item 1)."""
    expected: str
    if kind == "unlocker_error":
        fake.unlocker_error("*", "reject_block")
        expected = "unbilled:unlocker_error:reject_block"
    elif kind == "outer_503":
        fake.faults.set("*", status=503)
        expected = "unbilled:forced_503"
    else:
        fake.faults.set("*", hang=True)
        expected = "hang"
    source = make_bd(read_timeout_s=0.3, deadline_s=5, max_attempts=2)
    hybrid = make_hybrid(source)

    with pytest.raises(NoSourceAvailableError) as caught:
        hybrid.get_quote("AAPL:US")

    assert "gave up on AAPL:US after 2 attempt(s)" in caught.value.reasons["bright_data"]
    assert outcomes(fake) == [expected, expected]
    cost = Decimal(0) if kind == "unlocker_error" else 2 * COST
    assert ledger.statistics()["open_reservations"] == 0
    assert ledger.statistics()["total_cost"] == cost
    stats = hybrid.get_statistics()
    assert stats["source_usage"]["bright_data"]["failures"] == 1
    assert stats["breakers"]["bright_data"]["total_failures"] == 1


def test_mixed_outcomes_money_agrees_to_the_micro_dollar(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.set_page("WALL:US", "bot_wall")
    fake.set_page("NOQ:US", "no_quote")
    fake.set_page("GONE:US", "target_404")
    fake.set_page("OOPS:US", "target_500")
    fake.unlocker_error("BLOCK:US", "reject_block", times=1)  # the retry then succeeds
    fake.unlocker_error("RATE:US", "sr_rate_limit", times=1)
    fake.faults.set("BUSY:US", status=502)
    # Four failures in a batch run concurrently: with the seed's breaker (3 in a row) whether
    # it opens would depend on the order they finish. Money is the subject here, so the
    # breaker is one that does not open.
    patient = CircuitBreaker("bright_data", failure_threshold=100, excluded=NEUTRAL_ERRORS)
    hybrid = make_hybrid(make_bd(max_attempts=2), breakers={"bright_data": patient})
    symbols = ["AAPL:US", "WALL:US", "NOQ:US", "GONE:US", "OOPS:US", "BLOCK:US", "RATE:US"]
    symbols += ["BUSY:US", "MSFT:US", "VOD:LN", "EURUSD:CUR"]

    results = hybrid.fetch_many(symbols)

    served = sorted(k for k, v in results.items() if isinstance(v, Quote))
    assert served == ["AAPL:US", "BLOCK:US", "EURUSD:CUR", "MSFT:US", "RATE:US", "VOD:LN"]
    assert fake.billed_count == 10  # 6 quotes + 4 billed failures; BUSY:US's 502s are free
    assert fake.unbilled_count == 4
    # ... but a plain 502 does not prove it, so the ledger counts BUSY:US's two attempts too.
    assert ledger.statistics()["open_reservations"] == 0
    assert ledger.statistics()["billed_cost"] == Decimal("0.018")
    usage = hybrid.get_statistics()["source_usage"]["bright_data"]
    assert usage["total_cost"] == ledger.statistics()["billed_cost"]
    assert (usage["total_requests"], usage["failures"]) == (11, 5)


# -- order: cache → bright_data → yfinance → stale -------------------------------------------


def test_fresh_cache_is_served_first_unless_force_fresh(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    cache_clock: ManualClock,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(make_bd())
    first = hybrid.get_quote("AAPL:US")

    again = hybrid.get_quote("AAPL", None)
    assert again.from_cache and not again.stale and again.price == first.price
    assert fake.billed_count == 1

    fresh = hybrid.get_quote("AAPL:US", force_fresh=True)
    assert not fresh.from_cache
    assert fake.billed_count == 2

    cache_clock.advance(TTL_S + 1)  # expired: back to the source
    assert not hybrid.get_quote("AAPL:US").from_cache
    assert fake.billed_count == 3
    assert_money_matches(fake, ledger)
    assert hybrid.get_statistics()["cache_statistics"]["hit_rate_pct"] > 0


def test_bright_data_is_tried_before_yfinance(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    # Given in the "wrong" order: the seed's order (bright_data, yfinance) still applies.
    hybrid = make_hybrid(make_yf(), make_bd())

    assert hybrid.get_quote("AAPL:US").source == "bright_data"
    assert charts(yahoo_fake) == 0


def test_yfinance_serves_when_bright_data_fails(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    ledger: BudgetLedger,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.set_page("*", "bot_wall")
    yahoo_fake.set_quote("AAPL", price=262.36)
    hybrid = make_hybrid(make_bd(), make_yf())

    quote = hybrid.get_quote("AAPL:US")

    assert quote.source == "yfinance" and quote.price == Decimal("262.36")
    assert quote.symbol == "AAPL:US"
    assert charts(yahoo_fake, "AAPL") == 1
    assert_money_matches(fake, ledger)
    usage = hybrid.get_statistics()["source_usage"]
    assert usage["bright_data"]["failures"] == 1 and usage["bright_data"]["total_cost"] == COST
    assert usage["yfinance"]["total_requests"] == 1
    assert usage["yfinance"]["success_rate_pct"] == 100.0
    assert usage["yfinance"]["total_cost"] == 0


def test_without_a_key_bright_data_is_not_asked(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(make_yf())

    assert hybrid.get_quote("MSFT:US").source == "yfinance"
    assert fake.log_requests() == []
    stats = hybrid.get_statistics()
    assert stats["source_usage"]["bright_data"]["total_requests"] == 0
    assert "bright_data" not in hybrid.breakers


def test_spent_budget_skips_bright_data_for_yfinance(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    ledgers: LedgerFactory,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    ledger = ledgers(requests_allowed=1)
    hybrid = make_hybrid(make_bd(ledger=ledger), make_yf(), ledger=ledger)

    assert hybrid.get_quote("AAPL:US").source == "bright_data"
    quote = hybrid.get_quote("MSFT:US")  # no BudgetExhaustedError: yfinance served it

    assert quote.source == "yfinance"
    assert len(fake.log_requests()) == 1
    assert_money_matches(fake, ledger)
    cost = hybrid.get_statistics()["cost_tracking"]
    assert (cost["total_cost"], cost["budget_used_pct"], cost["budget_remaining"]) == (
        COST,
        100.0,
        0,
    )


def test_open_breaker_skips_bright_data_for_yfinance(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.faults.set("*", status=503)
    hybrid = make_hybrid(make_bd(max_attempts=1), make_yf())
    for ticker in ("A", "B", "C"):
        assert hybrid.get_quote(f"{ticker}:US").source == "yfinance"
    assert len(fake.log_requests()) == 3
    assert not hybrid.breakers["bright_data"].is_available()

    fake.faults.clear()
    assert hybrid.get_quote("D:US").source == "yfinance"
    assert len(fake.log_requests()) == 3  # nothing sent while the breaker is open


# -- stale quotes and errors when nothing serves ---------------------------------------------


def test_expired_quote_is_served_stale_when_every_source_fails(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    cache_clock: ManualClock,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(make_bd(max_attempts=1), make_yf())
    fresh = hybrid.get_quote("AAPL:US")
    cache_clock.advance(TTL_S * 10)
    # Error faults, not set_outage("refuse"): that closes the listener but not the keep-alive
    # connection the source already holds, so requests would still be answered.
    fake.faults.set("*", status=503)
    yahoo_fake.faults.set("*", status=500)

    stale = hybrid.get_quote("AAPL:US")

    assert stale.stale and stale.from_cache
    assert (stale.price, stale.source, stale.as_of) == (fresh.price, "bright_data", fresh.as_of)
    assert stale.age_s() >= 0
    assert stale.age_s(fresh.fetched_at) == fresh.age_s(fresh.fetched_at)
    assert hybrid.get_statistics()["stale_served"] == 1
    usage = hybrid.get_statistics()["source_usage"]
    assert usage["bright_data"]["failures"] == 1 and usage["yfinance"]["failures"] == 1


def test_no_quote_anywhere_names_each_source(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.set_outage("refuse")
    yahoo_fake.unknown("AAPL")
    hybrid = make_hybrid(make_bd(max_attempts=1), make_yf())

    with pytest.raises(APIError) as caught:
        hybrid.get_quote("AAPL:US")

    assert isinstance(caught.value, NoSourceAvailableError)
    assert set(caught.value.reasons) == {"bright_data", "yfinance"}
    assert (
        "cannot reach 127.0.0.1 (connection refused; no network?)"
        in caught.value.reasons["bright_data"]
    )
    assert "AAPL:US" in caught.value.message and "yfinance:" in caught.value.message


def test_budget_error_only_when_budget_stopped_bright_data_and_nothing_else_served(
    fake: BrightDataFake,
    ledgers: LedgerFactory,
    cache_clock: ManualClock,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    ledger = ledgers(requests_allowed=2)
    hybrid = make_hybrid(make_bd(ledger=ledger), ledger=ledger)
    hybrid.get_quote("AAPL:US")
    hybrid.get_quote("MSFT:US")

    with pytest.raises(BudgetExhaustedError) as caught:
        hybrid.get_quote("GOOGL:US")
    error = caught.value
    assert (error.current_usage, error.budget_limit, error.cost_spent) == (2, 2, 2 * COST)

    # The docstring's order: a stale quote beats the budget error.
    cache_clock.advance(TTL_S + 1)
    stale = hybrid.get_quote("AAPL:US")
    assert stale.stale and stale.from_cache and stale.source == "bright_data"
    assert fake.billed_count == 2
    assert_money_matches(fake, ledger)


def test_failure_other_than_budget_is_not_a_budget_error(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.set_page("*", "bot_wall")
    yahoo_fake.unknown("AAPL")
    hybrid = make_hybrid(make_bd(), make_yf())
    with pytest.raises(NoSourceAvailableError):
        hybrid.get_quote("AAPL:US")


# -- breakers ---------------------------------------------------------------------------------


def test_bright_data_breaker_opens_after_3_and_sends_nothing_while_open(
    fake: BrightDataFake,
    breaker_clock: ManualClock,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.faults.set("*", status=503)
    hybrid = make_hybrid(make_bd(max_attempts=1))
    breaker = hybrid.breakers["bright_data"]
    for i in range(3):
        assert breaker.is_available()
        with pytest.raises(NoSourceAvailableError):
            hybrid.get_quote(f"S{i}:US")
    assert len(fake.log_requests()) == 3
    assert not breaker.is_available()
    info = breaker.get_statistics()["state_info"]
    assert info["recovery_in_seconds"] == pytest.approx(120, abs=1)

    breaker_clock.advance(119)
    for i in range(5):
        with pytest.raises(NoSourceAvailableError, match="circuit"):
            hybrid.get_quote(f"T{i}:US")
    assert len(fake.log_requests()) == 3  # the fake's log: nothing reached it


def test_half_open_lets_exactly_one_trial_through_then_recovers(
    fake: BrightDataFake,
    breaker_clock: ManualClock,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.faults.set("*", status=503)
    hybrid = make_hybrid(make_bd(max_attempts=1))
    breaker = hybrid.breakers["bright_data"]
    for i in range(3):
        with pytest.raises(NoSourceAvailableError):
            hybrid.get_quote(f"S{i}:US")
    assert len(fake.log_requests()) == 3 and not breaker.is_available()

    # The trial fails: one request reaches the fake, the breaker opens again.
    breaker_clock.advance(121)
    fake.faults.set("*", status=503, latency_s=0.3)
    results = run_concurrently(10, lambda i: hybrid.get_quote(f"H{i}:US"))
    assert all(isinstance(r, NoSourceAvailableError) for r in results)
    assert len(fake.log_requests()) == 4
    assert not breaker.is_available()

    # The next trial succeeds (slowly, so the others overlap it): one request, then CLOSED.
    breaker_clock.advance(121)
    fake.faults.set("*", latency_s=0.6)
    results = run_concurrently(10, lambda i: hybrid.get_quote(f"R{i}:US"))
    assert len(fake.log_requests()) == 5
    assert sum(isinstance(r, Quote) for r in results) == 1
    assert breaker.get_statistics()["state"] == "closed"

    fake.faults.clear()
    quotes = hybrid.get_quotes([f"OK{i}:US" for i in range(5)])
    assert len(quotes) == 5 and len(fake.log_requests()) == 10


def test_yfinance_breaker_opens_after_5_and_recovers_after_60s(
    yahoo_fake: YahooFake,
    breaker_clock: ManualClock,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(make_yf(timeout_s=1, deadline_s=2))
    breaker = hybrid.breakers["yfinance"]
    hybrid.get_quote("AAPL:US")  # cookie and crumb are fetched once, before the outage
    yahoo_fake.faults.set("*", status=500)
    for i in range(5):
        assert breaker.is_available()
        with pytest.raises(NoSourceAvailableError):
            hybrid.get_quote(f"S{i}:US")
    assert not breaker.is_available()
    seen = len(yahoo_fake.log_requests())

    breaker_clock.advance(59)
    with pytest.raises(NoSourceAvailableError, match="circuit"):
        hybrid.get_quote("MSFT:US")
    assert len(yahoo_fake.log_requests()) == seen

    breaker_clock.advance(2)
    yahoo_fake.faults.clear()
    assert hybrid.get_quote("MSFT:US").source == "yfinance"
    assert breaker.get_statistics()["state"] == "closed"


def test_unknown_symbols_do_not_trip_breakers(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    ledger: BudgetLedger,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.set_page("*", "target_404")
    hybrid = make_hybrid(make_bd(), make_yf())
    for i in range(7):
        with pytest.raises(NoSourceAvailableError):
            hybrid.get_quote(f"UNKNOWN{i}:US")  # the Yahoo fake does not know UNKNOWN*

    for name in ("bright_data", "yfinance"):
        assert hybrid.breakers[name].is_available()
        assert hybrid.breakers[name].get_statistics()["state"] == "closed"
    assert fake.billed_count == 7
    asked = {r.symbol for r in yahoo_fake.requests_of("chart")}
    assert asked == {f"UNKNOWN{i}" for i in range(7)}  # yfinance was asked each time
    assert_money_matches(fake, ledger)


# -- coalescing and concurrency ---------------------------------------------------------------


def test_twenty_threads_one_symbol_cost_one_request(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    fake.faults.set("AAPL:US", latency_s=0.2)
    hybrid = make_hybrid(make_bd())

    results = run_concurrently(20, lambda _i: hybrid.get_quote("AAPL:US"))

    assert all(isinstance(r, Quote) for r in results)
    assert {r.price for r in results if isinstance(r, Quote)} == {fake.quote_for("AAPL:US").price}
    assert fake.billed_count == 1
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["billed_cost"] == COST
    assert hybrid.get_statistics()["coalesced_requests"] >= 1


def test_budget_runs_out_mid_batch_without_one_request_over(
    fake: BrightDataFake,
    ledgers: LedgerFactory,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    n = 5
    ledger = ledgers(requests_allowed=n)
    fake.faults.set("*", latency_s=0.05)  # so the workers overlap
    hybrid = make_hybrid(make_bd(ledger=ledger), ledger=ledger, max_workers=8)
    symbols = [f"T{i}:US" for i in range(3 * n)]

    results = hybrid.fetch_many(symbols)

    quotes = [r for r in results.values() if isinstance(r, Quote)]
    errors = [r for r in results.values() if isinstance(r, CrawlerError)]
    assert len(quotes) == n and len(errors) == 2 * n
    assert all(isinstance(e, BudgetExhaustedError) for e in errors)
    assert fake.billed_count == n and len(fake.log_requests()) == n
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["billed_cost"] == n * COST
    assert hybrid.get_statistics()["source_usage"]["bright_data"]["total_cost"] == n * COST


def test_budget_runs_out_mid_batch_and_yfinance_serves_the_rest(
    fake: BrightDataFake,
    yahoo_fake: YahooFake,
    ledgers: LedgerFactory,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    n = 4
    ledger = ledgers(requests_allowed=n)
    fake.faults.set("*", latency_s=0.05)
    hybrid = make_hybrid(make_bd(ledger=ledger), make_yf(), ledger=ledger, max_workers=8)
    symbols = [f"T{i}:US" for i in range(3 * n)]

    quotes = hybrid.get_quotes(symbols)

    assert [q.symbol for q in quotes] == symbols
    assert sum(q.source == "bright_data" for q in quotes) == n
    assert sum(q.source == "yfinance" for q in quotes) == 2 * n
    assert fake.billed_count == n and len(fake.log_requests()) == n
    assert_money_matches(fake, ledger)


# -- statistics ---------------------------------------------------------------------------


def test_statistics_have_the_seed_keys(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_bd: Callable[..., BrightDataSource],
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(make_bd(), make_yf())
    hybrid.get_quote("AAPL:US")
    hybrid.get_quote("AAPL:US")

    stats = hybrid.get_statistics()

    assert stats["cache_statistics"]["hit_rate_pct"] == 50.0
    for name in ("yfinance", "bright_data"):
        usage = stats["source_usage"][name]
        assert {"total_requests", "failures", "success_rate_pct", "total_cost"} <= set(usage)
    assert stats["source_usage"]["bright_data"]["total_requests"] == 1
    assert stats["source_usage"]["yfinance"]["total_requests"] == 0
    cost = stats["cost_tracking"]
    assert cost["total_cost"] == COST
    assert cost["budget_used_pct"] == 0.1
    assert cost["budget_remaining"] == 999 * COST
    for name in ("yfinance", "bright_data"):
        breaker = hybrid.breakers[name]
        assert isinstance(breaker, CircuitBreaker) and breaker.is_available()
        assert "recovery_in_seconds" in breaker.get_statistics()["state_info"]
    assert_money_matches(fake, ledger)


def test_a_batch_returns_by_its_deadline_though_each_quote_may_take_longer(
    fake: BrightDataFake,
    make_bd: Callable[..., BrightDataSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    # Each quote may take 5 s (its own deadline) and the fake answers each after 3 s; the
    # batch as a whole gets 0.5 s. No wall-clock bound: what the batch returned proves it.
    # Had it waited for its quotes, the 2 in flight would be answered quotes (the fake's 3 s
    # answer fits their 5 s), and had it not stopped at 0.5 s, all 6 would reach the fake.
    fake.faults.set("*", latency_s=3.0)
    hybrid = make_hybrid(make_bd(read_timeout_s=5, deadline_s=5), max_workers=2)
    symbols = [f"S{i}:US" for i in range(6)]
    results = hybrid.fetch_many(symbols, deadline_s=0.5)
    assert set(results) == set(symbols)
    assert all(isinstance(r, TransientSourceError) for r in results.values())
    assert all("deadline" in r.message for r in results.values() if isinstance(r, CrawlerError))
    # The 4 quotes that never started were cancelled: only the 2 in flight reached the fake.
    hybrid.cleanup()
    assert len(fake.log_requests()) == 2
