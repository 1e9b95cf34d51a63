"""What market-hours skipping saves: paid requests over a week, with and without it.

The model: a poll every `interval_s`, one paid request per symbol per poll.

- Without skipping, every poll fetches every symbol.
- With skipping, a symbol is fetched on polls where its market is open, plus once on the first
  poll after each close (a session's end or a lunch break's start) to catch the closing price.

    >>> from datetime import UTC, datetime
    >>> from crawler.markets.hours import MarketHours
    >>> week = simulate_week([("XBTUSD:CUR", AssetClass.CRYPTO)],
    ...                      datetime(2026, 11, 2, tzinfo=UTC), 900, MarketHours())
    >>> week["requests_without"], week["requests_with"]
    (672, 672)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from crawler.markets.hours import MarketHours
from crawler.normalizer.schemas import AssetClass

__all__ = ["WEEK_S", "simulate_week"]

WEEK_S = 7 * 24 * 3600


def simulate_week(
    watchlist: list[tuple[str, AssetClass]],
    start: datetime,
    interval_s: int,
    hours: MarketHours,
) -> dict[str, Any]:
    """Count paid requests for one week of polls from `start` (polls at start + k·interval_s).

    Returns a JSON-ready dict: totals ``requests_without``, ``requests_with``, ``saved``,
    ``saved_pct``, and per symbol its market, open polls, closes caught and both counts.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s={interval_s} must be a positive number of seconds")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    polls = -(-WEEK_S // interval_s)  # ceiling: a partial last interval still gets its poll
    instants = [start + timedelta(seconds=k * interval_s) for k in range(polls)]
    per_symbol: list[dict[str, Any]] = []
    for symbol, asset_class in watchlist:
        open_flags = [hours.is_open(symbol, asset_class, at=at) for at in instants]
        closes = sum(1 for before, now in pairwise(open_flags) if before and not now)
        open_polls = sum(open_flags)
        per_symbol.append(
            {
                "symbol": symbol,
                "asset_class": asset_class.value,
                "market": hours.market_of(symbol, asset_class),
                "open_polls": open_polls,
                "closes": closes,
                "requests_without": polls,
                "requests_with": open_polls + closes,
            }
        )
    without = polls * len(watchlist)
    with_skipping = sum(entry["requests_with"] for entry in per_symbol)
    return {
        "start": start.isoformat(),
        "end": (start + timedelta(seconds=WEEK_S)).isoformat(),
        "interval_s": interval_s,
        "polls": polls,
        "symbols": per_symbol,
        "requests_without": without,
        "requests_with": with_skipping,
        "saved": without - with_skipping,
        "saved_pct": round(100 * (without - with_skipping) / without, 1) if without else 0.0,
    }
