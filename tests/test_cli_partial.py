"""One bad symbol does not cost the good ones (offline and through the daemon), `crawler` alone
prints its help and nothing else, and an offline fetch with nothing reachable says so in one
line per symbol, naming the likely cause."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness, clean_env


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


@pytest.fixture(scope="module", params=["offline", "daemon"])
def run(
    request: pytest.FixtureRequest, market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonHarness]:
    daemon = DaemonHarness(market, tmp_path_factory.mktemp(request.param))
    if request.param == "daemon":
        daemon.start()
        try:
            yield daemon
        finally:
            assert daemon.stop() == 0
    else:
        yield daemon


def test_fetch_a_bad_b_fetches_the_good_ones_and_exits_1(run: DaemonHarness) -> None:
    result = run.cli("fetch", "AAPL:US", "BAD:XX", "VOD:LN", "--json")
    assert result.returncode == 1, result.stderr
    body = json.loads(result.stdout)
    assert [q["symbol"] for q in body["quotes"]] == ["AAPL:US", "VOD:LN"]
    assert list(body["errors"]) == ["BAD:XX"]
    assert result.stderr.splitlines() == [
        "error: BAD:XX: unknown suffix 'XX' in 'BAD:XX'; use one of US, LN, GR, JP, HK, CN, AU, "
        "CUR, COM, IND, GOV, ..."
    ]


def test_fetch_of_only_bad_symbols_is_a_usage_error_naming_each(run: DaemonHarness) -> None:
    result = run.cli("fetch", "BAD:XX", "WORSE:YY")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: unknown suffix 'XX' in 'BAD:XX'")
    assert "unknown suffix 'YY' in 'WORSE:YY'" in line


@pytest.mark.parametrize("argv", [[], ["config"], ["symbols"]])
def test_no_subcommand_prints_help_and_no_empty_error(run: DaemonHarness, argv: list[str]) -> None:
    result = run.cli(*argv)
    assert result.returncode == 0
    assert "Usage: crawler" in result.stdout
    assert result.stderr == ""


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_offline_fetch_with_nothing_reachable_is_one_line_per_cause(tmp_path: Path) -> None:
    base = tmp_path
    dead = f"http://127.0.0.1:{_closed_port()}"
    env = clean_env(
        base,
        DATA_DIR=str(base / "data"),
        CRAWLER_SOCKET=str(base / "run" / "crawler.sock"),
        BRIGHT_DATA_API_KEY="sk-test-nonet-0123456789",
        BRIGHT_DATA_ENDPOINT=dead,
        YFINANCE_ENDPOINT=dead,
        MARKET_HOURS_ENABLED="false",
    )
    symbols = ["AAPL:US", "MSFT:US", "KO:US", "IBM:US", "T:US", "VOD:LN"]
    result = subprocess.run(
        [sys.executable, "-m", "crawler", "fetch", *symbols],
        env=env,
        cwd=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    # One line per cause (all six failed alike; issue 22: not one per symbol): no
    # cookie/crumb retries, no breaker opening around it.
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: 6 x ") and "AAPL:US, MSFT:US, KO:US and 3 more" in lines[0]
    for line in lines:
        assert line.startswith("error: ") and line.count("no network?") == 2, line
        assert "yfinance: yfinance:" not in line and "curl.se" not in line, line
        assert "Bright Data: cannot reach 127.0.0.1 (connection refused; no network?)" in line
        assert "sk-test-nonet" not in line
