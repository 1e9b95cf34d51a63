"""A separate process for the store tests: races on one data dir, crashes, privileged probes.

python tests/store_worker.py ledger-race DIR BUDGET_USD COST_USD NOW_ISO THREADS
    prints "ready", waits for a line on stdin, then every thread reserves until the budget
    is exhausted, settling two of three reservations and releasing the third; prints
    {"settled": n, "released": m} as JSON.
python tests/store_worker.py ledger-hold DIR BUDGET_USD COST_USD NOW_ISO
    reserves once, prints "reserved", then sleeps until killed.
python tests/store_worker.py ledger-hold-many DIR BUDGET_USD COST_USD NOW_ISO THREADS
    THREADS threads reserve one each at the same time and hold them; prints "reserved N"
    once all hold one, then sleeps until killed (the ledger may hold a drawn block too).
python tests/store_worker.py watchlist-add DIR PREFIX COUNT THREADS
    prints "ready", waits for a line on stdin, adds PREFIX<i>:US for i < COUNT (split over
    THREADS threads), prints "done".
With STORE_REDIS_URL set, the ledger commands use RedisLedger on that Redis (DIR then holds
the node's local record): the same races, on the Redis backend.
python tests/store_worker.py datadir PATH
    prints "ok PATH", or "StorageError: <message>" and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from crawler.normalizer.schemas import AssetClass
from crawler.store.backend import LedgerStore
from crawler.store.datadir import ensure_data_dir
from crawler.store.ledger import BudgetLedger
from crawler.store.watchlist import Watchlist
from crawler.utils.exceptions import BudgetExhaustedError, StorageError

__all__ = ["main"]


def _ledger(args: list[str]) -> LedgerStore:
    directory, budget, cost, now_iso = args[:4]
    fixed_now = datetime.fromisoformat(now_iso)
    url = os.environ.get("STORE_REDIS_URL")
    if url:
        from crawler.store.ledger.redis import RedisLedger
        from crawler.store.redis_client import RedisConnection

        return RedisLedger(
            RedisConnection(url), Path(directory), Decimal(budget), Decimal(cost),
            now=lambda: fixed_now,
        )  # fmt: skip
    return BudgetLedger(Path(directory), Decimal(budget), Decimal(cost), now=lambda: fixed_now)


def _wait_for_go() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def ledger_race(args: list[str]) -> int:
    """Reserve until exhausted from many threads; report what this process billed."""
    ledger = _ledger(args)
    threads = int(args[4])
    settled = [0] * threads
    released = [0] * threads

    def run(index: int) -> None:
        attempt = 0
        while True:
            try:
                reservation = ledger.reserve()
            except BudgetExhaustedError:
                return
            attempt += 1
            if attempt % 3 == 0:
                released[index] += int(ledger.release(reservation))
            else:
                settled[index] += int(ledger.settle(reservation))

    _wait_for_go()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"settled": sum(settled), "released": sum(released)}), flush=True)
    return 0


def ledger_hold(args: list[str]) -> int:
    """Reserve once and hang, holding the reservation open until SIGKILL."""
    ledger = _ledger(args)
    reservation = ledger.reserve()
    print(f"reserved {reservation.id}", flush=True)
    time.sleep(3600)  # the test kills us long before this
    return 0


def ledger_hold_many(args: list[str]) -> int:
    """THREADS reservations in flight at once, held until SIGKILL."""
    ledger = _ledger(args)
    threads = int(args[4])
    start = threading.Barrier(threads)
    held: list[object] = []

    def hold() -> None:
        start.wait()
        held.append(ledger.reserve(label="HELD:US"))

    workers = [threading.Thread(target=hold) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(f"reserved {len(held)}", flush=True)
    time.sleep(3600)  # the test kills us long before this
    return 0


def watchlist_add(args: list[str]) -> int:
    """Add COUNT symbols from THREADS threads."""
    directory, prefix, count, threads = args[0], args[1], int(args[2]), int(args[3])
    watchlist = Watchlist(Path(directory))

    def run(start: int) -> None:
        for i in range(start, count, threads):
            watchlist.add(f"{prefix}{i}:US", AssetClass.STOCKS)

    _wait_for_go()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print("done", flush=True)
    return 0


def datadir(args: list[str]) -> int:
    """Run ensure_data_dir and report the outcome on stdout."""
    try:
        path = ensure_data_dir(Path(args[0]))
    except StorageError as exc:
        print(f"StorageError: {exc}", flush=True)
        return 1
    print(f"ok {path}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Dispatch on the sub-command name."""
    commands = {
        "ledger-race": ledger_race,
        "ledger-hold": ledger_hold,
        "ledger-hold-many": ledger_hold_many,
        "watchlist-add": watchlist_add,
        "datadir": datadir,
    }
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
