"""The status document as Prometheus families: `StatusCollector` reads `status()` once per
scrape and yields every family the document holds (the list is in `crawler.service.metrics`).
A sample is left out, never invented, when status does not know the figure.

    registry.register(StatusCollector(ops.status))
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crawler import __version__

__all__ = ["BREAKER_STATES", "Status", "StatusCollector"]

#: The states `crawler_breaker_state` has a sample for (CircuitBreaker's BreakerState values).
BREAKER_STATES: Final[tuple[str, ...]] = ("closed", "open", "half_open")

Status = Mapping[str, Any]


def _number(value: Any) -> float | None:
    """A status figure as a number: Decimal strings ("5.49") too; anything missing or
    unreadable is None (its sample is left out)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if not math.isnan(value) else None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return float(number) if number.is_finite() else None


def _timestamp_s(value: Any) -> float | None:
    """An aware ISO 8601 datetime (as status holds them) as epoch seconds."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _section(status: Status, *path: str) -> Mapping[str, Any]:
    node: Mapping[str, Any] = status
    for key in path:
        node = _mapping(node.get(key))
    return node


def _gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    if (number := _number(value)) is not None:
        family.add_metric([], number)
    return family


def _counter(name: str, doc: str, value: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    if (number := _number(value)) is not None:
        family.add_metric([], number)
    return family


class StatusCollector(Collector):
    """A custom collector: the families derived from `status()` (called once per scrape)."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self._status = status

    def describe(self) -> list[Metric]:
        # The families do not depend on the figures: describing with an empty status avoids
        # building a real one when the collector is registered.
        return list(_families({}))

    def collect(self) -> Iterator[Metric]:
        yield from _families(self._status())


def _families(status: Status) -> Iterator[Metric]:
    daemon = _section(status, "daemon")
    info = GaugeMetricFamily(
        "crawler_build_info", "Build information; always 1.", labels=["version", "python"]
    )
    info.add_metric([str(daemon.get("version") or __version__), platform.python_version()], 1)
    yield info
    yield from _source_families(status)
    yield from _breaker_families(_section(status, "breakers"))
    yield from _budget_families(_section(status, "budget"))
    yield from _reason_families(_section(status, "spending"))
    yield from _cache_families(status)
    yield from _collection_families(status)
    yield from _stream_families(status)


def _source_families(status: Status) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "crawler_source_requests",
        "Quote requests made to each source, by outcome (success or failure).",
        labels=["source", "outcome"],
    )
    skipped = CounterMetricFamily(
        "crawler_source_skipped",
        "Quote requests not made to a source: breaker open, budget spent, not configured, or "
        "the symbol has no form there.",
        labels=["source"],
    )
    sources = _mapping(status.get("sources"))
    for source in sorted(sources):
        usage = _mapping(sources[source])
        for outcome, key in (("success", "successes"), ("failure", "failures")):
            if (number := _number(usage.get(key))) is not None:
                requests.add_metric([source, outcome], number)
        if (number := _number(usage.get("skipped"))) is not None:
            skipped.add_metric([source], number)
    yield requests
    yield skipped


def _breaker_families(breakers: Mapping[str, Any]) -> Iterator[Metric]:
    state_family = GaugeMetricFamily(
        "crawler_breaker_state",
        "Circuit breaker state per source: 1 for the current state, 0 for the others.",
        labels=["source", "state"],
    )
    rejections = CounterMetricFamily(
        "crawler_breaker_rejections",
        "Calls a circuit breaker refused (open, or a half-open trial already in flight).",
        labels=["source"],
    )
    for source in sorted(breakers):
        breaker = _mapping(breakers[source])
        current = breaker.get("state")
        if current is not None:
            states = list(BREAKER_STATES)
            if current not in states:  # a state we do not know still shows up as current
                states.append(str(current))
            for state in states:
                state_family.add_metric([source, state], 1 if state == current else 0)
        if (number := _number(breaker.get("total_rejections"))) is not None:
            rejections.add_metric([source], number)
    yield state_family
    yield rejections


_BUDGET: Final = (
    ("crawler_budget_remaining_usd", "budget_remaining", "Today's Bright Data budget left."),
    (
        "crawler_budget_spent_usd",
        "total_cost",
        "Today's Bright Data spend, billed plus reserved for requests in flight.",
    ),
    ("crawler_budget_total_usd", "budget_total", "The daily Bright Data budget."),
    (
        "crawler_budget_requests_used",
        "requests_used",
        "Paid requests counted against today's budget (billed plus in flight).",
    ),
    (
        "crawler_budget_requests_allowed",
        "requests_allowed",
        "Paid requests a full day's budget buys at the current cost.",
    ),
)


def _reason_families(spending: Mapping[str, Any]) -> Iterator[Metric]:
    """Today's billed Bright Data requests by why they were made (the ledger's own counts, so
    it starts again with each budget day, as a counter after a restart does)."""
    family = CounterMetricFamily(
        "crawler_paid_requests",
        "Billed Bright Data requests today by reason: unservable, free_failing, free_too_old, "
        "rotation, asked, seed (unrecorded: from before reasons were kept).",
        labels=["reason"],
    )
    reasons = spending.get("paid_by_reason")
    for reason, count in reasons.items() if isinstance(reasons, Mapping) else ():
        family.add_metric([str(reason)], float(count))
    yield family
    saved = spending.get("seed_order")
    saved = saved if isinstance(saved, Mapping) else {}
    yield _gauge(
        "crawler_budget_seed_order_requests",
        "Paid requests the seed's order would have made for today's collections.",
        saved.get("requests"),
    )
    yield _gauge(
        "crawler_budget_saved_usd",
        "What the budget policy saved today against the seed's order, in USD.",
        saved.get("saved_usd"),
    )


def _budget_families(budget: Mapping[str, Any]) -> Iterator[Metric]:
    for name, key, doc in _BUDGET:
        yield _gauge(name, doc + " Resets at midnight in the budget time zone.", budget.get(key))


def _cache_families(status: Status) -> Iterator[Metric]:
    cache = _section(status, "cache")
    yield _counter(
        "crawler_cache_hits", "Quote cache lookups that found a fresh quote.", cache.get("hits")
    )
    yield _counter("crawler_cache_misses", "Quote cache lookups that found none.",
                   cache.get("misses"))  # fmt: skip
    yield _gauge(
        "crawler_cache_entries", "Fresh-quote entries in the cache, expired or not.",
        cache.get("size"),
    )  # fmt: skip
    yield _counter(
        "crawler_stale_served",
        "Last-known quotes served stale because no source could serve a fresh one.",
        status.get("stale_served"),
    )


def _stream_families(status: Status) -> Iterator[Metric]:
    stream = _section(status, "stream")
    connected = GaugeMetricFamily(
        "crawler_stream_connected", "1 while Yahoo's price stream is connected, 0 otherwise."
    )
    if stream:  # absent when the stream is off: no sample rather than a misleading 0
        connected.add_metric([], 1.0 if stream.get("state") == "connected" else 0.0)
    yield connected
    yield _gauge(
        "crawler_stream_subscribed_symbols", "Symbols subscribed on the price stream.",
        stream.get("subscribed"),
    )  # fmt: skip
    yield _counter(
        "crawler_stream_ticks", "Frames decoded from the price stream.", stream.get("ticks")
    )
    yield _counter(
        "crawler_stream_bad_frames", "Price-stream frames skipped as undecodable.",
        stream.get("bad_frames"),
    )  # fmt: skip
    yield _gauge(
        "crawler_event_watchers", "Open /v1/events streams (crawler watch and others).",
        _section(status, "events").get("watchers"),
    )  # fmt: skip


def _collection_families(status: Status) -> Iterator[Metric]:
    state = _section(status, "scheduler", "scheduler_state")
    metrics = _section(status, "scheduler", "collection_metrics")
    symbols = status.get("symbols")
    tracked = len(symbols) if isinstance(symbols, list) else state.get("symbols_tracked")
    yield _gauge("crawler_symbols_tracked", "Symbols on the watchlist.", tracked)
    ages = GaugeMetricFamily(
        "crawler_quote_age_seconds",
        "Age of each tracked symbol's last known quote (its source time), in seconds; no "
        "sample before the first quote.",
        labels=["symbol"],
    )
    for entry in symbols if isinstance(symbols, list) else []:
        entry = _mapping(entry)
        age_s = _number(entry.get("age_s"))
        if age_s is not None and entry.get("symbol"):
            ages.add_metric([str(entry["symbol"])], age_s)
    yield ages
    yield _gauge(
        "crawler_last_successful_collection_timestamp_seconds",
        "When the last successful collection started, in seconds since the Unix epoch.",
        _timestamp_s(metrics.get("last_success_at")),
    )
    collections = CounterMetricFamily(
        "crawler_collections", "Collections of the watchlist, by outcome.", labels=["outcome"]
    )
    for outcome, key in (("success", "successful_collections"), ("failure", "failed_collections")):
        if (number := _number(metrics.get(key))) is not None:
            collections.add_metric([outcome], number)
    yield collections
    yield _counter("crawler_quotes_collected", "Quotes collected by collections.",
                   metrics.get("total_quotes_collected"))  # fmt: skip
    yield _counter("crawler_collection_errors", "Symbols that failed within collections.",
                   metrics.get("total_errors"))  # fmt: skip
