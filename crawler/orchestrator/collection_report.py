"""What one collection did (`CollectionReport`: the scheduler's `last_collection`, the
`collection_end` event, the lines `log_report` writes) and how far a running one is
(`CollectionProgress`: `crawler status` and the `collection_progress` events)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from crawler.logging import get_logger
from crawler.normalizer.schemas import Quote
from crawler.orchestrator.failures import first_few, group_failures, groups_json

if TYPE_CHECKING:
    from crawler.events import EventBus
    from crawler.utils.exceptions import CrawlerError

__all__ = ["CollectionProgress", "CollectionReport", "log_report"]

log = get_logger("crawler.scheduler")


@dataclass(frozen=True, slots=True)
class CollectionReport:
    """What one collection did. `sources` counts quotes by where they came from: a source's
    name, or "cache" for quotes served from the cache; `stale` counts the stale ones among
    them. `errors` maps a symbol to its one-line error message."""

    started_at: datetime
    duration_s: float
    symbols: int
    quotes: int
    errors: dict[str, str] = field(default_factory=dict)
    skipped_closed: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    stale: int = 0
    recorded: int | None = None
    paid_allowance: int | None = None
    #: Our own disk failing during the collection (a full data dir): how often, and the last
    #: message. Those quotes were served stale or not cached, never blamed on a source.
    storage_errors: int = 0
    storage_error: str | None = None

    @property
    def succeeded(self) -> bool:
        """False only when symbols were fetched and not one of them yielded a quote."""
        attempted = self.symbols - len(self.skipped_closed)
        return attempted == 0 or self.quotes > 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (the `last_collection` of the scheduler's statistics)."""
        return {
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "symbols": self.symbols,
            "quotes": self.quotes,
            "errors": dict(self.errors),
            "failures": groups_json(group_failures(self.errors)),
            "skipped_closed": list(self.skipped_closed),
            "sources": dict(self.sources),
            "stale": self.stale,
            "recorded": self.recorded,
            "paid_allowance": self.paid_allowance,
            "storage_errors": self.storage_errors,
            "storage_error": self.storage_error,
            "succeeded": self.succeeded,
        }

    def summary(self) -> str:
        """The one log line, e.g. "collection: 12 symbols, 11 quotes (bright_data 3,
        yfinance 2, cache 6), 1 error, 0 skipped closed, 0.84s"."""
        by_source = ", ".join(f"{name} {count}" for name, count in self.sources.items())
        errors = len(self.errors)
        text = (
            f"collection: {self.symbols} symbol{'' if self.symbols == 1 else 's'}, "
            f"{self.quotes} quote{'' if self.quotes == 1 else 's'}"
            + (f" ({by_source})" if by_source else "")
            + f", {errors} error{'' if errors == 1 else 's'}"
            + f", {len(self.skipped_closed)} skipped closed"
        )
        if self.stale:
            text += f", {self.stale} stale"
        if self.paid_allowance is not None:
            text += f", paid allowance {self.paid_allowance}"
        if self.storage_errors:
            text += f", {self.storage_errors} not stored or fetched ({self.storage_error})"
        return text + f", {self.duration_s:.2f}s"


def log_report(report: CollectionReport, quotes: list[Quote]) -> None:
    """A collection's log lines: its summary, the stale quotes served, and each failure cause
    once with its count and the first few symbols."""
    log.info("collection done", summary=report.summary())
    stale_names = [q.symbol for q in quotes if q.stale]
    if stale_names:
        log.info(
            "collection served stale quotes", count=len(stale_names), symbols=first_few(stale_names)
        )
    for group in group_failures(report.errors):
        log.warning(
            "collection failures",
            count=group.count,
            cause=group.cause,
            symbols=first_few(group.symbols),
        )


class CollectionProgress:
    """`fetch_many`'s `on_done` for one collection: counts each symbol once (a paid try after
    the free one is the same symbol), keeps `snapshot` and publishes `collection_progress`.
    Called on the collecting thread only, one call at a time."""

    def __init__(self, started: str, total: int, events: EventBus | None) -> None:
        self._started = started
        self._total = total
        self._events = events
        self._done = 0
        self._reported: set[str] = set()
        #: {"started_at", "done", "total"}: a new dict at each change, never mutated, so
        #: readers on other threads see a whole one.
        self.snapshot: dict[str, Any] = {"started_at": started, "done": 0, "total": total}

    def __call__(self, key: str, outcome: Quote | CrawlerError) -> None:
        if key in self._reported:
            return
        self._reported.add(key)
        self._done += 1
        self.snapshot = {"started_at": self._started, "done": self._done, "total": self._total}
        if self._events is not None:
            self._events.publish(
                "collection_progress",
                done=self._done,
                total=self._total,
                symbol=key,
                ok=isinstance(outcome, Quote),
            )
