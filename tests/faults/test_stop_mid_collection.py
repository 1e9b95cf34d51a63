"""Issue 13 item 5: stopping the daemon in the middle of a collection, and stray signals.

Reproduced at the size that broke: 306 symbols, the fake market at 400 ms, the default 16
workers, SIGTERM (or Ctrl-C's SIGINT) about 2.5 s into a collection. Before the fix: "collection
still running after 5.0s; stopping anyway", then a segmentation fault (exit 139) in 4 of 6
tries, `HistoryStore.record` running on the collection thread after the stores were closed.
Now the stop aborts the collection (what has landed is recorded, what has not started is
cancelled), no store is closed under a running thread, and the exit code is 0. Each source
alone, each signal, several times.

SIGHUP, SIGUSR1/2, SIGALRM and SIGQUIT used to kill the daemon without clean-up (socket and
pidfile left, reservations held): each is now handled (SIGQUIT: a clean stop; SIGHUP: reload)
or ignored on purpose.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.normalizer.schemas import AssetClass
from crawler.store.history import HISTORY_FILENAME
from crawler.store.ledger import BudgetLedger
from crawler.store.watchlist import Watchlist
from crawler.utils.exceptions import CrawlerError
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

SYMBOLS = [f"S{i:03d}:US" for i in range(306)]
LATENCY_S = 0.4
INTO_COLLECTION_S = 2.5
TRIES = 3
STOP_BOUND_S = 15.0
COST = Decimal("0.0015")


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        fake.bright_data.faults.set("*", latency_s=LATENCY_S)
        fake.yahoo.faults.set("*", latency_s=LATENCY_S)
        yield fake


def _history_rows(data: Path) -> int:
    db = data / "history" / HISTORY_FILENAME
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return int(conn.execute("SELECT COUNT(*) FROM quotes").fetchone()[0])
    finally:
        conn.close()


def _requests(market: FakeMarket, source: str) -> int:
    fake = market.bright_data if source == "bright_data" else market.yahoo
    return len(fake.log_requests())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("source", ["bright_data", "yfinance"])
def test_stop_mid_collection_exits_0_and_keeps_what_landed(
    market: FakeMarket, tmp_path: Path, source: str, sig: signal.Signals
) -> None:
    for attempt in range(TRIES):
        base = tmp_path / f"try{attempt}"
        base.mkdir()
        daemon = DaemonHarness(
            market, base, SOURCES_ORDER=source, TOTAL_BUDGET=str(1_000 * COST),
            COST_PER_REQUEST=str(COST),
        )  # fmt: skip
        watchlist = Watchlist(daemon.data_dir / "watchlist")
        for symbol in SYMBOLS:
            watchlist.add(symbol, AssetClass.STOCKS)
        watchlist.close()
        before = _requests(market, source)
        try:
            daemon.start()

            def collect(daemon: DaemonHarness = daemon) -> None:
                with contextlib.suppress(CrawlerError):  # the stop cuts the answer short
                    daemon.client(60).post("/collect", {})

            collecting = threading.Thread(target=collect)
            collecting.start()
            deadline = time.monotonic() + 30
            while _requests(market, source) == before:  # the collection is under way
                assert time.monotonic() < deadline, daemon.log_tail()
                time.sleep(0.02)
            time.sleep(INTO_COLLECTION_S)
            assert daemon.proc is not None
            daemon.proc.send_signal(sig)
            started = time.monotonic()
            code = daemon.proc.wait(STOP_BOUND_S + 30)
            took_s = time.monotonic() - started
            collecting.join(30)
        finally:
            daemon.kill()
        log = daemon.log_tail(200_000)
        assert code == 0, f"try {attempt}: exit {code}\n{log[-4000:]}"
        assert took_s < STOP_BOUND_S, log[-4000:]
        assert "Traceback" not in log and "Segmentation" not in log, log[-4000:]
        assert not daemon.socket_path.exists()
        assert not (daemon.data_dir / "crawler.pid").exists()
        # The stop landed inside the collection, and what had landed was kept.
        asked = _requests(market, source) - before
        assert asked < len(SYMBOLS) * (3 if source == "yfinance" else 1), asked
        rows = _history_rows(daemon.data_dir)
        assert rows > 0, log[-4000:]
        if source == "bright_data":
            ledger = BudgetLedger(daemon.data_dir / "ledger", 1_000 * COST, COST)
            try:
                stats = ledger.statistics()
            finally:
                ledger.close()
            assert stats["open_reservations"] == 0  # the stop settled or released each one
            assert rows <= stats["requests_billed"]


def test_stray_signals_are_handled_or_ignored_on_purpose(
    market: FakeMarket, tmp_path: Path
) -> None:
    daemon = DaemonHarness(market, tmp_path)
    try:
        proc = daemon.start()
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGHUP):
            proc.send_signal(sig)
            status, body = daemon.client(10).get("/health")  # still serving
            assert status == 200 and body["pid"] == proc.pid, sig
        deadline = time.monotonic() + 10
        while '"signal": "SIGALRM"' not in daemon.log_tail(100_000):  # logged and ignored
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.05)
        assert proc.poll() is None
        proc.send_signal(signal.SIGQUIT)  # a clean stop, like SIGTERM
        assert proc.wait(20) == 0, daemon.log_tail()
        assert not daemon.socket_path.exists()
        assert not (daemon.data_dir / "crawler.pid").exists()
    finally:
        daemon.kill()
