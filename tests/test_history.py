"""HistoryStore against real SQLite files: dedup, DST ranges, export, crash safety, retention."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import pytest

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.store.history import CSV_COLUMNS, HISTORY_FILENAME, HistoryStore, parse_time_spec
from crawler.utils.exceptions import ConfigError, StorageError

REPO_ROOT = Path(__file__).resolve().parents[1]
NEW_YORK = ZoneInfo("America/New_York")
T0 = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)


def make_quote(
    i: int = 0,
    *,
    symbol: str = "AAPL:US",
    source: str = "bright_data",
    as_of: datetime | None = T0,
    fetched_at: datetime | None = None,
    full: bool = True,
) -> Quote:
    """A quote with every field set (or only the required ones when `full` is False)."""
    fetched = fetched_at or (as_of or T0) + timedelta(seconds=2)
    if not full:
        return Quote(
            symbol=symbol, price=Decimal(f"{i}.10"), source=source, as_of=as_of, fetched_at=fetched
        )
    return Quote(
        symbol=symbol,
        price=Decimal(f"262.{i:04d}0"),  # trailing zero: exactness must keep it
        source=source,
        currency="USD",
        change=Decimal("-4.85"),
        change_pct=Decimal("-1.8149"),
        open=Decimal("266.98"),
        high=Decimal("267.1"),
        low=Decimal("0.000001"),
        previous_close=Decimal("267.21"),
        volume=47_000_000 + i,
        as_of=as_of,
        fetched_at=fetched,
        asset_class=AssetClass.STOCKS,
        name='Apple Inc, "quoted"\nnewline',
        from_cache=bool(i % 2),
        stale=bool(i % 3 == 0),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    history = HistoryStore(tmp_path / "history")
    yield history
    history.close()


# -- dedup and round trip -----------------------------------------------------------------


def test_same_quote_twice_is_one_row_and_new_as_of_is_another(store: HistoryStore) -> None:
    quote = make_quote()
    assert store.record([quote]) == 1
    assert store.record([quote]) == 0
    assert store.record([quote, quote]) == 0
    assert store.count() == 1
    assert store.record([make_quote(as_of=T0 + timedelta(minutes=1))]) == 1
    assert store.count() == 2
    # Same as_of from another source is another observation.
    assert store.record([make_quote(source="yfinance")]) == 1
    assert store.count() == 3
    assert store.count("AAPL:US") == 3
    assert store.count("MSFT:US") == 0


def test_quote_without_as_of_is_keyed_on_fetched_at(store: HistoryStore) -> None:
    first = make_quote(as_of=None, fetched_at=T0)
    assert store.record([first, first]) == 1
    assert store.record([make_quote(as_of=None, fetched_at=T0 + timedelta(seconds=1))]) == 1
    stored = list(store.query("AAPL:US"))
    assert [q.as_of for q in stored] == [None, None]  # None survives, not replaced by fetched_at
    assert stored[0] == first


def test_every_field_round_trips_exactly(store: HistoryStore) -> None:
    quotes = [make_quote(i, as_of=T0 + timedelta(seconds=i)) for i in range(6)]
    quotes.append(make_quote(99, as_of=T0 + timedelta(hours=1), full=False))
    quotes.append(make_quote(7, as_of=T0 + timedelta(microseconds=3_000_001)))
    assert store.record(quotes) == len(quotes)
    stored = list(store.query("AAPL:US"))
    assert stored == sorted(quotes, key=lambda q: q.as_of or q.fetched_at)
    assert str(stored[0].price) == "262.00000"
    assert stored[-1].currency is None and stored[-1].asset_class is None


def test_query_orders_by_as_of_and_honours_limit(store: HistoryStore) -> None:
    # Written out of order, from two sources.
    offsets_s = [50, 10, 40, 0, 30, 20]
    quotes = [
        make_quote(i, as_of=T0 + timedelta(seconds=s), source=("yfinance", "bright_data")[i % 2])
        for i, s in enumerate(offsets_s)
    ]
    store.record(quotes)
    store.record([make_quote(as_of=T0, symbol="MSFT:US")])
    got = [q.as_of for q in store.query("AAPL:US")]
    assert got == [T0 + timedelta(seconds=s) for s in sorted(offsets_s)]
    limited = [q.as_of for q in store.query("AAPL:US", limit=2)]
    assert limited == [T0, T0 + timedelta(seconds=10)]
    latest = store.latest("AAPL:US")
    assert latest is not None and latest.as_of == T0 + timedelta(seconds=50)
    assert store.latest("NOPE:US") is None
    assert store.symbols() == ["AAPL:US", "MSFT:US"]


def test_query_range_is_half_open_and_naive_means_utc(store: HistoryStore) -> None:
    store.record(make_quote(i, as_of=T0 + timedelta(minutes=i)) for i in range(10))
    got = list(
        store.query("AAPL:US", since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=5))
    )
    assert [q.as_of for q in got] == [T0 + timedelta(minutes=m) for m in (2, 3, 4)]
    naive = list(store.query("AAPL:US", since=(T0 + timedelta(minutes=8)).replace(tzinfo=None)))
    assert len(naive) == 2


# -- DST ------------------------------------------------------------------------------------


def _every_half_hour(start: datetime, end: datetime) -> list[datetime]:
    out = []
    at = start
    while at < end:
        out.append(at)
        at += timedelta(minutes=30)
    return out


@pytest.mark.parametrize(
    ("since", "until", "expected_first_utc", "expected_rows"),
    [
        # Spring forward, 2026-03-08 02:00 EST -> 03:00 EDT: 01:30 to 03:30 local is one hour.
        (
            datetime(2026, 3, 8, 1, 30, tzinfo=NEW_YORK),
            datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK),
            datetime(2026, 3, 8, 6, 30, tzinfo=UTC),
            2,
        ),
        # The whole local day of 2026-03-08 has 23 hours.
        (
            datetime(2026, 3, 8, tzinfo=NEW_YORK),
            datetime(2026, 3, 9, tzinfo=NEW_YORK),
            datetime(2026, 3, 8, 5, 0, tzinfo=UTC),
            46,
        ),
        # Fall back, 2026-11-01: 01:00 EDT (fold=0) to 01:00 EST (fold=1) is one real hour.
        (
            datetime(2026, 11, 1, 1, 0, tzinfo=NEW_YORK),
            datetime(2026, 11, 1, 1, 0, fold=1, tzinfo=NEW_YORK),
            datetime(2026, 11, 1, 5, 0, tzinfo=UTC),
            2,
        ),
        # The whole local day of 2026-11-01 has 25 hours.
        (
            datetime(2026, 11, 1, tzinfo=NEW_YORK),
            datetime(2026, 11, 2, tzinfo=NEW_YORK),
            datetime(2026, 11, 1, 4, 0, tzinfo=UTC),
            50,
        ),
    ],
)
def test_range_queries_across_dst_changes(
    store: HistoryStore,
    since: datetime,
    until: datetime,
    expected_first_utc: datetime,
    expected_rows: int,
) -> None:
    for day in (datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 10, 31, tzinfo=UTC)):
        instants = _every_half_hour(day, day + timedelta(days=3))
        store.record(make_quote(i, as_of=at) for i, at in enumerate(instants))
        store.record(make_quote(i, as_of=at, symbol="VOD:LN") for i, at in enumerate(instants))
    got = [q.as_of for q in store.query("AAPL:US", since=since, until=until)]
    expected = [expected_first_utc + timedelta(minutes=30 * k) for k in range(expected_rows)]
    assert got == expected
    exported = io.StringIO()
    assert store.export("jsonl", exported, since=since, until=until, symbols=["AAPL:US"]) == (
        expected_rows
    )


# -- export ---------------------------------------------------------------------------------


def _mixed_quotes() -> list[Quote]:
    quotes = [make_quote(i, as_of=T0 + timedelta(seconds=i)) for i in range(5)]
    quotes += [
        make_quote(i, symbol="VOD:LN", as_of=T0 + timedelta(seconds=i), full=False)
        for i in range(3)
    ]
    quotes.append(make_quote(9, as_of=None, fetched_at=T0 + timedelta(seconds=10)))
    return quotes


def _by_time(quotes: list[Quote]) -> list[Quote]:
    return sorted(quotes, key=lambda q: (q.as_of or q.fetched_at, q.symbol != "AAPL:US"))


@pytest.mark.parametrize("binary", [False, True])
def test_export_jsonl_round_trips(store: HistoryStore, binary: bool) -> None:
    quotes = _mixed_quotes()
    store.record(quotes)
    if binary:
        raw = io.BytesIO()
        assert store.export("jsonl", raw) == len(quotes)
        assert not raw.closed  # the wrapper was detached, the caller's stream left open
        text = raw.getvalue().decode("utf-8")
    else:
        out = io.StringIO()
        assert store.export("jsonl", out) == len(quotes)
        text = out.getvalue()
    lines = text.splitlines()
    expected = _by_time(quotes)
    # Byte for byte what Quote.to_json_dict() gives, and it parses back to equal quotes.
    assert [json.loads(line) for line in lines] == [q.to_json_dict() for q in expected]
    assert [Quote.from_json(line) for line in lines] == expected


@pytest.mark.parametrize("binary", [False, True])
def test_export_csv_round_trips_with_exact_decimals(store: HistoryStore, binary: bool) -> None:
    quotes = _mixed_quotes()
    store.record(quotes)
    if binary:
        raw = io.BytesIO()
        assert store.export("csv", raw) == len(quotes)
        text = raw.getvalue().decode("utf-8")
    else:
        out = io.StringIO()
        assert store.export("csv", out) == len(quotes)
        text = out.getvalue()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = list(reader)
    expected = _by_time(quotes)
    assert len(rows) == len(expected)
    for row, quote in zip(rows, expected, strict=True):
        assert row["symbol"] == quote.symbol
        assert Decimal(row["price"]) == quote.price and row["price"] == str(quote.price)
        assert row["change_pct"] == ("" if quote.change_pct is None else str(quote.change_pct))
        assert row["as_of"] == ("" if quote.as_of is None else quote.as_of.isoformat())
        assert datetime.fromisoformat(row["fetched_at"]) == quote.fetched_at
        assert row["volume"] == ("" if quote.volume is None else str(quote.volume))
        assert row["name"] == (quote.name or "")
        assert row["stale"] == str(int(quote.stale))


def test_export_filters_by_symbols_and_time(store: HistoryStore) -> None:
    store.record(_mixed_quotes())
    out = io.StringIO()
    n = store.export("jsonl", out, symbols=["VOD:LN"], since=T0 + timedelta(seconds=1))
    assert n == 2
    assert [Quote.from_json(line).symbol for line in out.getvalue().splitlines()] == ["VOD:LN"] * 2
    assert store.export("csv", io.StringIO(), symbols=[]) == 0
    with pytest.raises(ValueError, match="unknown export format"):
        store.export("xml", io.StringIO())  # type: ignore[arg-type]


def test_export_of_50k_rows_uses_bounded_memory(store: HistoryStore) -> None:
    rows = 50_000  # bench/bench_export.py does the million; this keeps the suite quick
    store.record(
        Quote(
            symbol=f"S{i % 40}:US",
            price=Decimal(i) / 100,
            source="bright_data",
            currency="USD",
            as_of=T0 + timedelta(seconds=i),
            fetched_at=T0,
            asset_class=AssetClass.STOCKS,
            volume=i,
        )
        for i in range(rows)
    )
    peaks_bytes: dict[str, int] = {}
    formats: tuple[Literal["csv", "jsonl"], ...] = ("csv", "jsonl")
    for fmt in formats:
        with open(os.devnull, "w", encoding="utf-8") as sink:
            tracemalloc.start()
            try:
                assert store.export(fmt, sink) == rows
                peaks_bytes[fmt] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    # Holding the rows would take tens of MB; streaming stays around one fetch batch.
    assert max(peaks_bytes.values()) < 10 * 1024 * 1024, peaks_bytes


# -- crash safety and concurrency -----------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal
    from pathlib import Path
    from crawler.normalizer.schemas import Quote
    from crawler.store.history import HistoryStore

    store = HistoryStore(Path(sys.argv[1]))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    committed = 0
    while True:
        batch = [
            Quote(symbol="K:US", price=Decimal(committed + j), source="bright_data",
                  as_of=t0 + timedelta(seconds=committed + j))
            for j in range(50)
        ]
        committed += store.record(batch)
        print(committed, flush=True)
    """
)


def test_kill_9_during_writes_loses_no_committed_row(tmp_path: Path) -> None:
    directory = tmp_path / "history"
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert worker.stdout is not None
    printed: list[int] = []
    try:
        while len(printed) < 40:
            line = worker.stdout.readline()
            assert line, "worker died before being killed"
            printed.append(int(line))
        worker.send_signal(signal.SIGKILL)
        printed += [int(line) for line in worker.stdout.read().split()]
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()
    assert worker.returncode == -signal.SIGKILL

    with sqlite3.connect(directory / HISTORY_FILENAME) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    raw.close()
    reopened = HistoryStore(directory)
    try:
        count = reopened.count()
        assert count >= printed[-1] >= 40 * 50
        assert count % 50 == 0  # a batch is one transaction: all of it or none
        # The rows present are exactly the first `count` written, none skipped.
        stored = [int(q.price) for q in reopened.query("K:US")]
        assert stored == list(range(count))
    finally:
        reopened.close()


def test_threads_and_separate_stores_write_concurrently(tmp_path: Path) -> None:
    # Two stores on one file behave like two processes: separate connections, one lock.
    stores = [HistoryStore(tmp_path / "h"), HistoryStore(tmp_path / "h")]
    inserted = []
    lock = threading.Lock()

    def write(worker: int) -> None:
        history = stores[worker % 2]
        total = 0
        for batch in range(20):
            total += history.record(
                make_quote(as_of=T0 + timedelta(seconds=batch * 100 + k), symbol=f"W{worker}:US")
                for k in range(25)
            )
        with lock:
            inserted.append(total)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert inserted == [500] * 6
        assert stores[0].count() == stores[1].count() == 3000
    finally:
        for history in stores:
            history.close()


# -- retention ------------------------------------------------------------------------------


def test_prune_deletes_rows_older_than_the_retention(tmp_path: Path) -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    history = HistoryStore(tmp_path, retention_days=30, now=lambda: now)
    try:
        ages_days = [0, 1, 29, 30.5, 31, 400]
        history.record(
            make_quote(i, as_of=now - timedelta(days=age)) for i, age in enumerate(ages_days)
        )
        assert history.prune() == 3
        assert history.count() == 3
        assert history.prune() == 0
        assert history.prune(older_than_days=1) == 1  # the 29-day-old one
        assert [q.as_of for q in history.query("AAPL:US")] == [now - timedelta(days=1), now]
    finally:
        history.close()


def test_retention_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="retention_days=0"):
        HistoryStore(tmp_path, retention_days=0)


# -- errors ---------------------------------------------------------------------------------


def test_sqlite_errors_become_storage_errors(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(StorageError, match="cannot create history directory"):
        HistoryStore(not_a_dir)

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / HISTORY_FILENAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        HistoryStore(corrupt)

    history = HistoryStore(tmp_path / "ok")
    history.close()
    with pytest.raises(StorageError, match="closed"):
        history.record([make_quote()])
    with pytest.raises(StorageError, match="closed"):
        list(history.query("AAPL:US"))


# -- parse_time_spec ------------------------------------------------------------------------

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("7d", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        ("45s", NOW - timedelta(seconds=45)),
        (" 2H ", NOW - timedelta(hours=2)),
        ("0m", NOW),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:00", datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),
        ("2026-11-01 12:00:30", datetime(2026, 11, 1, 12, 0, 30, tzinfo=UTC)),
        ("2026-11-01T12:00+01:00", datetime(2026, 11, 1, 11, 0, tzinfo=UTC)),
        ("2026-03-08T03:30-04:00", datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),
        ("2026-11-01T12:00:00Z", datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),
    ],
)
def test_parse_time_spec(text: str, expected: datetime) -> None:
    parsed = parse_time_spec(text, NOW)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_parse_time_spec_converts_a_zoned_now_to_utc() -> None:
    parsed = parse_time_spec("1h", NOW.astimezone(NEW_YORK))
    assert parsed == NOW - timedelta(hours=1) and parsed.tzinfo == UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2h30m", "-2h", "2026-13-01", "12x", "h"])
def test_parse_time_spec_rejects_bad_input_clearly(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid time .*: use a duration ago like 30m"):
        parse_time_spec(text, NOW)


def test_connections_of_ended_threads_are_closed(tmp_path: Path) -> None:
    """The daemon serves each control request on a thread of its own: 200 requests that each
    touch the history must not leave 200 open connections behind."""
    store = HistoryStore(tmp_path / "history")
    try:
        for _ in range(200):
            worker = threading.Thread(target=store.count)
            worker.start()
            worker.join()
        store.count()  # this thread's own connection
        assert store.open_connections <= 2
        assert store.count() == 0
    finally:
        store.close()
