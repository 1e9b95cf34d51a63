"""Prometheus metrics by prometheus_client: a collector over the status document, the recorder's
histograms and counters, and the `process_*` collector (served by `crawler.daemon.metrics_port`).

    recorder = MetricsRecorder()                        # what status does not count itself
    recorder.record_fetch("bright_data", "success", 0.42)
    recorder.record_breaker_transition("yfinance", "closed", "open")  # a breaker callback
    registry = build_registry(ops.status, recorder)     # + process_* (memory, CPU, fds)
    text = exposition(registry)                         # GET /v1/metrics on the control socket

One source of truth: every figure that `Operations.status()` holds (budget, cache, per-source
requests, breaker states, collections, tracked symbols and their quotes' ages) is read from the
status document at scrape time by `StatusCollector`, so `crawler status` and `/metrics` cannot
disagree. The recorder holds prometheus_client Histogram and Counter objects for what status
lacks: fetch durations, breaker transitions, job runs, errors and misses by job.

Families (a sample is left out, never invented, when status does not know the figure):

    crawler_build_info{version,python}                  gauge, always 1
    crawler_source_requests_total{source,outcome}       counter; outcome success|failure
    crawler_source_skipped_total{source}                counter; requests not made (breaker
                                                        open, budget spent, not configured,
                                                        symbol unmappable)
    crawler_fetch_duration_seconds{source}              histogram of upstream calls
    crawler_breaker_state{source,state}                 gauge, 1 for the current state, else 0
    crawler_breaker_transitions_total{source,from,to}   counter
    crawler_breaker_rejections_total{source}            counter
    crawler_budget_{remaining,spent,total}_usd          gauges; today's budget (resets daily)
    crawler_budget_requests_used / _allowed             gauges; today's paid requests
    crawler_paid_requests_total{reason}                 counter; today's billed, by reason
    crawler_budget_seed_order_requests, _saved_usd      gauges; the seed's order vs the policy
    crawler_cache_hits_total / crawler_cache_misses_total   counters (hit ratio: rate() them)
    crawler_cache_entries                               gauge
    crawler_stale_served_total                          counter
    crawler_symbols_tracked                             gauge
    crawler_quote_age_seconds{symbol}                   gauge; age of each tracked symbol's
                                                        last quote (alert on staleness)
    crawler_last_successful_collection_timestamp_seconds   gauge, epoch s
    crawler_collections_total{outcome}                  counter; success|failure
    crawler_quotes_collected_total                      counter
    crawler_collection_errors_total                     counter; symbols that failed
    crawler_job_runs_total{job} / _errors_total{job} / _missed_total{job}   counters
    crawler_stream_connected                            gauge; 1 while Yahoo's price stream is
                                                        connected, 0 otherwise (none: stream off)
    crawler_stream_subscribed_symbols                   gauge; symbols subscribed on the stream
    crawler_stream_ticks_total                          counter; frames decoded from the stream
    crawler_stream_bad_frames_total                     counter; frames skipped as undecodable
    crawler_event_watchers                              gauge; open `/v1/events` streams
    process_*                                           the daemon's memory, CPU, fds, start time

Nothing here imports the fetchers or the stores; `crawler status` never imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from crawler.logging import get_logger
from crawler.service.status_metrics import BREAKER_STATES, Status, StatusCollector
from crawler.utils.exceptions import ConfigError

__all__ = [
    "BREAKER_STATES",
    "CONTENT_TYPE",
    "DEFAULT_DURATION_BUCKETS_S",
    "MetricsRecorder",
    "StatusCollector",
    "build_registry",
    "exposition",
    "render_metrics",
]

log = get_logger("crawler.metrics")

# prometheus_client would add a `_created` sample to every counter and histogram; the scrape
# already says when a series appeared, and they would double the exposition. (Process-wide:
# the daemon has no other prometheus_client user.)
disable_created_metrics()  # type: ignore[no-untyped-call]

#: The Content-Type of the exposition (text format 0.0.4, what every Prometheus understands).
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
#: Upper bounds (seconds) of the fetch-duration buckets; +Inf is implied. A Bright Data page
#: takes 1-10 s, a yfinance chart well under one; the quote deadline caps both near 30 s.
DEFAULT_DURATION_BUCKETS_S: Final[tuple[float, ...]] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip


def _state_name(state: object) -> str:
    """A breaker state as text: BreakerState (a StrEnum) and plain strings alike."""
    return str(getattr(state, "value", state))


class MetricsRecorder:
    """prometheus_client histograms and counters for what the status document does not hold.

    Thread-safe (prometheus_client's metrics are). `record_breaker_transition` has the signature
    of CircuitBreaker's `on_state_change` callback. The metrics live in `registry`, a private
    CollectorRegistry (never prometheus_client's global one, so two recorders never collide).
    """

    def __init__(self, buckets_s: Sequence[float] = DEFAULT_DURATION_BUCKETS_S) -> None:
        bounds = [float(b) for b in buckets_s]
        if not bounds or any(not math.isfinite(b) for b in bounds) or bounds != sorted(set(bounds)):
            raise ConfigError(
                f"histogram buckets {list(buckets_s)!r} must be finite, distinct and ascending, "
                "e.g. (0.1, 0.5, 1.0)"
            )
        self.buckets_s: tuple[float, ...] = tuple(bounds)
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._fetch = Histogram(
            "crawler_fetch_duration_seconds",
            "Duration of upstream quote fetches that ran, per source, in seconds.",
            ["source"], buckets=bounds, registry=reg,
        )  # fmt: skip
        self._transitions = Counter(
            "crawler_breaker_transitions",
            "Circuit breaker state changes per source, by from and to state.",
            ["source", "from", "to"], registry=reg,
        )  # fmt: skip
        self._job_runs = Counter(
            "crawler_job_runs", "Scheduler job runs, by job id.", ["job"], registry=reg
        )
        self._job_errors = Counter(
            "crawler_job_errors", "Scheduler job runs that raised an error, by job id.",
            ["job"], registry=reg,
        )  # fmt: skip
        self._job_missed = Counter(
            "crawler_job_missed",
            "Scheduler job runs missed or skipped (late, or the previous run still going), "
            "by job id.",
            ["job"], registry=reg,
        )  # fmt: skip

    def record_fetch(self, source: str, outcome: str, duration_s: float) -> None:
        """One upstream call to `source` that ran (not one a breaker refused) and took
        `duration_s` seconds. The outcome is counted by status; a negative or non-finite
        duration counts as 0, so a clock hiccup cannot poison the histogram's sum."""
        del outcome  # status counts successes and failures; the histogram needs only the time
        if not (math.isfinite(duration_s) and duration_s > 0):
            duration_s = 0.0
        self._fetch.labels(source=source).observe(duration_s)

    def record_breaker_transition(self, source: str, old: object, new: object) -> None:
        """A breaker of `source` moved from `old` to `new` (BreakerState values or strings)."""
        self._transitions.labels(source, _state_name(old), _state_name(new)).inc()

    def record_job_run(self, job: str) -> None:
        """A scheduler job ran (whatever its outcome)."""
        self._job_runs.labels(job=job).inc()

    def record_job_error(self, job: str) -> None:
        """A scheduler job raised (or reported) an error."""
        self._job_errors.labels(job=job).inc()

    def record_job_missed(self, job: str) -> None:
        """A scheduler job missed its run time, or was skipped because it was still running."""
        self._job_missed.labels(job=job).inc()

    def record_job_problem(self, job: str, kind: str) -> None:
        """The scheduler's observer: `kind` is "error" or "missed"."""
        if kind == "error":
            self.record_job_error(job)
        else:
            self.record_job_missed(job)

    def snapshot(self) -> dict[str, Any]:
        """The recorder's figures as JSON-safe values (the status document's "metrics" key):

        {"fetch_duration_seconds": {source: {"count": n, "sum": s}},
         "breaker_transitions": [{"source", "from", "to", "count"}],
         "job_runs": {job: n}, "job_errors": {job: n}, "job_missed": {job: n}}
        """
        durations: dict[str, dict[str, float]] = {}
        transitions: list[dict[str, Any]] = []
        jobs: dict[str, dict[str, int]] = {"job_runs": {}, "job_errors": {}, "job_missed": {}}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == "crawler_fetch_duration_seconds_count":
                    durations.setdefault(sample.labels["source"], {})["count"] = int(sample.value)
                elif sample.name == "crawler_fetch_duration_seconds_sum":
                    durations.setdefault(sample.labels["source"], {})["sum"] = sample.value
                elif sample.name == "crawler_breaker_transitions_total":
                    transitions.append({**sample.labels, "count": int(sample.value)})
                elif sample.name.endswith("_total") and sample.name[8:-6] in jobs:
                    jobs[sample.name[8:-6]][sample.labels["job"]] = int(sample.value)
        return {
            "fetch_duration_seconds": dict(sorted(durations.items())),
            "breaker_transitions": sorted(
                transitions, key=lambda t: (t["source"], t["from"], t["to"])
            ),
            **{key: dict(sorted(counts.items())) for key, counts in jobs.items()},
        }


# -- registries and the exposition ---------------------------------------------------------------


class _Forward(Collector):
    """Collects another registry's metrics into this one (the recorder's)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()


def build_registry(
    status: Callable[[], Status],
    recorder: MetricsRecorder | None = None,
    *,
    process: bool = False,
) -> CollectorRegistry:
    """A registry of the status families, the recorder's metrics and (with `process`) the
    `process_*` collector of this process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    if recorder is not None:
        registry.register(_Forward(recorder.registry))
    if process:
        ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> str:
    """The text exposition (format 0.0.4) of `registry`."""
    return generate_latest(registry).decode("utf-8")


def render_metrics(status: Status, recorder: MetricsRecorder | None = None) -> str:
    """The exposition of a fixed `status` (what `Operations.status()` returns) and `recorder`
    (an empty one when None, so every family is declared)."""
    return exposition(build_registry(lambda: status, recorder or MetricsRecorder()))
