"""Who may spend money: the spending policy, and collections over the fake market (real HTTP,
real stores in tmp_path, real market hours; the wall clock is injected)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.markets.hours import MarketHours
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol, parse_symbol
from crawler.orchestrator.collection import Collector
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.orchestrator.spending import SpendingPolicy
from crawler.sources.bright_data import BrightDataSource
from crawler.sources.yfinance_source import YFinanceSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from crawler.store.quote_times import QuoteTimes
from fakemarket import FakeMarket

COST = Decimal("0.0015")
CRYPTO = [f"{base}USD:CUR" for base in ("XBT", "XET", "XRP", "LTC", "BCH", "ADA", "SOL", "DOT")]
# Monday 2026-03-09, half a minute into the budget day (UTC).
DAY_START = datetime(2026, 3, 9, 0, 0, 30, tzinfo=UTC)


class Now:
    """An injected wall clock moved by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def build_hybrid(
    market: FakeMarket, data: Path, budget_requests: int, now: Now
) -> HybridDataSource:
    ledger = BudgetLedger(data / "ledger", COST * budget_requests, COST, now=now)
    cache = QuoteCache(data / "cache", ttl_s=900, clock=lambda: now().timestamp())
    sources = [
        BrightDataSource(market.bright_data.url, "fake-market-key", market.zone, ledger),
        YFinanceSource(endpoint=market.yahoo.url, cache_dir=data / "yf", timeout_s=10),
    ]
    return HybridDataSource(sources=sources, cache=cache, ledger=ledger, max_workers=4)


def collector_for(data: Path, now: Now, hours: MarketHours, pacing: str = "even") -> Collector:
    policy = SpendingPolicy(pacing=pacing, interval_s=900, timezone="UTC", market_hours=hours)
    return Collector(
        market_hours=hours, now=now, quote_times=QuoteTimes(data / "times"), spending=policy
    )


def tracked(names: list[str]) -> list[tuple[str, AssetClass]]:
    return [(name, parse_symbol(name).asset_class) for name in names]


# -- the policy -------------------------------------------------------------------------------


def syms(*names: str) -> list[Symbol]:
    return [parse_symbol(name) for name in names]


def test_rationed_requests_go_to_the_unservable_first_then_the_oldest_bloomberg_quote() -> None:
    # Crypto only, one collection left in the day: the allowance is what is left (2).
    at = datetime(2026, 3, 9, 23, 50, tzinfo=UTC)
    policy = SpendingPolicy(pacing="even", interval_s=900, market_hours=MarketHours())
    due = syms("XBTUSD:CUR", "XETUSD:CUR", "XRPUSD:CUR", "LTCUSD:CUR", "SOLUSD:CUR")
    last_paid = {
        "XBTUSD:CUR": at - timedelta(hours=1),
        "XETUSD:CUR": at - timedelta(hours=5),  # oldest Bloomberg quote
        "XRPUSD:CUR": at - timedelta(hours=2),
        "SOLUSD:CUR": at - timedelta(minutes=5),
    }
    plan = policy.plan(
        due, due, 2, at, unservable=lambda s: s.canonical == "SOLUSD:CUR", last_paid=last_paid
    )
    assert plan.allowance == 2
    # SOL first (yfinance cannot serve it), then LTC (never paid) beats ETH (5 h ago).
    assert [s.canonical for s in plan.paid] == ["LTCUSD:CUR", "SOLUSD:CUR"]
    assert [s.canonical for s in plan.free] == ["XBTUSD:CUR", "XETUSD:CUR", "XRPUSD:CUR"]
    assert policy.statistics()["last_plan"]["allowance"] == 2


def test_an_allowance_covering_everyone_keeps_the_seed_order_and_off_is_unpaced() -> None:
    at = datetime(2026, 3, 9, 23, 50, tzinfo=UTC)
    due = syms("XBTUSD:CUR", "XETUSD:CUR")
    even = SpendingPolicy(pacing="even", interval_s=900, market_hours=MarketHours())
    plan = even.plan(due, due, 100, at, unservable=lambda s: False, last_paid={})
    assert plan.paid == due and plan.free == [] and plan.allowance == 2
    off = SpendingPolicy(pacing="off", interval_s=900)
    plan = off.plan(due, due, 0, at, unservable=lambda s: False, last_paid={})
    assert plan.paid == due and plan.allowance is None


def test_closed_markets_weigh_nothing_in_later_collections() -> None:
    # Saturday: NYSE closed all day, crypto open. 8 crypto + 8 US stocks tracked.
    at = datetime(2026, 3, 7, 0, 0, 30, tzinfo=UTC)
    policy = SpendingPolicy(pacing="even", interval_s=900, market_hours=MarketHours())
    every = syms(*CRYPTO, *(f"S{i}:US" for i in range(8)))
    assert set(policy.future_open(every, at)) == {8}


# -- collections over the fake market ---------------------------------------------------------


def test_three_forced_collections_at_dawn_do_not_spend_the_day(
    market: FakeMarket, tmp_path: Path
) -> None:
    # 20 paid requests for the day, 8 crypto symbols due every 15 minutes: the case.
    now = Now(DAY_START)
    hybrid = build_hybrid(market, tmp_path, 20, now)
    collector = collector_for(tmp_path, now, MarketHours(now=now))
    try:
        for _ in range(3):
            report = collector.collect(hybrid, tracked(CRYPTO))
            assert report.quotes == 8 and not report.errors
            now.at += timedelta(seconds=20)
        assert market.bright_data.billed_count <= 1  # ~20 x 8 / 768 per collection
        assert hybrid.ledger.statistics()["requests_used"] == market.bright_data.billed_count
        # The day goes on: by 06:00 about a quarter is spent, spread out, not all at once.
        spent_by: list[int] = []
        while now.at < DAY_START + timedelta(hours=6):
            now.at += timedelta(minutes=15)
            collector.collect(hybrid, tracked(CRYPTO))
            spent_by.append(market.bright_data.billed_count)
        assert 3 <= spent_by[-1] <= 7, spent_by
        assert spent_by[len(spent_by) // 2] >= 1
    finally:
        hybrid.cleanup()


def test_pacing_off_spends_first_come_first_served(market: FakeMarket, tmp_path: Path) -> None:
    now = Now(DAY_START)
    hybrid = build_hybrid(market, tmp_path, 20, now)
    collector = collector_for(tmp_path, now, MarketHours(now=now), pacing="off")
    try:
        report = collector.collect(hybrid, tracked(CRYPTO))
        assert report.sources == {"bright_data": 8} and report.paid_allowance is None
    finally:
        hybrid.cleanup()


def test_a_closed_market_quoted_after_its_close_is_not_paid_again_after_a_restart(
    market: FakeMarket, tmp_path: Path
) -> None:
    # Saturday 2026-03-07 17:00 UTC: NYSE closed since Friday 21:00 UTC.
    now = Now(datetime(2026, 3, 7, 17, 0, tzinfo=UTC))
    hours = MarketHours(now=now)
    hybrid = build_hybrid(market, tmp_path, 1_000, now)
    try:
        first = collector_for(tmp_path, now, hours).collect(hybrid, tracked(["AAPL:US"]))
        assert first.sources == {"bright_data": 1}
    finally:
        hybrid.cleanup()
    # A restart: new fetcher, new collector, the same data directory. A forced collection.
    now.at += timedelta(hours=2)
    hybrid = build_hybrid(market, tmp_path, 1_000, now)
    try:
        again = collector_for(tmp_path, now, hours).collect(hybrid, tracked(["AAPL:US"]))
        assert again.skipped_closed == ["AAPL:US"] and again.quotes == 0
        assert market.bright_data.billed_count == 1
        # Monday after the close (20:30 UTC = 16:30 New York): one fetch of the new close.
        now.at = datetime(2026, 3, 9, 20, 30, tzinfo=UTC)
        closing = collector_for(tmp_path, now, hours).collect(hybrid, tracked(["AAPL:US"]))
        assert closing.quotes == 1 and closing.skipped_closed == []
        assert market.bright_data.billed_count == 2
    finally:
        hybrid.cleanup()


def test_a_quote_another_process_fetched_after_the_close_is_not_paid_for_again(
    market: FakeMarket, tmp_path: Path
) -> None:
    # Saturday: `crawler fetch VOD:LN` (another process) left a quote from after Friday's
    # close in the shared cache; the collection has no record of it, and still pays nothing.
    now = Now(datetime(2026, 3, 7, 17, 0, tzinfo=UTC))
    hybrid = build_hybrid(market, tmp_path, 1_000, now)
    try:
        fetched = now.at - timedelta(hours=1)
        hybrid.cache.put(
            Quote(symbol="VOD:LN", price=Decimal("72.5"), source="bright_data", fetched_at=fetched)
        )
        # A quote stamped in the future (a clock stepped back) is not trusted.
        hybrid.cache.put(
            Quote(
                symbol="AAPL:US",
                price=Decimal("1"),
                source="yfinance",
                fetched_at=now.at + timedelta(days=1),
            )
        )
        report = collector_for(tmp_path, now, MarketHours(now=now)).collect(
            hybrid, tracked(["VOD:LN", "AAPL:US"])
        )
        assert report.skipped_closed == ["VOD:LN"]
        assert report.sources == {"bright_data": 1}  # AAPL:US's close, fetched once
        assert market.bright_data.billed_count == 1
    finally:
        hybrid.cleanup()
