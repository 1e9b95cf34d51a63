"""The proof of issue 9: a simulated budget day (injected clock, the fake market over real
HTTP, 200 symbols across US, London, Tokyo, FX and crypto, the default budget of $5.50).

With pacing the budget lasts until the last collection of the day, at least 95 % of it is
spent, every symbol gets a Bloomberg quote at least every 6 hours its market is open, and the
ledger never goes over. The same day unpaced (pacing "off", the old behaviour) runs dry in the
morning: the contrast shows these checks can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
