"""Issue 13 item 4: empty or corrupt store files at start.

A zero-length ledger, watchlist or history database was taken as new: budget used went from
261 to 0 and the watchlist from 200 to 0, with no warning. Each is now refused with one line
naming the file and the fix, and the file is left as it was. A corrupt cache (disposable) is
moved aside and rebuilt instead of blocking the start.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.store.history import HISTORY_FILENAME, HistoryStore
from crawler.store.ledger import BudgetLedger
from crawler.store.watchlist import Watchlist
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness, clean_env, one_clean_line

COST = Decimal("0.0015")
BUDGET = 1_000 * COST


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir as the attack found it: 261 requests billed, 200 symbols, some history."""
    data = tmp_path_factory.mktemp("seeded") / "data"
    ledger = BudgetLedger(data / "ledger", BUDGET, COST)
    for _ in range(261):
        ledger.settle(ledger.reserve())
    ledger.close()
    watchlist = Watchlist(data / "watchlist")
    for i in range(200):
        watchlist.add(f"W{i:03d}:US", AssetClass.STOCKS)
    watchlist.close()
    history = HistoryStore(data / "history")
    history.record(
        Quote(symbol="W000:US", price=Decimal("1.5"), source="bright_data",
              fetched_at=datetime(2026, 11, 28, 12, i, tzinfo=UTC))
        for i in range(10)
    )  # fmt: skip
    history.close()
    return data


def _start(base: Path, market: FakeMarket) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        base, **market.environment(), DATA_DIR=str(base / "data"),
        CRAWLER_SOCKET=str(base / "run" / "crawler.sock"), TOTAL_BUDGET=str(BUDGET),
        COST_PER_REQUEST=str(COST),
    )  # fmt: skip
    (base / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "crawler", "start", "--foreground"],
        env=env, cwd=base, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("store", "relative"),
    [
        ("budget ledger", "ledger/cache.db"),
        ("watchlist", "watchlist/cache.db"),
        ("quote history", f"history/{HISTORY_FILENAME}"),
    ],
)
def test_an_empty_store_file_is_refused_with_one_line_and_left_alone(
    seeded: Path, market: FakeMarket, tmp_path: Path, store: str, relative: str
) -> None:
    shutil.copytree(seeded, tmp_path / "data")
    emptied = tmp_path / "data" / relative
    emptied.write_bytes(b"")
    for sidecar in ("-wal", "-shm"):
        Path(f"{emptied}{sidecar}").unlink(missing_ok=True)

    result = _start(tmp_path, market)

    assert result.returncode != 0, result.stdout
    line = one_clean_line(result.stderr)
    assert str(emptied) in line and "empty" in line and "backup" in line, line
    assert emptied.stat().st_size == 0  # not initialised as a new, empty store
    # The other stores kept their state.
    if store != "budget ledger":
        stats = BudgetLedger(tmp_path / "data" / "ledger", BUDGET, COST).statistics()
        assert stats["requests_billed"] == 261
    if store != "watchlist":
        assert len(Watchlist(tmp_path / "data" / "watchlist").symbols()) == 200


def test_a_corrupt_cache_is_moved_aside_and_rebuilt(
    seeded: Path, market: FakeMarket, tmp_path: Path
) -> None:
    shutil.copytree(seeded, tmp_path / "data")
    (tmp_path / "data" / "cache").mkdir(exist_ok=True)
    (tmp_path / "data" / "cache" / "cache.db").write_bytes(b"this is not a database" * 100)
    daemon = DaemonHarness(market, tmp_path, TOTAL_BUDGET=str(BUDGET), COST_PER_REQUEST=str(COST))
    try:
        daemon.start()
        status, body = daemon.client().get("/symbols")
        assert status == 200 and len(body["symbols"]) == 200
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_tail()
    aside = list((tmp_path / "data").glob("cache.corrupt-*"))
    assert len(aside) == 1 and (aside[0] / "cache.db").read_bytes().startswith(b"this is not")
    assert "moved aside" in daemon.log_tail()
