"""Major units: GBp/GBX, ZAc and ILA shown in GBP, ZAR and ILS, exactly, through the real CLI
(fetch, history, export, status, watch), by the flag and by the setting; stored quotes keep
the source's unit."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crawler.normalizer.schemas import Quote
from crawler.normalizer.units import major_dict, major_row, to_major
from crawler.store.history import HistoryStore
from fakemarket import FakeMarket

REPO = Path(__file__).resolve().parents[1]
CONFIG_TOML = """\
[scheduler]
update_interval_seconds = 3600
jitter_seconds = 0
[market_hours]
enabled = false
[stream]
enabled = false
"""
VOD = {"price": 71.94, "previous_close": 72.3, "open": 72.3, "high": 72.5, "low": 71.5}


# -- the arithmetic -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "major"), [("GBp", "GBP"), ("GBX", "GBP"), ("ZAc", "ZAR"), ("ILA", "ILS")]
)
def test_minor_units_become_major_exactly(currency: str, major: str) -> None:
    quote = Quote(
        symbol="X:LN",
        price=Decimal("71.94"),
        source="yfinance",
        currency=currency,
        change=Decimal("-0.36"),
        change_pct=Decimal("-0.4979"),
        open=Decimal("72.30"),
        high=Decimal("72.5"),
        low=Decimal("0.1"),
        previous_close=Decimal("72.30"),
        volume=41_000_000,
    )
    shown = to_major(quote)
    assert shown.currency == major
    assert str(shown.price) == "0.7194"
    assert str(shown.change) == "-0.0036"
    assert str(shown.open) == "0.7230" and str(shown.low) == "0.001"
    assert shown.change_pct == quote.change_pct and shown.volume == quote.volume
    assert major_dict(quote.to_json_dict()) == shown.to_json_dict()


@pytest.mark.parametrize("currency", ["GBP", "USD", "gbp", None])
def test_other_currencies_are_left_alone(currency: str | None) -> None:
    quote = Quote(symbol="X:US", price=Decimal("71.94"), source="yfinance", currency=currency)
    assert to_major(quote) is quote
    assert major_dict(quote.to_json_dict()) == quote.to_json_dict()
    row = ("X:US", "71.94", currency)
    assert major_row(row, 2, (1,)) is row


# -- through the CLI ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        fake.yahoo.set_quote("VOD.L", **VOD)
        yield fake


def make_env(market: FakeMarket, base: Path, **extra: str) -> dict[str, str]:
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.toml"
    config.write_text(CONFIG_TOML)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIGHT_DATA_", "YFINANCE_", "CRAWLER_"))
        and k
        not in (
            "DATA_DIR",
            "RUNTIME_DIRECTORY",
            "STATE_DIRECTORY",
            "XDG_RUNTIME_DIR",
            "REDIS_URL",
            "MAJOR_UNITS",
            "NOTIFY_SOCKET",
        )
    }
    # No Bright Data key: yfinance serves, in pence as Yahoo quotes London.
    env.update(market.environment(with_bright_data=False))
    env.update(
        PYTHONPATH=str(REPO),
        DATA_DIR=str(base / "data"),
        CRAWLER_SOCKET=str(base / "run" / "crawler.sock"),
        CRAWLER_CONFIG=str(config),
        **extra,
    )
    return env


def crawler(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    return result


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_fetch_history_and_export_offline(market: FakeMarket, tmp_path: Path) -> None:
    env = make_env(market, tmp_path)
    source = json.loads(ok(crawler(env, "fetch", "VOD:LN", "--json")))["quotes"][0]
    assert (source["price"], source["currency"]) == ("71.94", "GBp")
    major = json.loads(ok(crawler(env, "fetch", "VOD:LN", "--json", "--major-units")))
    quote = major["quotes"][0]
    assert (quote["price"], quote["currency"]) == ("0.7194", "GBP")
    assert quote["previous_close"] == "0.7230" and quote["high"] == "0.7250"
    assert "0.7194" in ok(crawler(env, "fetch", "VOD:LN", "--major-units"))

    # The history keeps pence; history and export convert on request.
    with HistoryStore(tmp_path / "data" / "history") as store:
        stored = store.latest("VOD:LN")
    assert stored is not None and (stored.price, stored.currency) == (Decimal("71.94"), "GBp")
    history = json.loads(ok(crawler(env, "history", "VOD:LN", "--json", "--major-units")))
    assert [(q["price"], q["currency"]) for q in history["quotes"]] == [("0.7194", "GBP")]
    table = ok(crawler(env, "history", "VOD:LN", "--major-units"))
    assert "0.7194" in table and "GBP" in table and "GBp" not in table
    rows = list(
        csv.DictReader(io.StringIO(ok(crawler(env, "history", "VOD:LN", "--csv", "--major-units"))))
    )
    assert [(r["price"], r["currency"]) for r in rows] == [("0.7194", "GBP")]
    exported = ok(crawler(env, "export", "--jsonl", "--major-units"))
    assert [(json.loads(x)["price"], json.loads(x)["currency"]) for x in exported.splitlines()] == [
        ("0.7194", "GBP")
    ]
    plain = list(csv.DictReader(io.StringIO(ok(crawler(env, "export", "--csv")))))
    assert [(r["price"], r["currency"]) for r in plain] == [("71.94", "GBp")]
    out = tmp_path / "major.parquet"
    ok(crawler(env, "export", "--format", "parquet", "-o", str(out), "--major-units"))
    row = pq.read_table(out).to_pylist()[0]
    assert (row["price"], row["currency"]) == (Decimal("0.7194"), "GBP")

    # The setting does what the flag does.
    by_setting = make_env(market, tmp_path, MAJOR_UNITS="true")
    quote = json.loads(ok(crawler(by_setting, "fetch", "VOD:LN", "--json")))["quotes"][0]
    assert (quote["price"], quote["currency"]) == ("0.7194", "GBP")
    csv_rows = list(csv.DictReader(io.StringIO(ok(crawler(by_setting, "export")))))
    assert [(r["price"], r["currency"]) for r in csv_rows] == [("0.7194", "GBP")]


@pytest.fixture(scope="module")
def daemon_env(
    market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    env = make_env(market, tmp_path_factory.mktemp("units"))
    assert crawler(env, "start").returncode == 0
    try:
        ok(crawler(env, "symbols", "add", "VOD:LN", "AAPL:US"))
        ok(crawler(env, "collect"))
        yield env
    finally:
        crawler(env, "stop")


def status_quote(env: dict[str, str], *flags: str) -> dict[str, str]:
    answer = json.loads(ok(crawler(env, "status", "--json", *flags)))
    (row,) = [r for r in answer["symbols"] if r["symbol"] == "VOD:LN"]
    return dict(row["last_quote"])


def test_status_through_the_daemon(daemon_env: dict[str, str]) -> None:
    assert status_quote(daemon_env)["currency"] == "GBp"
    quote = status_quote(daemon_env, "--major-units")
    assert (quote["price"], quote["currency"]) == ("0.7194", "GBP")
    table = ok(crawler(daemon_env, "status", "--major-units"))
    assert "0.7194 GBP" in table and "71.94" not in table
    by_setting = {**daemon_env, "MAJOR_UNITS": "1"}
    assert "0.7194 GBP" in ok(crawler(by_setting, "status"))
    quote = status_quote(by_setting)
    assert (quote["price"], quote["currency"]) == ("0.7194", "GBP")
    # Other currencies are left as they are.
    answer = json.loads(ok(crawler(daemon_env, "status", "--json", "--major-units")))
    (aapl,) = [r for r in answer["symbols"] if r["symbol"] == "AAPL:US"]
    assert aapl["last_quote"]["currency"] == "USD"


def test_history_and_export_through_the_daemon(daemon_env: dict[str, str]) -> None:
    history = json.loads(ok(crawler(daemon_env, "history", "VOD:LN", "--json", "--major-units")))
    assert {(q["price"], q["currency"]) for q in history["quotes"]} == {("0.7194", "GBP")}
    lines = ok(crawler(daemon_env, "export", "--jsonl", "--symbols", "VOD:LN", "--major-units"))
    assert {(json.loads(x)["price"], json.loads(x)["currency"]) for x in lines.splitlines()} == {
        ("0.7194", "GBP")
    }


def test_watch_json_in_major_units(daemon_env: dict[str, str]) -> None:
    watch = subprocess.Popen(
        [sys.executable, "-m", "crawler", "watch", "VOD:LN", "--json", "--major-units"],
        env=daemon_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()

    def fetch_until_seen() -> None:
        # A fresh fetch publishes a quote event; repeat until the watch (subscribing
        # meanwhile) has printed one.
        while not stop.wait(0.5):
            crawler(daemon_env, "fetch", "VOD:LN", "--fresh")

    fetcher = threading.Thread(target=fetch_until_seen, daemon=True)
    fetcher.start()
    try:
        assert watch.stdout is not None
        event: dict[str, str] = {}
        for line in watch.stdout:
            parsed = json.loads(line)
            if parsed.get("type") == "quote" and parsed.get("symbol") == "VOD:LN":
                event = parsed
                break
        assert (event["price"], event["currency"]) == ("0.7194", "GBP")
    finally:
        stop.set()
        watch.terminate()
        watch.communicate(timeout=10)
        fetcher.join(timeout=30)
