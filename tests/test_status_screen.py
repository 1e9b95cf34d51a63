"""`crawler status` in a real terminal of 80 and 120 columns, at the size that showed the
problems (33 symbols, market hours on: 5 lines a row at 80 columns, 75 lines at 120), and the
screen's parts: one money format, zones on times, plurals, pending vs stale, colour."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator

import pytest
from rich.console import Console

from crawler.cli.status_screen import money, plural, render_status
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness
from tests.terminal import Terminal

COLLECTED = [
    *(f"S{i:02d}:US" for i in range(20)),
    "VOD:LN", "HSBA:LN", "7203:JP", "EURUSD:CUR", "GBPUSD:CUR", "XBTUSD:CUR", "GC1:COM",
    "SPX:IND", "GT10:GOV", "BRK/B:US",
]  # fmt: skip
NEVER_FETCHED = ["P1:US", "P2:US", "P3:US"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    with FakeMarket() as market:
        harness = DaemonHarness(market, tmp_path_factory.mktemp("screen"))
        harness.env["MARKET_HOURS_ENABLED"] = "true"
        harness.env["TZ"] = "UTC"
        assert harness.cli("symbols", "add", *COLLECTED).returncode == 0
        harness.start()
        try:
            assert harness.cli("collect").returncode == 0
            assert harness.cli("symbols", "add", *NEVER_FETCHED).returncode == 0
            yield harness
        finally:
            assert harness.stop() == 0


@pytest.mark.parametrize("columns", [80, 120])
def test_status_fits_the_terminal_one_line_per_symbol(daemon: DaemonHarness, columns: int) -> None:
    term = Terminal.run([sys.executable, "-m", "crawler", "status"], daemon.env, columns=columns)
    assert term.wait() == 0, term.text()
    lines = term.text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= columns, term.text()
    header = next(i for i, line in enumerate(lines) if line.startswith("SYMBOL "))
    rows = lines[header + 1 : header + 1 + 33]
    # One line per symbol, symbols and prices whole (nothing cut to "AAPL:…").
    assert sorted(row.split()[0] for row in rows) == sorted(COLLECTED + NEVER_FETCHED)
    assert not [row for row in rows if "…" in row]
    for row in rows:
        symbol, price = row.split()[:2]
        if symbol in NEVER_FETCHED:
            assert price == "-" and " pending " in f"{row} "
        else:
            assert re.fullmatch(r"\d+(\.\d+)?", price), row
    # Never-fetched symbols are pending, not stale, and come after the prices; the line under
    # the heading says why they wait.
    assert [row.split()[0] for row in rows[-3:]] == NEVER_FETCHED
    assert "symbols: 33 tracked, 0 stale, 3 pending" in lines
    assert "3 pending: not collected yet: added after the last collection: P1:US" in term.text()
    text = term.text()
    assert "1 collection (0 failed)" in text  # ours (no scheduled one: auto update is off)
    # One line about the money, in the one money format ($5.50, $0.0015).
    assert re.search(r"\nbudget: \$\d+\.\d{2,4} of \$5\.50 spent today \(", text), text
    assert "budget $" not in text
    if columns == 120:  # room for where and when the market opens, with its zone
        assert re.search(r"XNYS (open|closed, opens (\w{3} )?\d\d:\d\d UTC)", text), text
    # Colour on a terminal: the state column is coloured.
    assert "\x1b[" in term.raw.decode()


def _screen(entries: list[dict[str, object]], **status: object) -> str:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system="standard")
    render_status({"symbols": entries, **status}, console)
    return out.getvalue()


def test_pending_is_not_stale_and_states_have_colours() -> None:
    quote = {"price": "1.5", "currency": "USD", "change_pct": "-0.5"}
    text = _screen(
        [
            {"symbol": "OK:US", "stale": False, "pending": False, "last_quote": quote},
            {"symbol": "OLD:US", "stale": True, "pending": False, "last_quote": quote},
            {"symbol": "NEW:US", "stale": False, "pending": True, "last_quote": None},
        ]
    )
    assert "symbols: 3 tracked, 1 stale, 1 pending" in re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert "\x1b[33mstale" in text  # yellow
    assert "\x1b[2mpending" in text  # dim
    assert "\x1b[32mok" in text  # green
    assert "\x1b[31m-0.50%" in text  # a fall is red


def test_breaker_states_are_coloured() -> None:
    text = _screen(
        [],
        sources={"bright_data": {}, "yfinance": {}},
        breakers={"bright_data": {"state": "open"}, "yfinance": {"state": "half_open"}},
    )
    assert "\x1b[31mopen" in text and "\x1b[33mhalf-open" in text


def test_one_money_format() -> None:
    assert money("5.5") == "$5.50"
    assert money("5.4985") == "$5.4985"
    assert money("0.0015") == "$0.0015"
    assert money("1234.5") == "$1,234.50"
    assert money("0") == "$0.00"
    assert money(None) == "-"


def test_plurals() -> None:
    assert plural(1, "collection") == "1 collection"
    assert plural(0, "collection") == "0 collections"
    assert plural(1000, "symbol") == "1,000 symbols"
