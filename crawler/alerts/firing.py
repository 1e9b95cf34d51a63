"""What an alert says when it fires: the value shown and the message, per kind of rule (pure).

    quote_firing(rule, state, quote)       # above / below / move: the price or the move
    budget_firing(rule, Decimal("81.5"))   # "81.5% of today's Bright Data budget is spent ..."
    stale_firing(rule, 900.0, last_seen)   # "AAPL:US has had no new quote for 15m ..."

The evaluator (`crawler.alerts.evaluator`) decides when a rule fires; these only word it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from crawler.alerts.rules import AlertRule, RuleState, format_duration, move_pct
from crawler.normalizer.schemas import Quote

__all__ = ["Firing", "budget_firing", "quote_firing", "stale_firing"]


@dataclass(frozen=True)
class Firing:
    """What crossed: the value shown (a price, a percent, an age), and the message."""

    rule_id: int
    value: str
    message: str
    reference: Decimal | None = None  # move since the last alert: the new reference price


def quote_firing(rule: AlertRule, state: RuleState, quote: Quote) -> Firing:
    """The firing of a price rule (above, below, move) that `quote` crossed."""
    currency = f" {quote.currency}" if quote.currency else ""
    price = f"{quote.price}{currency}"
    where = f"{quote.source}, {quote.fetched_at:%H:%M:%S} UTC"
    if rule.kind in ("above", "below"):
        text = f"{rule.symbol} at {price} is {rule.kind} {rule.threshold} ({where})"
        return Firing(rule.id, price, text)
    moved = move_pct(rule, state, quote) or Decimal(0)
    shown = f"{moved:+.2f}%"
    if rule.basis == "last-alert":
        return Firing(
            rule.id,
            shown,
            f"{rule.symbol} moved {shown} since the last alert ({state.reference} -> "
            f"{price}; {where})",
            reference=quote.price,
        )
    text = f"{rule.symbol} moved {shown} from the previous close, at {price} ({where})"
    return Firing(rule.id, shown, text)


def budget_firing(rule: AlertRule, budget_pct: Decimal) -> Firing:
    """The firing of a budget rule at `budget_pct` of today's budget spent."""
    return Firing(
        rule.id,
        f"{budget_pct}%",
        f"{budget_pct}% of today's Bright Data budget is spent (alert at {rule.threshold}%)",
    )


def stale_firing(rule: AlertRule, age_s: float, last_seen_at: datetime | None) -> Firing:
    """The firing of a stale rule whose symbol has had no new quote for `age_s` seconds while
    its market was open (`last_seen_at`: when its last quote landed, None: none since the
    start)."""
    last = (
        f"last at {last_seen_at:%Y-%m-%d %H:%M:%S} UTC"
        if last_seen_at is not None
        else "none since the start"
    )
    return Firing(
        rule.id,
        format_duration(int(age_s)),
        f"{rule.symbol} has had no new quote for {format_duration(int(age_s))} "
        f"while its market is open ({last}; alert after "
        f"{format_duration(rule.duration_s or 0)})",
    )
