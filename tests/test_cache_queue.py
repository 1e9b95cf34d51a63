"""While fetches overlap, the embedded cache queues their puts for the last one to write.

The source chain holds the cache around each fetch (`hold`/`unhold`). This process reads a
queued put at once; another process (a second `QuoteCache` on the same directory, its own
SQLite connections) reads it once written: when the last holder lets go, when 64 wait, when
the oldest has waited half a second (an injected monotonic clock), or at `close()`. Real
diskcache directories; a real hybrid fetching from the fake market over HTTP.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

from crawler.normalizer.schemas import Quote
from crawler.orchestrator import HybridDataSource
from crawler.sources.bright_data import BrightDataSource
from crawler.store.cache import QuoteCache
from crawler.store.cache.embedded import _QUEUE_MAX, _QUEUE_S
from crawler.store.ledger import BudgetLedger
from fakemarket.brightdata import BrightDataFake
from tests.test_cache import TTL_S, FakeClock, quote


class FakeMonotonic:
    def __init__(self) -> None:
        self.current = 100.0

    def __call__(self) -> float:
        return self.current


def _pair(directory: Path) -> tuple[QuoteCache, QuoteCache, FakeMonotonic]:
    """The cache under test and another reader of its directory."""
    mono = FakeMonotonic()
    clock = FakeClock()
    cache = QuoteCache(directory, ttl_s=TTL_S, clock=clock, monotonic=mono)
    return cache, QuoteCache(directory, ttl_s=TTL_S, clock=clock), mono


def test_the_last_fetch_to_let_go_writes_what_the_others_put(tmp_path: Path) -> None:
    cache, other, _ = _pair(tmp_path)
    cache.hold()
    cache.hold()
    cache.put(quote("AAPL:US", "262.36"))
    mine = cache.get("AAPL:US")
    assert mine is not None and mine.price == Decimal("262.36") and mine.from_cache
    last = cache.get_last_known("AAPL:US")
    assert last is not None and last.stale
    assert set(cache.last_known_many(["AAPL:US"])) == {"AAPL:US"}
    assert cache.statistics()["size"] == 1
    assert other.get("AAPL:US") is None  # not written yet
    cache.unhold()
    assert other.get("AAPL:US") is None  # one fetch still holds it
    cache.unhold()
    written = other.get("AAPL:US")
    assert written is not None and written.price == Decimal("262.36")


def test_nothing_held_writes_at_once(tmp_path: Path) -> None:
    cache, other, _ = _pair(tmp_path)
    cache.put(quote("AAPL:US"))
    assert other.get("AAPL:US") is not None


def test_a_long_burst_is_written_every_64_puts_and_every_half_second(tmp_path: Path) -> None:
    cache, other, mono = _pair(tmp_path)
    cache.hold()
    for i in range(_QUEUE_MAX - 1):
        cache.put(quote(f"Q{i}:US"))
    assert other.get("Q0:US") is None
    cache.put(quote(f"Q{_QUEUE_MAX - 1}:US"))
    assert all(other.get(f"Q{i}:US") is not None for i in range(_QUEUE_MAX))
    cache.put(quote("LATE:US"))
    mono.current += _QUEUE_S / 2
    cache.put(quote("LATER:US"))
    assert other.get("LATE:US") is None
    mono.current += _QUEUE_S / 2
    cache.put(quote("LAST:US"))
    assert all(other.get(s) is not None for s in ("LATE:US", "LATER:US", "LAST:US"))
    cache.unhold()


def test_close_writes_the_queue_and_clear_drops_it(tmp_path: Path) -> None:
    cache, other, _ = _pair(tmp_path)
    cache.hold()
    cache.put(quote("GONE:US"))
    cache.clear()
    assert cache.get("GONE:US") is None
    cache.put(quote("KEPT:US"))
    cache.close()
    assert other.get("KEPT:US") is not None
    assert other.get("GONE:US") is None


def test_a_hybrid_batch_leaves_every_paid_quote_on_disk_when_it_returns(
    tmp_path: Path, bright_data_fake: BrightDataFake
) -> None:
    """16 workers fetch 80 symbols from the fake Bright Data: their puts overlap (queued),
    and once `fetch_many` returns another process reads every one of them."""
    symbols = [f"Q{i:03d}:US" for i in range(80)]
    bright_data_fake.faults.set("*", latency_s=0.02)
    cache = QuoteCache(tmp_path / "cache", ttl_s=900)
    ledger = BudgetLedger(tmp_path / "ledger", Decimal("10"), Decimal("0.0015"))
    source = BrightDataSource(bright_data_fake.url, "test-key", "web_unlocker1", ledger)
    hybrid = HybridDataSource(sources=[source], cache=cache, ledger=ledger, max_workers=16)
    other = QuoteCache(tmp_path / "cache", ttl_s=900)
    try:
        results = hybrid.fetch_many(symbols)
        assert all(isinstance(results[s], Quote) for s in symbols), results
        assert all(other.get(s) is not None for s in symbols)
        assert ledger.statistics()["requests_billed"] == bright_data_fake.billed_count == 80
    finally:
        hybrid.cleanup()
        other.close()
        cache.close()
        ledger.close()


def test_once_loaded_the_fresh_check_reads_memory_and_keeps_the_ttl(tmp_path: Path) -> None:
    """After `last_known_many` (the daemon's start), `get` is answered from memory: this
    process's writes are there at once, the TTL still applies (injected clock), and a write by
    another process after the load is not seen (the daemon is the one writer)."""
    clock = FakeClock()
    cache = QuoteCache(tmp_path, ttl_s=TTL_S, clock=clock)
    other = QuoteCache(tmp_path, ttl_s=TTL_S, clock=clock)
    other.put(quote("OLD:US"))
    cache.last_known_many(())
    other.put(quote("LATER:US"))
    cache.put(quote("MINE:US", "1.5"))
    assert cache.get("LATER:US") is None  # written elsewhere after the load
    mine, old = cache.get("MINE:US"), cache.get("OLD:US")
    assert mine is not None and mine.price == Decimal("1.5") and mine.from_cache
    assert old is not None and not old.stale
    clock.current += TTL_S
    assert cache.get("MINE:US") is None and cache.get("OLD:US") is None
    last = cache.get_last_known("MINE:US")
    assert last is not None and last.stale
    assert cache.statistics()["hits"] == 2


def test_puts_made_while_the_last_known_quotes_load_are_not_lost(tmp_path: Path) -> None:
    """The daemon loads every last-known quote in a thread at start while its first
    collection writes: a put written after the load listed the keys, before it installed the
    map, used to be missing from memory (no quote in status, a paid refetch) until its next put."""
    clock = FakeClock()
    QuoteCache(tmp_path, ttl_s=TTL_S, clock=clock).put_many(
        [quote(f"OLD{i:04d}:US") for i in range(3_000)]
    )
    cache = QuoteCache(tmp_path, ttl_s=TTL_S, clock=clock)
    loaded = threading.Event()
    loader = threading.Thread(target=lambda: (cache.last_known_many(()), loaded.set()))
    loader.start()
    written: list[str] = []
    while not loaded.is_set():
        written.append(f"NEW{len(written):05d}:US")
        cache.put(quote(written[-1]))
    loader.join()
    assert len(written) > 10
    assert set(cache.last_known_many(written)) == set(written)
    assert all(cache.get(symbol) is not None for symbol in written)
