"""The ledger on the paid path: its per-label counts (`crawler budget`'s top symbols) are
folded out of the day record as they grow, so a reservation's cost does not grow with the
symbols paid for that day (what `breakdown()` says is unchanged); `can_reserve` answers from
memory shortly after a reservation that left plenty of room, and `reserve` stays the check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.store.ledger import DAYS_KEPT, BudgetLedger
from crawler.utils.exceptions import BudgetExhaustedError
from tests.test_ledger import NOON, FakeNow


def ledger_at(directory: Path, clock: FakeNow, budget_usd: str = "15") -> BudgetLedger:
    return BudgetLedger(
        directory, Decimal(budget_usd), Decimal("0.0015"), now=clock, clock=clock.monotonic
    )


def test_breakdown_counts_every_label_across_folds(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path, FakeNow(NOON))
    expected: dict[str, int] = {}
    for round_ in range(3):
        for i in range(100):  # more labels than a day record keeps before folding
            label = f"T{i:04d}:US"
            ledger.settle(ledger.reserve(label=label))
            expected[label] = expected.get(label, 0) + 1
        released = ledger.reserve(label=f"R{round_}:US")
        ledger.release(released)  # not billed: never counted
    breakdown = ledger.breakdown()
    assert breakdown["by_label"] == expected
    assert breakdown["by_hour"] == {"12": 300}
    assert ledger.statistics()["requests_billed"] == 300


def test_a_new_process_reads_the_folded_labels(tmp_path: Path) -> None:
    clock = FakeNow(NOON)
    first = ledger_at(tmp_path, clock)
    for i in range(70):
        first.settle(first.reserve(label=f"S{i}:US"))
    first.close()
    again = ledger_at(tmp_path, clock)
    assert again.breakdown()["by_label"] == {f"S{i}:US": 1 for i in range(70)}


def test_old_days_labels_are_pruned_with_their_day(tmp_path: Path) -> None:
    start = datetime(2026, 10, 1, 12, tzinfo=UTC)
    clock = FakeNow(start)
    ledger = ledger_at(tmp_path, clock)
    for i in range(40):
        ledger.settle(ledger.reserve(label=f"OLD{i}:US"))
    clock.current = start + timedelta(days=DAYS_KEPT + 2)
    ledger.settle(ledger.reserve(label="NEW:US"))  # the day's first reservation prunes
    assert ledger.days() == [clock.current.date().isoformat()]
    keys = [key for key in ledger._cache.iterkeys() if str(key).startswith("labels:")]
    assert keys == []
    assert ledger.breakdown()["by_label"] == {"NEW:US": 1}


def test_can_reserve_is_a_hint_and_reserve_still_guards_the_money(tmp_path: Path) -> None:
    clock = FakeNow(NOON)
    mine = ledger_at(tmp_path, clock, budget_usd="0.15")  # 100 requests
    other = ledger_at(tmp_path, clock, budget_usd="0.15")  # another process, same directory
    mine.settle(mine.reserve())  # room for 99 more: the hint holds for a second
    for _ in range(99):
        other.settle(other.reserve())
    assert mine.can_reserve()  # from memory: the other process's spend is not read
    with pytest.raises(BudgetExhaustedError):
        mine.reserve()  # the atomic check reads it
    assert not mine.can_reserve()
    clock.current += timedelta(seconds=2)
    assert not other.can_reserve()  # its hint ran out with its room


def test_a_lower_budget_ends_the_hint_at_once(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path, FakeNow(NOON))
    ledger.settle(ledger.reserve())
    assert ledger.can_reserve()
    ledger.set_limits(Decimal("0.0015"), Decimal("0.0015"))
    assert not ledger.can_reserve()
