"""The scheduler's running totals: its collections and its jobs' problems, as the seed's
`get_statistics()["collection_metrics"]` shows them (not thread-safe: the scheduler holds its
statistics lock around each call).

    tally = CollectionTally()
    tally.count(report)                 # a collection that returned its report
    tally.count_failure(at=now)         # one that raised
    tally.as_dict()                     # total_collections, success_rate_pct, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crawler.orchestrator.collection import CollectionReport

__all__ = ["CollectionTally", "iso"]


@dataclass
class CollectionTally:
    """See the module docstring."""

    successful_collections: int = 0
    failed_collections: int = 0
    total_quotes_collected: int = 0
    total_errors: int = 0
    skipped_market_closed: int = 0
    last_collection_at: datetime | None = None
    last_success_at: datetime | None = None
    last_duration_s: float | None = None
    job_errors: int = 0
    missed_runs: int = 0

    @property
    def total_collections(self) -> int:
        """Every collection counts once: it succeeded or it failed."""
        return self.successful_collections + self.failed_collections

    def count(self, report: CollectionReport) -> None:
        """A collection that ran to its report (succeeded or not)."""
        if report.succeeded:
            self.successful_collections += 1
            self.last_success_at = report.started_at
        else:
            self.failed_collections += 1
        self.total_quotes_collected += report.quotes
        self.total_errors += len(report.errors)
        self.skipped_market_closed += len(report.skipped_closed)
        self.last_collection_at = report.started_at
        self.last_duration_s = round(report.duration_s, 3)

    def count_failure(self, at: datetime) -> None:
        """A collection that raised instead of reporting."""
        self.failed_collections += 1
        self.last_collection_at = at

    def as_dict(self) -> dict[str, Any]:
        """The seed's `collection_metrics`, in its order."""
        total = self.total_collections
        rate = round(100 * self.successful_collections / total, 2) if total else 0.0
        return {
            "total_collections": total,
            "successful_collections": self.successful_collections,
            "failed_collections": self.failed_collections,
            "success_rate_pct": rate,
            "total_quotes_collected": self.total_quotes_collected,
            "total_errors": self.total_errors,
            "skipped_market_closed": self.skipped_market_closed,
            "last_collection_at": iso(self.last_collection_at),
            "last_success_at": iso(self.last_success_at),
            "last_duration_s": self.last_duration_s,
            "job_errors": self.job_errors,
            "missed_runs": self.missed_runs,
        }


def iso(value: datetime | None) -> str | None:
    """`value` in ISO 8601, or None."""
    return value.isoformat() if value is not None else None
