"""The daily budget under a race: 32 threads asking the daemon and a second process (`crawler
fetch`, offline on the same DATA_DIR) spending at the same moment, against a budget of exactly
100 requests.

What could be lost: money. yfinance is disabled, so Bright Data is asked for every one of the
156 distinct symbols; the fake answers slowly (so both processes really are mid-spend at once).
Asserted: the fake billed exactly 100 requests, the ledger's billed count is exactly 100 with no
reservation left open and total_cost == budget, no symbol was billed twice, exactly 100 quotes
came back in total, both processes got some of them, and every other symbol failed with
BudgetExhaustedError.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from crawler.store.ledger import BudgetLedger
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

COST = Decimal("0.0015")
BUDGET_REQUESTS = 100
THREADS = 32
PER_THREAD = 3
CLI_SYMBOLS = [f"C{i:02d}:US" for i in range(60)]


def test_32_threads_and_2_processes_bill_exactly_the_budget(tmp_path: Path) -> None:
    with FakeMarket() as market:
        market.bright_data.faults.set("*", latency_s=0.3)
        market.yahoo.set_outage("refuse")  # and yfinance is not even configured
        daemon = DaemonHarness(
            market, tmp_path, SOURCES_ORDER="bright_data",
            TOTAL_BUDGET=str(BUDGET_REQUESTS * COST), COST_PER_REQUEST=str(COST),
        )  # fmt: skip
        try:
            daemon.start()
            # The CLI finds no daemon on its socket, so it spends from its own process.
            cli_env = {
                **daemon.env,
                "CRAWLER_SOCKET": str(tmp_path / "nowhere" / "crawler.sock"),
                "MAX_WORKERS": "8",
            }
            cli = subprocess.Popen(
                [sys.executable, "-m", "crawler", "fetch", *CLI_SYMBOLS, "--json"],
                env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            # Release the threads once the CLI is spending.
            end = time.monotonic() + 30
            while time.monotonic() < end and not market.bright_data.log_requests():
                assert cli.poll() is None, cli.communicate()
                time.sleep(0.01)
            answers: list[Any] = [None] * THREADS
            barrier = threading.Barrier(THREADS)

            def ask(index: int) -> None:
                symbols = [f"D{index:02d}-{k}:US" for k in range(PER_THREAD)]
                barrier.wait()
                answers[index] = daemon.client(timeout_s=60).post("/fetch", {"symbols": symbols})

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            cli_out, cli_err = cli.communicate(timeout=60)
            assert daemon.alive()
        finally:
            daemon.stop()

        billed = [
            r.symbol for r in market.bright_data.log_requests() if r.outcome.startswith("billed")
        ]
        assert len(billed) == market.bright_data.billed_count == BUDGET_REQUESTS
        assert max(Counter(billed).values()) == 1  # nobody paid twice for one symbol

    ledger = BudgetLedger(daemon.data_dir / "ledger", BUDGET_REQUESTS * COST, COST)
    try:
        stats = ledger.statistics()
    finally:
        ledger.close()
    assert stats["requests_billed"] == BUDGET_REQUESTS
    assert stats["open_reservations"] == 0
    assert stats["total_cost"] == stats["billed_cost"] == BUDGET_REQUESTS * COST

    daemon_quotes, daemon_errors = 0, []
    for answer in answers:
        assert answer is not None
        status, body = answer
        assert status == 200, body
        daemon_quotes += len(body["quotes"])
        daemon_errors += list(body["errors"].values())
    assert cli.returncode == 1, cli_err  # some symbols were refused: exit 1
    assert "Traceback" not in cli_err
    cli_body = json.loads(cli_out)
    cli_quotes = len(cli_body["quotes"])
    errors = daemon_errors + list(cli_body["errors"].values())
    total = THREADS * PER_THREAD + len(CLI_SYMBOLS)
    assert total > BUDGET_REQUESTS
    assert daemon_quotes + cli_quotes == BUDGET_REQUESTS
    assert daemon_quotes > 0 and cli_quotes > 0, (daemon_quotes, cli_quotes)
    assert len(errors) == total - BUDGET_REQUESTS
    assert {e["type"] for e in errors} == {"BudgetExhaustedError"}, errors[:3]
