"""Is a quote's own time older than its market's last session? (A suspended or delisted
instrument: Yahoo keeps answering with a months-old price and time.)

    predates_last_session(quote.as_of, "WSKT:IJ", AssetClass.STOCKS, hours, now)   # True

A quote younger than a day is never flagged: a thin stock that has not traded yet today, or
only before a lunch break, is not suspended. Past that, the quote is flagged when its time is
before the opening of the last session that closed before `now`; for crypto (never closes)
when it is over a day old; for markets without a calendar when it is over four days old (a
long weekend with a holiday).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from crawler.normalizer.schemas import AssetClass

__all__ = ["predates_last_session"]

GRACE = timedelta(days=1)
WITHOUT_CALENDAR = timedelta(days=4)


class SessionClock(Protocol):
    """What this needs from `crawler.markets.hours.MarketHours`."""

    def market_of(self, symbol: str, asset_class: AssetClass | None) -> str: ...

    def last_session_start(
        self, symbol: str, asset_class: AssetClass | None, at: datetime | None = None
    ) -> datetime | None: ...


def predates_last_session(
    as_of: datetime | None,
    symbol: str,
    asset_class: AssetClass | None,
    hours: SessionClock | None,
    now: datetime,
) -> bool:
    """True when the source's own time `as_of` is older than the market's last session."""
    if as_of is None or now - as_of <= GRACE:
        return False
    if hours is None:
        return now - as_of > WITHOUT_CALENDAR
    if hours.market_of(symbol, asset_class) == "CRYPTO":
        return True
    start = hours.last_session_start(symbol, asset_class, at=now)
    if start is None:
        return now - as_of > WITHOUT_CALENDAR
    return as_of < start
