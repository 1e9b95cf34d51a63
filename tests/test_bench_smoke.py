"""The benchmarks run: each at its tiny `--quick` size, in a subprocess, ends with one parseable
JSON line carrying its figures. No timing is asserted here, ever (`met` may be either)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import BENCHMARKS, last_json_line
from bench._common import median, percentile
from bench.bench_cli import parse_importtime

REPO = Path(__file__).resolve().parents[1]

#: bench name → figures its final line must carry (besides bench, target and met).
EXPECTED_KEYS: dict[str, set[str]] = {
    "cache": {"raw_ops_per_s", "quotecache_ops_per_s", "hybrid_ops_per_s", "hybrid_vs_raw"},
    "collection": {
        "ideal_s",
        "bd_pool_s",
        "bd_hybrid_s",
        "bd_hybrid_vs_pool",
        "bd_hybrid_cpu_ms_per_quote",
        "yf_pool_s",
        "yf_hybrid_s",
        "yf_hybrid_vs_pool",
        "yf_hybrid_cpu_ms_per_quote",
        "yf_download_s",
        "yf_hybrid_vs_download",
    },
    "cli": {"python_pass_ms", "help_ms", "status_ms", "status_vs_python", "heavy_imports"},
    "memory": {"rss_start_mb", "rss_after_3_mb", "rss_final_mb", "rss_peak_mb", "growth_mb"},
    "socket": {"idle_rps", "busy_rps", "busy_vs_idle", "idle_p50_ms", "busy_p50_ms"},
    "http": {
        "h11_rps_median",
        "stdlib_rps_median",
        "h11_vs_stdlib",
        "h11_cpu_ms_per_request_median",
        "cpu_h11_vs_stdlib",
    },
    "stream": {
        "stream_age_s_median",
        "poll_age_s_median",
        "poll_vs_stream_age",
        "cpu_ms_per_tick_median",
        "paid_requests_streamed",
        "rss_peak_mb",
    },
    "yahoo": {
        "chart_cpu_ratio_median",
        "chart_cpu_bare_ms_median",
        "chart_cpu_ours_ms_median",
        "pool_s_median",
        "batched_default_vs_pool_median",
        "batched_open_vs_pool_median",
        "per_symbol_vs_pool_median",
        "batched_default_data_requests",
    },
    "pacing": {"symbols", "paced", "unpaced", "cpu_paced_vs_unpaced", "policies"},
    "firstday": {"first_collection_s", "first", "second_collection_s", "second"},
    "status": {"status_vs_health", "cli_vs_python", "status_large_ms", "quotecache_vs_raw"},
    "dashboard": {
        "table_ready_ms_median",
        "table_painted_ms_median",
        "daemon_cpu_tabs_vs_none",
        "daemon_rss_tabs_minus_none_mb",
    },
    "backfill": {
        "chart_requests",
        "yahoo_requests",
        "seconds",
        "bars_added",
        "second_run_requests",
    },
    "alerts": {"none", "fast", "hanging", "refusing", "notices"},
    "cluster": {
        "duplicates_per_interval",
        "ledger",
        "ledger_redis_vs_embedded",
        "added_ms_per_fetched_quote",
        "added_ms_per_cache_hit",
    },
}
#: Benchmarks that start the daemon: they need `crawler start --foreground` to exist.
NEEDS_DAEMON = {"cli", "memory", "socket", "stream", "status", "dashboard", "alerts", "firstday"}


def _daemon_available() -> bool:
    return (REPO / "crawler" / "daemon" / "app.py").is_file() and (
        REPO / "crawler" / "cli" / "app.py"
    ).is_file()


def _run_quick(name: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    script = REPO / "bench" / BENCHMARKS[name]
    done = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return done, last_json_line(done.stdout)


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_benchmark_prints_its_figures(name: str) -> None:
    if name in NEEDS_DAEMON and not _daemon_available():
        pytest.skip("the daemon (crawler/daemon/app.py, crawler/cli/app.py) is not there yet")
    if name == "cluster" and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    if name == "dashboard" and not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromium-driver are not installed (make test installs them)")
    done, result = _run_quick(name)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert result is not None, f"no final JSON line:\n{done.stdout[-2000:]}"
    assert done.stdout.strip().splitlines()[-1].startswith("{"), "JSON must be the last line"
    assert result["bench"] == name
    assert isinstance(result["met"], bool)
    assert isinstance(result["target"], str) and result["target"]
    missing = EXPECTED_KEYS[name] - set(result)
    assert not missing, f"missing figures {sorted(missing)} in {result}"
    human_lines = done.stdout.strip().splitlines()[:-1]
    assert human_lines, "a benchmark prints human-readable lines before its JSON"


def test_runner_writes_the_results_file(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "cache", "--quick", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(output.read_text())
    assert report["quick"] is True
    assert set(report["results"]) == {"cache"}
    assert report["results"]["cache"]["bench"] == "cache"
    assert "hybrid_vs_raw" in report["results"]["cache"]
    assert report["results"]["cache"]["symbols"] == 200  # --quick reached the script


def test_every_benchmark_has_a_quick_form() -> None:
    """`python -m bench --quick` passes --quick to every script but those with their own small
    arguments; each script given --quick is one the smoke test above runs with --quick."""
    from bench.__main__ import QUICK_FALLBACK, _arguments

    for name, script in BENCHMARKS.items():
        arguments = _arguments(name, REPO / "bench" / script, quick=True)
        if name in QUICK_FALLBACK:
            assert arguments == QUICK_FALLBACK[name], name
        else:
            assert arguments == ["--quick"], name
            assert name in EXPECTED_KEYS, f"{name} takes --quick but the smoke test skips it"


def test_runner_refuses_an_unknown_benchmark() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown benchmark 'nope'" in done.stderr


def test_last_json_line_skips_trailing_noise() -> None:
    output = 'human line\n{"bench": "x", "met": true}\n{not json\n'
    assert last_json_line(output) == {"bench": "x", "met": True}
    assert last_json_line("no json at all\n") is None


def test_parse_importtime_reads_module_names() -> None:
    log = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |   _io\n"
        "import time:      2000 |      15000 | pandas\n"
        "import time:        50 |         50 |     crawler.cli\n"
    )
    modules = parse_importtime(log)
    assert modules["pandas"] == (2000, 15000)
    assert {name.strip() for name in modules} == {"_io", "pandas", "crawler.cli"}


def test_percentiles() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    with pytest.raises(ValueError):
        percentile([], 50)
