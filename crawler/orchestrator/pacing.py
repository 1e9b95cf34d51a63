"""Pacing arithmetic: how many paid requests one collection may make. Pure functions; the
clock is passed in, nothing is read from the outside world.

The day's budget is spread over the collections still due before the budget day ends (midnight
in BUDGET_TIMEZONE), weighted by how many symbols each will have to fetch:

    allowance = what is left today x due now / (due now + open symbols in every later collection)

What a collection does not spend stays in the ledger and is shared out again by the next one
(unused allowance rolls forward), so the last collection of the day may spend all that is left.
Fractions of a request are carried as `credit` from one collection to the next, so a budget
smaller than the number of collections is spread out instead of being held back until evening.

    >>> from datetime import UTC, datetime
    >>> now = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
    >>> times = collection_times(now, 3600, budget_day_end(now, "UTC"))
    >>> [t.hour for t in times]
    [23]
    >>> paced_allowance(remaining=30, due_now=10, future_open=[20])
    Allowance(requests=10, credit=0.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "PACING_MODES",
    "Allowance",
    "budget_day_end",
    "collection_times",
    "paced_allowance",
    "requests_left",
]

#: Credit is a fraction of one request, never a whole one.
_MAX_CREDIT = 0.999999
#: `[budget] pacing` values: "even" spreads the budget over the day, "off" spends it first come.
PACING_MODES = ("even", "off")


@dataclass(frozen=True, slots=True)
class Allowance:
    """Paid requests one collection may make, and the fraction of a request carried forward."""

    requests: int
    credit: float


def requests_left(ledger_stats: Mapping[str, Any]) -> int:
    """Paid requests the ledger would still accept: its `budget_remaining` (the smaller of what
    is left today and in the last 24 hours) over `cost_per_request`, rounded down."""
    cost = Decimal(str(ledger_stats.get("cost_per_request", "0")))
    left = Decimal(str(ledger_stats.get("budget_remaining", "0")))
    if cost <= 0 or left <= 0:
        return 0
    return int(left // cost)


def budget_day_end(now: datetime, timezone: str) -> datetime:
    """The next midnight in `timezone` after `now` (UTC-aware): when today's budget ends."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    # Midnight of the next calendar day, built from the date so DST days (23 or 25 hours)
    # end at their real midnight.
    tomorrow = local.date() + timedelta(days=1)
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone).astimezone(UTC)


def collection_times(now: datetime, interval_s: float, day_end: datetime) -> list[datetime]:
    """The collections still due after `now` and before `day_end`, one every `interval_s`."""
    if not (interval_s > 0 and math.isfinite(interval_s)):
        raise ValueError(f"interval_s={interval_s!r} must be a positive number of seconds")
    left_s = (day_end - now).total_seconds()
    if left_s <= interval_s:
        return []
    count = math.ceil(left_s / interval_s) - 1
    return [now + timedelta(seconds=interval_s * k) for k in range(1, count + 1)]


def paced_allowance(
    remaining: int, due_now: int, future_open: Sequence[int], credit: float = 0.0
) -> Allowance:
    """This collection's share of the `remaining` paid requests of the day.

    `due_now` symbols are to be fetched now; `future_open[i]` symbols will have an open market
    in the i-th later collection of the day. The share is never negative, never above
    `remaining` nor `due_now`, and a run of collections that each spend their whole allowance
    never spends more than `remaining` in total. `credit` (0 <= credit < 1) is the fraction
    carried from the previous collection; the returned one is carried to the next.
    """
    carried = min(max(credit, 0.0), _MAX_CREDIT) if math.isfinite(credit) else 0.0
    if remaining <= 0 or due_now <= 0:
        return Allowance(0, carried if remaining > 0 else 0.0)
    later = sum(max(0, n) for n in future_open)
    exact = remaining * due_now / (due_now + later) + carried
    whole = math.floor(exact)
    requests = min(whole, remaining, due_now)
    # Only a fraction is carried: a cap (remaining or due_now) leaves the rest in the ledger,
    # where the next collection finds it anyway.
    left = exact - requests if requests == whole else 0.0
    return Allowance(requests, min(max(left, 0.0), _MAX_CREDIT))
