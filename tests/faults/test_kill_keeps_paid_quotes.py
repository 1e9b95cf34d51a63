"""Issue 13 item 3: kill -9 in the middle of a collection keeps the quotes already paid for.

History used to be written when a collection ended, so a kill in the middle threw away all of
it (25 kills: 499 quotes billed, 0 in history). Quotes are now recorded as they land, in
batched commits at most a second apart. Reproduced at that size: 25 kills, each in the middle
of a collection of 60 slow symbols; after each, every quote billed more than the recorder's
delay before the kill is in the history.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path

from crawler.normalizer.schemas import AssetClass
from crawler.store.history import HISTORY_FILENAME
from crawler.store.history_recorder import DEFAULT_MAX_DELAY_S
from crawler.store.watchlist import Watchlist
from crawler.utils.exceptions import CrawlerError
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

KILLS = 25
PER_COLLECTION = 60
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


def test_kill_9_mid_collection_keeps_the_quotes_already_paid_for(tmp_path: Path) -> None:
    with FakeMarket() as market:
        # 60 symbols at 0.3 s on 8 workers: a collection takes about 2.4 s.
        market.bright_data.faults.set("*", latency_s=0.3)
        daemon = DaemonHarness(
            market, tmp_path, SOURCES_ORDER="bright_data", TOTAL_BUDGET=str(5_000 * COST),
            COST_PER_REQUEST=str(COST), CACHE_TTL_SECONDS="1", MAX_WORKERS="8",
        )  # fmt: skip
        billed_total = 0
        for kill in range(KILLS):
            # New symbols each time: the history keeps one row per quote, and a symbol's quote
            # from the last collection would be a duplicate, not a new row.
            watchlist = Watchlist(daemon.data_dir / "watchlist")
            for old in watchlist.symbols():
                watchlist.remove(old)
            for i in range(PER_COLLECTION):
                watchlist.add(f"P{kill:02d}X{i:03d}:US", AssetClass.STOCKS)
            watchlist.close()
            daemon.start()
            rows_before = _history_rows(daemon.data_dir)
            billed_before = market.bright_data.billed_count

            def collect(daemon: DaemonHarness = daemon) -> None:
                with contextlib.suppress(CrawlerError):  # the kill cuts the answer short
                    daemon.client(60).post("/collect", {})

            collecting = threading.Thread(target=collect)
            collecting.start()
            deadline = time.monotonic() + 30
            while market.bright_data.billed_count - billed_before < 8:
                assert time.monotonic() < deadline, daemon.log_tail()
                time.sleep(0.01)
            paid = market.bright_data.billed_count - billed_before
            # Every one of those must reach the history within the recorder's bounded delay,
            # while the collection is still running; then the kill.
            deadline = time.monotonic() + DEFAULT_MAX_DELAY_S + 5
            while _history_rows(daemon.data_dir) - rows_before < paid:
                assert time.monotonic() < deadline, (kill, paid, daemon.log_tail())
                time.sleep(0.02)
            still_collecting = market.bright_data.billed_count - billed_before < PER_COLLECTION
            daemon.kill()
            collecting.join(30)
            assert still_collecting, (kill, paid, market.bright_data.billed_count - billed_before)
            kept = _history_rows(daemon.data_dir) - rows_before
            assert kept >= paid, (kill, kept, paid)
            billed_total += paid
        assert billed_total >= 8 * KILLS
