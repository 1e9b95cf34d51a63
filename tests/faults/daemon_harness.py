"""A real daemon for the fault suite: `python -m crawler start --foreground` as a child process,
its own data dir and socket, pointed at a `FakeMarket`; plus the CLI as a subprocess.

    with FakeMarket() as market:
        daemon = DaemonHarness(market, tmp_path, TOTAL_BUDGET="0.15")
        daemon.start()                         # returns once GET /health answers 200
        daemon.client().get("/status")
        daemon.cli("fetch", "AAPL:US")         # CompletedProcess, same DATA_DIR and socket
        daemon.kill()                          # SIGKILL; or daemon.stop() for a clean stop

Nothing here touches the user's own config or data: HOME, XDG and systemd variables are
replaced, and the working directory is the test's own (no stray ./config.toml is read).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from crawler.daemon.client import ControlClient
from fakemarket import FakeMarket

__all__ = ["REPO", "DaemonHarness", "clean_env", "one_clean_line"]

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 30.0
_DROPPED = (
    "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY",
    "RUNTIME_DIRECTORY", "STATE_DIRECTORY", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME",
    "XDG_DATA_HOME", "CRAWLER_CONFIG", "CRAWLER_SOCKET", "DATA_DIR",
)  # fmt: skip


def clean_env(base: Path, **extra: str) -> dict[str, str]:
    """An environment for a crawler subprocess that can only see `base` (plus `extra`)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED
        and not key.startswith(("BRIGHT_DATA_", "YFINANCE_"))
        and key.upper() not in _SETTING_NAMES
    }
    env.update(PYTHONPATH=str(REPO), HOME=str(base / "home"), PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


_SETTING_NAMES = {
    "TOTAL_BUDGET", "COST_PER_REQUEST", "BUDGET_TIMEZONE", "CACHE_TTL_SECONDS",
    "UPDATE_INTERVAL_SECONDS", "AUTO_UPDATE_ENABLED", "COLLECTION_JITTER_SECONDS", "MAX_WORKERS",
    "MARKET_HOURS_ENABLED", "REQUEST_TIMEOUT_SECONDS", "QUOTE_DEADLINE_SECONDS",
    "SOURCES_ORDER", "HISTORY_RETENTION_DAYS", "LOG_FORMAT", "LOG_LEVEL", "METRICS_PORT",
    "STREAM_ENABLED", "STREAM_HISTORY_INTERVAL_SECONDS",
    "REDIS_URL", "NODE_NAME",
    "ALERTS_CHECK_INTERVAL_SECONDS", "ALERTS_NOTIFY_TIMEOUT_SECONDS", "ALERTS_REARM_BAND_PCT",
}  # fmt: skip


def one_clean_line(stderr: str) -> str:
    """The single line a failing CLI command printed; raises AssertionError otherwise."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


class DaemonHarness:
    """One daemon (at a time) over `base`/data, its socket at `base`/run/crawler.sock."""

    def __init__(self, market: FakeMarket, base: Path, **settings: str) -> None:
        self.market = market
        self.base = base
        self.data_dir = base / "data"
        self.socket_path = base / "run" / "crawler.sock"
        self.log_path = base / "daemon.log"
        (base / "home").mkdir(parents=True, exist_ok=True)
        self.env = clean_env(
            base,
            **market.environment(),
            DATA_DIR=str(self.data_dir),
            CRAWLER_SOCKET=str(self.socket_path),
            AUTO_UPDATE_ENABLED="false",
            MARKET_HOURS_ENABLED="false",
            COLLECTION_JITTER_SECONDS="0",
            LOG_FORMAT="json",
            # The harness pins the plumbing with the seed's order (Bright Data first); the
            # needs-based default policy is proven in test_cost_policy_daemon.py.
            **{"BUDGET_POLICY": "paced", **settings},
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, deadline_s: float = START_DEADLINE_S) -> subprocess.Popen[bytes]:
        """Start the daemon; return once it answers GET /health with its own pid."""
        assert self.proc is None or self.proc.poll() is not None, "a daemon is already running"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crawler", "start", "--foreground"],
            env=self.env,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the daemon exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                status, body = self.client(timeout_s=2).get("/health")
            except Exception:
                time.sleep(0.02)
                continue
            if status == 200 and isinstance(body, dict) and body.get("pid") == self.proc.pid:
                return self.proc
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"the daemon did not answer within {deadline_s}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the daemon (no clean-up of any kind runs) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self, deadline_s: float = 15.0) -> int | None:
        """A clean stop (SIGTERM); SIGKILL after `deadline_s`. Returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(deadline_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self._reap()

    def _reap(self) -> int | None:
        code = None
        if self.proc is not None:
            code = self.proc.wait(30)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError:
            return ""

    # -- talking to it ----------------------------------------------------------------------

    def client(self, timeout_s: float = 30.0) -> ControlClient:
        return ControlClient(self.socket_path, timeout_s=timeout_s)

    def cli(
        self, *args: str, timeout_s: float = 60.0, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """`python -m crawler *args` with this daemon's environment (or `env`)."""
        return subprocess.run(
            [sys.executable, "-m", "crawler", *args],
            env=env if env is not None else self.env,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            **kw,
        )
