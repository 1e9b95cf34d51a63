"""Status at scale: a watchlist edit writes the same few records at 1,000 symbols as at 1, the
cache's decoded quotes are reused across 10,000 symbols (they were thrown away past ~4,000),
its counters and last-known quotes follow every write, and the daemon sends `crawler status`
only the rows it draws (stale and pending first) with counts of them all.

Timings are the benchmark's job (`python -m bench status`); these check the behaviour."""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import diskcache
import pytest

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.store.cache import QuoteCache
from crawler.store.datadir import CACHE_SUBDIR, WATCHLIST_SUBDIR, JSONOnlyDisk
from crawler.store.watchlist import Watchlist
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness


def _written_since(directory: Path, since: float) -> set[str]:
    """Keys of the records diskcache stored at or after `since` (its own store_time)."""
    conn = sqlite3.connect(f"file:{directory / 'cache.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT key FROM Cache WHERE store_time >= ?", (since,)).fetchall()
    finally:
        conn.close()
    # JSONDisk stores each key as zlib-compressed JSON.
    return {json.loads(zlib.decompress(key)) for (key,) in rows}


def test_a_watchlist_edit_writes_a_few_records_whatever_its_size(tmp_path: Path) -> None:
    watchlist = Watchlist(tmp_path)
    for i in range(1000):
        assert watchlist.add(f"W{i:04d}:US", AssetClass.STOCKS)
    before = time.time()
    assert watchlist.add("LAST:US", AssetClass.STOCKS)
    assert _written_since(tmp_path, before) == {"sym:LAST:US", "seq", "count", "version"}
    before = time.time()
    assert watchlist.remove("W0500:US")
    assert _written_since(tmp_path, before) == {"count", "version"}
    items = watchlist.items()
    assert len(items) == len(watchlist) == 1000
    assert items[0] == ("W0000:US", AssetClass.STOCKS) and items[-1][0] == "LAST:US"
    assert "W0500:US" not in [name for name, _ in items] and "W0500:US" not in watchlist
    # Another process's edit is seen: the version moved.
    other = Watchlist(tmp_path)
    assert other.add("OTHER:US", AssetClass.STOCKS)
    assert watchlist.items()[-1] == ("OTHER:US", AssetClass.STOCKS)
    other.close()
    watchlist.close()


def test_a_watchlist_written_as_one_record_is_converted_in_order(tmp_path: Path) -> None:
    old = diskcache.Cache(str(tmp_path), disk=JSONOnlyDisk, eviction_policy="none")
    old.set("items", [["VOD:LN", "stocks"], ["EURUSD:CUR", "forex"], ["AAPL:US", "stocks"]])
    old.close()
    watchlist = Watchlist(tmp_path)
    assert watchlist.items() == [
        ("VOD:LN", AssetClass.STOCKS),
        ("EURUSD:CUR", AssetClass.FOREX),
        ("AAPL:US", AssetClass.STOCKS),
    ]
    assert watchlist.add("MSFT:US", AssetClass.STOCKS) and len(watchlist) == 4
    assert watchlist.add("VOD:LN", AssetClass.STOCKS) is False
    watchlist.close()


def _quote(i: int) -> Quote:
    return Quote(
        symbol=f"C{i:05d}:US",
        price=Decimal(i) + Decimal("0.5"),
        source="bright_data",
        as_of=datetime(2026, 11, 27, 16, tzinfo=UTC),
    )


def test_decoded_quotes_are_reused_across_10000_symbols(tmp_path: Path) -> None:
    cache = QuoteCache(tmp_path, ttl_s=3600, clock=lambda: 1000.0)
    quotes = [_quote(i) for i in range(10_000)]
    for quote in quotes:
        cache.put(quote)
    first = [cache.get(q.symbol) for q in quotes]
    again = [cache.get(q.symbol) for q in quotes]
    # The same objects: the second pass decoded nothing (past ~4,000 it decoded everything).
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert [q.price for q in again if q is not None] == [q.price for q in quotes]
    cache.close()


def test_counters_and_last_known_quotes_follow_every_write(tmp_path: Path) -> None:
    now = [1000.0]
    cache = QuoteCache(tmp_path, ttl_s=60, clock=lambda: now[0])
    for i in range(3):
        cache.put(_quote(i))
    stats = cache.statistics()
    assert (stats["size"], stats["last_known"]) == (3, 3)
    cache.put(_quote(3))
    newer = Quote(symbol="C00000:US", price=Decimal("99"), source="yfinance")
    cache.put(newer)
    stats = cache.statistics()
    assert (stats["size"], stats["last_known"]) == (4, 4)
    cache.put_many([_quote(4), _quote(5)])  # the live stream's batches too
    stats = cache.statistics()
    assert (stats["size"], stats["last_known"]) == (6, 6)
    assert cache.last_known_many(["C00005:US"])["C00005:US"].price == Decimal("5.5")
    known = cache.last_known_many(["C00000:US", "C00003:US", "NOPE:US"])
    assert set(known) == {"C00000:US", "C00003:US"}
    assert known["C00000:US"].price == Decimal("99") and known["C00000:US"].stale
    now[0] += 61
    assert cache.cleanup() == 6
    stats = cache.statistics()
    assert (stats["size"], stats["last_known"]) == (0, 6)  # last-known quotes stay
    assert cache.clear() == 6
    stats = cache.statistics()
    assert (stats["size"], stats["last_known"]) == (0, 0)
    assert cache.last_known_many(["C00000:US"]) == {}
    cache.close()


# -- the daemon: rows the CLI draws ---------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    """1,000 symbols tracked; the first 990 have a last-known quote (10 are never fetched),
    and 4 of those (R0199, R0399, R0599, R0799) are a year old (stale)."""
    with FakeMarket() as market:
        harness = DaemonHarness(market, tmp_path_factory.mktemp("scale"))
        watchlist = Watchlist(harness.data_dir / WATCHLIST_SUBDIR)
        cache = QuoteCache(harness.data_dir / CACHE_SUBDIR, ttl_s=900)
        now = datetime.now(UTC)
        for i in range(1000):
            symbol = f"R{i:04d}:US"
            watchlist.add(symbol, AssetClass.STOCKS)
            if i < 990:
                old = i % 200 == 199
                when = now.replace(year=now.year - 1) if old else now
                cache.put(
                    Quote(
                        symbol=symbol,
                        price=Decimal(i),
                        source="bright_data",
                        as_of=when,
                        fetched_at=when,
                    )
                )
        watchlist.close()
        cache.close()
        harness.start()
        try:
            yield harness
        finally:
            assert harness.stop() == 0


def test_status_sends_the_rows_asked_for_prices_first(daemon: DaemonHarness) -> None:
    """Stale rows first (they need a look and have a price), then fresh ones; the pending ones
    (no price) last, with why they wait in `pending_reasons` (issue 22: 150 pending rows once
    filled the whole screen and no price was on it)."""
    body = daemon.client().call("GET", "/status", query={"rows": "50"})
    symbols = [entry["symbol"] for entry in body["symbols"]]
    assert len(symbols) == 50
    summary = body["symbols_summary"]
    assert summary["tracked"] == 1000 and summary["shown"] == 50
    assert (summary["pending"], summary["stale"]) == (10, 4)
    assert symbols[:4] == ["R0199:US", "R0399:US", "R0599:US", "R0799:US"]
    assert all(e["last_quote"] is not None for e in body["symbols"])
    (waiting,) = summary["pending_reasons"]
    assert waiting["count"] == 10
    assert waiting["symbols"] == [f"R{i:04d}:US" for i in range(990, 995)]
    everything = daemon.client().call("GET", "/status")
    assert len(everything["symbols"]) == 1000
    assert [e["symbol"] for e in everything["symbols"]][:3] == ["R0000:US", "R0001:US", "R0002:US"]


def test_crawler_status_draws_50_and_says_how_many_more(daemon: DaemonHarness) -> None:
    result = daemon.cli("status")
    assert result.returncode == 0, result.stderr
    assert "symbols: 1,000 tracked" in result.stdout and ", 10 pending" in result.stdout
    assert "… and 950 more: `crawler status --json` lists all" in result.stdout
    as_json = json.loads(daemon.cli("status", "--json").stdout)
    assert len(as_json["symbols"]) == 1000
