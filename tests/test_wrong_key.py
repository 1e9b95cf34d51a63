"""A wrong Bright Data key is said by `crawler fetch`, on stderr in one line, even when
yfinance served every quote (issue 22, item 11)."""

from __future__ import annotations

import json
from pathlib import Path

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

WRONG = "sk-not-the-right-key-0123456789"


def test_fetch_says_the_key_was_refused_when_yfinance_served(tmp_path: Path) -> None:
    with FakeMarket() as market:
        daemon = DaemonHarness(market, tmp_path, STREAM_ENABLED="false")
        daemon.env["BRIGHT_DATA_API_KEY"] = WRONG
        daemon.start()
        try:
            # A collection pays for what Yahoo cannot serve: Bright Data refuses the key.
            assert daemon.cli("symbols", "add", "AAPL:US", "ZZZZ1:US").returncode == 0
            daemon.cli("collect")
            for _ in range(2):  # the first finds out, the second is told it still holds
                result = daemon.cli("fetch", "AAPL:US", "VOD:LN", "--fresh")
                assert result.returncode == 0, result.stderr
                assert "AAPL:US" in result.stdout and "yfinance" in result.stdout
                lines = result.stderr.strip().splitlines()
                assert len(lines) == 1, result.stderr
                assert lines[0].startswith("warning: bright_data is off: ")
                assert "rejected the API key (HTTP 401)" in lines[0]
                assert WRONG not in result.stderr
            body = json.loads(daemon.cli("fetch", "AAPL:US", "--json").stdout)
            assert any("HTTP 401" in w for w in body["warnings"])
        finally:
            daemon.stop()
