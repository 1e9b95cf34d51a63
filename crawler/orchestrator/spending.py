"""Who may spend money in a collection: what is worth paying for, the paced allowance, and the
order of who gets it.

The policy (`[budget] policy`, BUDGET_POLICY):

- "needed" (the default): a paid request only buys what the free path (Yahoo's stream, batch and
  chart) cannot give, in this order of need (`NEEDS`): "unservable" (no Yahoo form, Yahoo does
  not know the symbol, or its answer is unusable), "free_failing" (yfinance's breaker open,
  Yahoo's 429 pause on, or this symbol's last free attempt failed), "free_too_old" (its market
  open, the free source's lag there above `max_quote_age_s`, and the paid source measurably
  fresher there: `crawler.orchestrator.freshness`; never assumed, so a market whose paid lag
  was never seen gets one paid quote to measure it, at most every `PROBE_EVERY_S`). When the
  needs exceed the paced allowance, `ration()` gives it by need, then oldest paid quote first.
  A closed market's close is never paid for when the free path has it.
- "paced": the allowance is spent on a rotation (`plan()`, below).
- "seed": the seed's order (Bright Data first) for everything, unpaced.

Every paid request carries its reason (`PAID_REASONS`), kept by the ledger.

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

import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol
from crawler.orchestrator.freshness import MEASURABLE_S, SourceLags
from crawler.orchestrator.pacing import (
    budget_day_end,
    collection_times,
    paced_allowance,
)

__all__ = [
    "NEEDS",
    "PAID_REASONS",
    "POLICIES",
    "SEED_ORDER_FILE",
    "PaidPlan",
    "SpendingPolicy",
    "TradingHours",
]

#: The data dir's file of today's paid requests against the seed's order.
SEED_ORDER_FILE = "seed_order.json"

_NEVER = datetime.min.replace(tzinfo=UTC)
#: `[budget] policy` values.
POLICIES = ("needed", "paced", "seed")
#: The needs a paid request may answer, most pressing first.
NEEDS = ("unservable", "free_failing", "free_too_old")
#: Why a paid request was made: a need, a paced rotation, `crawler fetch --paid`, or the
#: seed's order (the library used directly, or policy "seed").
PAID_REASONS = (*NEEDS, "rotation", "asked", "seed")
#: A market whose paid lag is unknown gets one paid quote to measure it, at most this often.
PROBE_EVERY_S = 6 * 3600.0


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
    #: Why each symbol of `paid` may pay (canonical -> one of PAID_REASONS).
    reasons: dict[str, str] = field(default_factory=dict)


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
        policy: str = "paced",
        max_quote_age_s: float = 1200.0,
        lags: SourceLags | None = None,
        counts_path: Path | None = None,
    ) -> None:
        if pacing not in ("even", "off"):
            raise ValueError(f"pacing {pacing!r} must be 'even' or 'off'")
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} must be one of {', '.join(POLICIES)}")
        self.pacing = pacing
        self.policy = policy
        self.max_quote_age_s = float(max_quote_age_s)
        #: Per market, how late the free and the paid quotes arrive (learned, never assumed).
        self.lags = lags or SourceLags()
        self._probed: dict[str, datetime] = {}
        # Per budget day: paid requests the seed's order would have made, and those made.
        self._day_counts: dict[str, int] = {"seed_order": 0, "paid": 0}
        self._counts_day: str | None = None
        # Kept in the data dir when given, so a restart keeps today's "saved" figures.
        self._counts_path = counts_path
        self._load_counts()
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
        if self.pacing == "off" or self.policy == "seed":
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
        if self.pacing == "off" or self.policy == "seed":
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
            plan.reasons.update(self._paced_reasons(plan.paid, unservable))
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
            plan.reasons.update(self._paced_reasons(plan.paid, unservable))
        self._remember(at, due, plan)
        return plan

    def _paced_reasons(
        self, paid: Sequence[Symbol], unservable: Callable[[Symbol], bool]
    ) -> dict[str, str]:
        if self.policy == "seed":
            return {sym.canonical: "seed" for sym in paid}
        return {sym.canonical: "unservable" if unservable(sym) else "rotation" for sym in paid}

    # -- the needs-based policy ---------------------------------------------------------------

    def freshness_needs(self, open_due: Sequence[Symbol], at: datetime) -> set[str]:
        """Of `open_due` (open markets), the symbols whose free quote is too old to serve:
        the free lag of their market above `max_quote_age_s` and the paid one measurably lower
        (by MEASURABLE_S). A market whose paid lag is unknown gets one symbol (a probe, at most
        every PROBE_EVERY_S), so the figure is learned, never assumed."""
        needs: set[str] = set()
        probing: set[str] = set()
        for sym in open_due:
            market = self._market(sym)
            free_s = self.lags.lag_s(market, paid=False)
            if free_s is None or free_s <= self.max_quote_age_s:
                continue
            fresher_s = self.lags.paid_fresher_by(market)
            if fresher_s is None:
                if market in probing or not self._may_probe(market, at):
                    continue
                probing.add(market)
                needs.add(sym.canonical)
            elif fresher_s >= MEASURABLE_S:
                needs.add(sym.canonical)
        return needs

    def ration(
        self,
        needs: Mapping[str, str],
        candidates: Sequence[Symbol],
        due_count: int,
        tracked: Sequence[Symbol],
        remaining: int,
        at: datetime,
        *,
        last_paid: Mapping[str, datetime | None],
    ) -> PaidPlan:
        """The "needed" split: of `candidates` (each with its need in `needs`), those the
        allowance covers, by need (NEEDS order) then oldest paid quote; the allowance is the
        pacing's share for `due_count` symbols due now."""
        allowance = self.allowance(due_count, tracked, remaining, at)
        order = {need: i for i, need in enumerate(NEEDS)}

        def rank(sym: Symbol) -> tuple[int, datetime, str]:
            paid_at = last_paid.get(sym.canonical) or _NEVER
            return (order.get(needs.get(sym.canonical, ""), len(NEEDS)), paid_at, sym.canonical)

        ranked = sorted(candidates, key=rank)
        chosen = ranked if allowance is None else ranked[: max(0, allowance)]
        names = {sym.canonical for sym in chosen}
        plan = PaidPlan(
            [s for s in candidates if s.canonical in names],
            [s for s in candidates if s.canonical not in names],
            allowance,
            remaining,
            {s.canonical: needs[s.canonical] for s in chosen},
        )
        self._remember(at, candidates, plan)
        return plan

    def learn(self, quotes: Sequence[Quote], open_now: Mapping[str, bool], at: datetime) -> None:
        """Note how old each quote a collection at `at` served was (`at` minus its own time),
        for its market while open: the age a user gets from that kind of source there."""
        for quote in quotes:
            if quote.as_of is None or quote.stale or not open_now.get(quote.symbol, False):
                continue
            market = self._market_of_name(quote.symbol, quote.asset_class)
            lag_s = (at - quote.as_of).total_seconds()
            self.lags.observe(market, paid=quote.source == "bright_data", lag_s=lag_s)

    def count_collection(self, at: datetime, *, seed_order: int, paid: int) -> None:
        """One collection's paid requests, and those the seed's order would have made."""
        day = budget_day_end(at, self.timezone).isoformat()
        with self._lock:
            if self._counts_day != day:
                self._counts_day, self._day_counts = day, {"seed_order": 0, "paid": 0}
            self._day_counts["seed_order"] += max(0, seed_order)
            self._day_counts["paid"] += max(0, paid)
            self._save_counts()

    def day_counts(self, at: datetime) -> dict[str, int]:
        """Today's (budget day's) collection counts: seed_order, paid."""
        day = budget_day_end(at, self.timezone).isoformat()
        with self._lock:
            if self._counts_day != day:
                return {"seed_order": 0, "paid": 0}
            return dict(self._day_counts)

    def _load_counts(self) -> None:
        if self._counts_path is None:
            return
        try:
            raw = json.loads(self._counts_path.read_text(encoding="utf-8"))
            self._counts_day = str(raw["day"])
            self._day_counts = {"seed_order": int(raw["seed_order"]), "paid": int(raw["paid"])}
        except (OSError, ValueError, KeyError, TypeError):
            return  # none yet, or unreadable: today's figures start again

    def _save_counts(self) -> None:
        path = self._counts_path
        if path is None:
            return
        body = json.dumps({"day": self._counts_day, **self._day_counts})
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, path)
        except OSError:  # a figure for `crawler budget`, not money: kept in memory
            return

    def _may_probe(self, market: str, at: datetime) -> bool:
        with self._lock:
            last = self._probed.get(market)
            if last is not None and (at - last).total_seconds() < PROBE_EVERY_S:
                return False
            self._probed[market] = at
            return True

    def _market(self, sym: Symbol) -> str:
        hours = self._market_hours
        return _safe_market(hours, sym) if hours is not None else "ALL"

    def _market_of_name(self, name: str, asset: AssetClass | None) -> str:
        hours = self._market_hours
        if hours is None:
            return "ALL"
        try:
            return hours.market_of(name, asset)
        except Exception:  # an odd symbol is its own market
            return "UNKNOWN:" + name

    def _remember(self, at: datetime, due: Sequence[Symbol], plan: PaidPlan) -> None:
        with self._lock:
            self._last = {
                "at": at.isoformat(),
                "due": len(due),
                "allowance": plan.allowance,
                "paid_candidates": len(plan.paid),
                "remaining": plan.remaining,
                "policy": self.policy,
            }

    def statistics(self) -> dict[str, Any]:
        """Pacing mode and the last collection's plan (JSON-ready)."""
        with self._lock:
            return {
                "policy": self.policy,
                "max_quote_age_s": self.max_quote_age_s,
                "lags": self.lags.statistics(),
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
