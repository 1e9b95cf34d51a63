"""Prometheus metrics (prometheus_client): the exposition is parsed back with prometheus_client's
own parser and compared with the status document it was collected from.

The status comes from real parts: a HybridDataSource over a real ledger, cache and sources in
tmp_path talking to the fake market over HTTP, a DataScheduler collecting once, and
`Operations.status()` on top. Nothing of ours is mocked; the breakers' clock is injected.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from crawler import __version__
from crawler.config import Settings, get_settings, reset_settings
from crawler.daemon.metrics_port import MetricsHTTPServer
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol
from crawler.orchestrator.circuit_breaker import CircuitBreaker
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.orchestrator.scheduler import DataScheduler
from crawler.service.metrics import (
    BREAKER_STATES,
    CONTENT_TYPE,
    DEFAULT_DURATION_BUCKETS_S,
    MetricsRecorder,
    build_registry,
    exposition,
    render_metrics,
)
from crawler.service.verbs import Operations
from crawler.sources.base import QuoteSource
from crawler.sources.bright_data import BrightDataSource
from crawler.sources.yfinance_source import YFinanceSource
from crawler.store.cache import QuoteCache
from crawler.store.history import HistoryStore
from crawler.store.ledger import BudgetLedger
from crawler.store.watchlist import Watchlist
from crawler.utils.exceptions import APIError, ConfigError, DaemonError
from fakemarket import FakeMarket, free_port

REPO = Path(__file__).resolve().parents[1]

#: Every family render_metrics declares, with its type.
FAMILIES = {
    "crawler_build_info": "gauge",
    "crawler_source_requests_total": "counter",
    "crawler_source_skipped_total": "counter",
    "crawler_fetch_duration_seconds": "histogram",
    "crawler_breaker_state": "gauge",
    "crawler_breaker_transitions_total": "counter",
    "crawler_breaker_rejections_total": "counter",
    "crawler_budget_remaining_usd": "gauge",
    "crawler_budget_spent_usd": "gauge",
    "crawler_budget_total_usd": "gauge",
    "crawler_budget_requests_used": "gauge",
    "crawler_budget_requests_allowed": "gauge",
    "crawler_paid_requests_total": "counter",
    "crawler_budget_seed_order_requests": "gauge",
    "crawler_budget_saved_usd": "gauge",
    "crawler_cache_hits_total": "counter",
    "crawler_cache_misses_total": "counter",
    "crawler_cache_entries": "gauge",
    "crawler_stale_served_total": "counter",
    "crawler_symbols_tracked": "gauge",
    "crawler_quote_age_seconds": "gauge",
    "crawler_last_successful_collection_timestamp_seconds": "gauge",
    "crawler_collections_total": "counter",
    "crawler_quotes_collected_total": "counter",
    "crawler_collection_errors_total": "counter",
    "crawler_job_runs_total": "counter",
    "crawler_job_errors_total": "counter",
    "crawler_job_missed_total": "counter",
    "crawler_stream_connected": "gauge",
    "crawler_stream_subscribed_symbols": "gauge",
    "crawler_stream_ticks_total": "counter",
    "crawler_stream_bad_frames_total": "counter",
    "crawler_event_watchers": "gauge",
}
#: What the daemon's alerts add (`crawler.alerts.metrics`).
ALERTS_FAMILIES = {
    "crawler_alerts_rules": "gauge",
    "crawler_alerts_fired_total": "counter",
    "crawler_alert_notices_total": "counter",
    "crawler_alert_notices_pending": "gauge",
}
#: What prometheus_client's process collector adds in the daemon (Linux).
PROCESS_FAMILIES = {
    "process_virtual_memory_bytes": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
}


# -- reading an exposition back ------------------------------------------------------------


def parse(text: str) -> list[Sample]:
    """Every sample, via prometheus_client's parser (which raises on malformed input)."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The one sample called `name` with exactly `labels`."""
    found = [s.value for s in parse(text) if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return float(found[0])


def has_sample(text: str, name: str) -> bool:
    return any(s.name == name for s in parse(text))


def check_structure(text: str, families: dict[str, str] = FAMILIES) -> None:
    """One HELP and one TYPE per family, HELP first; every sample belongs to the family above
    it; counters' samples end in _total; histogram samples are _bucket/_sum/_count."""
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    helped: set[str] = set()
    current = ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helped, f"second HELP for {name}"
            helped.add(name)
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and name not in declared, f"TYPE {name} out of place"
            declared[name] = kind
        else:
            sample_name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            assert sample_name is not None, line
            name = sample_name.group(0)
            kind = declared[current]
            if kind == "histogram":
                assert name in {current + s for s in ("_bucket", "_sum", "_count")}, line
            else:
                assert name == current, line
            if kind == "counter":
                assert name.endswith("_total"), line
    assert declared == families
    assert helped == set(families)


# -- the world: real components against the fake market --------------------------------------


class TimedSource:
    """A real source behind the hook the lead wires into HybridDataSource: each call that
    runs is timed and handed to `MetricsRecorder.record_fetch`."""

    def __init__(self, inner: QuoteSource, recorder: MetricsRecorder) -> None:
        self.inner = inner
        self.name = inner.name
        self.recorder = recorder

    def fetch(self, symbol: Symbol) -> Quote:
        start_s = time.perf_counter()
        outcome = "failure"
        try:
            quote = self.inner.fetch(symbol)
            outcome = "success"
            return quote
        finally:
            self.recorder.record_fetch(self.name, outcome, time.perf_counter() - start_s)

    def statistics(self) -> dict[str, Any]:
        stats: Callable[[], dict[str, Any]] = getattr(self.inner, "statistics")  # noqa: B009
        return stats()

    def close(self) -> None:
        self.inner.close()


class ManualClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    market: FakeMarket
    recorder: MetricsRecorder
    ops: Operations
    hybrid: HybridDataSource
    scheduler: DataScheduler
    status: dict[str, Any]
    text: str


#: Bright Data serves a page without a quote for these (billed, a failure); yfinance then
#: serves them. Three failures open Bright Data's breaker (threshold 3).
BROKEN_ON_BRIGHT_DATA = ("MSFT:US", "NVDA:US", "TSLA:US")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    config_file = tmp_path / "config.toml"
    config_file.write_text("")  # keep the checkout's ./config.toml out of the tests
    monkeypatch.setenv("CRAWLER_CONFIG", str(config_file))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MARKET_HOURS_ENABLED", "false")
    # The scenario counts Bright Data first (the seed's order), then its breaker opening.
    monkeypatch.setenv("BUDGET_POLICY", "paced")
    reset_settings()
    yield get_settings()
    reset_settings()


@pytest.fixture
def world(tmp_path: Path, settings: Settings) -> Iterator[World]:
    with FakeMarket() as market:
        recorder = MetricsRecorder()
        data = Path(settings.data_dir)
        ledger = BudgetLedger(
            data / "ledger", settings.total_budget, settings.cost_per_request, "UTC"
        )
        cache = QuoteCache(data / "cache", ttl_s=900)
        bright_data = BrightDataSource(
            market.bright_data.url,
            market.api_key,
            market.zone,
            ledger,
            read_timeout_s=5,
            deadline_s=10,
            sleep=lambda _s: None,
        )
        yfinance = YFinanceSource(
            endpoint=market.yahoo.url, cache_dir=data / "yfinance", timeout_s=5, deadline_s=10
        )
        hybrid = HybridDataSource(
            settings,
            cache=cache,
            ledger=ledger,
            sources=[TimedSource(bright_data, recorder), TimedSource(yfinance, recorder)],
            clock=ManualClock(1_000.0),
            on_breaker_change=recorder.record_breaker_transition,
        )
        watchlist = Watchlist(data / "watchlist")
        history = HistoryStore(data / "history")
        scheduler = DataScheduler(
            settings=settings, hybrid=hybrid, watchlist=watchlist, history=history
        )
        ops = Operations(
            settings,
            hybrid=hybrid,
            watchlist=watchlist,
            history=history,
            scheduler=scheduler,
            started_at=datetime(2026, 3, 2, 14, 30, tzinfo=UTC),
        )
        try:
            for symbol in BROKEN_ON_BRIGHT_DATA:
                market.bright_data.set_page(symbol, "no_quote")
            for symbol in ("AAPL:US", "VOD:LN"):
                ops.add_symbol(symbol)
            report = scheduler.force_collection()  # AAPL, VOD from Bright Data: misses
            assert report["quotes"] == 2
            fetched = ops.fetch(["AAPL:US", "VOD:LN", *BROKEN_ON_BRIGHT_DATA])  # 2 hits
            assert fetched["errors"] == {}
            ops.fetch(["IBM:US"])  # Bright Data's breaker is open now: skipped, yfinance serves
            status = ops.status()
            # The lead's wiring: the recorder's snapshot rides along in the status document.
            status["metrics"] = recorder.snapshot()
            text = render_metrics(status, recorder)
            yield World(market, recorder, ops, hybrid, scheduler, status, text)
        finally:
            scheduler.stop()
            ops.close()


# -- the exposition against the status --------------------------------------------------------


def test_exposition_parses_and_declares_every_family_once(world: World) -> None:
    families = {f.name: f for f in text_string_to_metric_families(world.text)}
    assert len(families) == len(FAMILIES)
    check_structure(world.text)
    for family in families.values():
        assert family.documentation, family.name


def test_the_scenario_is_not_trivial(world: World) -> None:
    """The figures compared below are not zeros that would match anything."""
    status = world.status
    assert status["cache"]["hits"] >= 2 and status["cache"]["misses"] >= 5
    assert status["sources"]["bright_data"]["failures"] == 3
    assert status["sources"]["bright_data"]["skipped"] >= 1
    assert status["sources"]["yfinance"]["successes"] == 4
    assert status["breakers"]["bright_data"]["state"] == "open"
    assert Decimal(status["budget"]["total_cost"]) > 0
    assert world.market.bright_data.billed_count == 5


def test_budget_matches_status(world: World) -> None:
    budget = world.status["budget"]
    text = world.text
    assert value(text, "crawler_budget_remaining_usd") == float(budget["budget_remaining"])
    assert value(text, "crawler_budget_spent_usd") == float(budget["total_cost"])
    assert value(text, "crawler_budget_total_usd") == float(budget["budget_total"])
    assert value(text, "crawler_budget_requests_used") == budget["requests_used"] == 5
    assert value(text, "crawler_budget_requests_allowed") == budget["requests_allowed"]
    spent = Decimal(budget["total_cost"])
    assert spent == 5 * Decimal(str(world.ops.settings.cost_per_request))


def test_cache_matches_status(world: World) -> None:
    cache = world.status["cache"]
    text = world.text
    assert value(text, "crawler_cache_hits_total") == cache["hits"]
    assert value(text, "crawler_cache_misses_total") == cache["misses"]
    assert value(text, "crawler_cache_entries") == cache["size"] == 6
    # The since-start ratio is gone: rate(hits) / (rate(hits) + rate(misses)) says it per window.
    assert "crawler_cache_hit_ratio" not in text


def test_requests_by_source_and_outcome_match_status(world: World) -> None:
    for source, usage in world.status["sources"].items():
        for outcome, key in (("success", "successes"), ("failure", "failures")):
            got = value(world.text, "crawler_source_requests_total", source=source, outcome=outcome)
            assert got == usage[key], (source, outcome)
        # Skipped requests were never made: their own counter, not an outcome of requests.
        assert value(world.text, "crawler_source_skipped_total", source=source) == usage["skipped"]
        outcomes = {
            s.labels["outcome"]
            for s in parse(world.text)
            if s.name == "crawler_source_requests_total" and s.labels["source"] == source
        }
        assert outcomes == {"success", "failure"}


def test_breakers_match_status(world: World) -> None:
    for source, breaker in world.status["breakers"].items():
        for state in BREAKER_STATES:
            got = value(world.text, "crawler_breaker_state", source=source, state=state)
            assert got == (1 if breaker["state"] == state else 0)
        rejections = value(world.text, "crawler_breaker_rejections_total", source=source)
        assert rejections == breaker["total_rejections"]
    transitions = {
        (s.labels["source"], s.labels["from"], s.labels["to"]): s.value
        for s in parse(world.text)
        if s.name == "crawler_breaker_transitions_total"
    }
    assert transitions == {("bright_data", "closed", "open"): 1}
    assert world.status["breakers"]["bright_data"]["transitions"] == 1


def test_scheduler_figures_match_status(world: World) -> None:
    metrics = world.status["scheduler"]["collection_metrics"]
    text = world.text
    assert value(text, "crawler_symbols_tracked") == len(world.status["symbols"]) == 2
    assert value(text, "crawler_collections_total", outcome="success") == 1
    assert value(text, "crawler_collections_total", outcome="failure") == 0
    assert value(text, "crawler_quotes_collected_total") == metrics["total_quotes_collected"]
    assert value(text, "crawler_collection_errors_total") == metrics["total_errors"]
    # No job failed or was missed: the families are declared, with no invented samples.
    assert metrics["job_errors"] == metrics["missed_runs"] == 0
    assert not has_sample(text, "crawler_job_errors_total")
    assert not has_sample(text, "crawler_job_missed_total")
    last_success = datetime.fromisoformat(metrics["last_success_at"]).timestamp()
    assert value(text, "crawler_last_successful_collection_timestamp_seconds") == last_success
    assert abs(last_success - time.time()) < 120


def test_build_info(world: World) -> None:
    info = [s for s in parse(world.text) if s.name == "crawler_build_info"]
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels == {"version": __version__, "python": sys.version.split()[0]}


def test_quote_age_per_tracked_symbol(world: World) -> None:
    ages = {
        s.labels["symbol"]: s.value
        for s in parse(world.text)
        if s.name == "crawler_quote_age_seconds"
    }
    expected = {row["symbol"]: row["age_s"] for row in world.status["symbols"]}
    assert set(ages) == {"AAPL:US", "VOD:LN"}
    assert ages == pytest.approx(expected)
    # A tracked symbol with no quote yet has no sample (not an invented 0).
    status = {"symbols": [{"symbol": "NEW:US", "age_s": None}, {"symbol": "A:US", "age_s": 7.5}]}
    text = render_metrics(status)
    assert value(text, "crawler_quote_age_seconds", symbol="A:US") == 7.5
    assert len([s for s in parse(text) if s.name == "crawler_quote_age_seconds"]) == 1


def test_the_process_collector_comes_for_free() -> None:
    text = exposition(build_registry(dict, MetricsRecorder(), process=True))
    check_structure(text, FAMILIES | PROCESS_FAMILIES)
    assert value(text, "process_resident_memory_bytes") > 1_000_000
    assert value(text, "process_open_fds") >= 3
    assert abs(value(text, "process_start_time_seconds") - time.time()) < 24 * 3600


def test_fetch_histogram_counts_every_upstream_call(world: World) -> None:
    """Each call that ran is in the histogram once: _count equals status's successes plus
    failures for that source, and the buckets are cumulative up to +Inf == _count."""
    samples = parse(world.text)
    for source, usage in world.status["sources"].items():
        count = value(world.text, "crawler_fetch_duration_seconds_count", source=source)
        assert count == usage["successes"] + usage["failures"] > 0
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in samples
            if s.name == "crawler_fetch_duration_seconds_bucket" and s.labels["source"] == source
        ]
        bounds = [le for le, _ in buckets]
        assert bounds == [*DEFAULT_DURATION_BUCKETS_S, math.inf]
        counts = [n for _, n in buckets]
        assert counts == sorted(counts) and counts[-1] == count
        total_s = value(world.text, "crawler_fetch_duration_seconds_sum", source=source)
        assert 0 < total_s < 60


def test_the_snapshot_in_status_agrees_with_the_exposition(world: World) -> None:
    snapshot = json.loads(json.dumps(world.recorder.snapshot(), allow_nan=False))
    text = render_metrics(world.status, world.recorder)
    for source, hist in snapshot["fetch_duration_seconds"].items():
        assert value(text, "crawler_fetch_duration_seconds_count", source=source) == hist["count"]
        assert value(text, "crawler_fetch_duration_seconds_sum", source=source) == hist["sum"]
    assert snapshot["breaker_transitions"] == [
        {"source": "bright_data", "from": "closed", "to": "open", "count": 1}
    ]
    assert "_created" not in text  # prometheus_client's creation timestamps are turned off


# -- the recorder ------------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_count_every_call() -> None:
    recorder = MetricsRecorder(buckets_s=(0.1, 1.0, 10.0))
    durations = [0.05, 0.1, 0.5, 1.0, 3.0, 99.0, -2.0, float("nan")]
    for duration_s in durations:
        recorder.record_fetch("yfinance", "success", duration_s)
    text = render_metrics({}, recorder)
    assert parse(text)
    bucket = {
        s.labels["le"]: s.value
        for s in parse(text)
        if s.name == "crawler_fetch_duration_seconds_bucket"
    }
    # le is inclusive; -2 and NaN count as 0 s.
    assert bucket == {"0.1": 4, "1.0": 6, "10.0": 7, "+Inf": 8}
    assert value(text, "crawler_fetch_duration_seconds_count", source="yfinance") == len(durations)
    total_s = value(text, "crawler_fetch_duration_seconds_sum", source="yfinance")
    assert total_s == pytest.approx(0.05 + 0.1 + 0.5 + 1.0 + 3.0 + 99.0)


def test_recorder_counts_from_many_threads() -> None:
    recorder = MetricsRecorder()
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for i in range(500):
            recorder.record_fetch("bright_data", "success" if i % 2 else "failure", 0.2)
            recorder.record_breaker_transition("bright_data", "closed", "open")
            recorder.record_job_run("collection")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = recorder.snapshot()
    assert snap["fetch_duration_seconds"]["bright_data"]["count"] == 4000
    assert snap["breaker_transitions"][0]["count"] == 4000
    assert snap["job_runs"] == {"collection": 4000}
    assert snap["fetch_duration_seconds"]["bright_data"]["sum"] == pytest.approx(800.0)


def test_a_real_breaker_reports_its_transitions() -> None:
    recorder = MetricsRecorder()
    clock = ManualClock(0.0)
    breaker = CircuitBreaker(
        "bright_data",
        failure_threshold=2,
        recovery_timeout=30,
        clock=clock,
        on_state_change=recorder.record_breaker_transition,
    )

    def fail() -> None:
        raise APIError("upstream down")

    for _ in range(2):
        with pytest.raises(APIError):
            breaker.call(fail)
    clock.now = 31.0
    breaker.call(lambda: None)  # the trial: open → half_open → closed
    text = render_metrics({}, recorder)
    transitions = {
        (s.labels["from"], s.labels["to"]): s.value
        for s in parse(text)
        if s.name == "crawler_breaker_transitions_total"
    }
    assert transitions == {
        ("closed", "open"): 1,
        ("open", "half_open"): 1,
        ("half_open", "closed"): 1,
    }


def test_job_runs_errors_and_misses_by_job() -> None:
    recorder = MetricsRecorder()
    for job in ("collection", "collection", "cache_cleanup"):
        recorder.record_job_run(job)
    recorder.record_job_problem("collection", "error")
    recorder.record_job_problem("heartbeat", "missed")
    recorder.record_job_problem("heartbeat", "missed")
    text = render_metrics({}, recorder)
    assert value(text, "crawler_job_runs_total", job="collection") == 2
    assert value(text, "crawler_job_runs_total", job="cache_cleanup") == 1
    assert value(text, "crawler_job_errors_total", job="collection") == 1
    assert value(text, "crawler_job_missed_total", job="heartbeat") == 2
    assert not has_sample(text, "crawler_job_missed_total_created")
    snapshot = recorder.snapshot()
    assert json.loads(json.dumps(snapshot, allow_nan=False)) == snapshot
    assert snapshot["job_errors"] == {"collection": 1}
    assert snapshot["job_missed"] == {"heartbeat": 2}


@pytest.mark.parametrize("buckets", [(), (1.0, 0.5), (0.1, 0.1), (0.1, math.inf)])
def test_bad_buckets_are_refused(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="ascending"):
        MetricsRecorder(buckets_s=buckets)


# -- rendering edge cases ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source", ['say "hi"', "back\\slash", "two\nlines", 'all \\ " \n of them', "ünïcode"]
)
def test_label_values_are_escaped(source: str) -> None:
    recorder = MetricsRecorder()
    recorder.record_fetch(source, "success", 0.2)
    recorder.record_breaker_transition(source, "closed", "open")
    status = {
        "sources": {source: {"successes": 3, "failures": 1, "skipped": 0}},
        "breakers": {source: {"state": "open", "total_rejections": 2}},
    }
    text = render_metrics(status, recorder)
    check_structure(text)
    assert value(text, "crawler_source_requests_total", source=source, outcome="success") == 3
    assert value(text, "crawler_breaker_state", source=source, state="open") == 1
    assert value(text, "crawler_fetch_duration_seconds_count", source=source) == 1
    # One line per sample: a raw newline in a label would split it.
    assert len([ln for ln in text.splitlines() if "crawler_breaker_rejections_total{" in ln]) == 1


def test_an_empty_status_declares_every_family_and_invents_no_figure() -> None:
    text = render_metrics({})
    check_structure(text)
    names = {s.name for s in parse(text)}
    assert names == {"crawler_build_info"}


def test_an_offline_status_without_scheduler() -> None:
    status = {
        "daemon": {"version": "9.9.9", "started_at": None},
        "scheduler": None,
        "budget": {"budget_remaining": "5.4985", "total_cost": "0.0015", "requests_used": 1},
        "symbols": [{"symbol": "AAPL:US"}],
        "stale_served": 4,
    }
    text = render_metrics(status)
    check_structure(text)
    assert value(text, "crawler_budget_remaining_usd") == 5.4985
    assert value(text, "crawler_symbols_tracked") == 1
    assert value(text, "crawler_stale_served_total") == 4
    assert value(text, "crawler_build_info", version="9.9.9", python=sys.version.split()[0]) == 1
    assert not has_sample(text, "crawler_collections_total")
    assert not has_sample(text, "crawler_last_successful_collection_timestamp_seconds")
    assert not has_sample(text, "process_start_time_seconds")


# -- the loopback TCP port ---------------------------------------------------------------------


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


def test_metrics_server_serves_on_loopback_only() -> None:
    recorder = MetricsRecorder()
    recorder.record_fetch("yfinance", "success", 0.4)
    status = {"cache": {"hits": 7, "misses": 3, "size": 2}}
    with MetricsHTTPServer(lambda: render_metrics(status, recorder), port=0) as server:
        assert server.port != 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        code, content_type, body = http_get(server.port, "/metrics")
        assert code == 200 and content_type == CONTENT_TYPE
        check_structure(body)
        assert value(body, "crawler_cache_hits_total") == 7
        assert value(body, "crawler_fetch_duration_seconds_count", source="yfinance") == 1
        assert http_get(server.port, "/metrics?x=1")[0] == 200
        assert http_get(server.port, "/")[0] == 404
        assert http_get(server.port, "/metrics", "POST")[0] == 405
        assert http_get(server.port, "/metrics", "HEAD")[0] == 200
        # Bound to 127.0.0.1, not the wildcard: another local address of ours is refused.
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        other.settimeout(2)
        try:
            assert other.connect_ex(("127.0.0.2", server.port)) != 0
        finally:
            other.close()
        port = server.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_metrics_server_survives_a_failing_render_and_serves_a_recorder() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("status unavailable")
        return render_metrics({})

    with MetricsHTTPServer(flaky, port=0) as server:
        assert http_get(server.port, "/metrics")[0] == 500
        assert http_get(server.port, "/metrics")[0] == 200
    recorder = MetricsRecorder()
    recorder.record_job_run("heartbeat")
    with MetricsHTTPServer(recorder, port=0) as server:
        body = http_get(server.port, "/metrics")[2]
        assert value(body, "crawler_job_runs_total", job="heartbeat") == 1


def test_metrics_server_reports_a_busy_port_and_a_bad_one() -> None:
    with MetricsHTTPServer(lambda: "", port=0) as first:
        second = MetricsHTTPServer(lambda: "", port=first.port)
        with pytest.raises(DaemonError, match="METRICS_PORT"):
            second.start()
    with pytest.raises(ConfigError):
        MetricsHTTPServer(lambda: "", port=70_000)


def test_metrics_server_caps_connections_and_drops_idle_ones() -> None:
    with MetricsHTTPServer(render_metrics({}).__str__, port=0, max_connections=1,
                           client_timeout_s=0.5) as server:  # fmt: skip
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            # The only slot is taken: the next connection is closed without an answer.
            for _ in range(100):  # the server accepts the idle one asynchronously
                refused = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                refused.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = refused.recv(1024)
                refused.close()
                if answer == b"":
                    break
            assert answer == b""
            # The idle client is dropped by the server's timeout (0.5 s); ours (5 s) would raise.
            assert idle.recv(1024) == b""
        finally:
            idle.close()
        # The slot is free again.
        for _ in range(100):
            try:
                if http_get(server.port, "/metrics")[0] == 200:
                    break
            except (ConnectionError, http.client.HTTPException):
                pass
        else:
            pytest.fail("the slot was never released")


# -- end to end: the daemon ------------------------------------------------------------------


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(
    not (REPO / "crawler" / "daemon" / "app.py").exists(), reason="the daemon is not built yet"
)
def test_daemon_metrics_agree_with_its_status(tmp_path: Path) -> None:
    from crawler.daemon.client import ControlClient

    socket_path = tmp_path / "crawler.sock"
    config_file = tmp_path / "config.toml"
    config_file.write_text("")
    with FakeMarket() as market:
        ours = {name.upper() for name in Settings.model_fields} | {
            "CREDENTIALS_DIRECTORY",
            "STATE_DIRECTORY",
            "RUNTIME_DIRECTORY",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
        }
        env = {key: val for key, val in os.environ.items() if key.upper() not in ours}
        env.update(market.environment())
        env.update(
            DATA_DIR=str(tmp_path / "data"),
            CRAWLER_SOCKET=str(socket_path),
            CRAWLER_CONFIG=str(config_file),
            AUTO_UPDATE_ENABLED="false",
            BUDGET_POLICY="paced",  # the seed's order: these tests count Bright Data's metrics
            PYTHONPATH=str(REPO),
            METRICS_PORT=str(metrics_port := free_port()),
        )
        log_path = tmp_path / "daemon.log"
        log_file = log_path.open("w")  # a file, not a pipe: a chatty daemon cannot block on it
        daemon = subprocess.Popen(
            [sys.executable, "-m", "crawler", "start", "--foreground"],
            env=env,
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            client = ControlClient(socket_path, timeout_s=10)
            deadline = time.monotonic() + 30
            while True:
                assert daemon.poll() is None, log_path.read_text()
                try:
                    if client.get("/health")[0] == 200:
                        break
                except DaemonError:
                    pass
                assert time.monotonic() < deadline, "the daemon did not answer in 30 s"
                time.sleep(0.1)
            fetched = _run_cli(env, "fetch", "AAPL:US")
            assert fetched.returncode == 0, fetched.stderr
            assert _run_cli(env, "fetch", "AAPL:US").returncode == 0  # a cache hit
            code, status = client.get("/status")
            assert code == 200
            code, text = client.get("/metrics")
            assert code == 200, text
            assert isinstance(text, str)
            check_structure(text, FAMILIES | PROCESS_FAMILIES | ALERTS_FAMILIES)
            budget, cache = status["budget"], status["cache"]
            assert value(text, "crawler_budget_remaining_usd") == float(budget["budget_remaining"])
            assert value(text, "crawler_budget_spent_usd") == float(budget["total_cost"]) > 0
            assert value(text, "crawler_budget_requests_used") == budget["requests_used"] == 1
            assert value(text, "crawler_budget_requests_allowed") == budget["requests_allowed"]
            assert value(text, "crawler_cache_hits_total") == cache["hits"] >= 1
            assert value(text, "crawler_cache_misses_total") == cache["misses"]
            assert value(text, "crawler_cache_entries") == cache["size"] == 1
            for source, usage in status["sources"].items():
                for outcome, key in (("success", "successes"), ("failure", "failures")):
                    labels = {"source": source, "outcome": outcome}
                    assert value(text, "crawler_source_requests_total", **labels) == usage[key]
            assert status["sources"]["bright_data"]["successes"] == 1
            for source, breaker in status["breakers"].items():
                assert (
                    value(text, "crawler_breaker_state", source=source, state=breaker["state"]) == 1
                )
            assert value(text, "crawler_symbols_tracked") == len(status["symbols"])
            build = {"version": status["daemon"]["version"], "python": sys.version.split()[0]}
            assert value(text, "crawler_build_info", **build) == 1
            # process_* are the daemon process's own (prometheus_client reads /proc/PID).
            started = datetime.fromisoformat(status["daemon"]["started_at"]).timestamp()
            assert abs(value(text, "process_start_time_seconds") - started) < 30
            assert value(text, "process_resident_memory_bytes") > 10_000_000
            # The daemon's recorder is wired: one timed Bright Data fetch (the second was a
            # cache hit), and the loopback port serves the same exposition.
            assert value(text, "crawler_fetch_duration_seconds_count", source="bright_data") == 1
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as answer:
                served = answer.read().decode()
            check_structure(served, FAMILIES | PROCESS_FAMILIES | ALERTS_FAMILIES)
            assert value(served, "crawler_fetch_duration_seconds_count", source="bright_data") == 1
            assert value(served, "crawler_budget_requests_used") == 1
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            log_file.close()
        assert daemon.returncode == 0, log_path.read_text()
