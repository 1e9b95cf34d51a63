"""Issue 23 item 12: a kill -9 must not lose the paid quotes of the last second.

The history used to commit in groups ("up to 50, at most a second apart"): with 300
Bloomberg-only symbols at 300 ms, a kill -9 once 40 requests were billed left 64 billed and 0
rows in the history, 3 runs of 3. A paid quote is now committed before its fetch worker takes
the next symbol and before the collection counts it as done.

The proof, at random moments of such a collection (each kill after a random number of billed
requests): every symbol the daemon had reported done (`collection_in_progress.done`, read just
before the kill) has its row in the history, and of the requests the fake had billed when we
looked, at most one per worker (received but not yet committed: the few milliseconds between
the body's last byte and the commit) may be missing.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path

from crawler.normalizer.schemas import AssetClass
from crawler.store.history import HISTORY_FILENAME
from crawler.store.watchlist import Watchlist
from crawler.utils.exceptions import CrawlerError
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

KILLS = 5
SYMBOLS = 300
WORKERS = 16
COST = Decimal("0.0015")


def _history_rows(data: Path) -> int:
    db = data / "history" / HISTORY_FILENAME
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM quotes").fetchone()[0])
    finally:
        conn.close()


def _done(daemon: DaemonHarness) -> int | None:
    status = daemon.client(10).call("GET", "/status")
    progress = status["scheduler"]["scheduler_state"]["collection_in_progress"]
    return None if progress is None else int(progress["done"])


def test_kill_9_at_random_moments_keeps_every_paid_quote_received(tmp_path: Path) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    with FakeMarket() as market:
        market.bright_data.faults.set("*", latency_s=0.3)
        daemon = DaemonHarness(
            market, tmp_path, SOURCES_ORDER="bright_data", TOTAL_BUDGET=str(10_000 * COST),
            COST_PER_REQUEST=str(COST), CACHE_TTL_SECONDS="1", MAX_WORKERS=str(WORKERS),
            STREAM_ENABLED="false", BUDGET_PACING="off",
        )  # fmt: skip
        for kill in range(KILLS):
            watchlist = Watchlist(daemon.data_dir / "watchlist")
            for old in watchlist.symbols():
                watchlist.remove(old)
            for i in range(SYMBOLS):  # new symbols each time: every quote is a new row
                watchlist.add(f"K{kill:02d}X{i:03d}:US", AssetClass.STOCKS)
            watchlist.close()
            daemon.start()
            rows_before = _history_rows(daemon.data_dir)
            billed_before = market.bright_data.billed_count

            def collect(daemon: DaemonHarness = daemon) -> None:
                with contextlib.suppress(CrawlerError):  # the kill cuts the answer short
                    daemon.client(120).post("/collect", {})

            collecting = threading.Thread(target=collect)
            collecting.start()
            moment = rng.randint(1, SYMBOLS - 3 * WORKERS)  # billed requests before the kill
            deadline = time.monotonic() + 60
            while market.bright_data.billed_count - billed_before < moment:
                assert time.monotonic() < deadline, (seed, kill, daemon.log_tail())
                time.sleep(0.002)
            billed = market.bright_data.billed_count - billed_before
            done = _done(daemon)
            daemon.kill()
            collecting.join(30)

            kept = _history_rows(daemon.data_dir) - rows_before
            assert done is not None and done < SYMBOLS, (seed, kill, done)
            assert kept >= done, f"seed {seed}, kill {kill}: {done} reported done, {kept} kept"
            assert billed - kept <= WORKERS, (
                f"seed {seed}, kill {kill} at {moment}: {billed} billed, {kept} kept"
            )


def test_kill_9_during_a_paid_fetch_keeps_what_was_received(tmp_path: Path) -> None:
    """`crawler fetch` of 300 paid symbols through the daemon used to write its history once,
    when the whole answer was ready: a kill -9 in the middle kept none of what was billed."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    with FakeMarket() as market:
        market.bright_data.faults.set("*", latency_s=0.3)
        daemon = DaemonHarness(
            market, tmp_path, SOURCES_ORDER="bright_data", TOTAL_BUDGET=str(10_000 * COST),
            COST_PER_REQUEST=str(COST), CACHE_TTL_SECONDS="1", MAX_WORKERS=str(WORKERS),
            STREAM_ENABLED="false", BUDGET_PACING="off",
        )  # fmt: skip
        for kill in range(3):
            daemon.start()
            rows_before = _history_rows(daemon.data_dir)
            billed_before = market.bright_data.billed_count
            symbols = [f"F{kill:02d}X{i:03d}:US" for i in range(SYMBOLS)]

            def fetch(daemon: DaemonHarness = daemon, symbols: list[str] = symbols) -> None:
                with contextlib.suppress(CrawlerError):  # the kill cuts the answer short
                    daemon.client(120).post("/fetch", {"symbols": symbols, "fresh": True})

            fetching = threading.Thread(target=fetch)
            fetching.start()
            moment = rng.randint(WORKERS, SYMBOLS - 3 * WORKERS)
            deadline = time.monotonic() + 60
            while market.bright_data.billed_count - billed_before < moment:
                assert time.monotonic() < deadline, (seed, kill, daemon.log_tail())
                time.sleep(0.002)
            billed = market.bright_data.billed_count - billed_before
            daemon.kill()
            fetching.join(30)

            kept = _history_rows(daemon.data_dir) - rows_before
            assert billed - kept <= WORKERS, (
                f"seed {seed}, kill {kill} at {moment}: {billed} billed, {kept} kept"
            )
