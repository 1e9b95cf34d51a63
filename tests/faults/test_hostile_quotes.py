"""Issue 23 items 6 and 7 through the real CLI and the real daemon: the fake market's hostile
answers (a decoy `__NEXT_DATA__`, impossible prices, a 1e300 in a Yahoo batch, streamed ticks
dated 2036 and 2001) are never served or stored as quotes; each refusal is that symbol's error,
with its reason, and the rest is served."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fakemarket import FakeMarket
from fakemarket.stream import encode_pricing
from tests.faults.daemon_harness import DaemonHarness


def _fetch(daemon: DaemonHarness, *symbols: str) -> tuple[int, dict[str, Any]]:
    done = daemon.cli("fetch", "--json", "--fresh", *symbols)
    assert "Traceback" not in done.stderr and "internal error" not in done.stdout, done
    return done.returncode, json.loads(done.stdout)


def test_wrong_bloomberg_pages_are_refused_and_yahoo_serves_them(tmp_path: Path) -> None:
    with FakeMarket() as market:
        market.bright_data.set_page("AAPL:US", "decoy_comment")
        market.bright_data.set_page("MSFT:US", "two_scripts")
        market.bright_data.set_quote("IBM:US", extra={"price": "-12.5"})
        market.bright_data.set_quote("ORCL:US", extra={"price": "1.5T"})
        daemon = DaemonHarness(market, tmp_path, STREAM_ENABLED="false", BUDGET_POLICY="seed")
        daemon.start()
        try:
            code, answer = _fetch(daemon, "AAPL:US", "MSFT:US", "IBM:US", "ORCL:US")
        finally:
            daemon.stop()
    assert code == 0, answer
    quotes = {q["symbol"]: q for q in answer["quotes"]}
    aapl = quotes["AAPL:US"]
    assert aapl["source"] == "bright_data"
    assert Decimal(aapl["price"]) == market.bright_data.quote_for("AAPL:US").price
    for refused in ("MSFT:US", "IBM:US", "ORCL:US"):  # paid, refused, served free
        assert quotes[refused]["source"] == "yfinance", quotes[refused]
        assert Decimal(quotes[refused]["price"]) > 0


def test_one_absurd_number_in_a_yahoo_batch_fails_only_its_symbol(tmp_path: Path) -> None:
    with FakeMarket() as market:
        market.yahoo.set_raw("SPOT", regularMarketPrice=1e300)  # batch and chart alike
        market.yahoo.set_raw("QQQ", only="quote", regularMarketPrice=10**400)  # chart is fine
        market.yahoo.set_raw("MSFT", regularMarketChange=10**400)
        daemon = DaemonHarness(market, tmp_path, SOURCES_ORDER="yfinance", STREAM_ENABLED="false")
        daemon.start()
        try:
            code, answer = _fetch(daemon, "AAPL:US", "MSFT:US", "QQQ:US", "SPOT:US")
        finally:
            daemon.stop()
    assert code == 1, answer
    quotes = {q["symbol"]: q for q in answer["quotes"]}
    assert set(quotes) == {"AAPL:US", "MSFT:US", "QQQ:US"}, answer
    assert quotes["MSFT:US"]["change"] is None  # the absurd change only
    assert market.yahoo.count("chart", "QQQ") == 1 and market.yahoo.count("chart", "SPOT") == 1
    assert set(answer["errors"]) == {"SPOT:US"}
    assert "no instrument trades there" in answer["errors"]["SPOT:US"]["message"]


def _frame(price: float, when: datetime) -> str:
    payload = encode_pricing("AAPL", price, int(when.timestamp() * 1000), currency="USD")
    return json.dumps({"type": "pricing", "message": base64.b64encode(payload).decode()})


def test_streamed_ticks_dated_2036_or_2001_never_reach_the_history(tmp_path: Path) -> None:
    with FakeMarket() as market:  # the streamer sends nothing but what the test sends
        daemon = DaemonHarness(
            market, tmp_path, SOURCES_ORDER="yfinance", STREAM_ENABLED="true",
            STREAM_HISTORY_INTERVAL_SECONDS="60",
        )  # fmt: skip
        daemon.start()
        try:
            added = daemon.cli("symbols", "add", "AAPL:US")
            assert added.returncode == 0, added.stderr
            deadline = time.monotonic() + 30
            while market.stream.subscribed() != {"AAPL"}:
                assert time.monotonic() < deadline, daemon.log_tail()
                time.sleep(0.02)
            hostile = [
                _frame(262.36, datetime(2036, 6, 1, tzinfo=UTC)),
                _frame(262.36, datetime(2001, 9, 10, tzinfo=UTC)),
                _frame(3e38, datetime.now(UTC)),
                _frame(9.99995e-41, datetime.now(UTC)),
            ]
            for done, frame in enumerate(hostile, 1):
                # One at a time: the stream keeps only the newest tick per symbol per flush.
                market.stream.send_frame(frame)
                deadline = time.monotonic() + 30
                while _bad_frames(daemon) < done:
                    assert time.monotonic() < deadline, daemon.log_tail()
                    time.sleep(0.02)
            market.stream.send_frame(_frame(262.36, datetime.now(UTC)))
            rows: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            while not rows:
                assert time.monotonic() < deadline, daemon.log_tail()
                shown = daemon.cli("history", "AAPL:US", "--json")
                assert shown.returncode == 0, shown.stderr
                rows = json.loads(shown.stdout)["quotes"]
            bad = _bad_frames(daemon)
        finally:
            daemon.stop()
    assert len(rows) == 1, rows  # the good tick; none of the four impossible ones
    assert Decimal(rows[0]["price"]) == Decimal("262.36")
    assert str(rows[0]["as_of"]).startswith(str(datetime.now(UTC).year)), rows
    assert bad == 4


def _bad_frames(daemon: DaemonHarness) -> int:
    stream = daemon.client(10).call("GET", "/status")["stream"] or {}
    return int(stream.get("bad_frames") or 0)
