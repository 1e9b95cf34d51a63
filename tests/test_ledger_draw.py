"""The embedded ledger draws a block of reservations while paid requests overlap (draw.py).

What must not change: the money (never above the budget, by threads, processes or a kill -9),
what this process reads (`statistics()` as if every request had its own reservation), and
what the files hold at rest. What changes: a collection's workers share one transaction per
block instead of two per request. Real diskcache directories, real threads, a real process.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import diskcache
import pytest

from crawler.store.ledger import BudgetLedger, Reservation
from crawler.store.ledger.draw import MAX_BLOCK
from crawler.utils.exceptions import BudgetExhaustedError
from tests.test_ledger import COST, NOON, FakeNow, budget_for, make_ledger, spawn

WORKERS = 16


def _open_entries(directory: Path) -> list[dict[str, object]]:
    """The open reservations the files hold today (what another process counts as spent)."""
    from crawler.store.datadir import JSONOnlyDisk

    cache = diskcache.Cache(str(directory), disk=JSONOnlyDisk)
    try:
        record = cache.get(f"day:{NOON.date().isoformat()}") or {"open": {}}
    finally:
        cache.close()
    return list(record["open"].values())


def _on_threads(work: Callable[[], None], count: int) -> None:
    """Run `work` on `count` threads at once and wait for them all."""
    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _in_flight(
    ledger: BudgetLedger, workers: int, while_held: Callable[[], None], rounds: int = 1
) -> list[Reservation]:
    """`workers` threads each reserve, all wait until every one holds its reservation and
    `while_held()` has looked, then each settles; `rounds` times. Returns what was reserved."""
    taken: list[Reservation] = []
    lock = threading.Lock()
    holding = threading.Barrier(workers, action=while_held)

    def work() -> None:
        for _ in range(rounds):
            reservation = ledger.reserve(label="AAPL:US")
            with lock:
                taken.append(reservation)
            holding.wait()
            ledger.settle(reservation)

    _on_threads(work, workers)
    return taken


def test_one_request_at_a_time_writes_each_reservation_and_settle_at_once(
    tmp_path: Path,
) -> None:
    ledger = make_ledger(tmp_path, requests=1_000)
    other = make_ledger(tmp_path, requests=1_000)  # what another process reads
    for billed in range(1, 6):
        reservation = ledger.reserve(label="AAPL:US")
        assert [e["label"] for e in _open_entries(tmp_path)] == ["AAPL:US"]  # no block
        ledger.settle(reservation)
        stats = other.statistics()
        assert (stats["requests_billed"], stats["open_reservations"]) == (billed, 0)


def test_overlapping_requests_share_blocks_and_leave_the_files_exact_at_rest(
    tmp_path: Path,
) -> None:
    ledger = make_ledger(tmp_path, requests=10_000)
    other = make_ledger(tmp_path, requests=10_000)
    seen: list[tuple[int, int, int, int]] = []

    def look() -> None:
        # Every worker holds one reservation: this process reads one per request in flight;
        # the files may hold a drawn block besides, counted as spent for everyone else.
        mine, theirs = ledger.statistics(), other.statistics()
        entries = _open_entries(tmp_path)
        blocks = len({(e["created"], e["minute"]) for e in entries})
        seen.append((mine["open_reservations"], theirs["open_reservations"], len(entries), blocks))
        assert mine["requests_used"] == mine["requests_billed"] + WORKERS
        assert theirs["total_cost"] >= mine["total_cost"]

    rounds = 5
    taken = _in_flight(ledger, WORKERS, look, rounds=rounds)
    assert len(taken) == len({r.id for r in taken}) == WORKERS * rounds
    assert all(mine == WORKERS for mine, _, _, _ in seen)
    assert all(theirs >= WORKERS for _, theirs, _, _ in seen)
    # Blocks were drawn: many reservations per write, not one each.
    assert max(entries // blocks for _, _, entries, blocks in seen) >= 4, seen
    # At rest, the files hold exactly what one reservation per request would have left.
    at_rest = other.statistics()
    assert at_rest["requests_billed"] == WORKERS * rounds
    assert at_rest["open_reservations"] == 0
    assert at_rest["total_cost"] == at_rest["window_cost"] == COST * WORKERS * rounds
    assert other.breakdown()["by_label"] == {"AAPL:US": WORKERS * rounds}
    assert _open_entries(tmp_path) == []


def test_near_the_end_every_request_of_the_budget_is_used_and_none_more(
    tmp_path: Path,
) -> None:
    allowed = 40
    ledger = make_ledger(tmp_path, requests=allowed)
    settled: list[Reservation] = []
    lock = threading.Lock()

    def work() -> None:
        while True:
            try:
                reservation = ledger.reserve()
            except BudgetExhaustedError:
                return
            ledger.settle(reservation)
            with lock:
                settled.append(reservation)

    _on_threads(work, WORKERS)
    assert len(settled) == allowed
    stats = make_ledger(tmp_path, requests=allowed).statistics()
    assert (stats["requests_billed"], stats["open_reservations"]) == (allowed, 0)
    assert stats["total_cost"] == budget_for(allowed)


def test_a_release_gives_the_money_back_to_every_process_at_once(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, requests=10_000)
    other = make_ledger(tmp_path, requests=10_000)
    first, second = ledger.reserve(), ledger.reserve()  # two in flight: no rest between
    before = other.statistics()["total_cost"]
    assert ledger.release(second) is True
    assert other.statistics()["total_cost"] == before - COST
    assert ledger.release(second) is False  # closed once only
    assert ledger.settle(first) is True
    assert ledger.settle(first) is False
    assert other.statistics()["requests_billed"] == 1


def test_a_lower_budget_returns_the_held_block(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, requests=10_000)
    other = make_ledger(tmp_path, requests=10_000)
    held = [ledger.reserve() for _ in range(MAX_BLOCK)]  # in flight together: a block is held
    ledger.set_limits(budget_for(20), COST)
    assert other.statistics()["open_reservations"] == MAX_BLOCK  # only those in flight
    for reservation in held:
        ledger.settle(reservation)
    assert other.statistics()["requests_billed"] == MAX_BLOCK


def test_kill_9_while_a_block_is_held_leaves_it_spent_and_the_budget_whole(
    tmp_path: Path,
) -> None:
    allowed = 2_000
    threads = 12
    worker = spawn(
        "ledger-hold-many", str(tmp_path), str(budget_for(allowed)), str(COST),
        NOON.isoformat(), str(threads),
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line == f"reserved {threads}\n", worker.stderr.read() if worker.stderr else line
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL

    restarted = make_ledger(tmp_path, requests=allowed, now=FakeNow(NOON))
    stats = restarted.statistics()
    held = stats["open_reservations"]
    # Every request the dead process had in flight stays spent, with at most one block more.
    assert threads <= held <= threads + MAX_BLOCK
    assert stats["total_cost"] == COST * held
    spent = 0
    while True:
        try:
            reservation = restarted.reserve()
        except BudgetExhaustedError:
            break
        restarted.settle(reservation)
        spent += 1
    assert spent == allowed - held
    final = restarted.statistics()
    assert final["total_cost"] == budget_for(allowed)


@pytest.mark.parametrize("max_block", [1, MAX_BLOCK])
def test_the_draw_changes_no_number_this_process_reads(tmp_path: Path, max_block: int) -> None:
    """Same work, with blocks and without: the same statistics, look by look."""
    ledger = BudgetLedger(
        tmp_path, budget_for(10_000), COST, now=FakeNow(NOON), boot_id=lambda: "boot-1",
        max_block=max_block,
    )  # fmt: skip
    looks: list[tuple[int, int, int]] = []

    def look() -> None:
        stats = ledger.statistics()
        looks.append((stats["requests_used"], stats["requests_billed"], stats["open_reservations"]))

    _in_flight(ledger, 8, look, rounds=3)
    assert looks == [(8, 0, 8), (16, 8, 8), (24, 16, 8)]
    assert ledger.statistics()["requests_billed"] == 24
