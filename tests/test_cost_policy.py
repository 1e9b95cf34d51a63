"""The needs-based policy's rules, pure (clock passed in): the lags it learns per market, when a
free quote is too old to serve, and who gets a rationed allowance. The simulated day where
paying buys freshness (Tokyo) and where it buys nothing (London) closes the file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bench.pacing_day import simulate_day, watchlist_200
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol, parse_symbol
from crawler.orchestrator.freshness import SourceLags
from crawler.orchestrator.spending import PROBE_EVERY_S, SpendingPolicy
from fakemarket import FakeMarket

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


class Hours:
    """Market hours by suffix: every market open, its code the suffix."""

    def is_open(self, symbol: str, asset_class: AssetClass, at: datetime | None = None) -> bool:
        return True

    def market_of(self, symbol: str, asset_class: AssetClass | None) -> str:
        return symbol.rpartition(":")[2]


def syms(*names: str) -> list[Symbol]:
    return [parse_symbol(name) for name in names]


def policy(**options: float) -> SpendingPolicy:
    return SpendingPolicy(policy="needed", market_hours=Hours(), **options)  # type: ignore[arg-type]


def test_lags_are_medians_per_market_and_kind() -> None:
    lags = SourceLags(window=3)
    for lag_s in (900, 905, 2000, 910):  # the window keeps the last three
        lags.observe("LN", paid=False, lag_s=lag_s)
    lags.observe("LN", paid=True, lag_s=30)
    assert lags.lag_s("LN", paid=False) == 910
    assert lags.paid_fresher_by("LN") == 880
    assert lags.paid_fresher_by("JP") is None  # nothing seen there: nothing assumed


def test_a_free_quote_is_too_old_only_where_paying_is_measurably_fresher() -> None:
    spending = policy(max_quote_age_s=1200)
    london, tokyo, us = syms("A:LN", "B:LN"), syms("C:JP", "D:JP"), syms("E:US")
    # Nothing learned yet: no need at all.
    assert spending.freshness_needs(london + tokyo + us, NOON) == set()
    spending.lags.observe("LN", paid=False, lag_s=930)  # under 20 minutes: fine
    spending.lags.observe("JP", paid=False, lag_s=1230)  # over: too old, if paying helps
    spending.lags.observe("US", paid=False, lag_s=20)
    # Tokyo's paid lag is unknown: one symbol pays to measure it, once per PROBE_EVERY_S.
    assert spending.freshness_needs(london + tokyo + us, NOON) == {"C:JP"}
    assert spending.freshness_needs(tokyo, NOON + timedelta(minutes=15)) == set()
    later = NOON + timedelta(seconds=PROBE_EVERY_S)
    assert spending.freshness_needs(tokyo, later) == {"C:JP"}
    # Measured: Bloomberg 20 minutes late there too (paying buys nothing) ...
    spending.lags.observe("JP", paid=True, lag_s=1220)
    assert spending.freshness_needs(tokyo, later) == set()
    # ... or real time (paying buys 20 minutes): every Tokyo symbol needs it.
    fresh = policy(max_quote_age_s=1200)
    fresh.lags.observe("JP", paid=False, lag_s=1230)
    fresh.lags.observe("JP", paid=True, lag_s=25)
    assert fresh.freshness_needs(tokyo + us, NOON) == {"C:JP", "D:JP"}


def test_learning_counts_open_markets_only_and_tells_paid_from_free() -> None:
    spending = policy()
    base = dict(price=Decimal("1"), as_of=NOON - timedelta(minutes=15), fetched_at=NOON)
    spending.learn(
        [
            Quote(symbol="A:LN", source="yfinance", **base),  # type: ignore[arg-type]
            Quote(symbol="B:LN", source="bright_data", **base),  # type: ignore[arg-type]
            Quote(symbol="C:JP", source="yfinance", **base),  # type: ignore[arg-type]
        ],
        {"A:LN": True, "B:LN": True, "C:JP": False},
        NOON,
    )
    assert spending.lags.lag_s("LN", paid=False) == 900
    assert spending.lags.lag_s("LN", paid=True) == 900
    assert spending.lags.lag_s("JP", paid=False) is None  # closed: its time is the close


def test_the_allowance_goes_by_need_then_oldest_paid_quote() -> None:
    spending = policy()
    due = syms("A:US", "B:US", "C:US", "D:US", "E:US")
    needs = {
        "A:US": "free_too_old",
        "B:US": "free_failing",
        "C:US": "unservable",
        "D:US": "unservable",
    }
    candidates = [s for s in due if s.canonical in needs]
    # A budget for two requests in the only collection left today: two of the four needs.
    late = datetime(2026, 3, 10, 23, 50, tzinfo=UTC)
    plan = spending.ration(
        needs, candidates, len(due), due, remaining=2, at=late,
        last_paid={"C:US": late - timedelta(hours=1), "D:US": None},
    )  # fmt: skip
    assert [s.canonical for s in plan.paid] == ["C:US", "D:US"]
    assert plan.reasons == {"C:US": "unservable", "D:US": "unservable"}
    assert [s.canonical for s in plan.free] == ["A:US", "B:US"]
    # Unpaced: every need pays, each with its reason.
    unpaced = SpendingPolicy(policy="needed", pacing="off")
    everyone = unpaced.ration(needs, candidates, len(due), due, 2, late, last_paid={})
    assert everyone.reasons == needs


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def test_a_day_where_paying_buys_freshness_in_tokyo_and_nothing_in_london(
    market: FakeMarket, tmp_path: Path
) -> None:
    day = simulate_day(
        market, tmp_path, watchlist_200()[::5], policy="needed", stream=True,
        budget_usd=Decimal("1.10"), bloomberg_lag_min={"LN": 15},  # Tokyo: real time
    )  # fmt: skip
    assert set(day["paid_by_reason"]) == {"free_too_old"}
    # Only Tokyo's symbols were paid for: London's free quotes are young enough.
    ages = day["age_min_by_market"]
    assert ages["Tokyo"]["p50"] < 2 and ages["London"]["p50"] > 15
    assert day["targets_met"] is True


def test_streamed_quotes_count_as_free_serves_in_the_seed_targets() -> None:
    from crawler.orchestrator.budget_report import targets

    # A streaming daemon: no cache lookups, no source request, 40 quotes from the stream.
    empty = targets({}, {"hits": 0, "misses": 0})
    assert empty["cache_hit_rate_pct"]["value"] is None  # "no data yet" without the stream
    got = targets(
        {"yfinance": {"total_requests": 10, "successes": 10}, "bright_data": {}},
        {"hits": 0, "misses": 10},
        live_served=40,
    )
    assert got["cache_hit_rate_pct"]["value"] == 80.0 and got["cache_hit_rate_pct"]["met"]
    assert got["bright_data_share_pct"]["value"] == 0.0
