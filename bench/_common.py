"""Shared helpers of the benchmarks: the fake market, a hybrid source or a daemon pointed at it,
statistics, process memory, and the final JSON line.

    with fake_market(latency_s=0.05) as market, tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(Path(tmp), market, sources_order=("yfinance",))
        with HybridDataSource(settings) as hybrid:
            hybrid.fetch_many(generated_symbols(1000))

    with fake_market() as market, DaemonProcess(market) as daemon:
        daemon.client.get("/status"); rss_kib(daemon.pid)

Nothing here talks to any address but 127.0.0.1 and the daemon's Unix socket.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/bench_x.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.daemon.client import ControlClient

__all__ = [
    "REPO_ROOT",
    "DaemonProcess",
    "FakeMarketProcess",
    "bench_settings",
    "daemon_environment",
    "fake_market",
    "finish",
    "generated_symbols",
    "median",
    "parser",
    "percentile",
    "ratio",
    "rss_kib",
]

#: The fake market's API key (any non-empty string: the fake checks it, nobody else sees it).
FAKE_API_KEY = "bench-key"
#: A Bright Data budget no benchmark can spend (1,000,000 requests at the default price).
HUGE_BUDGET_USD = "1500"


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the `--quick` flag every benchmark takes."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks the benchmark runs, not speed"
    )
    return result


def generated_symbols(count: int) -> list[str]:
    """`count` well-formed US tickers (T0000:US, T0001:US, ...) that both fakes serve and
    `to_yahoo` maps (to T0000, ...). None starts with a prefix the Yahoo fake treats as unknown."""
    return [f"T{i:04d}:US" for i in range(count)]


class FakeMarketProcess:
    """The fake market (`python -m fakemarket`) in its own process, on two free ports.

    Its own process, so its HTTP threads neither share the GIL with the code measured nor show
    in this process's CPU time. `latency_s` is added to every answer of both fakes.
    """

    def __init__(
        self, latency_s: float = 0.0, api_key: str = FAKE_API_KEY, stream_tick_rate: float = 0.0
    ) -> None:
        from fakemarket import DEFAULT_ZONE, free_port

        self.latency_s = latency_s
        # 0: the streamer keeps subscriptions but sends nothing (benches that measure polling).
        self.stream_tick_rate = stream_tick_rate
        self.stream_port = free_port()
        self.api_key = api_key
        self.zone = DEFAULT_ZONE
        self.bright_data_port = free_port()
        self.yahoo_port = free_port()
        # The fake also serves Yahoo's stream; left to its default port (8803) it would fail
        # to start whenever another fake market already holds it.
        self.stream_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bright_data_url(self) -> str:
        return f"http://127.0.0.1:{self.bright_data_port}"

    @property
    def yahoo_url(self) -> str:
        return f"http://127.0.0.1:{self.yahoo_port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.stream_port}/"

    def environment(self) -> dict[str, str]:
        """The variables that point crawler at this market (as `FakeMarket.environment`)."""
        return {
            "BRIGHT_DATA_ENDPOINT": self.bright_data_url,
            "BRIGHT_DATA_ZONE": self.zone,
            "BRIGHT_DATA_API_KEY": self.api_key,
            "YFINANCE_ENDPOINT": self.yahoo_url,
            "YFINANCE_STREAM_ENDPOINT": self.stream_url,
        }

    def start(self, timeout_s: float = 30.0) -> FakeMarketProcess:
        command = [
            sys.executable,
            "-m",
            "fakemarket",
            "--bright-data-port",
            str(self.bright_data_port),
            "--yahoo-port",
            str(self.yahoo_port),
            "--stream-port",
            str(self.stream_port),
            "--api-key",
            self.api_key,
            "--latency-ms",
            str(self.latency_s * 1000),
            "--stream-port",
            str(self.stream_port),
            "--stream-tick-rate",
            str(self.stream_tick_rate),
        ]
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        for port in (self.bright_data_port, self.yahoo_port, self.stream_port):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the fake market exited with {self.process.returncode}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("the fake market did not start listening") from None
                    time.sleep(0.05)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> FakeMarketProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def fake_market(
    latency_s: float = 0.0, stream_tick_rate: float = 0.0
) -> Iterator[FakeMarketProcess]:
    """A started fake market in its own process, `latency_s` added to every answer, its
    streamer sending `stream_tick_rate` ticks per second per subscribed symbol."""
    with FakeMarketProcess(latency_s, stream_tick_rate=stream_tick_rate) as market:
        yield market


def empty_config(directory: Path) -> Path:
    """An empty config.toml in `directory`, so a developer's ./config.toml cannot leak in."""
    path = directory / "bench-config.toml"
    path.write_text("# benchmarks: defaults, then the environment and overrides\n")
    return path


def bench_settings(data_dir: Path, market: FakeMarketProcess, **overrides: Any) -> Settings:
    """Settings pointing at `market`, with data in `data_dir` and a budget no bench can spend;
    `overrides` (flat field names, e.g. sources_order=("yfinance",)) win over everything."""
    from crawler.config import load_settings

    values: dict[str, Any] = {
        "data_dir": data_dir,
        "bright_data_endpoint": market.bright_data_url,
        "bright_data_api_key": market.api_key,
        "bright_data_zone": market.zone,
        "yfinance_endpoint": market.yahoo_url,
        "yfinance_stream_endpoint": market.stream_url,
        "total_budget": HUGE_BUDGET_USD,
        "auto_update_enabled": False,
        "market_hours_enabled": False,
    }
    values.update(overrides)
    return load_settings(values, config_file=empty_config(data_dir))


def daemon_environment(
    market: FakeMarketProcess, data_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The daemon's environment: the fake market, `data_dir`, its socket in `data_dir`, no
    scheduled collections, no market-hours skipping, a huge budget, then `extra`."""
    env = {key: value for key, value in os.environ.items() if key not in _CRAWLER_ENV}
    env.update(market.environment())
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "CRAWLER_SOCKET": str(data_dir / "s.sock"),
            "CRAWLER_CONFIG": str(empty_config(data_dir)),
            "AUTO_UPDATE_ENABLED": "false",
            "MARKET_HOURS_ENABLED": "false",
            "TOTAL_BUDGET": HUGE_BUDGET_USD,
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
    )
    env.update(extra or {})
    return env


# Settings the developer's shell may carry that must not reach a benchmark's daemon.
_CRAWLER_ENV = frozenset(
    {
        "TOTAL_BUDGET",
        "COST_PER_REQUEST",
        "BUDGET_TIMEZONE",
        "CACHE_TTL_SECONDS",
        "DATA_DIR",
        "UPDATE_INTERVAL_SECONDS",
        "AUTO_UPDATE_ENABLED",
        "COLLECTION_JITTER_SECONDS",
        "MAX_WORKERS",
        "MARKET_HOURS_ENABLED",
        "BRIGHT_DATA_API_KEY",
        "BRIGHT_DATA_ZONE",
        "BRIGHT_DATA_ENDPOINT",
        "REQUEST_TIMEOUT_SECONDS",
        "QUOTE_DEADLINE_SECONDS",
        "YFINANCE_ENDPOINT",
        "SOURCES_ORDER",
        "HISTORY_RETENTION_DAYS",
        "CRAWLER_SOCKET",
        "CRAWLER_CONFIG",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "METRICS_PORT",
        "STREAM_ENABLED",
        "YFINANCE_STREAM_ENDPOINT",
        "STREAM_HISTORY_INTERVAL_SECONDS",
        "REDIS_URL",
        "NODE_NAME",
        "ALERTS_CHECK_INTERVAL_SECONDS",
        "ALERTS_NOTIFY_TIMEOUT_SECONDS",
        "ALERTS_REARM_BAND_PCT",
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
        "RUNTIME_DIRECTORY",
    }
)


class DaemonProcess:
    """`python -m crawler start --foreground` in a subprocess against `market`, in a temporary
    data directory; entering waits until its control socket answers GET /status.

    `env` adds to (and wins over) `daemon_environment`. The daemon's output goes to
    `log_path`, which is printed (its tail) if the daemon fails to come up.
    """

    def __init__(
        self,
        market: FakeMarketProcess,
        env: Mapping[str, str] | None = None,
        *,
        start_timeout_s: float = 60.0,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="crawler-bench-")
        self.data_dir = Path(self._tmp.name)
        self.socket_path = self.data_dir / "s.sock"
        self.log_path = self.data_dir / "daemon.log"
        self.env = daemon_environment(market, self.data_dir, env)
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the daemon is not started"
        return self.process.pid

    @property
    def client(self) -> ControlClient:
        """A fresh client for the daemon's socket."""
        from crawler.daemon.client import ControlClient

        return ControlClient(self.socket_path, timeout_s=120.0)

    def start(self) -> DaemonProcess:
        command = [sys.executable, "-m", "crawler", "start", "--foreground"]
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()
        self.startup_s = time.perf_counter() - started
        return self

    def _wait_ready(self) -> None:
        from crawler.utils.exceptions import CrawlerError

        deadline = time.monotonic() + self.start_timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited with {self.process.returncode} while starting:\n"
                    + self.log_tail()
                )
            if self.socket_path.exists():
                try:
                    status, _ = self.client.get("/status")
                except CrawlerError:
                    status = 0
                if status == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"the daemon did not answer on {self.socket_path} within "
            f"{self.start_timeout_s:g}s:\n" + self.log_tail()
        )

    def add_symbols(self, symbols: Sequence[str]) -> int:
        """Track `symbols` through the socket (POST /symbols, one each); returns how many
        were new."""
        client = self.client
        added = 0
        for symbol in symbols:
            added += bool(client.call("POST", "/symbols", {"symbol": symbol})["added"])
        return added

    def collect(self) -> dict[str, Any]:
        """One collection now (POST /collect, which answers when it is done): its report."""
        report: dict[str, Any] = self.client.call("POST", "/collect")
        return report

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; removes the data directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._tmp.cleanup()

    def __enter__(self) -> DaemonProcess:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- measuring -------------------------------------------------------------------------------


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident set size of process `pid` in KiB (VmRSS in /proc/PID/status); `field="VmHWM"`
    gives its peak since it started, which samples taken now and then can miss."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def median(values: Sequence[float]) -> float:
    """The median of `values` (not empty)."""
    return percentile(values, 50)


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile of `values` (not empty), interpolated between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator rounded to 3 places (inf when the denominator is 0)."""
    return round(numerator / denominator, 3) if denominator else math.inf


def finish(bench: str, figures: Mapping[str, Any], target: str, met: bool) -> int:
    """Print the final JSON line (`bench`, the figures, `target`, `met`); returns exit code 0.

    A missed target is a result, not a failure: only a crash makes a non-zero exit.
    """
    line = {"bench": bench, **figures, "target": target, "met": bool(met)}
    print(json.dumps(line, separators=(",", ":"), default=str), flush=True)
    return 0
