"""The money: what `crawler budget` answers and the status document's money line reads.

    budget_answer(ops, now)       # today's spend, the allowance now, the pace, the targets
    budget_answer(ops, now, stats=stats)    # status's money line, from the statistics it read

The figures come from the ledger (through the hybrid's statistics) and the scheduler's
spending policy; the report itself is `crawler.orchestrator.budget_report`'s (pure).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from crawler.normalizer.symbols import Symbol, parse_symbol
from crawler.service.answers import jsonable
from crawler.utils.exceptions import SymbolError

if TYPE_CHECKING:
    from crawler.markets.hours import MarketHours
    from crawler.service.parts import ServiceParts

__all__ = ["budget_answer"]


def budget_answer(
    parts: ServiceParts,
    now: datetime,
    *,
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Today's spend, the allowance per collection now, when the budget runs out at this
    pace, paid requests per hour, the top paid symbols and the seed's three targets (see
    `crawler.orchestrator.budget_report`). `stats`: the hybrid's statistics when the caller
    has read them already (status, which drops the per-hour and per-symbol parts)."""
    from crawler.orchestrator.budget_report import budget_report
    from crawler.orchestrator.pacing import budget_day_end, requests_left

    stats = stats if stats is not None else parts.hybrid.get_statistics()
    ledger = stats.get("cost_tracking", {})
    # Read for status too: the spend by reason (one small read) is on its money line and
    # in the metrics; the per-hour and per-symbol parts are dropped there.
    breakdown = parts.hybrid.ledger.breakdown()
    remaining = requests_left(ledger)
    report = dict(
        jsonable(
            budget_report(
                ledger,
                breakdown,
                stats.get("source_usage", {}),
                stats.get("cache_statistics", {}),
                allowance=_allowance_now(parts, remaining, now),
                now=now,
                day_end=budget_day_end(now, parts.settings.budget_timezone),
                pacing=parts.settings.budget_pacing,
                live_served=int(stats.get("live_served") or 0),
                policy=parts.settings.budget_policy,
                seed_order=(
                    parts.scheduler.spending.day_counts(now)
                    if parts.scheduler is not None
                    else None
                ),
            )
        )
    )
    # Without a key nothing is ever spent: say so rather than "lasts the day".
    report["bright_data_configured"] = bool(parts.hybrid.paid_sources)
    return report


def _allowance_now(parts: ServiceParts, remaining: int, now: datetime) -> int | None:
    """What a collection starting now could spend (None: unpaced, or no Bright Data): the
    scheduler's own reckoning when there is one, so `status` and `budget` agree with what
    the next collection gets."""
    if not parts.hybrid.paid_sources:
        return None
    if parts.scheduler is not None and parts.scheduler.hybrid is parts.hybrid:
        return parts.scheduler.paid_allowance_now()
    from crawler.orchestrator.spending import SpendingPolicy

    policy = parts.scheduler.spending if parts.scheduler is not None else None
    if policy is None:
        policy = SpendingPolicy(
            pacing=parts.settings.budget_pacing,
            policy=parts.settings.budget_policy,
            max_quote_age_s=float(parts.settings.budget_max_quote_age_seconds),
            interval_s=float(parts.settings.update_interval_seconds),
            timezone=parts.settings.budget_timezone,
            market_hours=parts.market_hours if parts.settings.market_hours_enabled else None,
        )
    tracked = []
    for name, asset in parts.watchlist.items():
        try:
            tracked.append(parse_symbol(name, asset))
        except SymbolError:
            continue
    hours = parts.market_hours if parts.settings.market_hours_enabled else None
    due = len(tracked) if hours is None else sum(1 for s in tracked if _open(hours, s, now))
    return policy.preview(due, tracked, remaining, now)


def _open(hours: MarketHours, sym: Symbol, at: datetime) -> bool:
    try:
        return hours.is_open(sym.canonical, sym.asset_class, at=at)
    except Exception:  # a calendar problem: counted open, as the collector would fetch it
        return True
