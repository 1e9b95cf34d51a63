"""What the hybrid says about the money: `budget` events after paid requests, one
`budget_exhausted` per day, and the BudgetExhaustedError raised when the budget is what kept a
symbol from being served."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from crawler.utils.exceptions import BudgetExhaustedError

if TYPE_CHECKING:
    from crawler.events import EventBus
    from crawler.store.backend import LedgerStore

__all__ = ["BudgetNews"]


class BudgetNews:
    """The ledger's state told to the event bus's watchers, and as an error."""

    def __init__(self, ledger: LedgerStore, events: EventBus | None = None) -> None:
        self.ledger = ledger
        self.events = events
        # The day a `budget_exhausted` event was published for (once per day).
        self._exhausted_day: str | None = None

    def announce_exhausted(self) -> None:
        """A `budget_exhausted` event for a day that ran out before we spent anything (a
        restart after the money was gone): once per day, not once per skipped symbol."""
        events = self.events
        if events is None or not events.watched:
            return
        day = self.ledger.day()
        if self._exhausted_day == day:
            return
        self._exhausted_day = day
        self._publish_exhausted(events, self.ledger.statistics(), day)

    def after_paid_request(self) -> None:
        """A `budget` event after a paid request; `budget_exhausted` once per day at the end."""
        events = self.events
        if events is None or not events.watched:
            return
        stats = self.ledger.statistics()
        events.publish(
            "budget",
            spent_usd=str(stats["total_cost"]),
            remaining_usd=str(stats["budget_remaining"]),
            used_pct=stats["budget_used_pct"],
            requests_used=stats["requests_used"],
            requests_allowed=stats["requests_allowed"],
        )
        day = str(stats.get("day"))
        if int(stats["requests_used"]) >= int(stats["requests_allowed"]) and (
            self._exhausted_day != day
        ):
            self._exhausted_day = day
            self._publish_exhausted(events, stats, day)

    def error(self) -> BudgetExhaustedError:
        """The error for a symbol the spent budget kept from its paid source."""
        stats = self.ledger.statistics()
        frees_at = stats.get("money_frees_at")
        message = None
        if isinstance(frees_at, str):  # the ledger's rolling 24-hour rule, not "midnight"
            when = datetime.fromisoformat(frees_at).astimezone(UTC)
            message = (
                f"daily budget exhausted: {stats['requests_used']}/{stats['requests_allowed']} "
                f"requests, ${stats['total_cost']} spent; money frees up at "
                f"{when:%Y-%m-%d %H:%M} UTC, or raise TOTAL_BUDGET"
            )
        return BudgetExhaustedError(
            current_usage=int(stats["requests_used"]),
            budget_limit=int(stats["requests_allowed"]),
            cost_spent=Decimal(str(stats["total_cost"])),
            message=message,
        )

    @staticmethod
    def _publish_exhausted(events: EventBus, stats: dict[str, Any], day: str) -> None:
        events.publish(
            "budget_exhausted",
            spent_usd=str(stats["total_cost"]),
            requests_used=stats["requests_used"],
            day=day,
        )
