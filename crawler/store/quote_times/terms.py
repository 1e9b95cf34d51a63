"""The closed-market memory's terms, once for both stores (`QuoteTimes`, `RedisQuoteTimes`).

Per symbol, the last quote (any source) and the last paid quote (`SymbolTimes`), and the one
rule of changing them (`later`): times never move backwards, so two writers at once (the
daemon and a CLI `crawler fetch`, or two nodes) both keep theirs. Losing this memory costs at
most one more fetch per symbol, never money beyond the ledger's budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

__all__ = ["QUOTE_TIMES_SUBDIR", "WHAT", "SymbolTimes", "later"]

#: The store's directory inside the data dir.
QUOTE_TIMES_SUBDIR: Final = "quote_times"
WHAT: Final = "quote times"


@dataclass(frozen=True, slots=True)
class SymbolTimes:
    """One symbol's last quote (any source) and last paid quote, UTC-aware or None."""

    last_quote_at: datetime | None = None
    last_paid_at: datetime | None = None


def later(old: SymbolTimes, at: datetime, *, paid: bool) -> SymbolTimes:
    """`old` after a quote at `at` (`paid`: from the paid source); never earlier than `old`.
    The Redis store applies the same rule atomically in its script."""
    last = at if old.last_quote_at is None else max(old.last_quote_at, at)
    last_paid = old.last_paid_at
    if paid:
        last_paid = at if last_paid is None else max(last_paid, at)
    return SymbolTimes(last, last_paid)
