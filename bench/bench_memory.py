"""Benchmark 4, daemon memory at default settings: VmRSS and VmHWM of `crawler start
--foreground` watching N symbols (1,000; --quick 100) through C collections (10; --quick 4).

Default settings throughout: market hours on, the default cache TTL (900 s) and collection
interval (900 s, the scheduler running), the live stream on (pointed at the fake market's
streamer), Yahoo's default rate limit. Only the sources are chosen: `yfinance`, what a daemon
without a Bright Data key uses (`--sources bright_data,yfinance` gives the key and a budget no
run can spend). The watchlist is added through the socket (POST /symbols, one connection each,
as `crawler symbols add` does), each collection is forced through the socket (POST /collect),
and S `/status` calls (3; what `crawler status` and monitors do) follow every collection.

So what a collection fetches depends on the clock, as in production: with the market closed a
symbol quoted since its last close is skipped, and within the TTL a quote is a cache hit. Each
line says what the collection fetched, skipped and read from the cache.

The baseline is the same daemon at start (nothing tracked): every figure is also given as its
ratio to that. Growth is VmRSS after the last collection minus VmRSS after the third (the first
ones fill caches and pools that then stay). VmHWM is the kernel's peak, which samples miss.
Target: VmHWM at most 150 MB, growth under 2 MB.

    python bench/bench_memory.py [--quick] [--symbols 1000] [--collections 10] [--status-calls 3]
"""

from __future__ import annotations

import os
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
    ratio,
    rss_kib,
)

__all__ = ["main"]

TARGET_PEAK_MB = 150.0
TARGET_GROWTH_MB = 2.0
WARMUP_COLLECTIONS = 3


def _mb(kib: int) -> float:
    return round(kib / 1024, 1)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds process `pid` has used (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _default_settings(sources: str) -> dict[str, str]:
    """The daemon's environment on top of `daemon_environment`: its test-friendly overrides
    (no schedule, no market hours) put back to the defaults."""
    env = {
        "SOURCES_ORDER": sources,
        "AUTO_UPDATE_ENABLED": "true",
        "MARKET_HOURS_ENABLED": "true",
        "LOG_LEVEL": "info",
    }
    if "bright_data" not in sources:
        env["BRIGHT_DATA_API_KEY"] = ""  # a user without a key
    return env


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--symbols", type=int, default=1000)
    args_parser.add_argument("--collections", type=int, default=10)
    args_parser.add_argument("--status-calls", type=int, default=3, help="after each collection")
    args_parser.add_argument(
        "--sources", default="yfinance", help="SOURCES_ORDER for the daemon (default: no key)"
    )
    args = args_parser.parse_args(argv)
    n, collections = (100, 4) if args.quick else (args.symbols, args.collections)
    collections = max(collections, WARMUP_COLLECTIONS + 1)
    rss: dict[str, int] = {}
    samples: list[int] = []
    durations: list[float] = []
    daemon_cpu_s: list[float] = []
    totals = {"fetched": 0, "skipped_closed": 0, "cached": 0, "errors": 0}
    with fake_market() as market, DaemonProcess(market, _default_settings(args.sources)) as daemon:
        pid = daemon.pid
        time.sleep(0.5)  # let start-up settle (threads, first allocations)
        rss["start"] = rss_kib(pid)
        added = daemon.add_symbols(generated_symbols(n))
        assert added == n, f"only {added} of {n} symbols were added"
        rss["watchlist"] = rss_kib(pid)
        print(
            f"daemon memory at default settings, {n} symbols, {collections} collections, "
            f"{args.status_calls} /status after each, sources {args.sources}; "
            f"start-up {daemon.startup_s:.2f} s"
        )
        print(f"  after start (baseline) {_mb(rss['start']):7.1f} MB")
        print(
            f"  after watchlist        {_mb(rss['watchlist']):7.1f} MB   "
            f"({ratio(rss['watchlist'], rss['start']):.2f}x start)"
        )
        for number in range(1, collections + 1):
            cpu_before = _cpu_s(pid)
            started = time.perf_counter()
            report = daemon.collect()
            durations.append(time.perf_counter() - started)
            daemon_cpu_s.append(_cpu_s(pid) - cpu_before)
            sources = report.get("sources", {})
            fetched = sum(count for name, count in sources.items() if name != "cache")
            skipped = len(report.get("skipped_closed", []))
            totals["fetched"] += fetched
            totals["skipped_closed"] += skipped
            totals["cached"] += sources.get("cache", 0)
            totals["errors"] += len(report.get("errors", {}))
            for _ in range(args.status_calls):
                status, _body = daemon.client.get("/status")
                assert status == 200, f"/status answered {status}"
            samples.append(rss_kib(pid))
            if number == WARMUP_COLLECTIONS:
                rss["after_3"] = samples[-1]
            print(
                f"  after collection {number:<5} {_mb(samples[-1]):7.1f} MB   "
                f"(VmHWM {_mb(rss_kib(pid, 'VmHWM')):.1f} MB; {durations[-1]:.2f} s, "
                f"daemon CPU {daemon_cpu_s[-1]:.2f} s; {fetched} fetched, "
                f"{skipped} skipped closed, {sources.get('cache', 0)} cached)"
            )
        rss["final"] = samples[-1]
        rss["hwm"] = rss_kib(pid, "VmHWM")
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
        f"VmHWM {peak_mb:.1f} MB = {ratio(rss['hwm'], rss['start']):.2f}x start "
        f"(+{peak_mb - _mb(rss['start']):.1f} MB); median collection {median(durations):.2f} s, "
        f"daemon CPU {median(daemon_cpu_s):.2f} s"
    )
    print("  data directory: " + ", ".join(f"{k} {v} MB" for k, v in store_mb.items()))
    figures: dict[str, Any] = {
        "symbols": n,
        "collections": collections,
        "status_calls_per_collection": args.status_calls,
        "sources": args.sources,
        "rss_start_mb": _mb(rss["start"]),
        "rss_watchlist_mb": _mb(rss["watchlist"]),
        "rss_after_3_mb": _mb(rss["after_3"]),
        "rss_final_mb": _mb(rss["final"]),
        "rss_peak_mb": peak_mb,
        "rss_hwm_mb": _mb(rss["hwm"]),
        "hwm_vs_start": ratio(rss["hwm"], rss["start"]),
        "growth_mb": growth_mb,
        "collection_median_s": round(median(durations), 3),
        "daemon_cpu_s_per_collection_median": round(median(daemon_cpu_s), 3),
        **totals,
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
