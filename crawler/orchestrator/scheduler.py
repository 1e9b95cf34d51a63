"""The APScheduler jobs: periodic collection, the budget roll-over, cache cleanup, a heartbeat.

    with DataScheduler(["AAPL:US", "VOD:LN"], update_interval_minutes=15) as scheduler:
        scheduler.add_symbol("TSLA")            # → "TSLA:US"
        report = scheduler.force_collection()   # a collection now, in this thread
    reports = DataScheduler(["AAPL:US"]).run_once()   # each job once, no background thread

Jobs (APScheduler 3.x BackgroundScheduler, UTC), by id:

- collection: every `update_interval_seconds` (jittered, coalesced, one run at a time);
- budget_rollover: 00:00 in BUDGET_TIMEZONE, `ledger.record_rollover()`;
- cache_cleanup: hourly, `cache.cleanup()` then `history.prune()`;
- heartbeat: every `heartbeat_interval_s`, only with a `heartbeat` (the systemd watchdog).

A failing or missed job is logged on `crawler.scheduler` and counted; it never stops the
scheduler. The roll-over job is a record for status only: the ledger keys spend by day, so a new
day has a full budget even when the job did not run (APScheduler 3.11's CronTrigger skips the
midnight after a spring DST change, e.g. 2026-03-09 in America/New_York).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from crawler.logging import get_logger
from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import parse_symbol
from crawler.orchestrator.collection import CollectionReport, Collector, MarketClock
from crawler.orchestrator.collection_tally import CollectionTally, iso
from crawler.orchestrator.spending import SEED_ORDER_FILE, SpendingPolicy
from crawler.sources.base import PaidQuoteSource
from crawler.utils.clock import WallClock, utc_now
from crawler.utils.exceptions import ConfigError, CrawlerError, StorageError, SymbolError

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.events import EventBus
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.store.backend import QuoteTimesStore, WatchlistStore
    from crawler.store.history import HistoryStore

__all__ = ["JOB_NAMES", "MIN_INTERVAL_S", "DataScheduler"]

#: Seconds after start before the first collection (lets the control socket come up first).
_FIRST_COLLECTION_DELAY_S = 2.0

log = get_logger("crawler.scheduler")

#: The shortest collection interval accepted (the seed's "minimum: 1 minute").
MIN_INTERVAL_S = 60.0
#: Job id → the name shown in statistics.
JOB_NAMES: Mapping[str, str] = {
    "collection": "Data Collection",
    "budget_rollover": "Budget Roll-over",
    "cache_cleanup": "Cache Cleanup",
    "heartbeat": "Heartbeat",
}
_JOB_ORDER = {job_id: index for index, job_id in enumerate(JOB_NAMES)}
_CLEANUP_INTERVAL_S = 3600


class DataScheduler:
    """Collects quotes for the tracked symbols on a schedule (the seed's API).

    `update_interval_minutes` defaults to `settings.update_interval_seconds` / 60 and must be
    at least 1. Symbols without an `asset_classes` entry get the class their suffix implies.
    Without a `hybrid` (the seed's library use), the scheduler builds one from the settings on
    first use and cleans it up on `stop()`; a given one belongs to whoever built it (the
    daemon's node, `crawler.node`) and is left open.
    With a `watchlist` the tracked symbols live there (shared with the CLI); without, in memory.
    `market_hours` is used only when `settings.market_hours_enabled`.
    """

    def __init__(
        self,
        symbols: Iterable[str] = (),
        asset_classes: Mapping[str, AssetClass] | None = None,
        update_interval_minutes: float | None = None,
        *,
        settings: Settings | None = None,
        hybrid: HybridDataSource | None = None,
        watchlist: WatchlistStore | None = None,
        history: HistoryStore | None = None,
        market_hours: MarketClock | None = None,
        now: WallClock = utc_now,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_interval_s: float = 5.0,
        on_job_run: Callable[[str], None] | None = None,
        events: EventBus | None = None,
        on_job_problem: Callable[[str, str], None] | None = None,
        first_collection_delay_s: float | None = None,
        quote_times: QuoteTimesStore | None = None,
        budget_policy: str | None = None,
    ) -> None:
        if settings is None:
            from crawler.config import get_settings

            settings = get_settings()
        self._settings = settings
        self.update_interval_s = _interval_s(update_interval_minutes, settings)
        if not (heartbeat_interval_s > 0 and math.isfinite(heartbeat_interval_s)):
            raise ConfigError(f"heartbeat interval {heartbeat_interval_s!r} s must be above 0")
        self._heartbeat = heartbeat
        self._on_job_run = on_job_run
        # None: the usual short delay (the control socket comes up first).
        self._first_collection_delay_s = (
            _FIRST_COLLECTION_DELAY_S if first_collection_delay_s is None
            else first_collection_delay_s
        )  # fmt: skip
        # (job id, "error" | "missed"): the per-job counters of crawler.service.metrics.
        self._on_job_problem = on_job_problem
        self._heartbeat_interval_s = float(heartbeat_interval_s)
        #: The hybrid given (its builder closes it), else the one built on first use (ours).
        self._given_hybrid = hybrid
        self._built_hybrid: HybridDataSource | None = None
        self._watchlist = watchlist
        self._history = history
        self._now = now
        use_hours = market_hours if settings.market_hours_enabled else None
        #: Who may spend money in a collection (pacing and priority); see spending.py.
        self.spending = _spending_policy(settings, budget_policy, self.update_interval_s, use_hours)
        self._collector = Collector(
            market_hours=use_hours,
            now=now,
            events=events,
            quote_times=quote_times,
            spending=self.spending,
        )

        self._symbols_lock = threading.Lock()
        self._tracked: dict[str, AssetClass] = {}  # insertion-ordered mirror of the watchlist
        self._stats_lock = threading.Lock()
        self._tally = CollectionTally()
        self._last_report: CollectionReport | None = None
        self._hybrid_lock = threading.Lock()
        # Held for the whole of a collection: serialises forced and scheduled ones, and lets
        # stop() wait for a running one.
        self._collect_lock = threading.Lock()
        self._lifecycle_lock = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None
        self._accepting = False
        self._started_at: datetime | None = None

        if watchlist is not None:
            for name, asset in watchlist.items():
                self._tracked[name] = asset
        classes = dict(asset_classes or {})
        for text in symbols:
            self.add_symbol(text, classes.get(text) or classes.get(text.strip().upper()))

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether the background scheduler is running."""
        return self._scheduler is not None and self._scheduler.running

    @property
    def hybrid(self) -> HybridDataSource | None:
        """The hybrid fetcher in use; None until a collection builds the scheduler's own."""
        return self._given_hybrid if self._given_hybrid is not None else self._built_hybrid

    def apply_settings(self, settings: Settings, market_hours: MarketClock | None) -> None:
        """Take reloaded `settings`: the collection interval and jitter (the collection job is
        rescheduled when they changed) and market-hours skipping (`market_hours` None: off)."""
        interval_s = _interval_s(None, settings)
        old_jitter = self._settings.collection_jitter_seconds
        reschedule = (interval_s, settings.collection_jitter_seconds) != (
            self.update_interval_s,
            old_jitter,
        )
        self._settings = settings
        self.update_interval_s = interval_s
        self._collector.set_market_hours(market_hours)
        self.spending.retune(interval_s=interval_s, market_hours=market_hours)
        with self._lifecycle_lock:
            scheduler = self._scheduler
            if reschedule and scheduler is not None and scheduler.running:
                jitter_s = float(settings.collection_jitter_seconds or 0)
                scheduler.reschedule_job(
                    "collection",
                    trigger=IntervalTrigger(
                        seconds=interval_s, jitter=jitter_s or None, timezone=UTC
                    ),
                )

    def start(self) -> None:
        """Start the background scheduler and its jobs. A no-op when already running."""
        with self._lifecycle_lock:
            if self.is_running:
                return
            scheduler = BackgroundScheduler(timezone=UTC)
            scheduler.add_listener(
                self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
            )
            if self._on_job_run is not None:
                scheduler.add_listener(self._on_job_done, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
            interval_s = self.update_interval_s
            jitter_s = float(self._settings.collection_jitter_seconds or 0)
            scheduler.add_job(
                self._scheduled_collection,
                IntervalTrigger(seconds=interval_s, jitter=jitter_s or None, timezone=UTC),
                id="collection",
                name=JOB_NAMES["collection"],
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, int(interval_s // 2)),
                # The first collection runs at start, not one interval later: a freshly
                # started collector should have quotes to show.
                next_run_time=datetime.now(UTC) + timedelta(seconds=self._first_collection_delay_s),
            )
            scheduler.add_job(
                self._budget_rollover,
                CronTrigger(hour=0, minute=0, timezone=ZoneInfo(self._settings.budget_timezone)),
                id="budget_rollover",
                name=JOB_NAMES["budget_rollover"],
                coalesce=True,
                max_instances=1,
                misfire_grace_time=_CLEANUP_INTERVAL_S,
            )
            scheduler.add_job(
                self._maintenance,
                IntervalTrigger(seconds=_CLEANUP_INTERVAL_S, timezone=UTC),
                id="cache_cleanup",
                name=JOB_NAMES["cache_cleanup"],
                coalesce=True,
                max_instances=1,
                misfire_grace_time=_CLEANUP_INTERVAL_S // 2,
            )
            if self._heartbeat is not None:
                scheduler.add_job(
                    self._heartbeat,
                    IntervalTrigger(seconds=self._heartbeat_interval_s, timezone=UTC),
                    id="heartbeat",
                    name=JOB_NAMES["heartbeat"],
                    coalesce=True,
                    max_instances=1,
                )
            self._accepting = True
            scheduler.start()
            self._scheduler = scheduler
            with self._stats_lock:
                self._started_at = self._now()
            log.info("scheduler started", symbols=len(self._tracked), interval_s=interval_s)

    def stop(self, timeout_s: float = 8.0, *, abort: bool = False) -> bool:
        """Stop scheduling, wait up to `timeout_s` for a running collection, then shut down
        without waiting further. Cleans up a hybrid this scheduler built. Idempotent.

        `abort` (the daemon is exiting) makes a running collection stop fetching now: what has
        not started is cancelled, what has landed is recorded. Returns whether no collection
        is still running; when one is, the caller must not close the stores it uses.
        """
        with self._lifecycle_lock:
            self._accepting = False
            scheduler, self._scheduler = self._scheduler, None
            if scheduler is not None and scheduler.running:
                # Pause first so no new run is submitted while we wait for the current one.
                scheduler.pause()
            hybrid = self.hybrid
            if abort and hybrid is not None:
                hybrid.abort()
            finished = self._collect_lock.acquire(timeout=max(0.0, timeout_s))
            if finished:
                self._collect_lock.release()
            else:
                log.warning("collection still running; stopping anyway", waited_s=timeout_s)
            if scheduler is not None and scheduler.running:
                scheduler.shutdown(wait=False)
            with self._stats_lock:
                self._started_at = None
            if finished:
                self._release_hybrid()
            if scheduler is not None:
                log.info("scheduler stopped")
            return finished

    def __enter__(self) -> DataScheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- symbols -----------------------------------------------------------------------------

    def add_symbol(self, symbol: str, asset_class: AssetClass | None = None) -> str:
        """Track `symbol` (persisted to the watchlist, if any); returns its canonical form.
        Raises SymbolError for a malformed symbol."""
        sym = parse_symbol(symbol, asset_class)
        with self._symbols_lock:
            if self._watchlist is not None:
                self._watchlist.add(sym, sym.asset_class)
            self._tracked.setdefault(sym.canonical, sym.asset_class)
        return sym.canonical

    def remove_symbol(self, symbol: str) -> bool:
        """Stop tracking `symbol`; False if it was not tracked."""
        try:
            canonical = parse_symbol(symbol).canonical
        except SymbolError:
            canonical = symbol.strip()
        with self._symbols_lock:
            removed = self._tracked.pop(canonical, None) is not None
            if self._watchlist is not None:
                # A symbol the watchlist cannot store is not in it either.
                with contextlib.suppress(SymbolError):
                    removed = self._watchlist.remove(canonical) or removed
        self._collector.forget(canonical)
        return removed

    def get_tracked_symbols(self) -> list[str]:
        """The tracked canonical symbols, in the order they were added."""
        return [name for name, _ in self._tracked_items()]

    # -- jobs --------------------------------------------------------------------------------

    def force_collection(self) -> dict[str, Any]:
        """Run a collection now, in this thread (after any running one); returns its report.
        Raises what the collection raised (e.g. StorageError from the history)."""
        return self._collect().as_dict()

    def run_once(self) -> dict[str, Any]:
        """Run every job once, in this thread, without starting the scheduler (like arq's
        burst mode). Returns {job: report}; a failed job's report is {"error": message}."""
        return {
            "collection": self._run_reported("collection", lambda: self._collect().as_dict()),
            "budget_rollover": self._run_reported("budget_rollover", self._budget_rollover),
            "cache_cleanup": self._run_reported("cache_cleanup", self._cleanup_cache),
            "history_prune": self._run_reported("history_prune", self._prune_history),
        }

    def get_statistics(self) -> dict[str, Any]:
        """The seed's statistics: scheduler_state, collection_metrics, scheduled_jobs,
        last_collection. Safe from any thread."""
        tracked = len(self._tracked_items())
        with self._stats_lock:
            metrics = self._tally.as_dict()
            started_at = iso(self._started_at)
            last = self._last_report.as_dict() if self._last_report else None
        return {
            "scheduler_state": {
                "is_running": self.is_running,
                "symbols_tracked": tracked,
                "update_interval_seconds": self.update_interval_s,
                "started_at": started_at,
                # {"started_at", "done", "total"} while a collection runs, else None.
                "collection_in_progress": self._collector.in_progress,
            },
            "collection_metrics": metrics,
            "scheduled_jobs": self._jobs(),
            "last_collection": last,
        }

    @property
    def last_report(self) -> CollectionReport | None:
        """The last collection's report, or None; cheap (reads no store), for heartbeats."""
        with self._stats_lock:
            return self._last_report

    # -- internals ---------------------------------------------------------------------------

    def paid_allowance_now(self) -> int | None:
        """The paid allowance a collection starting now would get, reckoned as the collection
        reckons it (None: unpaced, or no paid source)."""
        hybrid = self.hybrid
        # Asked of what the sources can do (bill per request), not of their names.
        if hybrid is None or not any(
            isinstance(source, PaidQuoteSource) for source in hybrid.sources.values()
        ):
            return None
        return self._collector.preview_allowance(hybrid, self._tracked_items(), self._now())

    def _tracked_items(self) -> list[tuple[str, AssetClass]]:
        with self._symbols_lock:
            if self._watchlist is not None:
                try:
                    # Re-read: a CLI process may have changed the watchlist since.
                    self._tracked = dict(self._watchlist.items())
                except StorageError as exc:
                    log.warning("watchlist unreadable, using the last copy", error=exc.message)
            return list(self._tracked.items())

    def _hybrid_source(self) -> HybridDataSource:
        if self._given_hybrid is not None:
            return self._given_hybrid
        with self._hybrid_lock:
            if self._built_hybrid is None:
                from crawler.orchestrator.hybrid import HybridDataSource

                self._built_hybrid = HybridDataSource(self._settings)
            return self._built_hybrid

    def _release_hybrid(self) -> None:
        """Clean up the hybrid this scheduler built (a given one is left to its builder)."""
        with self._hybrid_lock:
            built, self._built_hybrid = self._built_hybrid, None
        if built is not None:
            built.cleanup()

    def _scheduled_collection(self) -> None:
        if not self._accepting:  # stop() began after this run was submitted
            return
        self._collect()

    def _collect(self) -> CollectionReport:
        with self._collect_lock:
            try:
                # One collection never runs into the next: the interval is its deadline.
                report = self._collector.collect(
                    self._hybrid_source(),
                    self._tracked_items(),
                    self._history,
                    deadline_s=self.update_interval_s,
                )
            except BaseException:
                with self._stats_lock:
                    self._tally.count_failure(at=self._now())
                raise
            with self._stats_lock:
                self._tally.count(report)
                self._last_report = report
            return report

    def _budget_rollover(self) -> dict[str, Any]:
        ledger = self._hybrid_source().ledger
        ledger.record_rollover()
        day = ledger.day()
        log.info("budget roll-over recorded", day=day)
        return {"day": day}

    def _cleanup_cache(self) -> dict[str, Any]:
        removed = self._hybrid_source().cache.cleanup()
        log.info("cache cleanup", removed=removed)
        return {"removed": removed}

    def _prune_history(self) -> dict[str, Any]:
        if self._history is None:
            return {"removed": None}
        removed = self._history.prune()
        log.info("history prune", removed=removed)
        return {"removed": removed}

    def _maintenance(self) -> None:
        # The prune runs even if the cache cleanup failed; the first error is still raised.
        first: CrawlerError | None = None
        for step in (self._cleanup_cache, self._prune_history):
            try:
                step()
            except CrawlerError as exc:
                first = first or exc
        if first is not None:
            raise first

    def _run_reported(self, job_id: str, job: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return job()
        except Exception as exc:
            message = exc.message if isinstance(exc, CrawlerError) else repr(exc)
            log.error("job failed", job=job_id, error=message)
            with self._stats_lock:
                self._tally.job_errors += 1
            self._report_problem(job_id, "error")
            return {"error": message}

    def _report_problem(self, job_id: str, kind: str) -> None:
        if self._on_job_problem is None:
            return
        try:
            self._on_job_problem(job_id, kind)
        except Exception:  # an observer must never break the scheduler
            log.exception("job observer failed")

    def _on_job_done(self, event: JobEvent) -> None:
        if self._on_job_run is None:
            return
        try:
            self._on_job_run(event.job_id)
        except Exception:  # an observer must never break the scheduler
            log.exception("job observer failed")

    def _on_job_event(self, event: JobEvent) -> None:
        with self._stats_lock:
            if event.code == EVENT_JOB_ERROR:
                self._tally.job_errors += 1
            else:
                self._tally.missed_runs += 1
        self._report_problem(event.job_id, "error" if event.code == EVENT_JOB_ERROR else "missed")
        if event.code == EVENT_JOB_ERROR and isinstance(event, JobExecutionEvent):
            log.error("job failed", job=event.job_id, error=str(event.exception))
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("job skipped: the previous run is still going", job=event.job_id)
        else:
            log.warning("job missed its run time", job=event.job_id)

    def _jobs(self) -> list[dict[str, Any]]:
        scheduler = self._scheduler
        if scheduler is None or not scheduler.running:
            ids = [i for i in JOB_NAMES if i != "heartbeat" or self._heartbeat is not None]
            return [{"id": i, "name": JOB_NAMES[i], "next_run": None} for i in ids]
        return [
            {
                "id": job.id,
                "name": job.name,
                "next_run": iso(getattr(job, "next_run_time", None)),
            }
            # A fixed order (not APScheduler's next-run order), so status output is stable.
            for job in sorted(scheduler.get_jobs(), key=lambda job: _JOB_ORDER.get(job.id, 99))
        ]


def _spending_policy(
    settings: Settings, budget_policy: str | None, interval_s: float, hours: MarketClock | None
) -> SpendingPolicy:
    return SpendingPolicy(
        pacing=settings.budget_pacing,
        # The daemon passes `[budget] policy`; a scheduler used as a library (the seed's
        # examples) keeps the seed's documented behaviour: paced, Bright Data first.
        policy=budget_policy or "paced",
        # Today's paid requests against the seed's order: the daemon keeps them on disk.
        counts_path=(
            Path(settings.data_dir) / SEED_ORDER_FILE if budget_policy is not None else None
        ),
        max_quote_age_s=float(settings.budget_max_quote_age_seconds),
        interval_s=interval_s,
        timezone=settings.budget_timezone,
        market_hours=hours,
    )


def _interval_s(update_interval_minutes: float | None, settings: Settings) -> float:
    if update_interval_minutes is None:
        value_s = float(settings.update_interval_seconds)
        shown = f"UPDATE_INTERVAL_SECONDS={settings.update_interval_seconds}"
    else:
        if isinstance(update_interval_minutes, bool):
            raise ConfigError("update_interval_minutes must be a number of minutes, e.g. 15")
        value_s = float(update_interval_minutes) * 60
        shown = f"update_interval_minutes={update_interval_minutes}"
    if not (math.isfinite(value_s) and value_s >= MIN_INTERVAL_S):
        raise ConfigError(
            f"update interval {shown} is below the 1-minute minimum; use at least 60 seconds "
            "(recommended: 900)"
        )
    return value_s
