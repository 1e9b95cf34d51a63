"""The ledger's per-label counts (`crawler budget`'s top symbols) are folded out of the day
record as they grow, so a reservation's cost does not grow with the symbols paid for that day;
what `breakdown()` says is unchanged by the folding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from crawler.store.ledger import DAYS_KEPT, BudgetLedger

NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return self.current.timestamp()


def ledger_at(directory: Path, clock: Clock) -> BudgetLedger:
    return BudgetLedger(
        directory, Decimal("15"), Decimal("0.0015"), now=clock, clock=clock.monotonic
    )


def test_breakdown_counts_every_label_across_folds(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path, Clock(NOON))
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
    clock = Clock(NOON)
    first = ledger_at(tmp_path, clock)
    for i in range(70):
        first.settle(first.reserve(label=f"S{i}:US"))
    first.close()
    again = ledger_at(tmp_path, clock)
    assert again.breakdown()["by_label"] == {f"S{i}:US": 1 for i in range(70)}


def test_old_days_labels_are_pruned_with_their_day(tmp_path: Path) -> None:
    start = datetime(2026, 10, 1, 12, tzinfo=UTC)
    clock = Clock(start)
    ledger = ledger_at(tmp_path, clock)
    for i in range(40):
        ledger.settle(ledger.reserve(label=f"OLD{i}:US"))
    clock.current = start + timedelta(days=DAYS_KEPT + 2)
    ledger.settle(ledger.reserve(label="NEW:US"))  # the day's first reservation prunes
    assert ledger.days() == [clock.current.date().isoformat()]
    keys = [key for key in ledger._cache.iterkeys() if str(key).startswith("labels:")]
    assert keys == []
    assert ledger.breakdown()["by_label"] == {"NEW:US": 1}
