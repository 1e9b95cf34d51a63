"""The fake Yahoo's chart bars: `GET /v8/finance/chart/SYMBOL?period1=&period2=&interval=`.

Answers have the shape of the real captures in ../shared/fixtures/yahoo/chart (`meta`,
`timestamp[]`, `indicators.quote[0]` with open/high/low/close/volume as float32-looking
doubles, `indicators.adjclose`), and Yahoo's range limits are enforced as Yahoo enforces them
(HTTP 422 with its "Unprocessable Entity" error):

- 1m: at most 8 days per request, within the last 30 days;
- 2m, 5m, 15m, 30m, 90m: within the last 60 days;
- 60m / 1h: within the last 730 days;
- 1d, 5d, 1wk, 1mo, 3mo: any range.

Bars come from a real capture set with `YahooFake.set_chart_bars(symbol, body)` (its bars
inside [period1, period2) are served, the rest of the body as captured), or are generated:
deterministic per (symbol, bar time), on the symbol's trading days and hours (weekdays for
stocks, indices, futures and FX; every day for crypto), and only bars that have started by
the fake's `now`.
"""

from __future__ import annotations

import copy
import hashlib
import struct
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["INTERVAL_SECONDS", "RangeRefused", "bars_body", "check_range", "filter_body"]

#: Yahoo's chart intervals, in seconds (a month as 30 days: only its step matters here).
INTERVAL_SECONDS: dict[str, int] = {
    "1m": 60,
    "2m": 120,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "60m": 3600,
    "90m": 5400,
    "1h": 3600,
    "1d": 86_400,
    "5d": 5 * 86_400,
    "1wk": 7 * 86_400,
    "1mo": 30 * 86_400,
    "3mo": 90 * 86_400,
}
_DAY_S = 86_400
# (per-request span, how far back) in days, as Yahoo enforces them; None: no limit.
_LIMITS: dict[str, tuple[int | None, int | None]] = {
    "1m": (8, 30),
    **dict.fromkeys(("2m", "5m", "15m", "30m", "90m"), (None, 60)),
    **dict.fromkeys(("60m", "1h"), (None, 730)),
}
# Trading hours by exchange time zone (local open, close); others 09:00-17:00.
_HOURS: dict[str, tuple[time, time]] = {
    "America/New_York": (time(9, 30), time(16, 0)),
    "America/Toronto": (time(9, 30), time(16, 0)),
    "Europe/London": (time(8, 0), time(16, 30)),
}


class RangeRefused(Exception):
    """A range Yahoo refuses: HTTP 422 with this description."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def body(self) -> dict[str, Any]:
        return {
            "chart": {
                "result": None,
                "error": {"code": "Unprocessable Entity", "description": self.description},
            }
        }


def check_range(interval: str, period1: int, period2: int, now: datetime) -> None:
    """Raise RangeRefused for what Yahoo would refuse (an unknown interval is refused too)."""
    if interval not in INTERVAL_SECONDS:
        raise RangeRefused(
            f"Invalid input - interval={interval} is not supported. Valid intervals: "
            "[1m, 2m, 5m, 15m, 30m, 60m, 90m, 1h, 1d, 5d, 1wk, 1mo, 3mo]"
        )
    span_days, back_days = _LIMITS.get(interval, (None, None))
    if span_days is not None and period2 - period1 > span_days * _DAY_S:
        raise RangeRefused(
            f"Only {span_days} days worth of {interval} granularity data are allowed to be "
            "fetched per request."
        )
    if back_days is not None and period1 < int(now.timestamp()) - back_days * _DAY_S:
        raise RangeRefused(
            f"{interval} data not available for startTime={period1} and endTime={period2}. "
            f"The requested range must be within the last {back_days} days."
        )


def filter_body(body: dict[str, Any], period1: int, period2: int, interval: str) -> dict[str, Any]:
    """A captured chart body with only its bars in [period1, period2) (the rest as captured)."""
    out = copy.deepcopy(body)
    result = out["chart"]["result"][0]
    stamps = result.get("timestamp") or []
    keep = [i for i, stamp in enumerate(stamps) if period1 <= stamp < period2]
    result["meta"]["dataGranularity"] = interval
    if not keep:
        result.pop("timestamp", None)
        result["indicators"] = {"quote": [{}], "adjclose": [{}]}
        return out
    result["timestamp"] = [stamps[i] for i in keep]
    for group in ("quote", "adjclose"):
        for series in result["indicators"].get(group, []):
            for key, values in series.items():
                series[key] = [values[i] for i in keep]
    return out


def bars_body(
    meta: dict[str, Any],
    *,
    symbol: str,
    instrument: str,
    price: float,
    interval: str,
    period1: int,
    period2: int,
    now: datetime,
) -> dict[str, Any]:
    """A generated chart answer: `meta` (the fake's usual one) and the bars in range."""
    step_s = INTERVAL_SECONDS[interval]
    end = min(period2, int(now.timestamp()) + 1)
    stamps = list(_bar_times(meta["exchangeTimezoneName"], instrument, step_s, period1, end))
    meta = {**meta, "dataGranularity": interval, "range": ""}
    meta.pop("previousClose", None)
    if not stamps:
        return {
            "chart": {
                "result": [{"meta": meta, "indicators": {"quote": [{}], "adjclose": [{}]}}],
                "error": None,
            }
        }
    series: dict[str, list[Any]] = {"open": [], "high": [], "low": [], "close": [], "volume": []}
    for stamp in stamps:
        bar = bar_values(symbol, stamp, price, instrument)
        for key, value in bar.items():
            series[key].append(value)
    return {
        "chart": {
            "result": [
                {
                    "meta": meta,
                    "timestamp": stamps,
                    "indicators": {
                        "quote": [series],
                        "adjclose": [{"adjclose": list(series["close"])}],
                    },
                }
            ],
            "error": None,
        }
    }


def bar_values(symbol: str, stamp: int, price: float, instrument: str) -> dict[str, Any]:
    """One bar's numbers: within ±5 % of `price`, as float32 values (Yahoo's 226.2100067...)."""
    digest = hashlib.sha256(f"{symbol}|{stamp}".encode()).digest()
    units = [int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in range(0, 20, 4)]
    close = price * (1 + (units[0] - 0.5) * 0.1)
    open_ = price * (1 + (units[1] - 0.5) * 0.1)
    high = max(open_, close) * (1 + units[2] * 0.01)
    low = min(open_, close) * (1 - units[3] * 0.01)
    volume = 0 if instrument in ("CURRENCY", "INDEX") else 1_000 + int(units[4] * 5_000_000)
    return {
        "open": _float32(open_),
        "high": _float32(high),
        "low": _float32(low),
        "close": _float32(close),
        "volume": volume,
    }


def _float32(value: float) -> float:
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


def _bar_times(zone_name: str, instrument: str, step_s: int, start: int, end: int) -> Iterator[int]:
    """The start times (epoch s) of the bars in [start, end) on the symbol's market."""
    if instrument == "CRYPTOCURRENCY":
        zone, opens, closes, weekdays_only = ZoneInfo("UTC"), time(0), None, False
    elif instrument == "CURRENCY":
        zone, opens, closes, weekdays_only = ZoneInfo("Europe/London"), time(0), None, True
    else:
        zone = ZoneInfo(zone_name)
        opens, close_time = _HOURS.get(zone_name, (time(9, 0), time(17, 0)))
        closes, weekdays_only = close_time, True
    day: date = datetime.fromtimestamp(start, UTC).astimezone(zone).date() - timedelta(days=1)
    last: date = datetime.fromtimestamp(end, UTC).astimezone(zone).date()
    while day <= last:
        if not (weekdays_only and day.weekday() >= 5):
            first = int(datetime.combine(day, opens, zone).timestamp())
            if step_s >= _DAY_S:
                candidates: Iterator[int] = iter((first,))
            else:
                stop = (
                    int(datetime.combine(day, closes, zone).timestamp())
                    if closes is not None
                    else first + _DAY_S
                )
                candidates = iter(range(first, stop, step_s))
            for stamp in candidates:
                if start <= stamp < end:
                    yield stamp
        day += timedelta(days=1)
