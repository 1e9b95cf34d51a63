"""What a new user sees running the real daemon without a Bright Data key (the README's
"without a key, yfinance serves quotes for free"), against the fake market: the numbers each
command prints agree with what was really asked of Yahoo and Bright Data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakemarket import FakeMarket

REPO = Path(__file__).resolve().parents[1]
SERVED = ["AAA:US", "VOD:LN", "7203:JP"]
UNKNOWN = ["ZZZZ1:US", "ZZZZ2:US"]  # the fake Yahoo does not know ZZZZ*
NO_YAHOO_FORM = ["GT2:GOV"]  # only US Treasuries have a Yahoo form


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def crawler(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        env=env, capture_output=True, text=True, timeout=180, cwd=env["DATA_DIR"] + "/..",
    )  # fmt: skip


@pytest.fixture(scope="module")
def env(market: FakeMarket, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("walk")
    (base / "config.toml").write_text("")  # every default
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIGHT_DATA_", "YFINANCE_", "BUDGET_", "STREAM_", "DATA_DIR"))
    }
    env.update(market.environment(with_bright_data=False))  # no key
    env.update(
        PYTHONPATH=str(REPO),
        DATA_DIR=str(base / "data"),
        CRAWLER_SOCKET=str(base / "run" / "crawler.sock"),
        CRAWLER_CONFIG=str(base / "config.toml"),
        AUTO_UPDATE_ENABLED="false",
        STREAM_ENABLED="false",  # every quote from a batch: what Yahoo was asked is exact
    )
    (base / "data").mkdir(mode=0o700)
    added = crawler(env, "symbols", "add", *SERVED, *UNKNOWN, *NO_YAHOO_FORM)
    assert added.returncode == 0, added.stderr
    started = crawler(env, "start")
    assert started.returncode == 0, started.stderr
    try:
        yield env
    finally:
        crawler(env, "stop")


def test_without_a_key_the_seed_order_saves_nothing_and_yahoo_line_is_true(
    market: FakeMarket, env: dict[str, str]
) -> None:
    market.yahoo.reset()
    collected = crawler(env, "collect", "--json")
    assert collected.returncode == 1, collected.stderr  # the unknown ones: no source
    assert market.bright_data.log_requests() == []
    # The seed's order pays Bright Data only with a key: without one it would have paid
    # nothing, so nothing was saved (it said 5 requests "saved" here before).
    report = json.loads(crawler(env, "budget", "--json").stdout)
    assert report["requests_used"] == 0
    saved = report["seed_order"]
    assert saved is None or (saved["requests"], saved["saved_requests"]) == (0, 0), saved
    text = crawler(env, "budget").stdout
    assert "would have paid 0 requests" in text or "seed's order" not in text, text

    # Status's Yahoo line: the two left out of the batch were not sent to the chart (it said
    # "2 sent to the chart, 0 chart requests").
    assert market.yahoo.count("chart") == 0
    status = json.loads(crawler(env, "status", "--json").stdout)
    yahoo = status["yahoo"]
    assert (yahoo["batch_left_out"], yahoo["batch_fallbacks"]) == (2, 0), yahoo
    line = next(x for x in crawler(env, "status").stdout.splitlines() if x.startswith("yahoo:"))
    assert "2 left out as unknown, 0 sent to the chart), 0 chart requests" in line, line


def test_a_backfill_with_failures_says_how_many_symbols_it_filled(
    market: FakeMarket, env: dict[str, str]
) -> None:
    market.yahoo.reset()
    ran = crawler(env, "backfill", "AAA:US", "ZZZZ1:US", "GT2:GOV", "--since", "30d", "--json")
    assert ran.returncode == 1, ran.stderr
    result = json.loads(ran.stdout)
    # GT2:GOV has no Yahoo form: no request was made for it (it counted one before).
    assert market.yahoo.count("chart") == 2
    assert result["requests"] == 2, result
    assert result["added"]["AAA:US"] > 0 and set(result["errors"]) == {"ZZZZ1:US", "GT2:GOV"}

    text = crawler(env, "backfill", "7203:JP", "ZZZZ2:US", "--since", "30d")
    assert text.returncode == 1, text.stderr
    # It said "backfilled 2 symbols" with one of them failed.
    assert text.stdout.startswith("backfilled 1 of 2 symbols at 1d: "), text.stdout
    assert "from 2 chart requests" in text.stdout, text.stdout
    assert "ZZZZ2:US" in text.stderr


def test_removing_many_symbols_prints_a_summary_as_adding_does(env: dict[str, str]) -> None:
    many = [f"RM{c}:US" for c in "ABCDEFG"]
    assert crawler(env, "symbols", "add", *many).returncode == 0
    gone = crawler(env, "symbols", "remove", *many, "NOPE:US")
    assert gone.returncode == 1, gone.stderr  # one was not tracked
    # It printed a line per symbol (1,000 lines for a big watchlist).
    assert gone.stdout.splitlines() == ["removed 7 symbols"], gone.stdout
    assert "1 symbol not tracked: NOPE:US" in gone.stderr, gone.stderr
    listed = json.loads(crawler(env, "symbols", "list", "--json").stdout)
    assert not set(many) & {str(r["symbol"]) for r in listed["symbols"]}, listed
    each = crawler(env, "symbols", "remove", "--verbose", "NOPE1:US", "NOPE2:US")
    assert each.returncode == 1 and "NOPE2:US is not tracked" in each.stderr, each.stderr


def test_parquet_export_rounds_a_change_with_more_than_12_decimals_instead_of_failing(
    tmp_path: Path,
) -> None:
    # A float32 change from Yahoo's stream, as a 1,000-symbol daemon stored it for CADJPY:CUR:
    # the export failed ("cannot write Parquet: Rescaling Decimal value would cause data loss").
    pq = pytest.importorskip("pyarrow.parquet")
    from datetime import UTC, datetime
    from decimal import Decimal

    from crawler.normalizer.schemas import AssetClass, Quote
    from crawler.store.history import HistoryStore

    at = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    quotes = [
        Quote(symbol="CADJPY:CUR", price=Decimal("111.31842"), source="yahoo_stream",
              currency="JPY", change=Decimal("-0.0000014538922"), change_pct=Decimal("-0.25"),
              as_of=at, fetched_at=at, asset_class=AssetClass.FOREX),
        Quote(symbol="AAA:US", price=Decimal("398.76"), source="yfinance", currency="USD",
              change=Decimal("1.33"), as_of=at, fetched_at=at, asset_class=AssetClass.STOCKS),
    ]  # fmt: skip
    (tmp_path / "data").mkdir(mode=0o700)
    with HistoryStore(tmp_path / "data" / "history") as history:
        history.record(quotes)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRAWLER_", "DATA_DIR"))}
    (tmp_path / "config.toml").write_text("")
    env.update(
        PYTHONPATH=str(REPO),
        DATA_DIR=str(tmp_path / "data"),
        CRAWLER_SOCKET=str(tmp_path / "run" / "crawler.sock"),
        CRAWLER_CONFIG=str(tmp_path / "config.toml"),
    )
    out = tmp_path / "out.parquet"
    done = crawler(env, "export", "--format", "parquet", "-o", str(out))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out).to_pylist()
    by_symbol = {row["symbol"]: row for row in table}
    assert by_symbol["CADJPY:CUR"]["change"] == Decimal("-0.000001453892")  # half-even, 12
    assert by_symbol["CADJPY:CUR"]["price"] == Decimal("111.31842")  # the rest exact
    assert by_symbol["AAA:US"]["change"] == Decimal("1.33")


def test_the_fake_stream_ticks_no_symbol_the_fake_yahoo_does_not_know() -> None:
    # The offline walk served 20 ZZZZn:LN "from the stream" that the fake's chart and batch
    # say do not exist, so the needs-based policy looked as if it never paid for them.
    from websockets.sync.client import connect

    from crawler.normalizer.yahoo_stream import decode_frame
    from fakemarket.stream import YahooStreamFake

    fake = YahooStreamFake(port=0, tick_rate=50.0)
    fake.start()
    try:
        with connect(fake.url, open_timeout=10) as ws:
            ws.send(json.dumps({"subscribe": ["ZZZZ1.L", "VOD.L"]}))
            ids = [decode_frame(ws.recv(timeout=10)).id for _ in range(20)]
    finally:
        fake.stop()
    assert set(ids) == {"VOD.L"}, ids


def test_a_crypto_pair_in_yen_or_dollars_abroad_is_priced_in_its_own_currency(
    market: FakeMarket, env: dict[str, str]
) -> None:
    # The walk's XRPAUD:CUR and XBTJPY:CUR came back in USD from the fake Yahoo.
    fetched = crawler(env, "fetch", "XRPAUD:CUR", "XBTJPY:CUR", "XBTEUR:CUR", "--json")
    assert fetched.returncode == 0, fetched.stderr
    body = json.loads(fetched.stdout)
    quotes = body["quotes"] if isinstance(body, dict) else body
    currencies = {q["symbol"]: q["currency"] for q in quotes}
    assert currencies == {"XRPAUD:CUR": "AUD", "XBTJPY:CUR": "JPY", "XBTEUR:CUR": "EUR"}
    classes = {q["symbol"]: q["asset_class"] for q in quotes}
    assert set(classes.values()) == {"crypto"}, classes


def test_without_a_key_status_and_budget_say_bright_data_is_not_configured(
    env: dict[str, str],
) -> None:
    # Both said "budget: $0.00 of $5.50 spent today (0/3666 requests); lasts the day", as if
    # money were being spent at some pace.
    report = json.loads(crawler(env, "budget", "--json").stdout)
    assert report["bright_data_configured"] is False
    status = crawler(env, "status").stdout
    line = next(x for x in status.splitlines() if x.startswith("budget:"))
    assert "Bright Data not configured (no BRIGHT_DATA_API_KEY)" in line, line
    assert "lasts the day" not in line
    budget = crawler(env, "budget").stdout
    assert "Bright Data not configured (no BRIGHT_DATA_API_KEY)" in budget, budget
