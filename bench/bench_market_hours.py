"""Benchmark: paid requests over one week with and without market-hours skipping.

Watchlist: US, LSE and Tokyo stocks, two FX pairs and bitcoin, polled every 15 minutes. Prints a
table per symbol and, last, one JSON line with the figures (and how long the simulation took,
calendar loading included).

    python bench/bench_market_hours.py [--start 2026-11-02] [--interval-s 900]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

# Standalone: make `crawler` importable without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crawler.markets.hours import MarketHours
from crawler.markets.savings import simulate_week
from crawler.normalizer.schemas import AssetClass

__all__ = ["WATCHLIST", "main"]

WATCHLIST: list[tuple[str, AssetClass]] = [
    ("AAPL:US", AssetClass.STOCKS),
    ("MSFT:US", AssetClass.STOCKS),
    ("VOD:LN", AssetClass.STOCKS),
    ("HSBA:LN", AssetClass.STOCKS),
    ("7203:JP", AssetClass.STOCKS),
    ("EURUSD:CUR", AssetClass.FOREX),
    ("USDJPY:CUR", AssetClass.FOREX),
    ("XBTUSD:CUR", AssetClass.CRYPTO),
]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, simulate the week, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A fixed, ordinary week by default so the figures are reproducible.
    parser.add_argument("--start", default="2026-11-02", help="first poll, ISO date/time (UTC)")
    parser.add_argument("--interval-s", type=int, default=900, help="seconds between polls")
    args = parser.parse_args(argv)
    start = datetime.fromisoformat(args.start)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    started = time.perf_counter()
    week = simulate_week(WATCHLIST, start, args.interval_s, MarketHours())
    week["elapsed_s"] = round(time.perf_counter() - started, 3)
    print(f"week from {week['start']}, a poll every {week['interval_s']} s ({week['polls']} polls)")
    print(f"{'symbol':<12} {'market':<7} {'without':>8} {'with':>6} {'saved':>6}")
    for entry in week["symbols"]:
        saved = entry["requests_without"] - entry["requests_with"]
        print(
            f"{entry['symbol']:<12} {entry['market']:<7} {entry['requests_without']:>8} "
            f"{entry['requests_with']:>6} {saved:>6}"
        )
    print(
        f"{'total':<20} {week['requests_without']:>8} {week['requests_with']:>6} "
        f"{week['saved']:>6}  ({week['saved_pct']} % saved)"
    )
    print(json.dumps(week, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
