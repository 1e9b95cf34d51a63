"""When the budget is spent, status, `crawler budget` and the error name the time money really
frees up (issue 22, item 7): the ledger's rolling 24-hour window holds today's spend until it
is 24 hours old, so "midnight" was a promise the ledger does not keep."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness


def test_spent_budget_says_when_money_frees_up(tmp_path: Path) -> None:
    with FakeMarket() as market:
        daemon = DaemonHarness(
            market,
            tmp_path,
            TOTAL_BUDGET="0.0045",
            COST_PER_REQUEST="0.0015",
            SOURCES_ORDER="bright_data",
            STREAM_ENABLED="false",
        )
        daemon.start()
        try:
            spent_at = datetime.now(UTC)
            paid = daemon.cli("fetch", "AAPL:US", "MSFT:US", "KO:US", "--json")
            assert paid.returncode == 0, paid.stderr
            refused = daemon.cli("fetch", "IBM:US", "--fresh")
            assert refused.returncode == 1
            assert "midnight" not in refused.stderr
            assert "money frees up at" in refused.stderr, refused.stderr
            budget = json.loads(daemon.cli("budget", "--json").stdout)
            until = datetime.fromisoformat(budget["paused_until"])
            # Not the budget day's midnight: 24 hours after the spend (to the minute).
            assert spent_at + timedelta(hours=24) <= until + timedelta(minutes=1)
            assert until <= datetime.now(UTC) + timedelta(hours=24, minutes=2)
            shown = until.astimezone(UTC).strftime("%H:%M")
            assert shown in refused.stderr
            status = daemon.cli("status")
            assert status.returncode == 0
            line = next(ln for ln in status.stdout.splitlines() if "paused until" in ln)
            assert shown in line and "00:00" not in line, line
            text = daemon.cli("budget").stdout
            assert "paused until" in text and shown in text, text
        finally:
            daemon.stop()
