"""Pacing arithmetic (crawler.orchestrator.pacing): examples and hypothesis properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.orchestrator.pacing import budget_day_end, collection_times, paced_allowance

counts = st.integers(min_value=0, max_value=2_000)


def test_the_day_ends_at_the_budget_zones_midnight_even_on_dst_days() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert budget_day_end(now, "UTC") == datetime(2026, 12, 1, tzinfo=UTC)
    # New York, 2026-03-08 is 23 hours long; its midnight after is 04:00 UTC (EDT).
    dst_day = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert budget_day_end(dst_day, "America/New_York") == datetime(2026, 3, 9, 4, tzinfo=UTC)
    # 03:00 UTC on 2026-11-30 is still 2026-11-29 in New York.
    late = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    assert budget_day_end(late, "America/New_York") == datetime(2026, 11, 30, 5, tzinfo=UTC)


def test_collection_times_stop_before_the_day_ends() -> None:
    now = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    end = budget_day_end(now, "UTC")
    assert collection_times(now, 900, end) == [now + timedelta(minutes=m) for m in (15, 30, 45)]
    assert collection_times(now, 3600, end) == []  # midnight itself belongs to the next day
    assert len(collection_times(datetime(2026, 11, 30, tzinfo=UTC), 900, end)) == 95


def test_the_share_follows_the_weights_and_the_last_collection_may_spend_all() -> None:
    # 100 left, 10 due now, 90 open later: a tenth.
    assert paced_allowance(100, 10, [30, 30, 30]).requests == 10
    # Nothing later: everything left, but never more than is due.
    assert paced_allowance(100, 10, []).requests == 10
    assert paced_allowance(5, 10, []).requests == 5
    # Closed markets later weigh nothing: the money is not kept for them.
    assert paced_allowance(100, 10, [0, 0, 0]).requests == 10


def test_fractions_are_carried_so_a_small_budget_is_spread_over_the_day() -> None:
    # 20 requests for 96 collections of 8 symbols: about one every 4-5 collections, not
    # none until the evening and not all in the first minute.
    remaining, credit, spent_at = 20, 0.0, []
    for k in range(96):
        share = paced_allowance(remaining, 8, [8] * (95 - k), credit)
        remaining -= share.requests
        credit = share.credit
        if share.requests:
            spent_at.append(k)
    assert remaining == 0
    assert spent_at[0] < 8 and spent_at[-1] > 80  # spread from morning to night
    assert max(b - a for a, b in pairwise(spent_at)) <= 8


@settings(max_examples=300, deadline=None)
@given(
    remaining=st.integers(min_value=-5, max_value=10_000),
    due=st.integers(min_value=-5, max_value=2_000),
    future=st.lists(counts, max_size=100),
    credit=st.floats(min_value=-1, max_value=2) | st.just(float("nan")),
)
def test_allowance_is_never_negative_nor_above_what_is_left_or_due(
    remaining: int, due: int, future: list[int], credit: float
) -> None:
    share = paced_allowance(remaining, due, future, credit)
    assert 0 <= share.requests <= max(0, remaining)
    assert share.requests <= max(0, due)
    assert 0.0 <= share.credit < 1.0


@settings(max_examples=200, deadline=None)
@given(
    budget=st.integers(min_value=0, max_value=5_000),
    dues=st.lists(counts, min_size=1, max_size=96),
    spent_fraction=st.lists(st.floats(min_value=0, max_value=1), min_size=96, max_size=96),
)
def test_a_day_of_allowances_sums_to_at_most_the_budget(
    budget: int, dues: list[int], spent_fraction: list[float]
) -> None:
    # Each collection spends part or all of its allowance; what it leaves rolls forward.
    remaining, credit, total = budget, 0.0, 0
    for k, due in enumerate(dues):
        share = paced_allowance(remaining, due, dues[k + 1 :], credit)
        spent = int(share.requests * spent_fraction[k])
        total += spent
        remaining -= spent
        credit = share.credit
        assert remaining >= 0
    assert total <= budget


@settings(max_examples=100, deadline=None)
@given(budget=st.integers(min_value=0, max_value=5_000), dues=st.lists(counts, max_size=96))
def test_spending_every_allowance_uses_the_budget_when_there_is_enough_to_buy(
    budget: int, dues: list[int]
) -> None:
    remaining, credit = budget, 0.0
    for k, due in enumerate(dues):
        share = paced_allowance(remaining, due, dues[k + 1 :], credit)
        remaining -= share.requests
        credit = share.credit
    # Whatever is left could not have been spent: no symbol was due for it.
    assert remaining == 0 or remaining <= budget - min(budget, sum(dues)) + len(dues)
