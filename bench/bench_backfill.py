"""Benchmark: backfill a year of daily bars for N symbols (300; --quick 10) at the default rate.

Against the fake market in its own process, through `Operations.backfill` as `crawler backfill
--all` runs it offline (the daemon runs the same code): the yfinance source at default settings
(`[yfinance] max_requests_per_second` 2), the history in a temporary data dir. Reports the
chart requests made, every Yahoo request the token bucket granted (cookie and crumb included),
the seconds, the bars stored; then a second run over the same range, which must ask for
nothing. Target: one chart request per symbol (a year of 1d bars is one request), and the
seconds that the rate allows (requests / rate), no more than 10 % over.

    python bench/bench_backfill.py [--quick] [--symbols 300]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_settings, fake_market, finish, generated_symbols, parser

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--symbols", type=int, default=300, help="symbols to backfill")
    args = args_parser.parse_args(argv)
    count = 10 if args.quick else args.symbols
    symbols = generated_symbols(count)

    from crawler.service.verbs import Operations
    from crawler.sources.yahoo_throttle import shared_throttle

    with fake_market() as market, tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        # No Bright Data key: yfinance only, as a backfill uses; default Yahoo rate.
        settings = bench_settings(Path(tmp), market, bright_data_api_key=None)
        rate = settings.yfinance_max_rps
        ops = Operations.offline(settings)
        try:
            throttle = shared_throttle(rate)
            granted_before = throttle.granted
            started = time.perf_counter()
            first = ops.backfill(symbols, since="1y", interval="1d")
            first_s = time.perf_counter() - started
            granted = throttle.granted - granted_before
            started = time.perf_counter()
            second = ops.backfill(symbols, since="1y", interval="1d")
            second_s = time.perf_counter() - started
        finally:
            ops.close()
    chart_requests = int(first["requests"])
    floor_s = (granted - 1) / rate  # evenly spaced: the first request goes at once
    figures = {
        "symbols": count,
        "rate_per_s": rate,
        "chart_requests": chart_requests,
        "yahoo_requests": granted,
        "seconds": round(first_s, 2),
        "seconds_floor_at_rate": round(floor_s, 2),
        "bars_added": first["bars_added"],
        "errors": len(first["errors"]),
        "second_run_requests": second["requests"],
        "second_run_bars_added": second["bars_added"],
        "second_run_seconds": round(second_s, 2),
    }
    print(f"symbols               {count:>10,}   (1 year of 1d bars each)")
    print(
        f"chart requests        {chart_requests:>10,}   (+{granted - chart_requests} cookie/crumb)"
    )
    print(f"seconds at {rate:g}/s       {first_s:>10.2f}   (the rate's floor {floor_s:.2f})")
    print(f"bars stored           {first['bars_added']:>10,}")
    print(
        f"second run            {second['requests']:>10,} requests, "
        f"{second['bars_added']} bars, {second_s:.2f} s"
    )
    met = (
        chart_requests == count
        and not first["errors"]
        and second["requests"] == 0
        and first_s <= floor_s * 1.1 + 1
    )
    return finish(
        "backfill", figures, "1 chart request per symbol; seconds <= rate floor +10 %", met
    )


if __name__ == "__main__":
    sys.exit(main())
