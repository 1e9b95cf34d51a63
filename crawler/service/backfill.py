"""One backfill at a time: past bars from Yahoo's chart into the history, through the hybrid's
yfinance source (its session, crumb and Yahoo bucket) or one of our own when the sources' order
leaves yfinance out. `Operations.backfill` reads the arguments; this runs them.

    runs = BackfillRuns(ops)
    report = runs.run(parsed, "1d", start, end, history=lambda: store, now=utc_now)
    runs.close()                                   # our own yfinance source, if one was made
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawler.utils.exceptions import UsageError

if TYPE_CHECKING:
    from crawler.normalizer.symbols import Symbol
    from crawler.service.parts import ServiceParts
    from crawler.store.history import HistoryStore

__all__ = ["BackfillRuns"]


class BackfillRuns:
    """Backfills over the node `parts` describes, one at a time: a second would only queue on
    the same Yahoo bucket, so it is refused (UsageError) while one runs."""

    def __init__(self, parts: ServiceParts) -> None:
        self._parts = parts
        self._lock = threading.Lock()
        self._bar_source: Any = None

    def run(
        self,
        parsed: Sequence[Symbol],
        interval: str,
        start: datetime | None,
        end: datetime | None,
        *,
        history: Callable[[], HistoryStore],
        now: Callable[[], datetime],
        on_plan: Callable[[int], None] | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
    ) -> dict[str, Any]:
        """The report of one backfill of `parsed` (see `crawler.orchestrator.backfill`);
        `on_plan(requests)` before the first request, `on_progress(done, total, symbol)` after
        each."""
        from crawler.orchestrator.backfill import Backfiller

        if not self._lock.acquire(blocking=False):
            raise UsageError("a backfill is already running; wait for it to finish")
        try:
            backfiller = Backfiller(self._bars(), history(), now=now)
            plan = backfiller.plan(parsed, interval, start, end)
            if on_plan is not None:
                on_plan(len(plan.windows))
            return backfiller.run(plan, on_progress).to_dict()
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close our own yfinance source, if a backfill made one."""
        if self._bar_source is not None:
            self._bar_source.close()

    def _bars(self) -> Any:
        """The yfinance source a backfill asks: the hybrid's (its session, crumb and bucket),
        or one of our own when the sources' order leaves yfinance out."""
        source = self._parts.hybrid.sources.get("yfinance")
        if source is not None:
            return source
        if self._bar_source is None:
            from crawler.sources.yahoo_throttle import shared_throttle
            from crawler.sources.yfinance_source import YFinanceSource
            from crawler.store.datadir import ensure_data_dir

            settings = self._parts.settings
            self._bar_source = YFinanceSource(
                endpoint=settings.yfinance_endpoint,
                cache_dir=ensure_data_dir(Path(settings.data_dir) / "yfinance"),
                timeout_s=float(settings.request_timeout_seconds),
                deadline_s=float(settings.quote_deadline_seconds),
                max_workers=1,
                throttle=shared_throttle(settings.yfinance_max_rps),
            )
        return self._bar_source
