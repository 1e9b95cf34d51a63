"""SIGTERM in the middle of a slow collection: the daemon exits 0 within 10 s, removes its
socket and pidfile, and leaves every store whole with the money accounted for."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness
from tests.faults.test_kill_during_collection import (
    COST,
    check_cache,
    check_history,
    check_money,
    check_watchlist,
)

SYMBOLS = [f"T{i:02d}:US" for i in range(80)]
STOP_BOUND_S = 10.0


def test_sigterm_during_a_collection_exits_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    with FakeMarket() as market:
        # 80 quotes at 0.3 s on 2 workers: the collection would take about 12 s, past the
        # daemon's 5 s grace for a running collection, so the stop must abandon it.
        market.bright_data.faults.set("*", latency_s=0.3)
        daemon = DaemonHarness(
            market, tmp_path,
            SOURCES_ORDER="bright_data", TOTAL_BUDGET=str(400 * COST),
            COST_PER_REQUEST=str(COST), MAX_WORKERS="2",
        )  # fmt: skip
        try:
            daemon.start()
            for symbol in SYMBOLS:
                assert daemon.client().post("/symbols", {"symbol": symbol})[0] == 201
            collecting = threading.Thread(
                target=lambda: _ignore_errors(lambda: daemon.client(60).post("/collect", {}))
            )
            collecting.start()
            deadline = time.monotonic() + 10
            while market.bright_data.billed_count < 3:  # the collection is under way
                assert time.monotonic() < deadline, daemon.log_tail()
                time.sleep(0.02)
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGTERM)
            billed_at_signal = market.bright_data.billed_count
            started_s = time.monotonic()
            code = daemon.proc.wait(STOP_BOUND_S + 5)
            assert time.monotonic() - started_s < STOP_BOUND_S, daemon.log_tail()
            assert code == 0, daemon.log_tail()
            collecting.join(30)
        finally:
            daemon.kill()
        assert billed_at_signal < len(SYMBOLS)  # the signal landed inside the collection
        assert market.bright_data.billed_count < len(SYMBOLS)  # and the stop abandoned it
        assert not daemon.socket_path.exists()
        assert not (daemon.data_dir / "crawler.pid").exists()
        assert "Traceback" not in daemon.log_tail(200_000)
        data = daemon.data_dir
        check_watchlist(data, SYMBOLS, set())
        check_money(data, market)
        check_cache(data / "cache")
        check_history(data / "history")


def _ignore_errors(action: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # the daemon goes away mid-request: that is the point
        action()
