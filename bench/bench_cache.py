"""Benchmark 1, cache hits: `HybridDataSource.get_quote` on a warm cache versus a raw
`diskcache.Cache.get` of the same entries (same directory, same keys, JSONDisk). The cache holds
10,000 symbols (--quick 200) and every contender walks all of them in the same order, so the
figures include SQLite's page cache over a real-sized file, not one hot row.

Rounds alternate the contenders so drift on a noisy machine hits both alike; each rate is the
median over rounds. Also shown: `QuoteCache.get` alone, to split the hybrid's overhead between
the cache layer (JSON → Quote) and the hybrid (symbol parsing, the call chain).
Target: the hybrid serves at least 0.5x the raw rate.

    python bench/bench_cache.py [--quick] [--ops 5000] [--rounds 7] [--symbols 10000]
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diskcache

from bench._common import finish, median, parser, ratio
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger

__all__ = ["main"]

TARGET_RATIO = 0.5
SYMBOL = "AAPL:US"


def _quote() -> Quote:
    """A quote with every field set, as a source would store it."""
    return Quote(
        symbol=SYMBOL,
        price=Decimal("262.36"),
        source="bright_data",
        currency="USD",
        change=Decimal("-1.25"),
        change_pct=Decimal("-0.4742"),
        open=Decimal("263.10"),
        high=Decimal("264.00"),
        low=Decimal("261.02"),
        previous_close=Decimal("263.61"),
        volume=52_262_300,
        as_of=datetime(2026, 1, 6, 21, 0, tzinfo=UTC),
        asset_class=AssetClass.STOCKS,
        name="Apple Inc",
    )


def _rate(call: Callable[[], object], ops: int) -> float:
    """Calls per second of `call`, over `ops` calls."""
    started = time.perf_counter()
    for _ in range(ops):
        call()
    return ops / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--ops", type=int, default=5000, help="lookups per round")
    args_parser.add_argument("--rounds", type=int, default=7)
    args_parser.add_argument("--symbols", type=int, default=10_000, help="entries in the cache")
    args = args_parser.parse_args(argv)
    ops, rounds = (200, 3) if args.quick else (args.ops, args.rounds)
    count = 200 if args.quick else args.symbols
    symbols = [f"T{i:05d}:US" for i in range(count)]

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        directory = Path(tmp)
        cache = QuoteCache(directory / "cache", ttl_s=3600)
        template = _quote()
        cache.put(template)
        for symbol in symbols:
            cache.put(dataclasses.replace(template, symbol=symbol))
        ledger = BudgetLedger(directory / "ledger", Decimal("1"), Decimal("0.0015"))
        hybrid = HybridDataSource(cache=cache, ledger=ledger, sources=[])
        raw = diskcache.Cache(
            str(directory / "cache"),
            disk=diskcache.JSONDisk,
            eviction_policy="none",
            statistics=False,
        )
        try:
            key = "quote:" + SYMBOL
            served = hybrid.get_quote(SYMBOL)
            assert served.from_cache and served.price == Decimal("262.36"), served
            assert isinstance(raw.get(key), dict), "the raw cache does not see the entry"
            # Each contender walks every symbol, in the same order.
            raw_keys = itertools.cycle(["quote:" + s for s in symbols])
            cache_keys = itertools.cycle(symbols)
            hybrid_keys = itertools.cycle(symbols)
            contenders: dict[str, Callable[[], object]] = {
                "raw_diskcache_get": lambda: raw.get(next(raw_keys)),
                "quotecache_get": lambda: cache.get(next(cache_keys)),
                "hybrid_get_quote": lambda: hybrid.get_quote(next(hybrid_keys)),
            }
            for call in contenders.values():  # warm up: connections, caches, the JIT of sqlite
                _rate(call, max(ops // 10, 10))
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(rounds):
                for name, call in contenders.items():
                    rates[name].append(_rate(call, ops))
        finally:
            raw.close()
            hybrid.cleanup()
            cache.close()

    ops_per_s = {name: round(median(values)) for name, values in rates.items()}
    hybrid_ratio = ratio(ops_per_s["hybrid_get_quote"], ops_per_s["raw_diskcache_get"])
    cache_ratio = ratio(ops_per_s["quotecache_get"], ops_per_s["raw_diskcache_get"])
    print(f"cache hits over {count:,} symbols, {ops} lookups x {rounds} rounds (median rate)")
    for name, rate in ops_per_s.items():
        print(f"  {name:<20} {rate:>10,} ops/s")
    print(f"  hybrid / raw         {hybrid_ratio:>10.3f}x   (target >= {TARGET_RATIO}x)")
    print(f"  QuoteCache / raw     {cache_ratio:>10.3f}x")
    return finish(
        "cache",
        {
            "ops": ops,
            "rounds": rounds,
            "symbols": count,
            "raw_ops_per_s": ops_per_s["raw_diskcache_get"],
            "quotecache_ops_per_s": ops_per_s["quotecache_get"],
            "hybrid_ops_per_s": ops_per_s["hybrid_get_quote"],
            "hybrid_vs_raw": hybrid_ratio,
            "quotecache_vs_raw": cache_ratio,
        },
        target=f"hybrid_vs_raw >= {TARGET_RATIO}",
        met=hybrid_ratio >= TARGET_RATIO,
    )


if __name__ == "__main__":
    sys.exit(main())
