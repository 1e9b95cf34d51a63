"""`crawler backfill` against the fake Yahoo's chart endpoint serving real chart bodies: exact
values, no duplicates after a second run (which asks only for what is missing), ranges split
per Yahoo's limits, a 429 midway waited out and resumed, through the daemon and without one;
the history's kinds (bars, quotes) in history and export; the schema migration."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import parse_symbol
from crawler.orchestrator.backfill import Backfiller
from crawler.sources.yahoo_throttle import YahooThrottle
from crawler.sources.yfinance_source import YFinanceSource
from crawler.store.history import HistoryStore
from fakemarket import FakeMarket
from tests.terminal import Terminal

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "yahoo" / "chart"
if not FIXTURES.is_dir():  # a worktree: shared/ sits beside the main checkout
    FIXTURES = Path("/work/shared/fixtures/yahoo/chart")
CONFIG_TOML = """\
[scheduler]
update_interval_seconds = 3600
jitter_seconds = 0
[market_hours]
enabled = false
[stream]
enabled = false
"""
#: The real capture's window (AAPL, 10 daily bars from 2024-09-30 to 2024-10-11).
SINCE, UNTIL = "2024-09-30", "2024-10-12"
AAPL_CLOSES = [
    "233.00",
    "226.21",
    "226.78",
    "225.67",
    "226.80",
    "221.69",
    "225.77",
    "229.54",
    "229.04",
    "227.55",
]


def capture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


@pytest.fixture
def fake(market: FakeMarket) -> Iterator[FakeMarket]:
    market.yahoo.clear_scenarios()
    market.yahoo.set_chart_bars("AAPL", capture("scheb_chart_AAPL_history_2024-10.json"))
    market.yahoo.set_chart_bars("OCDO.L", capture("chart-OCDO.L-2020-01-01-to-2020-01-03.json"))
    market.yahoo.set_chart_bars("BTC-USD", capture("chart-BTC-USD-2020-01-01-to-2020-01-03.json"))
    yield market
    market.yahoo.clear_scenarios()


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
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def backfill_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    return dict(json.loads(ok(crawler(env, "backfill", *args, "--json"))))


def stored(env: dict[str, str]) -> HistoryStore:
    return HistoryStore(Path(env["DATA_DIR"]) / "history")


# -- exact values, dedup, only what is missing ----------------------------------------------


def test_bars_of_a_real_capture_are_stored_exactly(fake: FakeMarket, tmp_path: Path) -> None:
    env = make_env(fake, tmp_path)
    report = backfill_json(env, "AAPL:US", "--since", SINCE, "--until", UNTIL)
    assert report["bars_added"] == 10 and report["requests"] == 1 and report["errors"] == {}
    history = json.loads(
        ok(crawler(env, "history", "AAPL:US", "--kind", "bars", "--oldest-first", "--json"))
    )
    bars = history["quotes"]
    # The close, rounded to priceHint 2 from Yahoo's float32 (226.2100067138672 -> 226.21).
    assert [bar["price"] for bar in bars] == AAPL_CLOSES
    assert {bar["interval"] for bar in bars} == {"1d"}
    assert {bar["source"] for bar in bars} == {"yfinance"}
    assert {bar["currency"] for bar in bars} == {"USD"}
    # The bar's own time from Yahoo: 2024-09-30 09:30 New York = 13:30 UTC.
    assert bars[0]["as_of"] == "2024-09-30T13:30:00+00:00"
    assert bars[-1]["as_of"] == "2024-10-11T13:30:00+00:00"
    assert (bars[1]["open"], bars[1]["high"], bars[1]["low"]) == ("229.52", "229.65", "223.74")
    assert bars[1]["volume"] == 63_285_000
    assert bars[0]["change"] is None and bars[0]["previous_close"] is None

    # Pence stay pence in the store; --major-units shows pounds.
    ok(crawler(env, "backfill", "OCDO:LN", "--since", "2020-01-01", "--until", "2020-01-04"))
    (ocado,) = json.loads(ok(crawler(env, "history", "OCDO:LN", "--json")))["quotes"]
    assert (ocado["price"], ocado["currency"]) == ("1259.50", "GBp")
    assert ocado["as_of"] == "2020-01-02T08:00:00+00:00"
    major = json.loads(ok(crawler(env, "history", "OCDO:LN", "--json", "--major-units")))
    assert (major["quotes"][0]["price"], major["quotes"][0]["currency"]) == ("12.5950", "GBP")


def test_a_second_run_asks_only_for_what_is_missing(fake: FakeMarket, tmp_path: Path) -> None:
    env = make_env(fake, tmp_path)
    assert (
        backfill_json(env, "AAPL:US", "--since", "2024-10-03", "--until", "2024-10-08")[
            "bars_added"
        ]
        == 3
    )
    assert len(fake.yahoo.bar_ranges("AAPL")) == 1
    again = backfill_json(env, "AAPL:US", "--since", "2024-10-03", "--until", "2024-10-08")
    assert (again["requests"], again["bars_added"]) == (0, 0)
    assert len(fake.yahoo.bar_ranges("AAPL")) == 1  # nothing asked
    # A wider range asks for the two missing ends only, and adds no duplicate.
    wider = backfill_json(env, "AAPL:US", "--since", SINCE, "--until", UNTIL)
    asked = [(p1, p2) for _sym, p1, p2, _i in fake.yahoo.bar_ranges("AAPL")[1:]]
    day = 86_400
    since_s, until_s = 1_727_654_400, 1_728_691_200  # 2024-09-30, 2024-10-12
    assert asked == [(since_s, since_s + 3 * day), (since_s + 8 * day, until_s)]
    assert (wider["requests"], wider["bars_added"]) == (2, 7)
    with stored(env) as history:
        assert history.count("AAPL:US", kind="bars") == 10
        closes = [str(q.price) for q in history.query("AAPL:US", kind="bars")]
    assert closes == AAPL_CLOSES
    # A run over everything again: nothing asked, nothing added.
    last = backfill_json(env, "AAPL:US", "--since", SINCE, "--until", UNTIL)
    assert (last["requests"], last["bars_added"]) == (0, 0)


def test_an_unfinished_bar_is_not_stored_and_is_asked_again_once_finished(
    fake: FakeMarket, tmp_path: Path
) -> None:
    # Generated crypto bars, every day at 00:00 UTC. A backfill run "yesterday" (its clock
    # injected) sees yesterday's bar unfinished: it stores the finished ones only, and the
    # next run asks again from the unfinished bar's start.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    source = YFinanceSource(endpoint=fake.yahoo.url, cache_dir=tmp_path / "yf")
    xet = [parse_symbol("XETUSD:CUR")]
    try:
        with HistoryStore(tmp_path / "history") as history:
            early_now = yesterday + timedelta(hours=6)
            early = Backfiller(source, history, now=lambda: early_now)
            report = early.run(early.plan(xet, "1d", yesterday - timedelta(days=3)))
            assert report.bars_added == 3  # the days before yesterday
            assert history.bar_windows("XETUSD:CUR", "1d")[0][1] == yesterday
            assert not early.plan(xet, "1d", yesterday - timedelta(days=3)).windows
            later = Backfiller(source, history, now=lambda: today + timedelta(hours=1))
            plan = later.plan(xet, "1d", yesterday - timedelta(days=3))
            assert [(w.start, w.end) for w in plan.windows] == [
                (yesterday, today + timedelta(hours=1))
            ]
            assert later.run(plan).bars_added == 1  # yesterday's, finished now; not today's
            bars = list(history.query("XETUSD:CUR", kind="bars"))
            assert [bar.as_of for bar in bars] == [
                yesterday - timedelta(days=d) for d in (3, 2, 1, 0)
            ]
    finally:
        source.close()


# -- Yahoo's range limits -------------------------------------------------------------------


def test_ranges_are_split_per_yahoo_limits(fake: FakeMarket, tmp_path: Path) -> None:
    env = make_env(fake, tmp_path)
    report = backfill_json(env, "VOD:LN", "--interval", "1m", "--since", "20d")
    assert report["errors"] == {} and report["requests"] == 3
    ranges = [(p1, p2) for _s, p1, p2, _i in fake.yahoo.bar_ranges("VOD.L")]
    assert all(p2 - p1 <= 8 * 86_400 for p1, p2 in ranges)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous
    assert report["bars_added"] > 1000

    # Further back than Yahoo keeps: moved forward, with a note, and not refused (no 422).
    for interval, since, days in (("1m", "60d", 30), ("5m", "90d", 60), ("1h", "3y", 730)):
        result = crawler(env, "backfill", "AAPL:US", "--interval", interval, "--since", since)
        assert result.returncode == 0, result.stderr
        assert f"Yahoo keeps {interval} bars for the last {days} days" in result.stderr
        first = next(r for r in fake.yahoo.bar_ranges("AAPL") if r[3] == interval)
        assert first[1] >= datetime.now(UTC).timestamp() - days * 86_400
    # 1m: 30 days in requests of at most 8; 5m and 1h: one request each; 1d: all in one.
    intervals = [r[3] for r in fake.yahoo.bar_ranges("AAPL")]
    assert (intervals.count("1m"), intervals.count("5m"), intervals.count("1h")) == (4, 1, 1)
    ten_years = backfill_json(env, "MSFT:US", "--since", "10y")
    assert ten_years["requests"] == 1 and ten_years["bars_added"] > 2500


def test_plan_splits_exactly(tmp_path: Path) -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    with HistoryStore(tmp_path / "history") as history:
        # A real source; planning never calls it.
        source = YFinanceSource(endpoint="http://127.0.0.1:9", cache_dir=tmp_path / "yf")
        backfiller = Backfiller(source, history, now=lambda: now)
        plan = backfiller.plan(
            [parse_symbol("AAPL:US")], "1m", since=now - timedelta(days=20), until=None
        )
        spans = [(w.start, w.end) for w in plan.windows]
        assert spans == [
            (now - timedelta(days=20), now - timedelta(days=12)),
            (now - timedelta(days=12), now - timedelta(days=4)),
            (now - timedelta(days=4), now),
        ]
        assert backfiller.plan([parse_symbol("AAPL:US")], "1d").windows[0].start == now - (
            timedelta(days=365)
        )
        source.close()


# -- 429 ------------------------------------------------------------------------------------


def test_a_429_midway_is_waited_out_and_the_run_completes(fake: FakeMarket, tmp_path: Path) -> None:
    env = make_env(fake, tmp_path)

    def refused() -> int:  # the module's fake keeps every test's requests: count ours
        return sum(1 for r in fake.yahoo.requests_of("chart") if r.outcome == "bars:429")

    before = refused()
    fake.yahoo.rate_limit_bars(after=1, times=1, retry_after_s=1)
    report = backfill_json(env, "AAPL:US", "MSFT:US", "NVDA:US", "--since", SINCE, "--until", UNTIL)
    assert report["rate_limited"] == 1 and report["requests"] == 4
    assert report["errors"] == {} and report["stopped"] is None
    assert report["added"] == {"AAPL:US": 10, "MSFT:US": 10, "NVDA:US": 10}
    assert refused() - before == 1


def test_persistent_429s_stop_the_run_and_the_next_run_resumes(
    fake: FakeMarket, tmp_path: Path
) -> None:
    env = make_env(fake, tmp_path)
    fake.yahoo.rate_limit_bars(after=1, times=100, retry_after_s=0.2)
    result = crawler(
        env,
        "backfill",
        "AAPL:US",
        "MSFT:US",
        "NVDA:US",
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--json",
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert "429" in report["stopped"] and report["added"]["AAPL:US"] == 10
    assert report["added"]["MSFT:US"] == 0
    fake.yahoo.rate_limit_bars(after=0, times=0)
    before = len(fake.yahoo.bar_ranges())
    resumed = backfill_json(
        env, "AAPL:US", "MSFT:US", "NVDA:US", "--since", SINCE, "--until", UNTIL
    )
    assert [r[0] for r in fake.yahoo.bar_ranges()[before:]] == ["MSFT", "NVDA"]
    assert resumed["added"] == {"AAPL:US": 0, "MSFT:US": 10, "NVDA:US": 10}


class ManualClock:
    """Monotonic seconds that move only when something sleeps (the bucket or the backfill)."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


def test_a_429_pauses_the_shared_bucket(fake: FakeMarket, tmp_path: Path) -> None:
    # In-process: the source's bucket (the one collections use) is paused by the 429 for its
    # Retry-After, and the backfill waits exactly that before asking the same range again.
    clock = ManualClock()
    throttle = YahooThrottle(50, clock=clock, sleep=clock.sleep)
    source = YFinanceSource(endpoint=fake.yahoo.url, cache_dir=tmp_path / "yf", throttle=throttle)
    waits: list[float] = []

    def backfill_sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.sleep(seconds)

    try:
        with HistoryStore(tmp_path / "history") as history:
            fake.yahoo.rate_limit_bars(after=0, times=1, retry_after_s=0.5)
            backfiller = Backfiller(source, history, sleep=backfill_sleep, clock=clock)
            report = backfiller.run(
                backfiller.plan(
                    [parse_symbol("AAPL:US")],
                    "1d",
                    datetime(2024, 9, 30, tzinfo=UTC),
                    datetime(2024, 10, 12, tzinfo=UTC),
                )
            )
    finally:
        source.close()
    assert throttle.rate_limited == 1 and report.bars_added == 10
    assert report.rate_limited == 1 and report.requests == 2
    assert waits == [0.5]  # the Retry-After, through the shared bucket's pause
    assert throttle.paused_for_s() == 0


# -- through the daemon ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon_env(
    market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    env = make_env(market, tmp_path_factory.mktemp("bf"))
    assert crawler(env, "start").returncode == 0
    try:
        yield env
    finally:
        crawler(env, "stop")


def granted(env: dict[str, str]) -> int:
    status = json.loads(ok(crawler(env, "status", "--json")))
    return int(status["yahoo"]["throttle"]["requests_granted"])


def test_backfill_goes_through_the_running_daemon(
    fake: FakeMarket, daemon_env: dict[str, str]
) -> None:
    ok(crawler(daemon_env, "symbols", "add", "AAPL:US", "OCDO:LN"))
    before = granted(daemon_env)
    report = backfill_json(daemon_env, "--all", "--since", "2020-01-01", "--until", UNTIL)
    assert report["errors"] == {} and report["added"]["AAPL:US"] == 10
    assert report["added"]["OCDO:LN"] == 1
    # The daemon's own Yahoo bucket made the requests (the CLI made none of its own).
    assert granted(daemon_env) - before >= report["requests"] == 2
    # The daemon's kinds: both by default (the symbol's collected quotes too), or one.
    every = json.loads(ok(crawler(daemon_env, "history", "AAPL:US", "--json", "--limit", "50")))
    assert every["kind"] == "all"
    assert sum(1 for q in every["quotes"] if q.get("interval") == "1d") == 10
    quotes = json.loads(ok(crawler(daemon_env, "history", "AAPL:US", "--kind", "quotes", "--json")))
    assert len(quotes["quotes"]) == len(every["quotes"]) - 10
    assert not any("interval" in q for q in quotes["quotes"])
    lines = ok(crawler(daemon_env, "export", "--jsonl", "--kind", "bars", "--symbols", "AAPL:US"))
    assert [json.loads(x)["price"] for x in lines.splitlines()] == AAPL_CLOSES
    again = backfill_json(daemon_env, "--all", "--since", "2020-01-01", "--until", UNTIL)
    assert again["requests"] == 0
    # Parquet through the daemon reads back equal to the daemon's CSV, row for row.
    out = Path(daemon_env["DATA_DIR"]).parent / "export.parquet"
    ours = ("--symbols", "AAPL:US,OCDO:LN")  # the module's daemon: other tests add bars too
    ok(
        crawler(
            daemon_env, "export", "--format", "parquet", "--kind", "bars", *ours, "-o", str(out)
        )
    )
    rows = list(
        csv.DictReader(io.StringIO(ok(crawler(daemon_env, "export", "--kind", "bars", *ours))))
    )
    table = pq.read_table(out).to_pylist()
    assert len(table) == len(rows) == 11
    for got, want in zip(table, rows, strict=True):
        assert (got["symbol"], got["price"], got["interval"]) == (
            want["symbol"],
            Decimal(want["price"]),
            want["interval"],
        )
        assert got["as_of"].isoformat() == want["as_of"]


def test_one_backfill_at_a_time_in_the_daemon(fake: FakeMarket, daemon_env: dict[str, str]) -> None:
    # The first one waits out 429s (a second each); a second one meanwhile is refused.
    def refused() -> int:
        return sum(1 for r in fake.yahoo.requests_of("chart") if r.outcome == "bars:429")

    refused_before = refused()
    fake.yahoo.rate_limit_bars(after=0, times=3, retry_after_s=1)
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crawler",
            "backfill",
            "MSFT:US",
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--json",
        ],
        env=daemon_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while refused() == refused_before:
            assert time.monotonic() < deadline, "the first backfill never reached Yahoo"
            time.sleep(0.05)
        second = crawler(daemon_env, "backfill", "NVDA:US", "--since", SINCE, "--until", UNTIL)
        assert second.returncode == 2
        assert "a backfill is already running" in second.stderr
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    report = json.loads(out)
    assert report["rate_limited"] == 3 and report["added"] == {"MSFT:US": 10}


def test_usage_errors(fake: FakeMarket, tmp_path: Path) -> None:
    env = make_env(fake, tmp_path)
    for args, words in (
        (("AAPL:US", "--interval", "2h"), "--interval '2h' is not offered"),
        ((), "name symbols to backfill, or --all"),
        (("AAPL:US", "--since", "2024-10-12", "--until", "2024-10-01"), "nothing to backfill"),
        (("--all",), "no symbols tracked"),
    ):
        result = crawler(env, "backfill", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_progress_bar_on_a_terminal(fake: FakeMarket, tmp_path: Path) -> None:
    env = make_env(fake, tmp_path)
    term = Terminal.run(
        [
            sys.executable,
            "-m",
            "crawler",
            "backfill",
            "VOD:LN",
            "--interval",
            "1m",
            "--since",
            "20d",
        ],
        env,
    )
    assert term.wait() == 0
    text = term.text()
    assert "backfilling" in text and "/3" in text
    assert "backfilled 1 symbol at 1m" in text


# -- kinds in history and export, and the schema --------------------------------------------


def test_history_and_export_kinds(fake: FakeMarket, tmp_path: Path) -> None:
    env = make_env(fake, tmp_path)
    ok(crawler(env, "fetch", "AAPL:US"))  # one collected quote
    ok(crawler(env, "backfill", "AAPL:US", "--since", SINCE, "--until", UNTIL))
    rows = list(csv.DictReader(io.StringIO(ok(crawler(env, "export", "--csv")))))
    assert len(rows) == 11
    assert sorted(r["interval"] for r in rows) == [""] + ["1d"] * 10
    bars = list(csv.DictReader(io.StringIO(ok(crawler(env, "export", "--kind", "bars")))))
    assert [r["price"] for r in bars] == AAPL_CLOSES
    quotes = ok(crawler(env, "export", "--jsonl", "--kind", "quotes")).splitlines()
    assert len(quotes) == 1 and "interval" not in json.loads(quotes[0])
    out = tmp_path / "bars.parquet"
    ok(crawler(env, "export", "--format", "parquet", "--kind", "bars", "-o", str(out)))
    table = pq.read_table(out)
    assert table.column("interval").to_pylist() == ["1d"] * 10
    assert table.column("price").to_pylist()[0] == Decimal("233.00")
    bad = crawler(env, "history", "AAPL:US", "--kind", "candles")
    assert bad.returncode == 2 and "use all, quotes or bars" in bad.stderr


_V1_SCHEMA = """
CREATE TABLE quotes (
    id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, source TEXT NOT NULL,
    as_of_us INTEGER NOT NULL, source_as_of_us INTEGER, fetched_at_us INTEGER NOT NULL,
    price TEXT NOT NULL, currency TEXT, change TEXT, change_pct TEXT, open TEXT, high TEXT,
    low TEXT, previous_close TEXT, volume INTEGER, asset_class TEXT, name TEXT,
    stale INTEGER NOT NULL DEFAULT 0, from_cache INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX quotes_dedup ON quotes (symbol, source, as_of_us);
CREATE INDEX quotes_symbol_time ON quotes (symbol, as_of_us);
CREATE INDEX quotes_time ON quotes (as_of_us);
PRAGMA user_version = 1;
"""


def test_a_version_1_history_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    directory = tmp_path / "history"
    directory.mkdir()
    at_us = 1_728_653_400_000_000  # 2024-10-11T13:30:00Z
    with sqlite3.connect(directory / "history.sqlite3") as conn:
        conn.executescript(_V1_SCHEMA)
        conn.execute(
            "INSERT INTO quotes (symbol, source, as_of_us, source_as_of_us, fetched_at_us, price,"
            " currency) VALUES ('AAPL:US', 'yfinance', ?, ?, ?, '227.55', 'USD')",
            (at_us, at_us, at_us + 1),
        )
    conn.close()
    with HistoryStore(directory) as history:
        (quote,) = history.query("AAPL:US")
        assert (quote.price, quote.interval, quote.kind) == (Decimal("227.55"), None, "quote")
        # A bar at the very same instant and source is a row of its own, not a duplicate.
        bar = Quote(
            symbol="AAPL:US",
            price=Decimal("227.55"),
            source="yfinance",
            as_of=quote.as_of,
            interval="1d",
        )
        assert history.record([bar]) == 1 and history.record([bar]) == 0
        assert history.count("AAPL:US") == 2
        assert history.count("AAPL:US", kind="quotes") == 1
    with sqlite3.connect(directory / "history.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    # And again: opening a migrated file changes nothing.
    with HistoryStore(directory) as history:
        assert history.count("AAPL:US") == 2


def test_prune_keeps_backfilled_bars(tmp_path: Path) -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    old = now - timedelta(days=800)
    with HistoryStore(tmp_path / "history", retention_days=365, now=lambda: now) as history:
        history.record(
            [
                Quote(symbol="AAPL:US", price=Decimal("1"), source="yfinance", as_of=old),
                Quote(
                    symbol="AAPL:US",
                    price=Decimal("1"),
                    source="yfinance",
                    as_of=old,
                    interval="1d",
                ),
            ]
        )
        assert history.prune() == 1
        assert history.count("AAPL:US", kind="bars") == 1
