"""Issue 13 item 1: a Bright Data answer slower than REQUEST_TIMEOUT_SECONDS is still billed.

Reproduced at the size that broke: the fake market at 1.5 s latency, REQUEST_TIMEOUT_SECONDS=1,
TOTAL_BUDGET=0.003 (two requests), `crawler fetch --fresh` of four symbols through the real CLI.
Before the fix the fake billed 6 and the ledger said 0: every timeout released its reservation
and retried. A request whose outcome is unknown now counts as spent, so the budget holds.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.store.ledger import BudgetLedger
from fakemarket import FakeMarket
from tests.faults.daemon_harness import clean_env

SYMBOLS = ("AAPL:US", "MSFT:US", "VOD:LN", "IBM:US")


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def test_slow_answers_are_counted_as_spent_and_never_overspend(
    market: FakeMarket, tmp_path: Path
) -> None:
    market.bright_data.faults.set("*", latency_s=1.5)
    (tmp_path / "home").mkdir()
    config = tmp_path / "config.toml"
    config.write_text("[market_hours]\nenabled = false\n")
    env = clean_env(
        tmp_path,
        **market.environment(),
        DATA_DIR=str(tmp_path / "data"),
        CRAWLER_SOCKET=str(tmp_path / "run" / "crawler.sock"),
        CRAWLER_CONFIG=str(config),
        REQUEST_TIMEOUT_SECONDS="1",
        TOTAL_BUDGET="0.003",
        COST_PER_REQUEST="0.0015",
        BUDGET_POLICY="paced",  # Bright Data first: the billing of slow answers is the point
    )
    subprocess.run(
        [sys.executable, "-m", "crawler", "fetch", "--fresh", *SYMBOLS],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    # The fake finishes (and bills) the answers the client stopped waiting for.
    assert market.bright_data.wait_idle(timeout_s=30)
    billed = market.bright_data.billed_count
    assert billed >= 1  # the slow answers really were billed upstream

    # The ledger the CLI wrote, read from its real files.
    stats = BudgetLedger(
        tmp_path / "data" / "ledger", Decimal("0.003"), Decimal("0.0015")
    ).statistics()
    counted = stats["total_cost"]
    assert stats["open_reservations"] == 0
    # Everything billed upstream is counted, and no more than the budget was ever sent.
    assert counted >= billed * Decimal("0.0015")
    assert billed <= 2
    assert counted <= Decimal("0.003")
