"""Issue 23 item 10: text from upstream reaches no terminal with its escape sequences.

A Bloomberg `issuedCurrency` of `<b>USD</b>\\x1b[31m` was printed raw by `crawler fetch`, on a
terminal or piped: the rest of the screen turned red; an OSC sequence could retitle the window
or plant a hyperlink, `\\x1b[2J` clear it. Now the normalizers' `Quote` and every error message
hold no control character, and the CLI cleans what it is about to print once more. Through the
real CLI (offline and through a real daemon, piped and on a pseudo-terminal) against the fake
market's pages carrying the hostile text.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from crawler.cli.log_view import render_line
from crawler.cli.render import quotes_table, symbols_table
from crawler.utils.text import clean_data, clean_text
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness
from tests.terminal import Terminal

HOSTILE_CURRENCY = "<b>USD</b>\x1b[31m"
HOSTILE_NAME = "Evil\x1b]0;PWNED\x07 Corp\x9b2J"
#: Not a number: its error message quotes it.
HOSTILE_PRICE = "\x1b]8;;http://evil.example/\x07\x1b[2J12.5"
#: C0 but the line break, DEL, C1: none may reach a terminal from upstream.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _controls(text: str) -> list[str]:
    return _CONTROL.findall(text)


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        fake.bright_data.set_quote("AAPL:US", currency=HOSTILE_CURRENCY, name=HOSTILE_NAME)
        fake.bright_data.set_quote("MSFT:US", extra={"price": HOSTILE_PRICE})
        fake.yahoo.set_quote(
            "NVDA", currency="USD\x1b[5m", long_name=HOSTILE_NAME, exchange_name="NMS\x1b[2J"
        )
        yield fake


def _harness(market: FakeMarket, tmp_path: Path, sources: str = "bright_data") -> DaemonHarness:
    # Bloomberg alone: MSFT:US's page error is the answer, not a fallback to Yahoo.
    return DaemonHarness(market, tmp_path, STREAM_ENABLED="false", SOURCES_ORDER=sources)


def _check_fetch_output(stdout: str, stderr: str) -> None:
    assert _controls(stdout) == [] and _controls(stderr) == [], (stdout, stderr)
    assert "<b>USD</b>" in stdout, stdout
    assert "MSFT:US" in stderr and "not a number" in stderr, stderr


def test_offline_fetch_piped_shows_no_escape_sequence(market: FakeMarket, tmp_path: Path) -> None:
    daemon = _harness(market, tmp_path)
    result = daemon.cli("fetch", "AAPL:US", "MSFT:US")
    assert result.returncode == 1, result.stderr  # MSFT:US fails, AAPL:US is served
    _check_fetch_output(result.stdout, result.stderr)
    as_json = daemon.cli("fetch", "AAPL:US", "MSFT:US", "--json")
    answer = json.loads(as_json.stdout)  # JSON escapes controls as \u001b: decode to see them
    assert answer["quotes"][0]["currency"] == "<b>USD</b>"
    assert answer["quotes"][0]["name"] == "Evil Corp"
    assert _controls(json.dumps(answer, ensure_ascii=False)) == [], answer
    assert "not a number" in str(answer["errors"]["MSFT:US"])


def test_offline_fetch_from_yahoo_shows_no_escape_sequence(
    market: FakeMarket, tmp_path: Path
) -> None:
    daemon = _harness(market, tmp_path, "yfinance")
    result = daemon.cli("fetch", "NVDA:US", "--json")
    assert result.returncode == 0, result.stderr
    quote = json.loads(result.stdout)["quotes"][0]
    assert quote["currency"] == "USD"
    assert _controls(json.dumps(quote, ensure_ascii=False)) == [], quote
    table = daemon.cli("fetch", "NVDA:US")
    assert _controls(table.stdout + table.stderr) == [], table.stdout


def test_fetch_status_and_history_through_the_daemon_show_no_escape_sequence(
    market: FakeMarket, tmp_path: Path
) -> None:
    daemon = _harness(market, tmp_path)
    daemon.start()
    try:
        assert daemon.cli("symbols", "add", "AAPL:US", "MSFT:US").returncode == 0
        result = daemon.cli("fetch", "AAPL:US", "MSFT:US")
        _check_fetch_output(result.stdout, result.stderr)
        for args in (("status",), ("status", "--json"), ("history", "AAPL:US"),
                     ("history", "AAPL:US", "--json"), ("symbols", "list")):  # fmt: skip
            shown = daemon.cli(*args)
            assert shown.returncode == 0, (args, shown.stderr)
            text = shown.stdout + shown.stderr
            if "--json" in args:
                text = json.dumps(json.loads(shown.stdout), ensure_ascii=False)
            assert _controls(text) == [], (args, text)
        assert "<b>USD</b>" in daemon.cli("history", "AAPL:US").stdout
        # On a terminal: rich draws its own styles, but none of the planted sequences.
        term = Terminal.run(
            [sys.executable, "-m", "crawler", "fetch", "AAPL:US", "MSFT:US"],
            daemon.env, cwd=daemon.base,
        )  # fmt: skip
        assert term.wait() == 1
        raw = term.raw.decode("utf-8", "replace")
        for planted in ("\x1b[31m", "\x1b]0;", "\x1b]8;", "\x1b[2J", "\x07", "\x9b"):
            assert planted not in raw, (planted, raw)
        assert "<b>USD</b>" in term.text()
    finally:
        daemon.stop()


# -- the CLI's last guard, for text that did not pass a normalizer (old rows, foreign logs) ------


def test_the_cli_cleans_whatever_the_daemon_answers(tmp_path: Path) -> None:
    """A daemon (an older one, say) whose answers carry raw escapes: the CLI prints none of
    them, whichever command asked (the client cleans every answer it reads)."""
    from crawler.daemon.control_server import ControlServer, Response
    from tests.faults.daemon_harness import clean_env

    hostile = {"symbols": [{"symbol": "AAPL:US", "asset_class": "stock\x1b[31m"}],
               "spent_today": "1\x1b]0;PWNED\x07", "note": HOSTILE_NAME}  # fmt: skip
    server = ControlServer(tmp_path / "run" / "c.sock")
    server.route("GET", "/symbols", lambda r: Response(body=hostile))
    server.route("GET", "/budget", lambda r: Response(body=hostile))
    env = clean_env(tmp_path, CRAWLER_SOCKET=str(server.socket_path), DATA_DIR=str(tmp_path))
    with server:
        for args in (("symbols", "list"), ("symbols", "list", "--json"), ("budget", "--json")):
            shown = subprocess.run(
                [sys.executable, "-m", "crawler", *args], env=env, cwd=tmp_path,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert shown.returncode == 0, (args, shown.stderr)
            text = shown.stdout + shown.stderr
            if "--json" in args:
                text = json.dumps(json.loads(shown.stdout), ensure_ascii=False)
            assert _controls(text) == [], (args, text)
            assert "PWNED" not in text  # an OSC sequence goes whole, its payload too


def test_tables_read_no_markup_and_print_no_escape_sequence() -> None:
    out = io.StringIO()
    screen = Console(file=out, force_terminal=True, width=200)
    quote = {"symbol": "AAPL:US", "price": "1", "currency": "[link=http://evil]USD\x1b[31m"}
    screen.print(quotes_table([quote]))
    screen.print(symbols_table([{"symbol": "X:US", "asset_class": "[blink]stock\x1b]0;T\x07"}]))
    drawn = out.getvalue()
    for planted in ("\x1b[31m", "\x1b]0;", "\x1b]8;", "\x1b[5m", "\x07"):
        assert planted not in drawn, (planted, drawn)
    assert "[link=http://evil]USD" in drawn and "[blink]stock" in drawn


def test_log_lines_are_shown_without_escape_sequences() -> None:
    line = json.dumps({"event": "bad page\x1b[2J", "error": "a\x1b]0;T\x07b\nTraceback"})
    shown = render_line(line)
    assert _controls(shown) == [] and "bad page" in shown and "ab\nTraceback" in shown


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<b>USD</b>\x1b[31m", "<b>USD</b>"),
        ("a\x1b]0;title\x07b", "ab"),
        ("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),
        ("a\x9b31mb\x85c", "abc"),
        ("tab\there\r\nnext", "tab here  next"),
        ("\u202eevil\u2066", "evil"),
        ("plain €", "plain €"),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean
    assert clean_data({raw: [raw, (raw,)]}) == {clean: [clean, (clean,)]}
