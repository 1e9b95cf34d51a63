"""A user's first day (issue 22 item 9): the first collection of 300 symbols, 20 that Yahoo
serves and 280 found only on Bloomberg (Yahoo does not know them), at default settings.

    python -m bench firstday            # 300 symbols
    python -m bench firstday --quick    # 30 symbols

The real daemon (`crawler start --foreground`) against the fake market in its own process, at
default settings (budget $5.50, the needs-based policy, market hours on, the stream on; only
scheduled collections are off, so the one measured is the first). Figures: the wall time of
the first forced collection (`POST /collect`), the Yahoo requests it made (batches, charts)
and the paid ones, then the same for a second collection, which must ask Yahoo nothing about
the 280 it knows it cannot serve. Target: the first collection in 15 s or less (it took 82.6 s
and 357 chart requests before; the floor is about 5 s: six batch requests at 2 a second plus
the paid ones at 16 workers).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DaemonProcess, fake_market, finish, parser

TARGET_S = 15.0
TARGET = f"first collection of 300 symbols (280 unknown to Yahoo) <= {TARGET_S:g} s"


def _yahoo(daemon: DaemonProcess) -> dict[str, int]:
    _, status = daemon.client.get("/status?rows=0")
    yahoo = status.get("yahoo") or {}
    bright = (status.get("sources") or {}).get("bright_data") or {}
    return {
        "batches": int(yahoo.get("batch_requests", 0)),
        "charts": int(yahoo.get("fetches", 0)),
        "paid": int(bright.get("total_requests", 0)),
    }


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    served = 2 if args.quick else 20
    unknown = 28 if args.quick else 280
    symbols = [f"K{i:03d}:US" for i in range(served)]
    symbols += [f"ZZZZ{i:03d}:US" for i in range(unknown)]
    defaults = {
        "AUTO_UPDATE_ENABLED": "false",  # the measured collection is the first one
        "MARKET_HOURS_ENABLED": "true",
        "TOTAL_BUDGET": "5.50",
        "LOG_LEVEL": "info",
    }
    figures: dict[str, Any] = {"symbols": len(symbols), "unknown_to_yahoo": unknown}
    with fake_market() as market, DaemonProcess(market, defaults) as daemon:
        daemon.add_symbols(symbols)
        before = _yahoo(daemon)
        started = time.perf_counter()
        first = daemon.collect()
        figures["first_collection_s"] = round(time.perf_counter() - started, 2)
        after_first = _yahoo(daemon)
        figures["first"] = {**_delta(after_first, before), "sources": first.get("sources")}
        started = time.perf_counter()
        second = daemon.collect()
        figures["second_collection_s"] = round(time.perf_counter() - started, 2)
        figures["second"] = {
            **_delta(_yahoo(daemon), after_first),
            "sources": second.get("sources"),
        }
    print(
        f"first collection of {len(symbols)} symbols ({unknown} unknown to Yahoo): "
        f"{figures['first_collection_s']} s, {figures['first']}; second: "
        f"{figures['second_collection_s']} s, {figures['second']}"
    )
    return finish("firstday", figures, TARGET, figures["first_collection_s"] <= TARGET_S)


if __name__ == "__main__":
    sys.exit(main())
