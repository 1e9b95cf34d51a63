"""Benchmark: `crawler dashboard` at N symbols (1,000; --quick 50) in a real headless Chromium.

Two figures, both against a real daemon over the fake market (its own process):

1. Time from navigation to a full table: a fresh tab opens the dashboard's page L times (5;
   --quick 1); the page records `performance.now()` (milliseconds since the navigation began)
   once its N rows are built (`ready_ms`) and once the frame after that is painted
   (`painted_ms`). Min and median.
2. What open tabs cost the daemon: rounds (3; --quick 1) of C collections (10; --quick 1), each
   forced through the socket (POST /collect), alternating between "none" (no dashboard process,
   no browser tab) and "tabs" (a `crawler dashboard` process and two Chromium tabs showing the
   full table, live, opened before: their first paint and sparklines done); the order flips
   every round. The daemon's CPU seconds (utime + stime)
   over the C collections and its VmRSS after them, min and median per mode, and their ratios.
   The dashboard process's own CPU and RSS are reported beside them (it is not the daemon).

So that every collection does work (quotes fetched, events published to the dashboard), the
cache TTL is 1 s and Yahoo's batches serve every symbol (200 a request, 100 requests/s); the
price stream is off (its ticks would not be the same in both modes). Target: the daemon's
median CPU with two tabs at most 1.10x that with none, and its RSS at most 5 MB more.

    python bench/bench_dashboard.py [--quick] [--symbols 1000] [--collections 10] [--rounds 3]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    DaemonProcess,
    fake_market,
    finish,
    generated_symbols,
    median,
    parser,
    ratio,
    rss_kib,
)

__all__ = ["main"]

TARGET_CPU_RATIO = 1.10
TARGET_RSS_MB = 5.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds process `pid` has used (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Dashboard:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crawler", "dashboard", "--port", "0", "--no-browser",
             "--json"],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the dashboard did not start")
        self.url = json.loads(line)["url"]
        self.origin = self.url.split("/?", 1)[0]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=20)


def _chrome(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=options)


def _wait(driver: Any, script: str, timeout_s: float = 120.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.02).until(
        lambda d: d.execute_script(script)
    )


def _open_table(driver: Any, url: str, symbols: int) -> tuple[float, float]:
    """Navigate to `url`; (ready_ms, painted_ms) once the table holds `symbols` rows."""
    driver.get(url)
    _wait(
        driver,
        "return document.body.dataset.paintedMs && "
        f"document.querySelectorAll('#rows tr').length === {symbols}",
    )
    ready = float(driver.execute_script("return document.body.dataset.readyMs"))
    painted = float(driver.execute_script("return document.body.dataset.paintedMs"))
    return ready, painted


def _collections(daemon: DaemonProcess, count: int) -> tuple[float, int, list[int]]:
    """`count` collections: the daemon's CPU seconds over them, its VmRSS (KiB) after, and
    how many quotes each fetched."""
    before = _cpu_s(daemon.pid)
    fetched = []
    for _ in range(count):
        time.sleep(1.05)  # past the 1 s TTL: every quote is fetched again
        report = daemon.collect()
        fetched.append(int(sum((report.get("sources") or {}).values())))
    return _cpu_s(daemon.pid) - before, rss_kib(daemon.pid), fetched


def main() -> int:
    arguments = parser(__doc__ or "")
    arguments.add_argument("--symbols", type=int, default=None)
    arguments.add_argument("--collections", type=int, default=None)
    arguments.add_argument("--rounds", type=int, default=None)
    arguments.add_argument("--loads", type=int, default=None)
    args = arguments.parse_args()
    quick = args.quick
    args.symbols = args.symbols or (50 if quick else 1000)
    args.collections = args.collections or (1 if quick else 10)
    args.rounds = args.rounds or (1 if quick else 3)
    args.loads = args.loads or (1 if quick else 5)
    symbols = generated_symbols(args.symbols)
    env = {
        "SOURCES_ORDER": "yfinance",
        "CACHE_TTL_SECONDS": "1",
        "YFINANCE_MAX_RPS": "100",
        "YFINANCE_BATCH_SIZE": "200",
        "STREAM_ENABLED": "false",
        "LOG_LEVEL": "warning",
    }
    with fake_market() as market, DaemonProcess(market, env) as daemon, \
            tempfile.TemporaryDirectory(prefix="crawler-bench-chrome-") as tmp:  # fmt: skip
        daemon.add_symbols(symbols)
        first = daemon.collect()
        print(f"{len(symbols)} symbols tracked; first collection: {first.get('sources')}")
        driver = _chrome(Path(tmp) / "profile")
        try:
            # 1. navigation to a full table
            dashboard = _Dashboard(daemon.env, daemon.data_dir)
            readies, paints = [], []
            try:
                driver.get(dashboard.url)  # sign in once (the token for a cookie)
                for _ in range(args.loads):
                    ready, painted = _open_table(driver, dashboard.origin + "/", len(symbols))
                    readies.append(ready)
                    paints.append(painted)
                    print(f"table of {len(symbols)} rows: built {ready:.0f} ms, "
                          f"painted {painted:.0f} ms after navigation")  # fmt: skip
            finally:
                dashboard.stop()
            # 2. the daemon's CPU and RSS, two tabs versus none, interleaved
            cpu: dict[str, list[float]] = {"none": [], "tabs": []}
            rss: dict[str, list[int]] = {"none": [], "tabs": []}
            dash_cpu: list[float] = []
            dash_rss: list[int] = []
            for round_no in range(args.rounds):
                order = ["none", "tabs"] if round_no % 2 == 0 else ["tabs", "none"]
                for mode in order:
                    if mode == "none":
                        used, rss_after, fetched = _collections(daemon, args.collections)
                    else:
                        dashboard = _Dashboard(daemon.env, daemon.data_dir)
                        try:
                            driver.get(dashboard.url)
                            _open_table(driver, dashboard.origin + "/", len(symbols))
                            driver.switch_to.new_window("tab")
                            _open_table(driver, dashboard.origin + "/", len(symbols))
                            # Open, not opening: the rows on screen have their sparklines.
                            _wait(driver, "return document.body.dataset.sparksLoading === '0'")
                            dash_before = _cpu_s(dashboard.proc.pid)
                            used, rss_after, fetched = _collections(daemon, args.collections)
                            dash_cpu.append(_cpu_s(dashboard.proc.pid) - dash_before)
                            dash_rss.append(rss_kib(dashboard.proc.pid))
                            driver.close()
                            driver.switch_to.window(driver.window_handles[0])
                            driver.get("about:blank")
                        finally:
                            dashboard.stop()
                    cpu[mode].append(used)
                    rss[mode].append(rss_after)
                    print(f"round {round_no + 1} {mode:>4}: {args.collections} collections "
                          f"(fetched {min(fetched)}-{max(fetched)} each), daemon CPU "
                          f"{used:.2f} s, VmRSS {rss_after / 1024:.1f} MB")  # fmt: skip
        finally:
            driver.quit()
    cpu_ratio = ratio(median(cpu["tabs"]), median(cpu["none"]))
    rss_delta_mb = round((median(rss["tabs"]) - median(rss["none"])) / 1024, 1)
    figures: dict[str, Any] = {
        "symbols": len(symbols),
        "table_ready_ms_min": round(min(readies)),
        "table_ready_ms_median": round(median(readies)),
        "table_painted_ms_min": round(min(paints)),
        "table_painted_ms_median": round(median(paints)),
        "collections_per_round": args.collections,
        "rounds": args.rounds,
        "daemon_cpu_s_none": {"min": round(min(cpu["none"]), 2),
                              "median": round(median(cpu["none"]), 2)},
        "daemon_cpu_s_tabs": {"min": round(min(cpu["tabs"]), 2),
                              "median": round(median(cpu["tabs"]), 2)},
        "daemon_cpu_tabs_vs_none": cpu_ratio,
        "daemon_cpu_tabs_vs_none_min": ratio(min(cpu["tabs"]), min(cpu["none"])),
        "daemon_rss_mb_none": {"min": round(min(rss["none"]) / 1024, 1),
                               "median": round(median(rss["none"]) / 1024, 1)},
        "daemon_rss_mb_tabs": {"min": round(min(rss["tabs"]) / 1024, 1),
                               "median": round(median(rss["tabs"]) / 1024, 1)},
        "daemon_rss_tabs_minus_none_mb": rss_delta_mb,
        "dashboard_cpu_s_median": round(median(dash_cpu), 2),
        "dashboard_rss_mb_median": round(median(dash_rss) / 1024, 1),
    }  # fmt: skip
    met = cpu_ratio <= TARGET_CPU_RATIO and rss_delta_mb <= TARGET_RSS_MB
    target = (
        f"daemon CPU with two tabs <= {TARGET_CPU_RATIO}x none (median), RSS <= "
        f"+{TARGET_RSS_MB:g} MB"
    )
    return finish("dashboard", figures, target, met)


if __name__ == "__main__":
    sys.exit(main())
