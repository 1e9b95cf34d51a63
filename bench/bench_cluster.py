"""Benchmark: the Redis backend. Three parts, each against the embedded backend as baseline.

1. Cluster: 3 daemons x 3,000 symbols on one Redis (real `crawler start --foreground`
   processes, the fake market in its own process). All three collect the same watchlist at
   once, for two intervals (between them the fresh entries and leases are dropped, as when an
   interval has passed). Duplicate paid fetches per interval = billed requests (the shared
   ledger's count) minus symbols; target 0.
2. Ledger: reserve+settle pairs per second from 8 threads, Redis (Lua) vs embedded (SQLite
   transaction), rounds interleaved; CPU per operation beside the wall rate.
3. Latency per quote: `HybridDataSource.fetch_many` of fresh quotes from the fake market, and
   `get_quote` cache hits, Redis vs embedded (same work, interleaved rounds): the added
   milliseconds per quote (wall and CPU).

    python bench/bench_cluster.py [--quick] [--symbols 3000] [--rounds 5]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    DaemonProcess,
    bench_settings,
    fake_market,
    finish,
    generated_symbols,
    median,
    parser,
    ratio,
)
from tests.redis_server import RedisServer

__all__ = ["main"]

NODES = 3
LEDGER_THREADS = 8
COST = Decimal("0.0015")


def _cluster(market: Any, redis_url: str, symbols: list[str]) -> dict[str, Any]:
    """Three daemons collect `symbols` together for two intervals; duplicates per interval."""
    import redis

    from crawler.normalizer.schemas import AssetClass
    from crawler.store.redis_client import RedisConnection
    from crawler.store.watchlist import Watchlist
    from crawler.store.watchlist.redis import RedisWatchlist

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        # Seed the shared watchlist directly (3,000 socket round trips would time the CLI).
        conn = RedisConnection(redis_url)
        shared = RedisWatchlist(conn, Watchlist(Path(tmp) / "seed"))
        for symbol in symbols:
            shared.add(symbol, AssetClass.STOCKS)
        shared.close()
        conn.close()
        daemons = [
            DaemonProcess(
                market,
                # Pacing off: every symbol may be paid, so a duplicate would show as money.
                {"REDIS_URL": redis_url, "NODE_NAME": f"node-{i}", "BUDGET_PACING": "off"},
            )
            for i in range(NODES)
        ]
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            for daemon in daemons:
                daemon.start()
            duplicates: list[int] = []
            durations: list[float] = []
            billed_before = 0
            for interval in range(2):
                if interval:  # the next interval: fresh entries and leases have expired
                    for pattern in ("crawler:quote:*", "crawler:lease:*"):
                        keys = client.keys(pattern)
                        for start in range(0, len(keys), 1000):
                            client.delete(*keys[start : start + 1000])
                reports: list[dict[str, Any]] = [{} for _ in daemons]

                def collect(index: int, into: list[dict[str, Any]] = reports) -> None:
                    into[index] = daemons[index].collect()

                started = time.perf_counter()
                threads = [threading.Thread(target=collect, args=(i,)) for i in range(NODES)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                durations.append(time.perf_counter() - started)
                budget = daemons[0].client.call("GET", "/status")["budget"]
                billed = int(budget["requests_billed"])
                duplicates.append(billed - billed_before - len(symbols))
                billed_before = billed
                for report in reports:
                    if report.get("quotes") != len(symbols):
                        print(f"  a node answered {report.get('quotes')}/{len(symbols)}: "
                              f"{list(report.get('errors', {}).items())[:3]}")  # fmt: skip
            return {"duplicates_per_interval": duplicates, "collect_s": durations}
        finally:
            client.close()
            for daemon in daemons:
                daemon.stop()


def _ledger_rates(redis_url: str, ops: int, rounds: int) -> dict[str, Any]:
    """reserve+settle pairs per second (wall) and CPU microseconds per pair, both backends."""
    from crawler.store.ledger import BudgetLedger
    from crawler.store.ledger.redis import RedisLedger
    from crawler.store.redis_client import RedisConnection

    budget = COST * 10_000_000
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        conn = RedisConnection(redis_url)
        ledgers = {
            "embedded": BudgetLedger(Path(tmp) / "ledger", budget, COST),
            "redis": RedisLedger(conn, Path(tmp) / "local", budget, COST),
        }
        per_thread = max(1, ops // LEDGER_THREADS)

        def run(ledger: Any) -> tuple[float, float]:
            def work() -> None:
                for _ in range(per_thread):
                    ledger.settle(ledger.reserve())

            threads = [threading.Thread(target=work) for _ in range(LEDGER_THREADS)]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            pairs = per_thread * LEDGER_THREADS
            return pairs / wall, cpu * 1e6 / pairs

        for ledger in ledgers.values():
            run(ledger)  # warm up
        rates: dict[str, list[float]] = {name: [] for name in ledgers}
        cpus: dict[str, list[float]] = {name: [] for name in ledgers}
        for _ in range(rounds):
            for name, ledger in ledgers.items():
                rate, cpu_us = run(ledger)
                rates[name].append(rate)
                cpus[name].append(cpu_us)
        for ledger in ledgers.values():
            ledger.close()
        conn.close()
    return {
        name: {
            "pairs_per_s_min": round(min(rates[name])),
            "pairs_per_s_median": round(median(rates[name])),
            "cpu_us_per_pair_median": round(median(cpus[name]), 1),
        }
        for name in rates
    }


def _latency(market: Any, redis_url: str, count: int, rounds: int) -> dict[str, Any]:
    """ms per quote of fresh collections and of cache hits, embedded vs Redis."""
    from crawler.orchestrator.hybrid import HybridDataSource

    symbols = generated_symbols(count)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for name in ("e", "r"):
            (Path(tmp) / name).mkdir()
        hybrids = {
            "embedded": HybridDataSource(bench_settings(Path(tmp) / "e", market, max_workers=16)),
            "redis": HybridDataSource(
                bench_settings(Path(tmp) / "r", market, max_workers=16, redis_url=redis_url)
            ),
        }

        def timed(call: Callable[[], object], n: int) -> tuple[float, float]:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            call()
            return ((time.perf_counter() - wall0) * 1000 / n,
                    (time.process_time() - cpu0) * 1000 / n)  # fmt: skip

        fetch: dict[str, list[tuple[float, float]]] = {name: [] for name in hybrids}
        hits: dict[str, list[tuple[float, float]]] = {name: [] for name in hybrids}
        try:
            for hybrid in hybrids.values():  # warm up: sessions, crumbs, connections
                hybrid.fetch_many(symbols[:20], force_fresh=True)
            for _ in range(rounds):
                for name, hybrid in hybrids.items():
                    if hybrid.leases is not None:  # a new interval for the Redis node
                        for symbol in symbols:
                            hybrid.leases.release(symbol)
                    fetch[name].append(timed(
                        lambda h=hybrid: h.fetch_many(symbols, force_fresh=True), count
                    ))  # fmt: skip
                    hits[name].append(timed(
                        lambda h=hybrid: [h.get_quote(s) for s in symbols], count
                    ))  # fmt: skip
        finally:
            for hybrid in hybrids.values():
                hybrid.cleanup()

    def summary(samples: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, values in samples.items():
            walls = [wall for wall, _ in values]
            out[name] = {
                "ms_per_quote_min": round(min(walls), 3),
                "ms_per_quote_median": round(median(walls), 3),
                "cpu_ms_per_quote_median": round(median([cpu for _, cpu in values]), 3),
            }
        return out

    return {"fetch": summary(fetch), "hit": summary(hits)}


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--symbols", type=int, default=3000)
    args_parser.add_argument("--rounds", type=int, default=5)
    args = args_parser.parse_args(argv)
    count, rounds, ledger_ops, latency_n = (
        (60, 2, 400, 40) if args.quick else (args.symbols, args.rounds, 4000, 500)
    )
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            with fake_market(latency_s=0.02) as market:
                cluster = _cluster(market, server.url, generated_symbols(count))
                ledger = _ledger_rates(server.url, ledger_ops, rounds)
                latency = _latency(market, server.url, latency_n, rounds)
        finally:
            server.stop()

    print(f"cluster: {NODES} nodes x {count} symbols on one Redis, 2 intervals")
    print(f"  duplicate paid fetches per interval  {cluster['duplicates_per_interval']}"
          "   (target 0)")  # fmt: skip
    print("  collection wall s per interval       "
          + ", ".join(f"{s:.1f}" for s in cluster["collect_s"]))  # fmt: skip
    print(f"ledger: reserve+settle pairs/s, {LEDGER_THREADS} threads, {rounds} rounds")
    for name, figures in ledger.items():
        print(f"  {name:<9} min {figures['pairs_per_s_min']:>8,}  median "
              f"{figures['pairs_per_s_median']:>8,}  cpu {figures['cpu_us_per_pair_median']}"
              " us/pair")  # fmt: skip
    ledger_ratio = ratio(ledger["redis"]["pairs_per_s_median"],
                         ledger["embedded"]["pairs_per_s_median"])  # fmt: skip
    print(f"  redis / embedded {ledger_ratio:.3f}x")
    print(f"latency per quote ({latency_n} symbols, {rounds} rounds, median ms; min)")
    for kind in ("fetch", "hit"):
        e, r = latency[kind]["embedded"], latency[kind]["redis"]
        added = round(r["ms_per_quote_median"] - e["ms_per_quote_median"], 3)
        latency[kind]["added_ms_per_quote"] = added
        print(f"  {kind:<6} embedded {e['ms_per_quote_median']:.3f} ({e['ms_per_quote_min']:.3f})"
              f"  redis {r['ms_per_quote_median']:.3f} ({r['ms_per_quote_min']:.3f})"
              f"  added {added:+.3f} ms  cpu {e['cpu_ms_per_quote_median']:.3f} -> "
              f"{r['cpu_ms_per_quote_median']:.3f} ms")  # fmt: skip
    duplicates = cluster["duplicates_per_interval"]
    return finish(
        "cluster",
        {
            "nodes": NODES,
            "symbols": count,
            "duplicates_per_interval": duplicates,
            "collect_s": [round(s, 2) for s in cluster["collect_s"]],
            "ledger": ledger,
            "ledger_redis_vs_embedded": ledger_ratio,
            "latency": latency,
            "added_ms_per_fetched_quote": latency["fetch"]["added_ms_per_quote"],
            "added_ms_per_cache_hit": latency["hit"]["added_ms_per_quote"],
        },
        target="duplicates_per_interval == 0 in every interval",
        met=all(d == 0 for d in duplicates),
    )


if __name__ == "__main__":
    sys.exit(main())
