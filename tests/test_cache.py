"""QuoteCache: TTL on an injected clock, last-known quotes, corruption, and never unpickling."""

from __future__ import annotations

import os
import pickle
import sqlite3
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import diskcache
import pytest
from diskcache.core import MODE_PICKLE

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.store.cache import QuoteCache
from crawler.utils.exceptions import ConfigError, StorageError

TTL_S = 60.0


class FakeClock:
    """Epoch seconds the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.current = start

    def __call__(self) -> float:
        return self.current


def quote(symbol: str = "AAPL:US", price: str = "262.36") -> Quote:
    return Quote(
        symbol=symbol,
        price=Decimal(price),
        source="bright_data",
        currency="USD",
        change=Decimal("-4.90"),
        change_pct=Decimal("-1.83"),
        open=Decimal("265.000"),
        high=Decimal("266.1"),
        low=Decimal("0.000001"),
        previous_close=Decimal("267.26"),
        volume=51_234_567,
        as_of=datetime(2026, 11, 28, 16, 0, tzinfo=UTC),
        fetched_at=datetime(2026, 11, 28, 16, 0, 3, tzinfo=UTC),
        asset_class=AssetClass.STOCKS,
        name="Apple Inc",
    )


def make_cache(directory: Path, clock: FakeClock) -> QuoteCache:
    return QuoteCache(directory, ttl_s=TTL_S, clock=clock)


def test_ttl_uses_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = make_cache(tmp_path, clock)
    cache.put(quote())
    clock.current += TTL_S - 0.001
    fresh = cache.get("AAPL:US")
    assert fresh is not None
    assert fresh.from_cache and not fresh.stale
    clock.current += 0.001
    assert cache.get("AAPL:US") is None


def test_hits_and_misses_are_counted(tmp_path: Path) -> None:
    cache = make_cache(tmp_path, FakeClock())
    assert cache.get("AAPL:US") is None
    cache.put(quote())
    for _ in range(3):
        assert cache.get("AAPL:US") is not None
    stats = cache.statistics()
    assert (stats["hits"], stats["misses"]) == (3, 1)
    assert stats["hit_rate_pct"] == 75.0


def test_round_trip_keeps_decimals_exact(tmp_path: Path) -> None:
    cache = make_cache(tmp_path, FakeClock())
    original = quote(price="262.360")
    cache.put(original)
    got = cache.get("AAPL:US")
    assert got == original.with_flags(from_cache=True)
    assert got is not None
    assert str(got.price) == "262.360"  # the trailing zero survives: strings, not floats
    assert str(got.open) == "265.000"
    assert got.low == Decimal("0.000001")


def test_cleanup_removes_expired_and_keeps_last_known(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = make_cache(tmp_path, clock)
    cache.put(quote("AAPL:US"))
    cache.put(quote("MSFT:US"))
    clock.current += 30
    cache.put(quote("EURUSD:CUR", price="1.0842"))
    clock.current += 40  # the first two are 70 s old, the third 40 s
    stats = cache.statistics()
    # `expired` is what the last cleanup found: statistics() reads no entry to measure it.
    assert (stats["size"], stats["expired"], stats["last_known"]) == (3, 0, 3)
    assert (stats["entries"], stats["expired_checked_at"]) == (6, None)
    assert cache.cleanup() == 2
    stats = cache.statistics()
    assert (stats["size"], stats["expired"], stats["last_known"]) == (1, 2, 3)
    assert stats["expired_checked_at"] == clock.current
    assert cache.cleanup() == 0
    assert cache.statistics()["size"] == 1
    assert cache.statistics()["expired"] == 0
    assert cache.get("EURUSD:CUR") is not None
    last = cache.get_last_known("AAPL:US")
    assert last is not None
    assert last.from_cache and last.stale
    assert last.price == Decimal("262.36")
    assert cache.get_last_known("NOPE:US") is None


def test_statistics_reads_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon asks for statistics on every status request: keys only, never values."""
    cache = make_cache(tmp_path, FakeClock())
    for index in range(5):
        cache.put(quote(f"T{index}:US"))

    def no_reads(*args: object, **kwargs: object) -> object:
        raise AssertionError("statistics() read an entry")

    monkeypatch.setattr(cache._cache, "get", no_reads)
    monkeypatch.setattr(cache._cache, "__getitem__", no_reads, raising=False)
    stats = cache.statistics()
    assert (stats["size"], stats["last_known"], stats["entries"]) == (5, 5, 10)


def test_put_replaces_the_last_known_copy(tmp_path: Path) -> None:
    cache = make_cache(tmp_path, FakeClock())
    cache.put(quote(price="1"))
    cache.put(quote(price="2").with_flags(from_cache=True, stale=True))
    last = cache.get_last_known("AAPL:US")
    assert last is not None and last.price == Decimal("2")
    assert cache.statistics()["last_known"] == 1
    fresh = cache.get("AAPL:US")
    assert fresh is not None and not fresh.stale  # flags describe the copy, not the stored one


def test_two_instances_share_one_directory(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = make_cache(tmp_path, clock)
    reader = make_cache(tmp_path, clock)
    assert reader.get("AAPL:US") is None
    writer.put(quote())
    assert reader.get("AAPL:US") == quote().with_flags(from_cache=True)
    assert reader.cleanup() == 0
    clock.current += TTL_S
    assert reader.cleanup() == 1
    assert writer.get("AAPL:US") is None
    assert writer.get_last_known("AAPL:US") is not None


def test_clear_and_volume(tmp_path: Path) -> None:
    cache = make_cache(tmp_path, FakeClock())
    cache.put(quote("AAPL:US"))
    cache.put(quote("MSFT:US"))
    assert cache.statistics()["volume_bytes"] > 0
    assert cache.clear() == 4  # two fresh, two last-known
    stats = cache.statistics()
    assert (stats["size"], stats["last_known"]) == (0, 0)
    assert cache.get_last_known("AAPL:US") is None


def test_bad_ttl_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        QuoteCache(tmp_path, ttl_s=0)


# -- corruption -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "planted",
    [
        "a string, not an object",
        {"stored_at": "yesterday", "quote": {}},
        {"stored_at": 1_800_000_000.0},
        {"stored_at": 1_800_000_000.0, "quote": {"symbol": "AAPL:US"}},  # no price
        {
            "stored_at": 1_800_000_000.0,
            "quote": {"symbol": "AAPL:US", "price": "abc", "source": "x"},
        },
    ],
)
def test_malformed_entry_is_a_miss_and_is_deleted(tmp_path: Path, planted: object) -> None:
    cache = make_cache(tmp_path, FakeClock())
    cache.put(quote())
    # Plant through diskcache itself (JSON), as a buggy or older writer would.
    raw = diskcache.Cache(str(tmp_path), disk=diskcache.JSONDisk)
    raw.set("quote:AAPL:US", planted)
    raw.set("last:AAPL:US", planted)
    raw.close()
    assert cache.get("AAPL:US") is None
    assert cache.get_last_known("AAPL:US") is None
    assert cache.statistics()["misses"] == 1
    assert cache.statistics()["size"] == 0  # deleted, not left to fail again
    cache.put(quote())
    assert cache.get("AAPL:US") is not None


def test_undecodable_bytes_are_a_miss(tmp_path: Path) -> None:
    cache = make_cache(tmp_path, FakeClock())
    cache.put(quote())
    with sqlite3.connect(tmp_path / "cache.db") as con:
        con.execute("UPDATE Cache SET value = ?", (zlib.compress(b"{not json"),))
    con.close()
    assert cache.get("AAPL:US") is None
    assert cache.get_last_known("AAPL:US") is None


@pytest.mark.parametrize("content", [b"this is not an SQLite database" * 100, b""])
def test_a_corrupt_or_empty_database_is_moved_aside_and_rebuilt(
    tmp_path: Path, content: bytes
) -> None:
    """The cache is disposable: issue 13 wants it rebuilt, not a blocked start."""
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / "cache.db").write_bytes(content)
    cache = make_cache(directory, FakeClock())
    try:
        cache.put(quote())
        assert cache.get_last_known("AAPL:US") is not None
    finally:
        cache.close()
    (aside,) = tmp_path.glob("cache.corrupt-*")
    assert (aside / "cache.db").read_bytes() == content


def test_unwritable_directory_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="DATA_DIR"):
        make_cache(blocker / "cache", FakeClock())


# -- CVE-2025-69872: nothing read from disk is unpickled -------------------------------------


class Exploit:
    """Unpickling this runs os.mkdir(marker): proof of code execution, harmless otherwise."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def plant_pickle_values(directory: Path, payload: bytes) -> None:
    """Turn every stored value into a pickle row, inline or in a file, as an attacker would."""
    evil_file = directory / "ev" / "il" / "payload.val"
    evil_file.parent.mkdir(parents=True)
    evil_file.write_bytes(payload)
    with sqlite3.connect(directory / "cache.db") as con:
        con.execute(
            "UPDATE Cache SET mode = ?, value = ?, filename = NULL WHERE rowid % 2 = 1",
            (MODE_PICKLE, payload),
        )
        con.execute(
            "UPDATE Cache SET mode = ?, value = NULL, filename = ? WHERE rowid % 2 = 0",
            (MODE_PICKLE, "ev/il/payload.val"),
        )
    con.close()


def test_planted_pickle_would_run_under_plain_diskcache(tmp_path: Path) -> None:
    """The control: the planted rows are live exploits for diskcache's own JSONDisk."""
    marker = tmp_path / "pwned"
    store = tmp_path / "store"
    make_cache(store, FakeClock()).put(quote())
    plant_pickle_values(store, pickle.dumps(Exploit(marker)))
    plain = diskcache.Cache(str(store), disk=diskcache.JSONDisk)
    # The payload runs first; its result (None) is not zlib, so JSONDisk then fails.
    with pytest.raises(TypeError):
        plain.get("quote:AAPL:US")
    plain.close()
    assert marker.exists()


def test_planted_pickle_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = tmp_path / "store"
    cache = make_cache(store, FakeClock())
    cache.put(quote())
    plant_pickle_values(store, pickle.dumps(Exploit(marker)))
    assert cache.get("AAPL:US") is None  # inline pickle or file pickle: a miss either way
    assert cache.get_last_known("AAPL:US") is None
    assert cache.cleanup() == 0
    cache.statistics()
    assert not marker.exists()
    # Both rows were deleted as corrupt.
    with sqlite3.connect(store / "cache.db") as con:
        assert con.execute("SELECT COUNT(*) FROM Cache").fetchone() == (0,)
    con.close()


def test_planted_pickled_key_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cache = make_cache(tmp_path, FakeClock())
    cache.put(quote())
    payload = pickle.dumps(Exploit(marker))
    with sqlite3.connect(tmp_path / "cache.db") as con:
        # raw = 0 tells diskcache the key is a pickle; iterating keys would load it.
        con.execute(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
            " tag, size, mode, filename, value) VALUES (?, 0, 0, NULL, 0, 0, NULL, 0, ?, NULL, ?)",
            (payload, MODE_PICKLE, payload),
        )
    con.close()
    stats = cache.statistics()  # iterates every key
    assert stats["size"] == 1
    assert cache.cleanup() == 0
    assert cache.clear() == 3
    assert not marker.exists()


def test_a_reused_decoded_quote_keeps_each_readers_flags_and_sees_rewrites(tmp_path: Path) -> None:
    """The decoded-quote memo must never hand `get` a copy flagged for another reader, nor
    an old quote after another writer replaced the entry."""
    clock = [1000.0]
    cache = QuoteCache(tmp_path / "cache", ttl_s=60, clock=lambda: clock[0])
    other = QuoteCache(tmp_path / "cache", ttl_s=60, clock=lambda: clock[0])
    first = Quote(symbol="AAPL:US", price=Decimal("1.00"), source="yfinance")
    cache.put(first)
    cache.cleanup()  # reads the entry without flags
    got = cache.get("AAPL:US")
    assert got is not None and got.from_cache and not got.stale
    last = cache.get_last_known("AAPL:US")
    assert last is not None and last.from_cache and last.stale
    clock[0] += 1
    other.put(Quote(symbol="AAPL:US", price=Decimal("2.00"), source="yfinance"))
    again = cache.get("AAPL:US")
    assert again is not None and again.price == Decimal("2.00")
