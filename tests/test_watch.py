"""`crawler watch` through the real CLI in a subprocess, against a real daemon and the fake
market's streamer; the board's folding of events, pure."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from crawler.cli.watch import Board, iter_sse
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness, clean_env, one_clean_line


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    with FakeMarket(stream_tick_rate=5.0) as market:
        daemon = DaemonHarness(market, tmp_path_factory.mktemp("watch"))
        daemon.start()
        try:
            for symbol in ("AAPL:US", "EURUSD:CUR"):
                assert daemon.cli("symbols", "add", symbol).returncode == 0
            yield daemon
        finally:
            daemon.stop()


def wait_for_watchers(daemon: DaemonHarness, count: int) -> None:
    """Until the daemon counts exactly `count` open event streams."""
    for _ in range(400):
        _, body = daemon.client().get("/status")
        if body["events"]["watchers"] == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the daemon never counted {count} watchers")


def start_watch(daemon: DaemonHarness, *args: str) -> subprocess.Popen[str]:
    # An earlier test's watcher may still be counted until the daemon sees its socket close:
    # counting ours from zero, not from whatever is left over.
    wait_for_watchers(daemon, 0)
    return subprocess.Popen(
        [sys.executable, "-m", "crawler", "watch", *args],
        env=daemon.env,
        cwd=daemon.base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_json_prints_one_event_per_line_and_ctrl_c_exits_0(daemon: DaemonHarness) -> None:
    proc = start_watch(daemon, "--json", "aapl")
    assert proc.stdout is not None
    events = [json.loads(proc.stdout.readline()) for _ in range(3)]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert stderr == ""
    assert {e["type"] for e in events} == {"quote"}
    assert {e["symbol"] for e in events} == {"AAPL:US"}  # the filter, server-side
    assert all(e["source"] == "yahoo_stream" for e in events)


def test_the_table_shows_every_tracked_symbol_and_ctrl_c_exits_0(daemon: DaemonHarness) -> None:
    proc = start_watch(daemon)
    wait_for_watchers(daemon, 1)  # the board is up; off a terminal rich prints it at exit
    time.sleep(0.5)  # a few ticks land on it
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "AAPL:US" in stdout and "EURUSD:CUR" in stdout
    assert "yahoo_stream" in stdout


def test_bad_symbol_is_exit_2_one_line(daemon: DaemonHarness) -> None:
    result = daemon.cli("watch", "A@PL!")
    assert result.returncode == 2
    assert one_clean_line(result.stderr).startswith("error:")


def test_without_a_daemon_exit_3(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path, DATA_DIR=str(tmp_path / "data"), CRAWLER_SOCKET=str(tmp_path / "no.sock")
    )
    result = subprocess.run(
        [sys.executable, "-m", "crawler", "watch", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "not running" in one_clean_line(result.stderr)


def test_the_watch_ends_with_exit_3_when_the_daemon_stops(tmp_path: Path) -> None:
    with FakeMarket() as market:
        daemon = DaemonHarness(market, tmp_path)
        daemon.start()
        proc = start_watch(daemon, "--json")
        try:
            wait_for_watchers(daemon, 1)
            assert daemon.stop() == 0
            _, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 3
    assert "closed the event stream" in one_clean_line(stderr)


# -- the board, pure ------------------------------------------------------------------------


def test_sse_parsing_skips_comments_and_joins_split_chunks() -> None:
    chunks = [
        b"retry: 2000\n: connected\n\nda",
        b'ta: {"type":"quote","symbol":"A:US"}\n\n',
        b": keep-alive\n\n",
    ]
    assert list(iter_sse(chunks)) == [{"type": "quote", "symbol": "A:US"}]


def test_the_board_folds_quotes_and_news_and_ages_tick() -> None:
    board = Board(["AAPL:US", "MSFT:US"])
    board.apply(
        {"type": "quote", "symbol": "AAPL:US", "price": "262.36", "currency": "USD",
         "change": "-4.9", "change_pct": "-1.83", "source": "yahoo_stream",
         "as_of": "2026-01-06T15:00:00+00:00"},
        now_s=100.0,
    )  # fmt: skip
    board.apply({"type": "breaker", "name": "bright_data", "old": "closed", "new": "open"}, 101.0)
    table = board.table(datetime(2026, 1, 6, 15, 0, 42, tzinfo=UTC), now_s=200.0)
    out = Console(width=120, record=True)
    out.print(table)
    text = out.export_text()
    assert "262.36 USD" in text and "-4.9" in text and "-1.83%" in text and "42s" in text
    assert "no quote yet" in text  # MSFT:US
    assert "breaker bright_data: closed → open" in text
    change_cell = table.columns[2]._cells[0]
    assert change_cell.style == "red"  # down is red (up is green)


def test_a_board_taller_than_the_screen_puts_the_ticking_symbols_first() -> None:
    """1,000 tracked symbols on a Sunday: the few that stream must be on screen, not a page of
    closed stocks; rows keep their first-tick order (no jumping) and the caption counts the
    rest."""
    names = [f"S{i:03d}:US" for i in range(30)]
    board = Board(names)
    for at, symbol in enumerate(["S029:US", "S007:US", "S029:US", "S015:US"]):
        board.apply({"type": "quote", "symbol": symbol, "price": "1", "currency": "USD"}, at)
    assert board.shown(4) == (["S029:US", "S007:US", "S015:US", "S000:US"], 26)
    assert board.shown(30) == (names, 0)  # all fit: the order asked for, untouched
    assert board.shown(None) == (names, 0)
    out = Console(width=200, record=True)
    out.print(board.table(datetime(2026, 1, 6, tzinfo=UTC), now_s=10.0, max_rows=4))
    text = out.export_text()
    assert "26 more not shown" in text
    assert "S029:US" in text and "S000:US" in text and "S001:US" not in text


def test_on_a_small_terminal_the_board_fits_its_height(daemon: DaemonHarness) -> None:
    """The real CLI in a pseudo-terminal of 8 lines (room for one row): the live board draws
    what fits and says how many rows it left out, instead of rich's bare "..."."""
    import fcntl
    import os
    import pty
    import re
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 8, 100, 0, 0))
    env = {k: v for k, v in daemon.env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawler", "watch"],
        env={**env, "TERM": "xterm"},
        cwd=daemon.base,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"more not shown" not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(master, 65536)
            except OSError:  # the child is gone and the pty closed
                break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        os.close(master)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen).decode("utf-8", "replace")
    assert "1 more not shown" in text, text
    assert proc.returncode == 0
