"""One node built from settings, in one place: the daemon and the offline CLI alike.

    node = build_node(settings)                       # the offline CLI: stores, sources, history
    node = build_node(settings, daemon=Hooks(...))    # the daemon's: + event bus, alerts,
                                                      #   scheduler, live feed (stream on)
    node.start()                                      # the daemon: scheduler, alerts, live feed
    node.close()                                      # everything built, in reverse order

Modelled on arq's `create_worker`: every collaborator is built once, here, in one order, and
the node owns exactly what it built. `close()` undoes the build step by step in reverse (the
live feed, the scheduler, the alerts, the sources, the history, the stores, the event bus), so
nobody else decides who closes what. A build that fails half-way closes what it had built
before the error goes up.

One exception to the reverse order, on purpose: when the scheduler cannot stop its running
collection in time, the sources and stores that collection uses stay open (closing SQLite
under a running collection crashed the process); the process exit releases them.

What the daemon adds around a node (the control socket, the metrics port, the heartbeat) it
starts after `build_node` and stops before `node.close()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from crawler.logging import get_logger

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from crawler.alerts.node import Alerts
    from crawler.config import Settings
    from crawler.events import EventBus
    from crawler.markets.hours import MarketHours
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.orchestrator.live import LiveFeed
    from crawler.orchestrator.scheduler import DataScheduler
    from crawler.sources.base import QuoteSource
    from crawler.store.backend import QuoteTimesStore, Stores, WatchlistStore
    from crawler.store.history import HistoryStore

__all__ = ["SCHEDULER_STOP_S", "DaemonParts", "Hooks", "Node", "Recorder", "build_node"]

#: How long a running collection may take to finish once a stop is requested.
SCHEDULER_STOP_S: Final = 5.0
#: How long releasing the sources (their worker threads, HTTP sessions) may take.
CLEANUP_STOP_S: Final = 2.0
#: How long closing the stream may take.
STREAM_STOP_S: Final = 2.0
#: How long each alert thread (evaluator, notifier) may take to stop.
ALERTS_STOP_S: Final = 1.0
#: With the stream on, how long after start the first collection waits for streamed ticks.
STREAM_FIRST_TICKS_S: Final = 10.0

log = get_logger("crawler.node")


class Recorder(Protocol):
    """What a node tells its metrics (`crawler.service.metrics.MetricsRecorder`)."""

    #: Where the alerts register their Prometheus families.
    registry: CollectorRegistry

    def record_fetch(self, source: str, outcome: str, duration_s: float, /) -> None: ...
    def record_breaker_transition(self, source: str, old: str, new: str, /) -> None: ...
    def record_job_run(self, job: str, /) -> None: ...
    def record_job_problem(self, job: str, kind: str, /) -> None: ...


@dataclass(frozen=True)
class Hooks:
    """What a daemon's node reports to: its metrics and systemd's watchdog (all optional)."""

    metrics: Recorder | None = None
    #: Pinged by the scheduler every `watchdog_interval_s` (proof that the jobs run).
    watchdog: Callable[[], None] | None = None
    watchdog_interval_s: float | None = None


@dataclass(frozen=True)
class _Step:
    """One built part's way back: `close` returns False when the part is still busy."""

    name: str
    close: Callable[[], object]
    #: Skipped when an earlier step (the scheduler) reported a collection still running.
    needs_idle: bool = False


@dataclass
class DaemonParts:
    """What only a daemon's node has: `build_node(settings, daemon=Hooks(...))`."""

    events: EventBus
    alerts: Alerts
    scheduler: DataScheduler
    #: Yahoo's stream, with `stream_enabled`.
    live: LiveFeed | None


@dataclass
class Node:
    """What one crawler process holds; built by `build_node`, closed by `close()` (once)."""

    settings: Settings
    stores: Stores
    hybrid: HybridDataSource
    history: HistoryStore
    market_hours: MarketHours
    #: The event bus, alerts, scheduler and live feed (None offline).
    daemon: DaemonParts | None = None
    _steps: list[_Step] = field(default_factory=list, repr=False)

    @property
    def watchlist(self) -> WatchlistStore:
        """The tracked symbols (one of the stores: shared by a cluster on Redis)."""
        return self.stores.watchlist

    @property
    def quote_times(self) -> QuoteTimesStore:
        """The closed-market memory (one of the stores)."""
        return self.stores.quote_times

    def start(self) -> None:
        """Start what runs in the background: the scheduler (when `auto_update_enabled`),
        the alerts, the live feed."""
        parts = self.daemon
        if parts is None:
            return
        if self.settings.auto_update_enabled:
            parts.scheduler.start()
        parts.alerts.start()
        if parts.live is not None:
            parts.live.start()

    def apply_settings(self, settings: Settings, changed: Collection[str]) -> None:
        """Take reloaded `settings` (`changed`: the names that differ, all of them live ones):
        the budget's limits, the sources' order (read per quote), the scheduler's interval and
        market hours, and what is streamed."""
        if {"total_budget", "cost_per_request"} & set(changed):
            self.hybrid.ledger.set_limits(
                Decimal(str(settings.total_budget)), Decimal(str(settings.cost_per_request))
            )
        self.hybrid.settings = settings
        hours = self.market_hours if settings.market_hours_enabled else None
        if self.daemon is not None:
            self.daemon.scheduler.apply_settings(settings, hours)
            if self.daemon.live is not None:
                self.daemon.live.set_market_hours(hours)
        self.settings = settings

    def close(self) -> None:
        """Close everything built, in reverse build order. Safe to call twice."""
        _close_steps(self._steps)


def _close_steps(steps: list[_Step]) -> None:
    """Run `steps`' closers last first (emptying the list); one failing does not stop the
    others. After a step that says it is still busy, the `needs_idle` ones are left open."""
    busy = False
    while steps:
        step = steps.pop()
        if busy and step.needs_idle:
            continue
        try:
            idle = step.close()
        except Exception:  # one part failing to close must not keep the others open
            log.exception("closing failed", part=step.name)
            continue
        if idle is False:
            busy = True
            log.warning("a collection is still running: its stores stay open until exit")


def build_node(settings: Settings, *, daemon: Hooks | None = None) -> Node:
    """The node `settings` describe. Without `daemon`: the stores (embedded or Redis), the
    sources behind the hybrid fetcher, the history and market hours (the offline CLI). With
    it, also the event bus, the alerts, the scheduler and, with the stream on, the live feed,
    each reporting to `daemon`'s hooks."""
    steps: list[_Step] = []
    try:
        return _build(settings, daemon, steps)
    except BaseException:
        _close_steps(steps)
        raise


def _build(settings: Settings, daemon: Hooks | None, steps: list[_Step]) -> Node:
    from crawler.markets.hours import MarketHours
    from crawler.orchestrator.hybrid import build_sources
    from crawler.store.backend import open_stores
    from crawler.store.datadir import ensure_data_dir
    from crawler.store.history import HistoryStore

    data_dir = ensure_data_dir(Path(settings.data_dir))
    events = None
    if daemon is not None:
        from crawler.events import EventBus

        events = EventBus()
        steps.append(_Step("the event bus", events.close))
    # One backend for the ledger, cache, watchlist, leases and heartbeats (embedded or
    # Redis); history stays local either way.
    stores = open_stores(settings)
    steps.append(_Step("the stores", stores.close, needs_idle=True))
    sources = build_sources(settings, stores.ledger, data_dir=data_dir)
    steps.append(_Step("the sources", lambda: _bounded(lambda: _close_all(sources)), True))
    hybrid = _build_hybrid(settings, data_dir, stores, sources, events, daemon)
    # From here the hybrid fetcher closes them, after its own worker threads.
    steps[-1] = _Step("the sources", lambda: _bounded(hybrid.cleanup), needs_idle=True)
    history = HistoryStore(data_dir / "history", settings.history_retention_days)
    steps.append(_Step("the history", history.close, needs_idle=True))
    node = Node(settings, stores, hybrid, history, MarketHours(), _steps=steps)
    if daemon is not None:
        assert events is not None
        node.daemon = _build_daemon_parts(node, events, daemon)
    return node


def _breaker_change(
    events: EventBus | None, hooks: Hooks | None
) -> Callable[[str, str, str], None] | None:
    """A breaker's change told to the metrics and the watchers (the breaker logs it itself)."""
    if events is None or hooks is None:
        return None
    metrics = hooks.metrics

    def changed(name: str, old: str, new: str) -> None:
        if metrics is not None:
            metrics.record_breaker_transition(name, old, new)
        events.publish("breaker", name=name, old=old, new=new)

    return changed


def _build_hybrid(
    settings: Settings,
    data_dir: Path,
    stores: Stores,
    sources: list[QuoteSource],
    events: EventBus | None,
    daemon: Hooks | None,
) -> HybridDataSource:
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.store.yahoo_unknowns import YAHOO_UNKNOWNS_FILE, YahooUnknowns

    return HybridDataSource(
        settings,
        stores=stores,
        sources=sources,
        on_breaker_change=_breaker_change(events, daemon),
        on_fetch=daemon.metrics.record_fetch if daemon and daemon.metrics else None,
        events=events,
        # Symbols Yahoo does not know are not asked again every collection (a cluster
        # shares them through Redis).
        unknowns=YahooUnknowns(data_dir / YAHOO_UNKNOWNS_FILE, redis=stores.redis),
    )


def _build_daemon_parts(node: Node, events: EventBus, hooks: Hooks) -> DaemonParts:
    from crawler.alerts.node import build_alerts
    from crawler.orchestrator.scheduler import DataScheduler

    settings, steps, metrics = node.settings, node._steps, hooks.metrics
    # Alerts look at every quote the bus publishes (stream, collections, fetches).
    alerts = build_alerts(
        settings, node.stores, events, node.market_hours, metrics.registry if metrics else None
    )
    steps.append(_Step("the alerts", lambda: alerts.stop(ALERTS_STOP_S)))
    scheduler = DataScheduler(
        settings=settings,
        hybrid=node.hybrid,
        watchlist=node.watchlist,
        history=node.history,
        market_hours=node.market_hours,
        heartbeat=hooks.watchdog if hooks.watchdog_interval_s else None,
        heartbeat_interval_s=hooks.watchdog_interval_s or 5.0,
        on_job_run=metrics.record_job_run if metrics else None,
        events=events,
        on_job_problem=metrics.record_job_problem if metrics else None,
        # With the stream on, the first collection waits for its first ticks: a symbol
        # that has ticked is not fetched (and not paid for) again.
        first_collection_delay_s=STREAM_FIRST_TICKS_S if settings.stream_enabled else None,
        quote_times=node.quote_times,
        budget_policy=settings.budget_policy,
    )
    # False while a collection is still running: the stores it uses stay open.
    steps.append(_Step("the scheduler", lambda: scheduler.stop(SCHEDULER_STOP_S, abort=True)))
    if not settings.stream_enabled:
        return DaemonParts(events, alerts, scheduler, live=None)
    live = _build_live(node, events, _breaker_change(events, hooks))
    steps.append(_Step("the live feed", lambda: live.stop(STREAM_STOP_S)))
    return DaemonParts(events, alerts, scheduler, live)


def _build_live(
    node: Node, events: EventBus, on_breaker_change: Callable[[str, str, str], None] | None
) -> LiveFeed:
    from crawler.orchestrator.circuit_breaker import CircuitBreaker
    from crawler.orchestrator.live import LiveFeed

    settings = node.settings
    live = LiveFeed(
        settings.yfinance_stream_endpoint,
        watchlist=node.watchlist,
        cache=node.hybrid.cache,
        history=node.history,
        events=events,
        market_hours=node.market_hours if settings.market_hours_enabled else None,
        history_interval_s=float(settings.stream_history_interval_seconds),
        fresh_s=float(settings.cache_ttl_seconds),
        closed_grace_s=float(settings.update_interval_seconds),
        breaker=CircuitBreaker(
            name="yahoo_stream",
            failure_threshold=3,
            recovery_timeout=60.0,
            on_state_change=on_breaker_change,
        ),
    )
    node.hybrid.live = live  # asked before the cache and the sources
    return live


def _close_all(sources: list[QuoteSource]) -> None:
    for source in sources:
        source.close()


def _bounded(action: Callable[[], object], timeout_s: float = CLEANUP_STOP_S) -> None:
    """Run `action` on a helper thread; abandon it (logged) after `timeout_s`."""
    worker = threading.Thread(target=action, name="crawler-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        log.warning(
            "shutdown step took too long; exiting without waiting for it",
            step="releasing the sources",
            timeout_s=timeout_s,
        )
