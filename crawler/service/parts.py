"""The parts of a node the service's views read: `Operations` has them all.

The status document and the money answer take a `ServiceParts` and read its attributes at each
call, never copied: a reload replaces `settings` on the Operations they were given.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.markets.hours import MarketHours
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.orchestrator.scheduler import DataScheduler
    from crawler.service.metrics import MetricsRecorder
    from crawler.store.backend import WatchlistStore

__all__ = ["ServiceParts"]


class ServiceParts(Protocol):
    """The settings, the hybrid fetcher and the stores of one node; `scheduler` is the
    daemon's (None offline), `market_hours` adds open/closed, `started_at` and `socket_path`
    describe the daemon."""

    settings: Settings
    hybrid: HybridDataSource
    watchlist: WatchlistStore
    scheduler: DataScheduler | None
    market_hours: MarketHours | None
    started_at: datetime | None
    socket_path: Path | None
    metrics: MetricsRecorder | None
