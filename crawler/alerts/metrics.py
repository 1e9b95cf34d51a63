"""The alerts' Prometheus families, read from the evaluator at each scrape (`GET /v1/metrics`):

    crawler_alerts_rules                     gauge: rules loaded on this node
    crawler_alerts_fired_total               counter: firings this node claimed and delivered
    crawler_alert_notices_total{outcome}     counter: notices sent / failed / dropped (alerts x
                                             targets; dropped: a target's queue was full)
    crawler_alert_notices_pending            gauge: notices waiting for their target

An alert on the alerts: `increase(crawler_alert_notices_total{outcome!="sent"}[1h]) > 0`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from crawler.alerts.evaluator import AlertEvaluator

__all__ = ["AlertsCollector"]


class AlertsCollector(Collector):
    """The families above, from `evaluator.statistics()` (cheap: counters and queue sizes)."""

    def __init__(self, evaluator: AlertEvaluator) -> None:
        self._evaluator = evaluator

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._evaluator.statistics())

    @staticmethod
    def _families(stats: dict[str, object]) -> Iterator[Metric]:
        rules = GaugeMetricFamily("crawler_alerts_rules", "Alert rules loaded on this node.")
        fired = CounterMetricFamily(
            "crawler_alerts_fired", "Alert firings this node claimed and delivered."
        )
        notices = CounterMetricFamily(
            "crawler_alert_notices",
            "Alert notices by outcome (alerts times targets): sent, failed, dropped.",
            labels=["outcome"],
        )
        pending = GaugeMetricFamily(
            "crawler_alert_notices_pending", "Alert notices waiting for their target."
        )
        if stats:
            rules.add_metric([], float(_int(stats.get("rules"))))
            fired.add_metric([], float(_int(stats.get("fired"))))
            counts = stats.get("notices")
            counts = counts if isinstance(counts, dict) else {}
            for outcome in ("sent", "failed", "dropped"):
                notices.add_metric([outcome], float(_int(counts.get(outcome))))
            pending.add_metric([], float(_int(counts.get("pending"))))
        yield from (rules, fired, notices, pending)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
