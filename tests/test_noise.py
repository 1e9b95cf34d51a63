"""A detached daemon's log says each thing once and nothing false, and `crawler logs` reads it.

At the size that showed the noise: 100 symbols collected by the default 16 workers (a pool of
10 connections discarded some on every collection), a breaker opening (logged twice), and FX,
crypto and bond symbols (a false "no calendar ... treating it as always open").
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from crawler.markets.hours import MarketHours
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

SYMBOLS = [f"N{i:03d}:US" for i in range(100)]


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        # Slow enough that the 16 workers hold 16 connections at once.
        fake.bright_data.faults.set("*", latency_s=0.05)
        yield fake


@contextmanager
def _detached_daemon(market: FakeMarket, base: Path) -> Iterator[DaemonHarness]:
    """A daemon started as users do (`crawler start`: detached, its log a JSON file)."""
    harness = DaemonHarness(market, base)
    harness.env.pop("LOG_FORMAT")  # the default, "auto": JSON because the log is a file
    # Yahoo's bucket open: at the default 2 requests/s the collection with Bright Data down
    # waited a minute on Yahoo, for what these tests check, the log.
    harness.env["YFINANCE_MAX_RPS"] = "1000"
    assert harness.cli("symbols", "add", *SYMBOLS).returncode == 0
    started = harness.cli("start")
    assert started.returncode == 0, started.stderr
    try:
        yield harness
    finally:
        assert harness.cli("stop").returncode == 0


@pytest.fixture(scope="module")
def detached(
    market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonHarness]:
    """One detached daemon the module's tests share (they add symbols and collect)."""
    with _detached_daemon(market, tmp_path_factory.mktemp("noise")) as harness:
        yield harness


@pytest.fixture
def fresh_detached(market: FakeMarket, tmp_path: Path) -> Iterator[DaemonHarness]:
    """A detached daemon of this test's own: the 100 symbols, none in its cache yet."""
    with _detached_daemon(market, tmp_path) as harness:
        yield harness


def _log_records(harness: DaemonHarness) -> list[dict[str, object]]:
    text = (harness.data_dir / "crawler.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_collection_of_100_discards_no_pooled_connection(
    fresh_detached: DaemonHarness,
) -> None:
    # A daemon of its own: after the module's other tests, the shared one has more symbols and
    # a warm cache, and this collection would open no connection at all.
    result = fresh_detached.cli("collect")
    assert result.returncode == 0, result.stderr
    assert "collected 100 quotes" in result.stdout
    records = _log_records(fresh_detached)
    summaries = [str(r.get("summary")) for r in records if r.get("event") == "collection done"]
    assert [s for s in summaries if s.startswith("collection: 100 symbols, 100 quotes")], summaries
    assert not [r for r in records if "Connection pool is full" in json.dumps(r)]


def test_a_breaker_opening_is_logged_once(detached: DaemonHarness, market: FakeMarket) -> None:
    # Symbols not in the cache yet, so the collection asks Bright Data for them.
    assert detached.cli("symbols", "add", *[f"B{i:02d}:US" for i in range(10)]).returncode == 0
    market.bright_data.set_outage("refuse")
    try:
        assert detached.cli("collect").returncode == 0  # yfinance serves them
    finally:
        market.bright_data.set_outage(None)
    opened = [
        r
        for r in _log_records(detached)
        if (r.get("breaker") == "bright_data" and r.get("new") == "open")
        or ("bright_data" in str(r.get("event")) and "open" in str(r.get("event")))
    ]
    assert len(opened) == 1, opened
    assert opened[0]["event"] == "circuit breaker changed state"
    assert str(opened[0]["reason"]).startswith("after "), opened[0]


def test_crawler_logs_reads_the_json_log_as_text(detached: DaemonHarness) -> None:
    result = detached.cli("logs", "-n", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    assert not [line for line in lines if line.lstrip().startswith("{")]
    # "2026-11-29 19:50:02Z  info      crawler...": a time, then a level.
    first = lines[-1].split()
    assert first[1].endswith("Z") and first[2] in ("debug", "info", "warning", "error")


def test_crawler_logs_follow_prints_new_lines_until_ctrl_c(detached: DaemonHarness) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "crawler", "logs", "-n", "1", "-f"],
        env=detached.env,
        cwd=detached.base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        follower.stdout.readline()  # the last line there was: it is following from here
        assert detached.cli("collect").returncode == 0
        seen = ""
        while "collection done" not in seen:
            line = follower.stdout.readline()
            assert line, "the follower stopped"
            seen += line
    finally:
        follower.send_signal(signal.SIGINT)
        _out, err = follower.communicate(timeout=10)
    assert not [line for line in seen.splitlines() if line.startswith("{")]
    assert follower.returncode == 0 and err == ""


def test_no_log_says_where_logs_are(market: FakeMarket, tmp_path: object) -> None:
    harness = DaemonHarness(market, tmp_path)  # type: ignore[arg-type]
    result = harness.cli("logs")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: no log at {harness.data_dir / 'crawler.log'}")
    assert "journalctl -u crawler" in result.stderr


def test_rule_and_always_open_markets_preload_without_a_false_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hours = MarketHours()
    with caplog.at_level(logging.WARNING):
        hours.preload(["FX", "CRYPTO", "BONDS", "UNKNOWN"])
    assert caplog.records == []
    # ...and status still knows FX closes: Saturday noon UTC is closed, Monday noon open.
    from datetime import UTC, datetime

    from crawler.normalizer.schemas import AssetClass

    saturday, monday = (
        datetime(2026, 11, 28, 12, tzinfo=UTC),
        datetime(2026, 11, 30, 12, tzinfo=UTC),
    )
    assert hours.is_open("EURUSD:CUR", AssetClass.FOREX, at=saturday) is False
    assert hours.is_open("EURUSD:CUR", AssetClass.FOREX, at=monday) is True
