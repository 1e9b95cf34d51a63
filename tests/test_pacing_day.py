"""The proof of issue 9: a simulated budget day (injected clock, the fake market over real
HTTP, 200 symbols across US, London, Tokyo, FX and crypto, the default budget of $5.50).

With pacing the budget lasts until the last collection of the day, at least 95 % of it is
spent, every symbol gets a Bloomberg quote at least every 6 hours its market is open, and the
ledger never goes over. The same day unpaced (pacing "off", the old behaviour) runs dry in the
morning: the contrast shows these checks can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.pacing_day import simulate_day, watchlist_200
from fakemarket import FakeMarket


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def test_a_paced_day_spends_the_budget_evenly_and_covers_every_symbol(
    market: FakeMarket, tmp_path: Path
) -> None:
    market.reset()  # the module's market: its billed count must be this day's alone
    day = simulate_day(market, tmp_path, watchlist_200(), pacing="even", free=None)
    assert day["collections"] == 96 and day["requests_allowed"] == 3666
    assert day["starved_collections"] == 0, day["exhausted_at"]
    assert day["spent_pct"] >= 95.0
    assert day["max_open_gap_h"] <= 6.0 and day["never_paid"] == []
    assert day["over_budget"] is False and day["requests_used"] <= day["requests_allowed"]
    assert market.bright_data.billed_count == day["requests_used"]


def test_the_same_day_unpaced_runs_dry_before_the_markets_close(
    market: FakeMarket, tmp_path: Path
) -> None:
    market.reset()
    day = simulate_day(market, tmp_path, watchlist_200(), pacing="off", free=None)
    assert day["starved_collections"] > 40  # dry before New York even opens
    assert day["exhausted_at"] < "2026-03-10T12:00"
    assert day["over_budget"] is False  # the ledger still holds the line


# -- issue 18: the needs-based policy, side by side with paced and seed ------------------------

_SMALL = watchlist_200()[::5]  # 40 symbols across the same markets
_SMALL_BUDGET = Decimal("1.10")


def _day(market: FakeMarket, tmp_path: Path, policy: str, **options: Any) -> dict[str, Any]:
    market.reset()
    return simulate_day(
        market, tmp_path / policy, _SMALL, policy=policy, stream=True,
        budget_usd=_SMALL_BUDGET, **options,
    )  # fmt: skip


def test_needed_meets_the_seed_targets_for_a_quarter_of_paceds_spend_or_less(
    market: FakeMarket, tmp_path: Path
) -> None:
    needed = _day(market, tmp_path, "needed")
    paced = _day(market, tmp_path, "paced")
    seed = _day(market, tmp_path, "seed")
    assert needed["targets_met"] is True, needed["targets"]
    assert 4 * needed["requests_used"] <= paced["requests_used"], (needed, paced)
    assert paced["requests_used"] <= seed["requests_used"]
    # No market's quotes are older for it by more than one collection interval.
    for name, ages in needed["age_min_by_market"].items():
        assert ages["p95"] <= paced["age_min_by_market"][name]["p95"] + 15, name
    # A closed market's close comes free from Yahoo: nothing paid for a reason other than a need.
    assert set(needed["paid_by_reason"]) <= {"unservable", "free_failing", "free_too_old"}
    assert set(paced["paid_by_reason"]) <= {"unservable", "free_failing", "rotation"}
    assert set(seed["paid_by_reason"]) == {"seed"}


def test_two_hours_of_yahoo_failing_are_paid_for_and_the_budget_lasts_the_day(
    market: FakeMarket, tmp_path: Path
) -> None:
    day = _day(market, tmp_path, "needed", yahoo_down=(14.0, 16.0))
    assert day["paid_by_reason"].get("free_failing", 0) > 0
    # Beside the outage, at most Tokyo's probe (one paid quote to learn Bloomberg's lag there).
    assert set(day["paid_by_reason"]) <= {"free_failing", "free_too_old"}
    assert day["paid_by_reason"].get("free_too_old", 0) <= 1
    # Every symbol open in the window got a paid quote in each of its hours.
    assert day["coverage_pct_by_hour"]["14"] == 100.0
    assert day["coverage_pct_by_hour"]["15"] == 100.0
    assert day["exhausted_at"] is None and day["starved_collections"] == 0
    assert day["over_budget"] is False


def test_a_weekend_first_day_pays_for_no_close_that_yahoo_has(
    market: FakeMarket, tmp_path: Path
) -> None:
    """A fresh data dir on a Saturday: every stock market's close is fetched once, from Yahoo,
    for nothing (the seed's order paid for each one)."""
    saturday = datetime(2026, 3, 14, tzinfo=UTC)
    needed = _day(market, tmp_path, "needed", day=saturday)
    seed = _day(market, tmp_path, "seed", day=saturday)
    assert needed["requests_used"] == 0, needed["paid_by_reason"]
    assert needed["served"]["yfinance"] >= 30  # the closes, free
    assert seed["requests_used"] >= 30  # the same closes, paid
