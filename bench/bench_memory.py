"""Benchmark 4, daemon memory: RSS of `crawler start --foreground` after start, after its
watchlist of N symbols (1,000; --quick 100) was added through the socket, after 3 collections,
and after C collections (100; --quick 10), each triggered with POST /collect.

The fake market answers at once (no latency). CACHE_TTL_SECONDS=1 and a 1.05 s pause after each
collection, so every collection fetches every symbol again instead of reading the cache. The
sources are the default order (Bright Data, then yfinance) with a budget no run can spend, so
Bright Data serves everything: `--sources yfinance` measures the yfinance-only daemon instead
(slower: yfinance costs several times more CPU per quote). Growth is RSS after C minus RSS
after 3 (the first collections fill caches and pools that then stay).
Target: peak RSS at most 150 MB, growth under 2 MB.

    python bench/bench_memory.py [--quick] [--symbols 1000] [--collections 100]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    DaemonProcess,
    fake_market,
    finish,
    generated_symbols,
    median,
    parser,
    rss_kib,
)

__all__ = ["main"]

TARGET_PEAK_MB = 150.0
TARGET_GROWTH_MB = 2.0
CACHE_TTL_S = 1.0
WARMUP_COLLECTIONS = 3


def _mb(kib: int) -> float:
    return round(kib / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--symbols", type=int, default=1000)
    args_parser.add_argument("--collections", type=int, default=100)
    args_parser.add_argument(
        "--sources", default="bright_data,yfinance", help="SOURCES_ORDER for the daemon"
    )
    args = args_parser.parse_args(argv)
    n, collections = (100, 10) if args.quick else (args.symbols, args.collections)
    collections = max(collections, WARMUP_COLLECTIONS + 1)
    env = {"CACHE_TTL_SECONDS": str(int(CACHE_TTL_S)), "SOURCES_ORDER": args.sources}
    rss: dict[str, int] = {}
    samples: list[int] = []
    durations: list[float] = []
    fetched: list[int] = []
    errors = 0
    with fake_market() as market, DaemonProcess(market, env) as daemon:
        pid = daemon.pid
        time.sleep(0.5)  # let start-up settle (threads, first allocations)
        rss["start"] = rss_kib(pid)
        added = daemon.add_symbols(generated_symbols(n))
        assert added == n, f"only {added} of {n} symbols were added"
        rss["watchlist"] = rss_kib(pid)
        print(
            f"daemon memory, {n} symbols, {collections} collections, sources {args.sources}; "
            f"start-up {daemon.startup_s:.2f} s"
        )
        print(f"  after start            {_mb(rss['start']):7.1f} MB")
        print(f"  after watchlist        {_mb(rss['watchlist']):7.1f} MB")
        for number in range(1, collections + 1):
            started = time.perf_counter()
            report = daemon.collect()
            elapsed = time.perf_counter() - started
            durations.append(elapsed)
            sources = report.get("sources", {})
            fetched.append(sum(count for name, count in sources.items() if name != "cache"))
            errors += len(report.get("errors", {}))
            for _ in range(2):
                daemon.client.get("/status")
            samples.append(rss_kib(pid))
            if number == WARMUP_COLLECTIONS:
                rss["after_3"] = samples[-1]
            if number in (1, WARMUP_COLLECTIONS) or number % 10 == 0 or number == collections:
                print(
                    f"  after collection {number:<5} {_mb(samples[-1]):7.1f} MB   "
                    f"({elapsed:.2f} s, {fetched[-1]} fetched, {sources.get('cache', 0)} cached)"
                )
            # Every quote must be older than the TTL when the next collection reads it.
            time.sleep(CACHE_TTL_S + 0.05)
        rss["final"] = samples[-1]
        rss["hwm"] = rss_kib(pid, "VmHWM")
        # What grew on disk (a store whose file grows also grows its SQLite page cache).
        store_mb = {
            path.name: round(
                sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1
            )
            for path in sorted(daemon.data_dir.iterdir())
            if path.is_dir()
        }

    growth_mb = round((rss["final"] - rss["after_3"]) / 1024, 2)
    peak_mb = _mb(max([rss["hwm"], rss["start"], rss["watchlist"], *samples]))
    print(
        f"  growth from collection {WARMUP_COLLECTIONS} to {collections}: {growth_mb:+.2f} MB; "
        f"peak {peak_mb:.1f} MB; median collection {median(durations):.2f} s"
    )
    print("  data directory: " + ", ".join(f"{k} {v} MB" for k, v in store_mb.items()))
    figures: dict[str, Any] = {
        "symbols": n,
        "collections": collections,
        "sources": args.sources,
        "rss_start_mb": _mb(rss["start"]),
        "rss_watchlist_mb": _mb(rss["watchlist"]),
        "rss_after_3_mb": _mb(rss["after_3"]),
        "rss_final_mb": _mb(rss["final"]),
        "rss_peak_mb": peak_mb,
        "rss_hwm_mb": _mb(rss["hwm"]),
        "growth_mb": growth_mb,
        "collection_median_s": round(median(durations), 3),
        "fetched_min": min(fetched),
        "errors": errors,
        "store_mb": store_mb,
    }
    return finish(
        "memory",
        figures,
        target=f"rss_peak_mb <= {TARGET_PEAK_MB:g} and growth_mb < {TARGET_GROWTH_MB:g}",
        met=peak_mb <= TARGET_PEAK_MB and growth_mb < TARGET_GROWTH_MB,
    )


if __name__ == "__main__":
    sys.exit(main())
