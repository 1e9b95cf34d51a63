"""BudgetLedger: the money. Real diskcache directories, real threads, real processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from crawler.store.ledger import DAYS_KEPT, BudgetLedger, Reservation, micro_from_usd
from crawler.utils.exceptions import BudgetExhaustedError, ConfigError, StorageError

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "store_worker.py"
COST = Decimal("0.0015")
NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class FakeNow:
    """An injected wall clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        """The same clock as monotonic seconds: real time moves with the wall clock here."""
        return self.current.timestamp()


class FakeMonotonic:
    """The system-wide monotonic clock, shared by the ledgers of one simulated boot."""

    def __init__(self) -> None:
        self.current = 1_000.0

    def __call__(self) -> float:
        return self.current


def budget_for(requests: int, cost: Decimal = COST) -> Decimal:
    return cost * requests


def make_ledger(
    directory: Path,
    requests: int = 5,
    now: FakeNow | None = None,
    timezone: str = "UTC",
    cost: Decimal = COST,
    mono: Callable[[], float] | None = None,
) -> BudgetLedger:
    """A ledger on `now`; real time (the monotonic clock) follows `now` unless `mono` is given."""
    now = now or FakeNow(NOON)
    return BudgetLedger(
        directory,
        budget_for(requests, cost),
        cost,
        timezone=timezone,
        now=now,
        clock=mono or now.monotonic,
        boot_id=lambda: "boot-1",
    )


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


# -- the table of reserve / settle / release ----------------------------------------------

# Each op: "r" reserve (appends a reservation), "s<i>" settle #i, "l<i>" release #i.
# Expected: the return of each settle/release, then billed count and open count.
TABLE = [
    ("reserve then settle bills", ["r", "s0"], [True], 1, 0),
    ("reserve then release bills nothing", ["r", "l0"], [True], 0, 0),
    ("settle twice bills once", ["r", "s0", "s0"], [True, False], 1, 0),
    ("release twice is a no-op", ["r", "l0", "l0"], [True, False], 0, 0),
    ("settle after release is a no-op", ["r", "l0", "s0"], [True, False], 0, 0),
    ("release after settle keeps the bill", ["r", "s0", "l0"], [True, False], 1, 0),
    ("open reservations count", ["r", "r", "r"], [], 0, 3),
    ("mixed", ["r", "r", "r", "s0", "l1", "s2", "s1"], [True, True, True, False], 2, 0),
]


@pytest.mark.parametrize(
    ("ops", "returns", "billed", "open_"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_reserve_settle_release_table(
    tmp_path: Path, ops: list[str], returns: list[bool], billed: int, open_: int
) -> None:
    ledger = make_ledger(tmp_path)
    held: list[Reservation] = []
    got: list[bool] = []
    for op in ops:
        if op == "r":
            held.append(ledger.reserve())
        elif op[0] == "s":
            got.append(ledger.settle(held[int(op[1:])]))
        else:
            got.append(ledger.release(held[int(op[1:])]))
    stats = ledger.statistics()
    assert got == returns
    assert stats["requests_billed"] == billed
    assert stats["open_reservations"] == open_
    assert stats["requests_used"] == billed + open_
    assert stats["billed_cost"] == COST * billed
    assert stats["reserved_cost"] == COST * open_
    assert stats["total_cost"] == COST * (billed + open_)


def test_reservation_fields(tmp_path: Path) -> None:
    reservation = make_ledger(tmp_path).reserve()
    assert reservation.day == "2026-11-28"
    assert reservation.amount_micro == 1500
    assert reservation.amount_usd == COST
    with pytest.raises(AttributeError):
        reservation.amount_micro = 1  # type: ignore[misc]


def test_unknown_reservation_is_a_no_op(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    ledger.settle(ledger.reserve())
    stranger = Reservation(id="nope", day="2026-11-28", amount_micro=1500)
    other_day = Reservation(id="nope", day="2020-01-01", amount_micro=1500)
    assert ledger.settle(stranger) is False
    assert ledger.release(other_day) is False
    assert ledger.statistics()["requests_billed"] == 1
    assert ledger.days() == ["2026-11-28"]  # no record created for the unknown day


def test_exhausted_budget_raises_with_seed_fields(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, requests=3)
    ledger.settle(ledger.reserve())
    ledger.settle(ledger.reserve())
    ledger.reserve()  # open: counts as spent
    assert not ledger.can_reserve()
    with pytest.raises(BudgetExhaustedError) as info:
        ledger.reserve()
    assert info.value.current_usage == 3
    assert info.value.budget_limit == 3
    assert info.value.cost_spent == Decimal("0.0045")
    stats = ledger.statistics()
    assert stats["budget_used_pct"] == 100.0
    assert stats["budget_remaining"] == Decimal(0)


def test_release_gives_the_money_back(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, requests=1)
    first = ledger.reserve()
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve()
    assert ledger.release(first)
    assert ledger.can_reserve()
    ledger.settle(ledger.reserve())
    assert ledger.statistics()["requests_billed"] == 1


def test_statistics_money_is_decimal(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path, Decimal("10"), Decimal("0.0015"), now=FakeNow(NOON))
    for _ in range(3):
        ledger.settle(ledger.reserve())
    ledger.reserve()
    stats = ledger.statistics()
    assert stats["day"] == "2026-11-28"
    assert str(stats["total_cost"]) == "0.006"
    assert str(stats["billed_cost"]) == "0.0045"
    assert str(stats["reserved_cost"]) == "0.0015"
    assert str(stats["budget_total"]) == "10"
    assert str(stats["budget_remaining"]) == "9.994"
    assert stats["budget_used_pct"] == 0.06
    assert stats["requests_allowed"] == 6666
    assert stats["requests_used"] == 4
    assert stats["last_rollover"] is None


@pytest.mark.parametrize(
    "bad", [Decimal("0.0000001"), Decimal("-1"), Decimal("NaN"), Decimal("Infinity")]
)
def test_amounts_finer_than_a_micro_or_negative_are_refused(tmp_path: Path, bad: Decimal) -> None:
    with pytest.raises(ConfigError):
        micro_from_usd(bad)
    with pytest.raises(ConfigError):
        BudgetLedger(tmp_path, Decimal("1"), bad)


def test_zero_cost_and_bad_timezone_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COST_PER_REQUEST"):
        BudgetLedger(tmp_path, Decimal("1"), Decimal("0"))
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        BudgetLedger(tmp_path, Decimal("1"), COST, timezone="Mars/Olympus")


def test_naive_now_is_refused(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path, Decimal("1"), COST, now=lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.reserve()


# -- races --------------------------------------------------------------------------------


def test_32_threads_never_overspend(tmp_path: Path) -> None:
    budget_requests = 40
    ledger = make_ledger(tmp_path, requests=budget_requests)
    start = threading.Barrier(32)
    settled: list[int] = []
    released: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        mine_settled = mine_released = attempt = 0
        start.wait()
        try:
            while True:
                try:
                    reservation = ledger.reserve()
                except BudgetExhaustedError:
                    break
                attempt += 1
                if attempt % 4 == 0:
                    mine_released += int(ledger.release(reservation))
                else:
                    mine_settled += int(ledger.settle(reservation))
        except BaseException as exc:  # surfaced below: a thread must not die silently
            errors.append(exc)
        settled.append(mine_settled)
        released.append(mine_released)

    threads = [threading.Thread(target=run) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(settled) == budget_requests
    stats = ledger.statistics()
    assert stats["requests_billed"] == budget_requests
    assert stats["open_reservations"] == 0
    assert stats["total_cost"] == budget_for(budget_requests)


def test_two_processes_never_overspend(tmp_path: Path) -> None:
    # Large enough that both processes get a share on a loaded machine: the ledger got faster
    # (300 were gone before the second process woke up under four test workers).
    budget_requests = 5000
    args = [str(tmp_path), str(budget_for(budget_requests)), str(COST), NOON.isoformat(), "6"]
    workers = [spawn("ledger-race", *args) for _ in range(2)]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # both are ready: start them together
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert sum(result["settled"] for result in results) == budget_requests
    # Each process got some of the budget, so they really raced.
    assert all(result["settled"] + result["released"] > 0 for result in results)
    stats = make_ledger(tmp_path, requests=budget_requests).statistics()
    assert stats["requests_billed"] == budget_requests
    assert stats["open_reservations"] == 0


def test_reservation_of_a_killed_process_stays_spent(tmp_path: Path) -> None:
    budget_requests = 3
    worker = spawn(
        "ledger-hold", str(tmp_path), str(budget_for(budget_requests)), str(COST), NOON.isoformat()
    )
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line.startswith("reserved"), worker.stderr.read() if worker.stderr else line
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL

    restarted = make_ledger(tmp_path, requests=budget_requests)
    stats = restarted.statistics()
    assert stats["open_reservations"] == 1
    assert stats["requests_used"] == 1
    assert stats["total_cost"] == COST
    for _ in range(budget_requests - 1):
        restarted.settle(restarted.reserve())
    with pytest.raises(BudgetExhaustedError):
        restarted.reserve()
    assert restarted.statistics()["total_cost"] == budget_for(budget_requests)


# -- days -----------------------------------------------------------------------------------


def test_new_day_key_without_rollover_but_24_hours_hold_one_budget(tmp_path: Path) -> None:
    now = FakeNow(datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC))
    ledger = make_ledger(tmp_path, requests=2, now=now)
    late = ledger.reserve()
    ledger.settle(ledger.reserve())
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve()
    now.current = datetime(2026, 11, 29, 0, 0, 0, tzinfo=UTC)
    assert ledger.day() == "2026-11-29"
    assert ledger.statistics()["requests_used"] == 0
    # A new day key, but the last 24 hours already hold a day's budget: nothing more yet.
    assert not ledger.can_reserve()
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve()
    assert ledger.statistics()["budget_remaining"] == Decimal(0)
    # A reservation made yesterday and settled today bills yesterday, not today.
    assert ledger.settle(late)
    assert ledger.statistics()["requests_used"] == 0
    # 24 hours (and the partial minute) after the spend, the money is back.
    now.current = datetime(2026, 11, 30, 0, 1, 0, tzinfo=UTC)
    ledger.settle(ledger.reserve())
    ledger.settle(ledger.reserve())
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve()
    assert ledger.days() == ["2026-11-28", "2026-11-30"]


def test_released_money_leaves_the_24_hour_window(tmp_path: Path) -> None:
    now = FakeNow(datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC))
    ledger = make_ledger(tmp_path, requests=2, now=now)
    first, second = ledger.reserve(), ledger.reserve()
    ledger.release(first)
    now.current = datetime(2026, 11, 29, 0, 0, 5, tzinfo=UTC)
    ledger.release(second)
    ledger.settle(ledger.reserve())
    ledger.settle(ledger.reserve())
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve()


def test_clock_stepping_back_a_day_opens_no_fresh_budget(tmp_path: Path) -> None:
    """Issue 13: the clock stepped back a day billed 8 in one minute against 4 a day."""
    now, mono = FakeNow(NOON), FakeMonotonic()
    ledger = make_ledger(tmp_path, requests=4, now=now, mono=mono)
    for _ in range(4):
        ledger.settle(ledger.reserve())
    now.current = NOON - timedelta(days=1)
    mono.current += 60
    assert ledger.day() == "2026-11-28"  # the day key never goes back
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve()
    # A restart (a new ledger object) on the stepped-back clock reads the stored high water.
    ledger.close()
    restarted = make_ledger(tmp_path, requests=4, now=now, mono=mono)
    with pytest.raises(BudgetExhaustedError):
        restarted.reserve()
    assert restarted.statistics()["day"] == "2026-11-28"
    assert restarted.statistics()["requests_billed"] == 4


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12", "America/New_York"])
def test_time_zone_change_mid_day_takes_effect_at_the_next_boundary(
    tmp_path: Path, zone: str
) -> None:
    """Issue 13: BUDGET_TIMEZONE changed mid-day opened a fresh budget (8 billed, 4 allowed)."""
    now = FakeNow(NOON)
    ledger = make_ledger(tmp_path, requests=4, now=now)
    for _ in range(4):
        ledger.settle(ledger.reserve())
    ledger.close()
    now.current = NOON + timedelta(minutes=1)
    moved = make_ledger(tmp_path, requests=4, now=now, timezone=zone)
    assert moved.day() == "2026-11-28"  # the UTC day still runs
    with pytest.raises(BudgetExhaustedError):
        moved.reserve()
    assert moved.statistics()["requests_billed"] == 4
    # Past the UTC midnight the new zone's calendar applies; the window still holds the spend.
    now.current = datetime(2026, 11, 29, 0, 30, tzinfo=UTC)
    expected = now.current.astimezone(ZoneInfo(zone)).date()
    assert (
        moved.day() == max(expected, date(2026, 11, 29)).isoformat()
        or expected.isoformat() == "2026-11-28"
    )
    with pytest.raises(BudgetExhaustedError):
        moved.reserve()
    # 24 hours after the spend: one day's budget again, and no more.
    now.current = NOON + timedelta(days=1, minutes=2)
    for _ in range(4):
        moved.settle(moved.reserve())
    with pytest.raises(BudgetExhaustedError):
        moved.reserve()


def test_spend_in_any_24_hours_never_exceeds_one_days_budget(tmp_path: Path) -> None:
    """A week of wall-clock steps (back a day, back 13 h, forward 5 h), time-zone changes and a
    restart before every request, one request every 7 minutes of real time, one reboot: no 24
    hours of real time hold more than one day's budget."""
    real = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
    zones = ["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "Asia/Kolkata", "America/New_York"]
    steps = [timedelta(0), timedelta(days=-1), timedelta(hours=-13), timedelta(hours=5)]
    mono = FakeMonotonic()
    billed_at: list[datetime] = []
    budget = 6
    for i in range(7 * 24 * 60 // 7):
        real += timedelta(minutes=7)
        mono.current += 7 * 60
        boot = "boot-1" if i < 700 else "boot-2"
        if i == 700:
            mono.current = 50.0  # rebooted: the monotonic clock starts again
        now = FakeNow(real + steps[(i // 97) % len(steps)])
        ledger = BudgetLedger(
            tmp_path,
            budget_for(budget),
            COST,
            timezone=zones[(i // 61) % 5],
            now=now,
            clock=mono,
            boot_id=lambda b=boot: b,
        )
        try:
            ledger.settle(ledger.reserve())
        except BudgetExhaustedError:
            pass
        else:
            billed_at.append(real)
        ledger.close()
    assert len(billed_at) > budget * 5  # the budget came back day after day
    for start in billed_at:
        inside = [t for t in billed_at if start <= t < start + timedelta(hours=24)]
        assert len(inside) <= budget, (start, inside)


@pytest.mark.parametrize(
    ("utc", "day"),
    [
        # 2026-03-08 in New York: 23 hours long, clocks jump from 02:00 EST to 03:00 EDT.
        (datetime(2026, 3, 8, 4, 59, tzinfo=UTC), "2026-03-07"),  # 23:59 EST
        (datetime(2026, 3, 8, 5, 0, tzinfo=UTC), "2026-03-08"),  # 00:00 EST
        (datetime(2026, 3, 8, 7, 30, tzinfo=UTC), "2026-03-08"),  # 03:30 EDT (02:30 skipped)
        (datetime(2026, 3, 9, 3, 59, tzinfo=UTC), "2026-03-08"),  # 23:59 EDT
        (datetime(2026, 3, 9, 4, 0, tzinfo=UTC), "2026-03-09"),  # 00:00 EDT
        # 2026-11-01: 25 hours long.
        (datetime(2026, 11, 2, 4, 59, tzinfo=UTC), "2026-11-01"),  # 23:59 EST
        (datetime(2026, 11, 2, 5, 0, tzinfo=UTC), "2026-11-02"),  # 00:00 EST
    ],
)
def test_dst_days_key_by_local_date(tmp_path: Path, utc: datetime, day: str) -> None:
    ledger = make_ledger(tmp_path, now=FakeNow(utc), timezone="America/New_York")
    assert ledger.day() == day
    assert ledger.reserve().day == day
    assert ledger.statistics()["day"] == day


def test_dst_spring_forward_day_gets_one_budget(tmp_path: Path) -> None:
    now = FakeNow(datetime(2026, 3, 8, 5, 0, tzinfo=UTC))  # midnight EST
    ledger = make_ledger(tmp_path, requests=2, now=now, timezone="America/New_York")
    ledger.settle(ledger.reserve())
    now.current = datetime(2026, 3, 9, 3, 59, tzinfo=UTC)  # 23:59 EDT, same local day
    ledger.settle(ledger.reserve())
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve()
    now.current = datetime(2026, 3, 9, 4, 0, tzinfo=UTC)  # local midnight
    assert ledger.day() == "2026-03-09"
    assert not ledger.can_reserve()  # the first request is not 24 hours old yet
    now.current = datetime(2026, 3, 9, 5, 2, tzinfo=UTC)
    assert ledger.can_reserve()


def test_rollover_is_recorded_and_prunes_old_days(tmp_path: Path) -> None:
    start = datetime(2026, 10, 1, 12, tzinfo=UTC)
    now = FakeNow(start)
    ledger = make_ledger(tmp_path, now=now)
    for offset in range(40):
        now.current = start + timedelta(days=offset)
        ledger.settle(ledger.reserve())
    now.current = start + timedelta(days=40)
    ledger.record_rollover()
    stats = ledger.statistics()
    assert stats["last_rollover"] == now.current.isoformat()
    assert stats["last_rollover_day"] == "2026-11-10"
    days = ledger.days()
    assert days[0] == (start + timedelta(days=40 - DAYS_KEPT)).date().isoformat()
    assert days[-1] == "2026-11-09"
    assert len(days) == DAYS_KEPT


def test_budget_and_cost_change_between_restarts(tmp_path: Path) -> None:
    first = make_ledger(tmp_path, requests=10)
    for _ in range(6):
        first.settle(first.reserve())
    first.close()

    # Budget lowered below today's spend: nothing more today, no negative remaining.
    lowered = make_ledger(tmp_path, requests=5)
    assert lowered.statistics()["requests_allowed"] == 5
    assert lowered.statistics()["budget_remaining"] == Decimal(0)
    assert lowered.statistics()["budget_used_pct"] == 120.0
    with pytest.raises(BudgetExhaustedError):
        lowered.reserve()

    # Cost doubled, budget unchanged in USD: 4 * 0.0015 left buys two requests at 0.003.
    doubled = BudgetLedger(tmp_path, budget_for(10), COST * 2, now=FakeNow(NOON))
    doubled.settle(doubled.reserve())
    doubled.settle(doubled.reserve())
    with pytest.raises(BudgetExhaustedError):
        doubled.reserve()
    stats = doubled.statistics()
    assert stats["requests_billed"] == 8
    assert stats["total_cost"] == budget_for(10)

    raised = make_ledger(tmp_path, requests=11)
    raised.settle(raised.reserve())
    assert raised.statistics()["budget_remaining"] == Decimal(0)


# -- storage errors -------------------------------------------------------------------------


def test_unwritable_directory_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(StorageError, match="DATA_DIR"):
        make_ledger(blocker / "ledger")


def test_corrupt_day_record_is_a_storage_error_not_a_fresh_budget(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    ledger.settle(ledger.reserve())
    with sqlite3.connect(tmp_path / "cache.db") as con:
        con.execute("UPDATE Cache SET value = ?", (b"not zlib json",))
    con.close()
    with pytest.raises(StorageError, match="corrupt"):
        ledger.reserve()
    with pytest.raises(StorageError, match="corrupt"):
        ledger.statistics()


def test_set_limits_applies_from_the_next_reservation(tmp_path: Path) -> None:
    """A reload's new budget: lowering it under today's spend stops new paid requests at once;
    raising it lets them go on; the spend already counted stays."""
    ledger = make_ledger(tmp_path, requests=5)
    for _ in range(3):
        ledger.settle(ledger.reserve())
    ledger.set_limits(budget_for(2), COST)
    assert not ledger.can_reserve()
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve()
    ledger.set_limits(budget_for(4), COST)
    ledger.settle(ledger.reserve())
    assert not ledger.can_reserve()
    assert ledger.statistics()["requests_used"] == 4
    with pytest.raises(ConfigError):
        ledger.set_limits(budget_for(4), Decimal("0"))
    assert ledger.statistics()["budget_total"] == budget_for(4)  # a refused change changes nothing
