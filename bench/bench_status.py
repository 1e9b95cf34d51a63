"""Benchmark: status at scale, the four targets side by side.

1. `GET /status?rows=50` (what `crawler status` asks for) versus `GET /health`, 1,000 symbols
   tracked, each with a last-known quote, market hours on: at most 25x.
2. `crawler status` (the whole process) versus `python -c pass`, same daemon: at most 7x.
3. `GET /status?rows=50` with 10,000 symbols tracked: at most 300 ms (median).
4. Cache hits across 10,000 symbols: `QuoteCache.get` versus a raw `diskcache.Cache.get` of the
   same keys (same directory, JSONDisk): at least 0.5x the raw rate.

Each pair is measured interleaved, round after round, in this process and the daemon it starts,
so drift on a noisy machine hits both sides alike; figures are min and median, with CPU per
call beside wall time (the daemon's CPU for the socket pairs, the children's for the CLI).
Also reported: the full `GET /status` (every symbol, what --json gets).

The watchlist and the cache are written straight into the data dir before the daemon starts
(real diskcache files, as a collection would leave them): collecting 10,000 symbols through the
fake market would take minutes and prove nothing about status.

    python bench/bench_status.py [--quick] [--rounds 9]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diskcache

from bench._common import DaemonProcess, fake_market, finish, generated_symbols, median, parser
from crawler.daemon.client import ControlClient
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import parse_symbol
from crawler.store.cache import QuoteCache
from crawler.store.datadir import CACHE_SUBDIR, WATCHLIST_SUBDIR
from crawler.store.watchlist import Watchlist

__all__ = ["main"]

TARGET_STATUS_VS_HEALTH = 25.0
TARGET_CLI_VS_PYTHON = 7.0
TARGET_STATUS_10K_MS = 300.0
TARGET_CACHE_VS_RAW = 0.5
ROWS = "50"


def _fill(data_dir: Path, symbols: list[str]) -> None:
    """A watchlist of `symbols`, each with a cached quote, as collections would leave them."""
    watchlist = Watchlist(data_dir / WATCHLIST_SUBDIR)
    cache = QuoteCache(data_dir / CACHE_SUBDIR, ttl_s=900)
    now = datetime.now(UTC)
    try:
        for i, text in enumerate(symbols):
            symbol = parse_symbol(text)
            watchlist.add(symbol.canonical, symbol.asset_class)
            cache.put(
                Quote(
                    symbol=symbol.canonical,
                    price=Decimal(100 + i % 900) + Decimal("0.25"),
                    source="bright_data",
                    currency="USD",
                    change_pct=Decimal("0.5"),
                    as_of=now,
                    fetched_at=now,
                    asset_class=symbol.asset_class,
                )
            )
    finally:
        watchlist.close()
        cache.close()


def _daemon_cpu_s(pid: int) -> float:
    """User + system CPU seconds the daemon has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _Timed:
    """Wall and CPU seconds of repeated calls, one sample per call."""

    def __init__(self, call: Callable[[], object], cpu: Callable[[], float]) -> None:
        self.call, self.cpu = call, cpu
        self.wall: list[float] = []
        self.cpu_used: list[float] = []

    def once(self) -> None:
        cpu0, wall0 = self.cpu(), time.perf_counter()
        self.call()
        self.wall.append(time.perf_counter() - wall0)
        self.cpu_used.append(self.cpu() - cpu0)

    def figures(self) -> dict[str, float]:
        return {
            "min_ms": round(min(self.wall) * 1000, 2),
            "median_ms": round(median(self.wall) * 1000, 2),
            # The sum over the count: CPU clocks tick every 10 ms, coarser than one call.
            "cpu_ms": round(sum(self.cpu_used) / len(self.cpu_used) * 1000, 2),
        }


def _interleave(pairs: dict[str, _Timed], rounds: int, per_round: int = 1) -> None:
    for timed in pairs.values():  # warm-up
        timed.call()
    for _ in range(rounds):
        for timed in pairs.values():
            for _ in range(per_round):
                timed.once()


def _print_pair(title: str, pair: dict[str, _Timed]) -> None:
    print(title)
    for name, timed in pair.items():
        f = timed.figures()
        print(
            f"  {name:<22} min {f['min_ms']:8.2f} ms  median {f['median_ms']:8.2f} ms"
            f"  cpu {f['cpu_ms']:7.2f} ms/call"
        )


def _socket_pair(daemon: DaemonProcess, rounds: int) -> dict[str, _Timed]:
    client: ControlClient = daemon.client
    pid = daemon.pid
    pair = {
        "GET /health": _Timed(lambda: client.call("GET", "/health"), lambda: _daemon_cpu_s(pid)),
        "GET /status?rows=50": _Timed(
            lambda: client.call("GET", "/status", query={"rows": ROWS}),
            lambda: _daemon_cpu_s(pid),
        ),
        "GET /status (all)": _Timed(
            lambda: client.call("GET", "/status"), lambda: _daemon_cpu_s(pid)
        ),
    }
    _interleave(pair, rounds, per_round=3)
    return pair


def _cli_pair(daemon: DaemonProcess, rounds: int) -> dict[str, _Timed]:
    env, cwd = daemon.env, daemon.data_dir

    def run(*argv: str) -> Callable[[], object]:
        def call() -> None:
            done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(done.stderr.decode(errors="replace")[-500:])

        return call

    pair = {
        "python -c pass": _Timed(run(sys.executable, "-c", "pass"), _children_cpu_s),
        "crawler status": _Timed(run(sys.executable, "-m", "crawler", "status"), _children_cpu_s),
    }
    _interleave(pair, rounds)
    return pair


def _cache_pair(symbols: int, rounds: int) -> dict[str, float]:
    """Lookups per second over every symbol, QuoteCache vs raw diskcache (median of rounds)."""
    names = [parse_symbol(s).canonical for s in generated_symbols(symbols)]
    with tempfile.TemporaryDirectory(prefix="bench-status-cache-") as tmp:
        directory = Path(tmp)
        _fill(directory, names)
        cache = QuoteCache(directory / CACHE_SUBDIR, ttl_s=3600)
        raw = diskcache.Cache(
            str(directory / CACHE_SUBDIR),
            disk=diskcache.JSONDisk,
            eviction_policy="none",
            statistics=False,
        )
        keys = ["quote:" + name for name in names]
        try:
            assert cache.get(names[0]) is not None and isinstance(raw.get(keys[0]), dict)

            def ours() -> None:
                for name in names:
                    cache.get(name)

            def theirs() -> None:
                for key in keys:
                    raw.get(key)

            rates: dict[str, list[float]] = {"quotecache": [], "raw": []}
            ours(), theirs()  # warm-up: every quote decoded once, pages cached
            for _ in range(rounds):
                for name, sweep in (("quotecache", ours), ("raw", theirs)):
                    started = time.perf_counter()
                    sweep()
                    rates[name].append(len(names) / (time.perf_counter() - started))
        finally:
            raw.close()
            cache.close()
    ours_rate, raw_rate = median(rates["quotecache"]), median(rates["raw"])
    return {
        "quotecache_ops_per_s": round(ours_rate),
        "raw_ops_per_s": round(raw_rate),
        "quotecache_vs_raw": round(ours_rate / raw_rate, 3),
        "quotecache_max_ops_per_s": round(max(rates["quotecache"])),
        "raw_max_ops_per_s": round(max(rates["raw"])),
    }


def _with_daemon(market: Any, symbols: int, body: Callable[[DaemonProcess], None]) -> None:
    daemon = DaemonProcess(market, {"MARKET_HOURS_ENABLED": "true"}, start_timeout_s=120)
    _fill(daemon.data_dir, generated_symbols(symbols))
    with daemon:
        daemon.client.call("GET", "/status")  # loads calendars and the last-known quotes
        body(daemon)


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--rounds", type=int, default=9)
    args = args_parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    small, large = (20, 200) if args.quick else (1_000, 10_000)

    socket_1k: dict[str, _Timed] = {}
    cli_1k: dict[str, _Timed] = {}
    socket_10k: dict[str, _Timed] = {}

    def at_small(daemon: DaemonProcess) -> None:
        socket_1k.update(_socket_pair(daemon, rounds))
        cli_1k.update(_cli_pair(daemon, rounds))

    def at_large(daemon: DaemonProcess) -> None:
        socket_10k.update(_socket_pair(daemon, rounds))

    with fake_market() as market:
        _with_daemon(market, small, at_small)
        _with_daemon(market, large, at_large)
    cache = _cache_pair(large, rounds)

    _print_pair(f"control socket, {small:,} symbols, {rounds} rounds x 3", socket_1k)
    _print_pair(f"CLI process, {small:,} symbols, {rounds} rounds", cli_1k)
    _print_pair(f"control socket, {large:,} symbols, {rounds} rounds x 3", socket_10k)

    def med(pair: dict[str, _Timed], name: str) -> float:
        return pair[name].figures()["median_ms"]

    status_vs_health = round(
        med(socket_1k, "GET /status?rows=50") / med(socket_1k, "GET /health"), 2
    )
    cli_vs_python = round(med(cli_1k, "crawler status") / med(cli_1k, "python -c pass"), 2)
    status_10k_ms = med(socket_10k, "GET /status?rows=50")
    print(f"cache hits across {large:,} symbols, {rounds} rounds (median rate)")
    print(
        f"  QuoteCache.get {cache['quotecache_ops_per_s']:>9,} ops/s   raw diskcache get "
        f"{cache['raw_ops_per_s']:>9,} ops/s"
    )
    print("targets, side by side:")
    rows = [
        (f"/status / /health at {small:,}", f"{status_vs_health:.2f}x",
         f"<= {TARGET_STATUS_VS_HEALTH:g}x", status_vs_health <= TARGET_STATUS_VS_HEALTH),
        (f"crawler status / python -c pass at {small:,}", f"{cli_vs_python:.2f}x",
         f"<= {TARGET_CLI_VS_PYTHON:g}x", cli_vs_python <= TARGET_CLI_VS_PYTHON),
        (f"/status at {large:,}", f"{status_10k_ms:.1f} ms", f"<= {TARGET_STATUS_10K_MS:g} ms",
         status_10k_ms <= TARGET_STATUS_10K_MS),
        (f"cache hits / raw diskcache across {large:,}", f"{cache['quotecache_vs_raw']:.3f}x",
         f">= {TARGET_CACHE_VS_RAW:g}x", cache["quotecache_vs_raw"] >= TARGET_CACHE_VS_RAW),
    ]  # fmt: skip
    for what, value, target, met in rows:
        print(f"  {what:<44} {value:>10}   target {target:<9} {'met' if met else 'MISSED'}")
    figures: dict[str, Any] = {
        "rounds": rounds,
        "symbols_small": small,
        "symbols_large": large,
        "health_ms": med(socket_1k, "GET /health"),
        "status_rows_ms": med(socket_1k, "GET /status?rows=50"),
        "status_all_ms": med(socket_1k, "GET /status (all)"),
        "status_vs_health": status_vs_health,
        "python_pass_ms": med(cli_1k, "python -c pass"),
        "cli_status_ms": med(cli_1k, "crawler status"),
        "cli_vs_python": cli_vs_python,
        "status_large_ms": status_10k_ms,
        "status_large_all_ms": med(socket_10k, "GET /status (all)"),
        **cache,
    }
    return finish(
        "status",
        figures,
        target=(
            f"status_vs_health <= {TARGET_STATUS_VS_HEALTH:g}, cli_vs_python <= "
            f"{TARGET_CLI_VS_PYTHON:g}, status_large_ms <= {TARGET_STATUS_10K_MS:g}, "
            f"quotecache_vs_raw >= {TARGET_CACHE_VS_RAW:g}"
        ),
        met=all(met for *_, met in rows),
    )


if __name__ == "__main__":
    sys.exit(main())
