"""Prometheus metrics: text exposition format 0.0.4, built from the daemon's status document.

    recorder = MetricsRecorder()                        # what status does not count itself
    recorder.record_fetch("bright_data", "success", 0.42)
    recorder.record_breaker_transition("yfinance", "closed", "open")  # a breaker callback
    text = render_metrics(ops.status(), recorder)       # GET /metrics
    server = MetricsHTTPServer(lambda: render_metrics(ops.status(), recorder), port=9108)
    server.start()                                      # 127.0.0.1 only; server.stop() later

One source of truth: every figure that `Operations.status()` holds (budget, cache, per-source
requests, breaker states, scheduler counters, tracked symbols) is rendered from the status
document, so `crawler status` and `/metrics` cannot disagree. The recorder adds only what status
lacks (fetch durations, breaker transitions by from/to, job runs by job); its `snapshot()` is
JSON-safe and belongs in the status document under "metrics", where `render_metrics` looks
when no recorder is passed.

Families (a sample is left out, never invented, when status does not know the figure):

    crawler_build_info{version,python}                  gauge, always 1
    process_start_time_seconds                          gauge, epoch s (daemon.started_at)
    crawler_source_requests_total{source,outcome}       counter; outcome success|failure|skipped
    crawler_fetch_duration_seconds{source}              histogram of upstream calls
    crawler_breaker_state{source,state}                 gauge, 1 for the current state, else 0,
                                                        for each of closed|open|half_open
    crawler_breaker_transitions_total{source,from,to}   counter
    crawler_breaker_rejections_total{source}            counter; calls refused by an open breaker
    crawler_budget_{remaining,spent,total}_usd          gauges; today's budget (resets daily)
    crawler_budget_requests_used / _allowed             gauges; today's paid requests
    crawler_cache_hits_total / crawler_cache_misses_total   counters (this process)
    crawler_cache_hit_ratio                             gauge 0..1 (0 before any lookup)
    crawler_cache_entries                               gauge; fresh entries stored
    crawler_stale_served_total                          counter; last-known quotes served stale
    crawler_symbols_tracked                             gauge
    crawler_last_successful_collection_timestamp_seconds   gauge, epoch s
    crawler_collections_total{outcome}                  counter; outcome success|failure
    crawler_quotes_collected_total                      counter
    crawler_collection_errors_total                     counter; symbols that failed in collections
    crawler_job_runs_total{job}                         counter; scheduler job runs by job id
    crawler_job_errors_total / crawler_job_missed_total counters; scheduler job errors, misses

Standard library only; nothing here imports the fetchers or the stores.
"""

from __future__ import annotations

import logging
import math
import platform
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from crawler import __version__
from crawler.utils.exceptions import ConfigError, DaemonError

__all__ = [
    "BREAKER_STATES",
    "CONTENT_TYPE",
    "DEFAULT_DURATION_BUCKETS_S",
    "MetricsHTTPServer",
    "MetricsRecorder",
    "render_metrics",
]

log = logging.getLogger("crawler.metrics")

#: The Content-Type of the exposition (text format 0.0.4).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds (seconds) of the fetch-duration buckets; +Inf is implied. A Bright Data page
#: takes 1-10 s, a yfinance chart well under one; the quote deadline caps both near 30 s.
DEFAULT_DURATION_BUCKETS_S: Final[tuple[float, ...]] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
)
#: The states `crawler_breaker_state` has a sample for (CircuitBreaker's BreakerState values).
BREAKER_STATES: Final[tuple[str, ...]] = ("closed", "open", "half_open")
#: The status keys of a source's usage, by the `outcome` label they are rendered under.
_REQUEST_OUTCOMES: Final = (
    ("success", "successes"),
    ("failure", "failures"),
    ("skipped", "skipped"),
)
_INF_LABEL: Final = "+Inf"


def _state_name(state: object) -> str:
    """A breaker state as text: BreakerState (a StrEnum) and plain strings alike."""
    value = getattr(state, "value", state)
    return str(value)


class MetricsRecorder:
    """Thread-safe counters for what the status document does not hold.

    `record_breaker_transition` has the signature of CircuitBreaker's `on_state_change`
    callback, so it can be passed as `on_breaker_change=recorder.record_breaker_transition`.
    `now_s` (epoch seconds) is injected for tests; `start_time_s` is taken from it once.
    """

    def __init__(
        self,
        buckets_s: Sequence[float] = DEFAULT_DURATION_BUCKETS_S,
        *,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        bounds = [float(b) for b in buckets_s]
        if not bounds or any(not math.isfinite(b) for b in bounds) or bounds != sorted(set(bounds)):
            raise ConfigError(
                f"histogram buckets {list(buckets_s)!r} must be finite, distinct and ascending, "
                "e.g. (0.1, 0.5, 1.0)"
            )
        self._bounds_s: tuple[float, ...] = tuple(bounds)
        self.start_time_s = float(now_s())
        self._lock = threading.Lock()
        # Everything below is read and written only with `_lock` held.
        self._requests: dict[str, dict[str, int]] = {}
        # Per source: per-bucket (not cumulative) counts, the last slot being +Inf; sum; count.
        self._buckets: dict[str, list[int]] = {}
        self._sum_s: dict[str, float] = {}
        self._transitions: dict[tuple[str, str, str], int] = {}
        self._job_runs: dict[str, int] = {}

    @property
    def buckets_s(self) -> tuple[float, ...]:
        """The finite bucket upper bounds, in seconds."""
        return self._bounds_s

    def record_fetch(self, source: str, outcome: str, duration_s: float) -> None:
        """One upstream call to `source` that ran (not one a breaker refused) and took
        `duration_s` seconds. Suggested outcomes: success, failure, excluded (an error that says
        nothing about the source's health). A negative or non-finite duration counts as 0, so a
        clock hiccup cannot poison the histogram's sum."""
        if not (math.isfinite(duration_s) and duration_s > 0):
            duration_s = 0.0
        slot = next(
            (i for i, bound in enumerate(self._bounds_s) if duration_s <= bound),
            len(self._bounds_s),
        )
        with self._lock:
            per_outcome = self._requests.setdefault(source, {})
            per_outcome[outcome] = per_outcome.get(outcome, 0) + 1
            buckets = self._buckets.setdefault(source, [0] * (len(self._bounds_s) + 1))
            buckets[slot] += 1
            self._sum_s[source] = self._sum_s.get(source, 0.0) + duration_s

    def record_breaker_transition(self, source: str, old: object, new: object) -> None:
        """A breaker of `source` moved from `old` to `new` (BreakerState values or strings)."""
        key = (source, _state_name(old), _state_name(new))
        with self._lock:
            self._transitions[key] = self._transitions.get(key, 0) + 1

    def record_job_run(self, job: str) -> None:
        """A scheduler job ran (whatever its outcome; errors are counted by the scheduler)."""
        with self._lock:
            self._job_runs[job] = self._job_runs.get(job, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-safe values (for the status document's "metrics" key):

        {"start_time_s": 1.7e9,
         "fetch_requests": {source: {outcome: n}},
         "fetch_duration_seconds": {source: {"buckets": {"0.05": n, ..., "+Inf": n},
                                             "sum": s, "count": n}},   # buckets cumulative
         "breaker_transitions": [{"source", "from", "to", "count"}],
         "job_runs": {job: n}}
        """
        with self._lock:
            requests = {source: dict(counts) for source, counts in self._requests.items()}
            raw = {source: list(counts) for source, counts in self._buckets.items()}
            sums = dict(self._sum_s)
            transitions = sorted(self._transitions.items())
            job_runs = dict(self._job_runs)
        labels = [_format_value(bound) for bound in self._bounds_s] + [_INF_LABEL]
        durations: dict[str, Any] = {}
        for source in sorted(raw):
            cumulative: dict[str, int] = {}
            running = 0
            for label, count in zip(labels, raw[source], strict=True):
                running += count
                cumulative[label] = running
            durations[source] = {"buckets": cumulative, "sum": sums[source], "count": running}
        return {
            "start_time_s": self.start_time_s,
            "fetch_requests": {source: requests[source] for source in sorted(requests)},
            "fetch_duration_seconds": durations,
            "breaker_transitions": [
                {"source": source, "from": old, "to": new, "count": count}
                for (source, old, new), count in transitions
            ],
            "job_runs": {job: job_runs[job] for job in sorted(job_runs)},
        }


# -- the exposition ----------------------------------------------------------------------------

_Labels = Mapping[str, str]


class _Exposition:
    """Families in the order they are declared; one HELP and one TYPE line per name."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._names: set[str] = set()
        self._current = ""

    def family(self, name: str, kind: str, help_text: str) -> None:
        if name in self._names:  # a programming error: one family per name
            raise ValueError(f"metric family {name} declared twice")
        self._names.add(name)
        self._current = name
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(
        self, value: float | int | None, labels: _Labels | None = None, suffix: str = ""
    ) -> None:
        if value is None:
            return
        name = self._current + suffix
        if labels:
            body = ",".join(f'{key}="{_escape_label(str(val))}"' for key, val in labels.items())
            name = f"{name}{{{body}}}"
        self._lines.append(f"{name} {_format_value(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _number(value: Any) -> float | int | None:
    """A status figure as a number: ints stay ints, Decimal strings ("5.49") become floats,
    anything missing or unreadable becomes None (its sample is left out)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if not math.isnan(value) else None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return float(number) if number.is_finite() else None


def _timestamp_s(value: Any) -> float | None:
    """An ISO 8601 datetime (as status holds them) or epoch number as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:  # status always writes aware datetimes; never guess a zone
            return None
        return parsed.timestamp()
    number = _number(value)
    return float(number) if number is not None else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _section(status: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: Mapping[str, Any] = status
    for key in path:
        node = _mapping(node.get(key))
    return node


def render_metrics(status: Mapping[str, Any], recorder: MetricsRecorder | None = None) -> str:
    """The Prometheus text exposition (format 0.0.4) of `status` (what `Operations.status()`
    returns) plus the recorder's counters: `recorder.snapshot()` if a recorder is given, else
    `status["metrics"]` (where the daemon puts that snapshot). Every family is always declared;
    a sample whose figure is unknown is left out."""
    rec = recorder.snapshot() if recorder is not None else _mapping(status.get("metrics"))
    out = _Exposition()
    _render_process(out, status, rec)
    _render_sources(out, status, rec)
    _render_breakers(out, status, rec)
    _render_budget(out, status)
    _render_cache(out, status)
    _render_scheduler(out, status, rec)
    return out.text()


def _render_process(out: _Exposition, status: Mapping[str, Any], rec: Mapping[str, Any]) -> None:
    daemon = _section(status, "daemon")
    out.family("crawler_build_info", "gauge", "Build information; always 1.")
    version = daemon.get("version") or __version__
    out.sample(1, {"version": str(version), "python": platform.python_version()})
    out.family(
        "process_start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the Unix epoch.",
    )
    started = _timestamp_s(daemon.get("started_at"))
    out.sample(started if started is not None else _number(rec.get("start_time_s")))


def _render_sources(out: _Exposition, status: Mapping[str, Any], rec: Mapping[str, Any]) -> None:
    out.family(
        "crawler_source_requests_total",
        "counter",
        "Quote requests per source: success, failure, or skipped (breaker open, budget spent, "
        "not configured, symbol unmappable).",
    )
    sources = status.get("sources")
    if isinstance(sources, Mapping):
        for source in sorted(sources):
            usage = _mapping(sources[source])
            for outcome, key in _REQUEST_OUTCOMES:
                out.sample(_number(usage.get(key)), {"source": source, "outcome": outcome})
    else:  # no status figures: what the recorder saw is the next best thing
        for source, per_outcome in sorted(_mapping(rec.get("fetch_requests")).items()):
            for outcome, count in sorted(_mapping(per_outcome).items()):
                out.sample(_number(count), {"source": source, "outcome": outcome})

    out.family(
        "crawler_fetch_duration_seconds",
        "histogram",
        "Duration of upstream quote fetches that ran, per source, in seconds.",
    )
    for source, hist in sorted(_mapping(rec.get("fetch_duration_seconds")).items()):
        hist = _mapping(hist)
        for le, count in _mapping(hist.get("buckets")).items():
            out.sample(_number(count), {"source": source, "le": str(le)}, "_bucket")
        out.sample(_number(hist.get("sum")), {"source": source}, "_sum")
        out.sample(_number(hist.get("count")), {"source": source}, "_count")


def _render_breakers(out: _Exposition, status: Mapping[str, Any], rec: Mapping[str, Any]) -> None:
    breakers = _section(status, "breakers")
    out.family(
        "crawler_breaker_state",
        "gauge",
        "Circuit breaker state per source: 1 for the current state, 0 for the others.",
    )
    for source in sorted(breakers):
        current = _mapping(breakers[source]).get("state")
        if current is None:
            continue
        states = list(BREAKER_STATES)
        if current not in states:  # a state we do not know still shows up as current
            states.append(str(current))
        for state in states:
            out.sample(1 if state == current else 0, {"source": source, "state": state})
    out.family(
        "crawler_breaker_transitions_total",
        "counter",
        "Circuit breaker state changes per source, by from and to state.",
    )
    transitions = rec.get("breaker_transitions")
    for entry in transitions if isinstance(transitions, list) else []:
        item = _mapping(entry)
        labels = {
            "source": str(item.get("source", "")),
            "from": str(item.get("from", "")),
            "to": str(item.get("to", "")),
        }
        out.sample(_number(item.get("count")), labels)
    out.family(
        "crawler_breaker_rejections_total",
        "counter",
        "Calls a circuit breaker refused (open, or a half-open trial already in flight).",
    )
    for source in sorted(breakers):
        out.sample(_number(_mapping(breakers[source]).get("total_rejections")), {"source": source})


def _render_budget(out: _Exposition, status: Mapping[str, Any]) -> None:
    budget = _section(status, "budget")
    for name, key, help_text in (
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
    ):
        out.family(name, "gauge", help_text + " Resets at midnight in the budget time zone.")
        out.sample(_number(budget.get(key)))


def _render_cache(out: _Exposition, status: Mapping[str, Any]) -> None:
    cache = _section(status, "cache")
    hits, misses = _number(cache.get("hits")), _number(cache.get("misses"))
    out.family(
        "crawler_cache_hits_total", "counter", "Quote cache lookups that found a fresh quote."
    )
    out.sample(hits)
    out.family("crawler_cache_misses_total", "counter", "Quote cache lookups that found none.")
    out.sample(misses)
    out.family(
        "crawler_cache_hit_ratio",
        "gauge",
        "Cache hits over lookups since the daemon started (0 before the first lookup).",
    )
    if hits is not None and misses is not None:
        lookups = hits + misses
        out.sample(hits / lookups if lookups else 0.0)
    out.family(
        "crawler_cache_entries", "gauge", "Fresh-quote entries in the cache, expired or not."
    )
    out.sample(_number(cache.get("size")))
    out.family(
        "crawler_stale_served_total",
        "counter",
        "Last-known quotes served stale because no source could serve a fresh one.",
    )
    out.sample(_number(status.get("stale_served")))


def _render_scheduler(out: _Exposition, status: Mapping[str, Any], rec: Mapping[str, Any]) -> None:
    state = _section(status, "scheduler", "scheduler_state")
    metrics = _section(status, "scheduler", "collection_metrics")
    out.family("crawler_symbols_tracked", "gauge", "Symbols on the watchlist.")
    symbols = status.get("symbols")
    out.sample(len(symbols) if isinstance(symbols, list) else _number(state.get("symbols_tracked")))
    out.family(
        "crawler_last_successful_collection_timestamp_seconds",
        "gauge",
        "When the last successful collection started, in seconds since the Unix epoch.",
    )
    out.sample(_timestamp_s(metrics.get("last_success_at")))
    out.family("crawler_collections_total", "counter", "Collections of the watchlist, by outcome.")
    out.sample(_number(metrics.get("successful_collections")), {"outcome": "success"})
    out.sample(_number(metrics.get("failed_collections")), {"outcome": "failure"})
    _counter(
        out,
        metrics,
        "total_quotes_collected",
        "crawler_quotes_collected_total",
        "Quotes collected by collections.",
    )
    _counter(
        out,
        metrics,
        "total_errors",
        "crawler_collection_errors_total",
        "Symbols that failed within collections.",
    )
    out.family("crawler_job_runs_total", "counter", "Scheduler job runs, by job id.")
    for job, count in sorted(_mapping(rec.get("job_runs")).items()):
        out.sample(_number(count), {"job": job})
    _counter(
        out,
        metrics,
        "job_errors",
        "crawler_job_errors_total",
        "Scheduler job runs that raised an error.",
    )
    _counter(
        out,
        metrics,
        "missed_runs",
        "crawler_job_missed_total",
        "Scheduler job runs missed or skipped (late, or the previous run still going).",
    )


def _counter(
    out: _Exposition, section: Mapping[str, Any], key: str, name: str, help_text: str
) -> None:
    out.family(name, "counter", help_text)
    out.sample(_number(section.get(key)))


# -- the loopback TCP port --------------------------------------------------------------------

_LOOPBACK: Final = "127.0.0.1"


class MetricsHTTPServer:
    """Serves GET /metrics on 127.0.0.1:`port` (never another interface) from `source`: a
    callable returning the exposition text, or a MetricsRecorder (rendered without status).

    `port` 0 asks the OS for a free port (see `.port` once started); the daemon builds this
    server only when `settings.metrics_port` is not 0, which means "off". `start()` raises
    DaemonError when the port cannot be bound. Other paths answer 404, other methods 405, and a
    failing `source` 500 (logged); none of them stops the server.
    """

    def __init__(self, source: MetricsRecorder | Callable[[], str], port: int) -> None:
        if isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"METRICS_PORT {port!r} must be 0 to 65535 (0 = off)")
        if isinstance(source, MetricsRecorder):
            recorder = source
            self._render: Callable[[], str] = lambda: render_metrics({}, recorder)
        else:
            self._render = source
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the requested one until started)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT/metrics"""
        return f"http://{_LOOPBACK}:{self.port}/metrics"

    def start(self) -> None:
        """Bind and serve on a background thread. A no-op when already started."""
        if self._server is not None:
            return
        try:
            server = ThreadingHTTPServer((_LOOPBACK, self._requested_port), _handler(self._render))
        except OSError as exc:
            raise DaemonError(
                f"cannot serve metrics on {_LOOPBACK}:{self._requested_port} ({exc.strerror}); "
                "choose a free METRICS_PORT, or 0 to turn the metrics port off"
            ) from exc
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="crawler-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics on %s", self.url)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop serving and close the socket. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout_s)
        self._server = self._thread = None

    def __enter__(self) -> MetricsHTTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(render: Callable[[], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "crawler-metrics"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def _answer(self, *, with_body: bool) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._send(404, b"not found; metrics are at /metrics\n", with_body=with_body)
                return
            try:
                body = render().encode("utf-8")
            except Exception:  # a scrape must never take the server down
                log.exception("rendering metrics failed")
                self._send(500, b"rendering metrics failed; see the daemon log\n", with_body)
                return
            self._send(200, body, with_body, CONTENT_TYPE)

        def _refuse(self) -> None:
            self.close_connection = True  # the request body, if any, is left unread
            self._send(405, b"only GET /metrics\n", True, extra=(("Allow", "GET, HEAD"),))

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

        def _send(
            self,
            status: int,
            body: bytes,
            with_body: bool,
            content_type: str = "text/plain; charset=utf-8",
            extra: Iterable[tuple[str, str]] = (),
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in extra:
                self.send_header(key, value)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics %s: " + format, self.address_string(), *args)

    return Handler
