"""Who may spend money in a collection: the paced allowance and the order of who gets it.

`SpendingPolicy.plan()` splits the symbols due in one collection into those that may use the
paid source (Bright Data, in the seed's order cache -> Bright Data -> yfinance) and those that
may not (cache -> yfinance -> stale). It decides only who may *try* to reserve: every paid
request still goes through the ledger's reserve/settle, which stays the single authority.

- Pacing "off", or an allowance covering every symbol due: everyone may pay (the seed's order).
- Otherwise the allowance (`crawler.orchestrator.pacing`) goes first to the symbols yfinance
  cannot serve (unmappable, or failing now), then to those whose last Bloomberg quote is oldest
  (never paid counts as oldest), a rotation that spreads Bloomberg quotes over the watchlist.

How the free path fetches (one by one, or in batches) is the hybrid source's business, not ours.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import Symbol
from crawler.orchestrator.pacing import (
    budget_day_end,
    collection_times,
    paced_allowance,
)

__all__ = ["PaidPlan", "SpendingPolicy", "TradingHours"]

_NEVER = datetime.min.replace(tzinfo=UTC)


class TradingHours(Protocol):
    """What pacing needs from `crawler.markets.hours.MarketHours`."""

    def is_open(self, symbol: str, asset_class: AssetClass, at: datetime | None = None) -> bool:
        """Whether `symbol`'s market is open at `at`."""
        ...

    def market_of(self, symbol: str, asset_class: AssetClass | None) -> str:
        """The market code of `symbol` (symbols of one market share its hours)."""
        ...


@dataclass(frozen=True, slots=True)
class PaidPlan:
    """One collection's split. `allowance` None means unpaced (everyone may pay)."""

    paid: list[Symbol]
    free: list[Symbol]
    allowance: int | None
    remaining: int


class SpendingPolicy:
    """Paces the day's paid requests over its collections and ranks who gets them.

    `pacing` is "even" or "off"; `interval_s` the time between scheduled collections;
    `timezone` the budget's (BUDGET_TIMEZONE); `market_hours` None counts every symbol as open
    in every later collection.
    """

    def __init__(
        self,
        *,
        pacing: str = "even",
        interval_s: float = 900.0,
        timezone: str = "UTC",
        market_hours: TradingHours | None = None,
    ) -> None:
        if pacing not in ("even", "off"):
            raise ValueError(f"pacing {pacing!r} must be 'even' or 'off'")
        self.pacing = pacing
        self.interval_s = float(interval_s)
        self.timezone = timezone
        self._market_hours = market_hours
        self._lock = threading.Lock()
        self._credit_day: str | None = None
        self._credit = 0.0
        self._last: dict[str, Any] | None = None

    def retune(self, *, interval_s: float, market_hours: TradingHours | None) -> None:
        """Follow a reloaded collection interval and market-hours setting."""
        with self._lock:
            self.interval_s = float(interval_s)
            self._market_hours = market_hours

    # -- the allowance ----------------------------------------------------------------------

    def future_open(self, tracked: Sequence[Symbol], at: datetime) -> list[int]:
        """Per later collection of today's budget day, how many of `tracked` will be open."""
        times = collection_times(at, self.interval_s, budget_day_end(at, self.timezone))
        hours = self._market_hours
        if hours is None:
            return [len(tracked)] * len(times)
        # Symbols of one market share its hours: ask once per market, not once per symbol.
        markets: Counter[str] = Counter()
        sample: dict[str, Symbol] = {}
        for sym in tracked:
            market = _safe_market(hours, sym)
            markets[market] += 1
            sample.setdefault(market, sym)
        counts: list[int] = []
        for when in times:
            counts.append(
                sum(n for market, n in markets.items() if _safe_open(hours, sample[market], when))
            )
        return counts

    def allowance(
        self, due: int, tracked: Sequence[Symbol], remaining: int, at: datetime
    ) -> int | None:
        """Paid requests this collection may make (None: unpaced). Carries the fraction."""
        if self.pacing == "off":
            return None
        future = self.future_open(tracked, at)
        day = budget_day_end(at, self.timezone).isoformat()  # one key per budget day
        with self._lock:
            credit = self._credit if self._credit_day == day else 0.0
            share = paced_allowance(remaining, due, future, credit)
            self._credit_day, self._credit = day, share.credit
        return share.requests

    def preview(
        self, due: int, tracked: Sequence[Symbol], remaining: int, at: datetime
    ) -> int | None:
        """What `allowance` would give now, without carrying anything (for `crawler budget`)."""
        if self.pacing == "off":
            return None
        day = budget_day_end(at, self.timezone).isoformat()
        with self._lock:
            credit = self._credit if self._credit_day == day else 0.0
        return paced_allowance(remaining, due, self.future_open(tracked, at), credit).requests

    # -- who gets it ------------------------------------------------------------------------

    def plan(
        self,
        due: Sequence[Symbol],
        tracked: Sequence[Symbol],
        remaining: int,
        at: datetime,
        *,
        unservable: Callable[[Symbol], bool],
        last_paid: Mapping[str, datetime | None],
    ) -> PaidPlan:
        """Split `due` into those that may pay and those that may not (see the module doc)."""
        allowance = self.allowance(len(due), tracked, remaining, at)
        if allowance is None or allowance >= len(due):
            plan = PaidPlan(list(due), [], allowance, remaining)
        else:

            def rank(sym: Symbol) -> tuple[int, datetime, str]:
                paid_at = last_paid.get(sym.canonical) or _NEVER
                return (0 if unservable(sym) else 1, paid_at, sym.canonical)

            chosen = {sym.canonical for sym in sorted(due, key=rank)[:allowance]}
            plan = PaidPlan(
                [s for s in due if s.canonical in chosen],
                [s for s in due if s.canonical not in chosen],
                allowance,
                remaining,
            )
        with self._lock:
            self._last = {
                "at": at.isoformat(),
                "due": len(due),
                "allowance": plan.allowance,
                "paid_candidates": len(plan.paid),
                "remaining": remaining,
            }
        return plan

    def statistics(self) -> dict[str, Any]:
        """Pacing mode and the last collection's plan (JSON-ready)."""
        with self._lock:
            return {
                "pacing": self.pacing,
                "interval_s": self.interval_s,
                "last_plan": dict(self._last) if self._last else None,
            }


def _safe_market(hours: TradingHours, sym: Symbol) -> str:
    try:
        return hours.market_of(sym.canonical, sym.asset_class)
    except Exception:  # an odd symbol is its own market, judged open
        return "UNKNOWN:" + sym.canonical


def _safe_open(hours: TradingHours, sym: Symbol, at: datetime) -> bool:
    try:
        return bool(hours.is_open(sym.canonical, sym.asset_class, at=at))
    except Exception:  # unknown calendar: counted open, as the collector fetches it
        return True
