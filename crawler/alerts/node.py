"""The alerts of one daemon, built in one place from its settings and stores.

    alerts = build_alerts(settings, stores, events, market_hours)   # Daemon._build
    alerts.start()                 # the evaluator's thread, the notifier's thread
    register_alert_routes(server, alerts.service)
    alerts.stop(2.0)               # before the stores close

It owns the evaluator and the notifier (their threads), not the stores: the alert store rides
on the daemon's backend (its Redis connection on a cluster) and is closed here only when
embedded (its own diskcache).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from crawler.alerts.evaluator import AlertEvaluator
from crawler.alerts.notify import Notifier
from crawler.alerts.service import AlertService
from crawler.alerts.store import AlertStore, open_alert_store

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from crawler.config import Settings
    from crawler.events import EventBus
    from crawler.markets.hours import MarketHours
    from crawler.store.backend import Stores

__all__ = ["Alerts", "build_alerts"]


@dataclass
class Alerts:
    """What `build_alerts` made: start it, route to its service, stop it."""

    store: AlertStore
    evaluator: AlertEvaluator
    notifier: Notifier
    service: AlertService

    def start(self) -> None:
        """Start delivering (the notifier first: the evaluator may fire at once)."""
        self.notifier.start()
        self.evaluator.start()

    def stop(self, timeout_s: float) -> None:
        """Stop both threads, each bounded by `timeout_s`; then close the store."""
        self.evaluator.stop(timeout_s)
        self.notifier.stop(timeout_s)
        self.store.close()


def build_alerts(
    settings: Settings,
    stores: Stores,
    events: EventBus,
    market_hours: MarketHours | None,
    registry: CollectorRegistry | None = None,
) -> Alerts:
    """The alerts of a node over `stores` (its Redis when shared), listening on `events`;
    their Prometheus families on `registry` when given."""
    from crawler.normalizer.symbols import parse_symbol

    store, _ = open_alert_store(settings, stores.redis)
    hours = market_hours if settings.market_hours_enabled else None

    def market_open(symbol: str) -> bool:
        if hours is None:
            return True
        return hours.is_open(symbol, parse_symbol(symbol).asset_class)

    def budget_used_pct() -> float:
        return float(stores.ledger.statistics()["budget_used_pct"])

    notifier = Notifier(timeout_s=float(settings.alerts_notify_timeout_seconds))
    evaluator = AlertEvaluator(
        store,
        events=events,
        notifier=notifier,
        node=stores.node,
        band_pct=Decimal(str(settings.alerts_rearm_band_pct)),
        check_interval_s=float(settings.alerts_check_interval_seconds),
        market_open=market_open,
        budget_used_pct=budget_used_pct,
    )
    events.add_quote_listener(evaluator.on_quote)
    if registry is not None:
        from crawler.alerts.metrics import AlertsCollector

        registry.register(AlertsCollector(evaluator))
    watchlist = stores.watchlist
    service = AlertService(
        store,
        evaluator=evaluator,
        events=events,
        notify_timeout_s=float(settings.alerts_notify_timeout_seconds),
        is_tracked=lambda symbol: symbol in watchlist,
    )
    return Alerts(store, evaluator, notifier, service)
