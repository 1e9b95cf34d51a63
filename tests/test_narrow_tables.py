"""`crawler fetch` and `crawler history` in an 80-column terminal (issue 22, item 14): one line
per quote, nothing wider than the terminal, and the price whole (rich used to cut it to
`233.36…` and wrap every row)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness
from tests.terminal import Terminal

SYMBOLS = ["VOD:LN", "EURUSD:CUR", "XBTUSD:CUR", "BRK/B:US", "GT10:GOV"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    with FakeMarket() as market:
        harness = DaemonHarness(market, tmp_path_factory.mktemp("narrow"), STREAM_ENABLED="false")
        harness.start()
        try:
            yield harness
        finally:
            harness.stop()


def _prices(daemon: DaemonHarness) -> dict[str, str]:
    body = json.loads(daemon.cli("fetch", *SYMBOLS, "--json").stdout)
    return {q["symbol"]: f"{q['price']} {q['currency']}" for q in body["quotes"]}


@pytest.mark.parametrize("columns", [80, 60])
def test_fetch_fits_80_columns_prices_whole(daemon: DaemonHarness, columns: int) -> None:
    prices = _prices(daemon)
    term = Terminal.run(
        [sys.executable, "-m", "crawler", "fetch", *SYMBOLS], daemon.env, columns=columns
    )
    assert term.wait() == 0, term.text()
    # The progress bar redraws itself over one line (\r, which the harness strips): not a row.
    lines = [ln.rstrip() for ln in term.text().splitlines() if ln.strip() and "━" not in ln]
    assert max(len(line) for line in lines) <= columns, term.text()
    assert "…" not in term.text()
    for symbol, price in prices.items():
        (row,) = [line for line in lines if line.startswith(symbol + " ")]
        assert price in row, (price, row)


def test_history_fits_80_columns_prices_whole(daemon: DaemonHarness) -> None:
    prices = _prices(daemon)
    term = Terminal.run(
        [sys.executable, "-m", "crawler", "history", "XBTUSD:CUR"], daemon.env, columns=80
    )
    assert term.wait() == 0, term.text()
    lines = [line.rstrip() for line in term.text().splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= 80, term.text()
    assert "…" not in term.text()
    rows = [line for line in lines if line.startswith("XBTUSD:CUR ")]
    assert rows and any(prices["XBTUSD:CUR"] in row for row in rows), term.text()
