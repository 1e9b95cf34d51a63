"""The daemon as users run it: `crawler start` (detached and --foreground) in subprocesses,
against the fake market, driven through the real CLI and the control socket.

One daemon is shared by the tests that only read or add (module fixture); the lifecycle tests
(restart, kill -9, SIGTERM, sd_notify) start their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crawler.daemon.client import ControlClient
from fakemarket import FakeMarket

REPO = Path(__file__).resolve().parents[1]
API_KEY = "sk-test-SECRET-d41d8cd98f00b204"
CONFIG_TOML = """\
[scheduler]
update_interval_seconds = 3600
jitter_seconds = 0
[market_hours]
enabled = false
"""
_CRAWLER_VARS = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CREDENTIALS_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "XDG_RUNTIME_DIR",
    "CRAWLER_CONFIG",
    "CRAWLER_SOCKET",
    "DATA_DIR",
    "REDIS_URL",
    "NODE_NAME",
)

#: Every stdout/stderr the CLI produced in this module, checked for the API key at the end.
OUTPUTS: list[str] = []


def crawler_env(market: FakeMarket, base: Path, config_text: str = CONFIG_TOML) -> dict[str, str]:
    """The environment of a crawler subprocess pointed at `market` and at `base`."""
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.toml"
    config.write_text(config_text)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _CRAWLER_VARS and not k.startswith(("BRIGHT_DATA_", "YFINANCE_"))
    }
    env.update(market.environment())
    env.update(
        PYTHONPATH=str(REPO),
        DATA_DIR=str(base / "data"),
        CRAWLER_SOCKET=str(base / "run" / "crawler.sock"),
        CRAWLER_CONFIG=str(config),
        # These tests pin the daemon's plumbing with the seed's order (Bright Data first); the
        # needs-based default policy is proven in test_cost_policy_daemon.py.
        BUDGET_POLICY="paced",
    )
    return env


def crawler(
    env: dict[str, str], *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m crawler *args`; the output is kept for the API-key check."""
    result = subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=env["DATA_DIR"].rsplit("/", 1)[0],
    )
    OUTPUTS.extend([result.stdout, result.stderr])
    return result


def wait_until(predicate: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


def answers(sock: Path) -> bool:
    """Whether the daemon answers GET /health on `sock`."""
    try:
        status, _ = ControlClient(sock, timeout_s=2).get("/health")
    except Exception:
        return False
    return status == 200


def sock_of(env: dict[str, str]) -> Path:
    return Path(env["CRAWLER_SOCKET"])


def data_of(env: dict[str, str]) -> Path:
    return Path(env["DATA_DIR"])


def start_foreground(env: dict[str, str], **extra: str) -> subprocess.Popen[str]:
    """`crawler start --foreground` as a child, once its socket answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawler", "start", "--foreground"],
        env={**env, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc


def finish(proc: subprocess.Popen[str]) -> str:
    """Kill `proc` if it still runs; its output (kept for the API-key check)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    output = ""
    if proc.stdout is not None:
        output = proc.stdout.read()
        proc.stdout.close()
    OUTPUTS.append(output)
    return output


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def own_market() -> Iterator[FakeMarket]:
    """A market for a test's own daemon: what it bills is not counted against the shared one."""
    with FakeMarket(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon_env(
    market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A detached daemon (`crawler start`) shared by this module's read-mostly tests; the
    market is its alone (the lifecycle tests bill `own_market`), so its ledger and the fake's
    billed count are the same requests in any test order."""
    env = crawler_env(market, tmp_path_factory.mktemp("d"))
    started = crawler(env, "start")
    assert started.returncode == 0, started.stderr
    try:
        yield env
    finally:
        crawler(env, "stop")


# -- the shared daemon ----------------------------------------------------------------------


def test_start_detaches_and_reports_pid_and_socket(daemon_env: dict[str, str]) -> None:
    pid = int((data_of(daemon_env) / "crawler.pid").read_text())
    assert pid != os.getpid() and answers(sock_of(daemon_env))
    status = crawler(daemon_env, "status", "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["running"] is True
    assert body["daemon"]["pid"] == pid
    assert body["daemon"]["socket"] == str(sock_of(daemon_env))
    assert body["scheduler"]["scheduler_state"]["is_running"] is True
    assert "budget_remaining" in body["budget"]


def test_once_beside_a_running_daemon_is_refused_and_pays_nothing(
    daemon_env: dict[str, str], market: FakeMarket
) -> None:
    def collected() -> bool:
        status = json.loads(crawler(daemon_env, "status", "--json").stdout)
        return bool(status["scheduler"]["collection_metrics"]["total_collections"])

    wait_until(collected, 30, "the daemon's first collection")
    # Added after it, so only a second (--once) collection would pay for it: the next
    # scheduled one is an hour away.
    assert crawler(daemon_env, "symbols", "add", "MSFT:US").returncode == 0
    before = market.bright_data.billed_count
    result = crawler(daemon_env, "start", "--once")
    pid = int((data_of(daemon_env) / "crawler.pid").read_text())
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"pid {pid}" in lines[0] and str(sock_of(daemon_env)) in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert market.bright_data.billed_count == before
    assert answers(sock_of(daemon_env))  # the daemon is untouched
    assert crawler(daemon_env, "symbols", "remove", "MSFT:US").returncode == 0


def test_budget_through_the_daemon_and_its_line_in_status(
    daemon_env: dict[str, str], market: FakeMarket
) -> None:
    # Yahoo serves NVDA:US free: bought on purpose (the policy would not pay for it).
    assert crawler(daemon_env, "fetch", "NVDA:US", "--paid").returncode == 0
    result = crawler(daemon_env, "budget", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["requests_used"] == market.bright_data.billed_count >= 1
    assert {"symbol": "NVDA:US", "requests": 1} in report["top_symbols"]
    assert sum(report["paid_by_hour"].values()) == report["requests_used"]
    assert report["pacing"] == "even" and report["lasts_the_day"] is True
    assert set(report["targets"]) == {
        "cache_hit_rate_pct", "yfinance_success_pct", "bright_data_share_pct",
    }  # fmt: skip
    text = crawler(daemon_env, "budget")
    assert "paid requests per hour:" in text.stdout and "NVDA:US" in text.stdout
    status = crawler(daemon_env, "status")
    line = next(x for x in status.stdout.splitlines() if x.startswith("budget: $"))
    assert f"({report['requests_used']}/3666 requests)" in line and "lasts the day" in line
    body = json.loads(crawler(daemon_env, "status", "--json").stdout)
    assert body["spending"]["line"] == line


def test_status_table(daemon_env: dict[str, str]) -> None:
    result = crawler(daemon_env, "status")
    assert result.returncode == 0, result.stderr
    assert "running (pid" in result.stdout
    assert "bright_data" in result.stdout and "budget: $" in result.stdout


def test_fetch_through_daemon_uses_bright_data_then_cache(
    daemon_env: dict[str, str], market: FakeMarket
) -> None:
    before = market.bright_data.billed_count
    first = crawler(daemon_env, "fetch", "AAPL:US", "--json")
    assert first.returncode == 0, first.stderr
    quote = json.loads(first.stdout)["quotes"][0]
    assert quote["symbol"] == "AAPL:US" and quote["source"] == "bright_data"
    assert market.bright_data.billed_count == before + 1

    cached = json.loads(crawler(daemon_env, "fetch", "AAPL:US", "--json").stdout)["quotes"][0]
    assert cached["from_cache"] is True
    assert market.bright_data.billed_count == before + 1  # the daemon's cache answered

    fresh = crawler(daemon_env, "fetch", "AAPL:US", "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert "AAPL:US" in fresh.stdout and "bright_data" in fresh.stdout
    assert market.bright_data.billed_count == before + 2


def test_added_symbol_is_collected_and_shown_in_status(
    daemon_env: dict[str, str], market: FakeMarket
) -> None:
    added = crawler(daemon_env, "symbols", "add", "TSLA:US")
    assert added.returncode == 0 and "added TSLA:US" in added.stdout
    again = crawler(daemon_env, "symbols", "add", "tsla")
    assert again.returncode == 0 and "already tracked" in again.stdout
    listed = json.loads(crawler(daemon_env, "symbols", "list", "--json").stdout)
    assert {"symbol": "TSLA:US", "asset_class": "stocks"} in listed["symbols"]

    collected = crawler(daemon_env, "collect", "--json")
    assert collected.returncode == 0, collected.stderr
    report = json.loads(collected.stdout)
    assert report["quotes"] >= 1 and "TSLA:US" not in report["errors"]

    status = json.loads(crawler(daemon_env, "status", "--json").stdout)
    entry = next(s for s in status["symbols"] if s["symbol"] == "TSLA:US")
    assert entry["last_quote"]["symbol"] == "TSLA:US"
    assert entry["stale"] is False and entry["age_s"] is not None
    assert "open" in entry["market"]  # market hours are reported even with skipping off
    assert status["scheduler"]["collection_metrics"]["total_collections"] >= 1
    table = crawler(daemon_env, "status").stdout
    assert "TSLA:US" in table


def test_second_start_says_already_running_and_succeeds(daemon_env: dict[str, str]) -> None:
    pid = (data_of(daemon_env) / "crawler.pid").read_text().strip()
    sock = sock_of(daemon_env)
    # Like `systemctl start` of an active unit: the wanted state holds, exit 0.
    result = crawler(daemon_env, "start")
    assert result.returncode == 0, result.stderr
    data = data_of(daemon_env)
    assert result.stdout == (
        f"crawler is already running (pid {pid}, socket {sock}, data dir {data})\n"
    )
    as_json = crawler(daemon_env, "start", "--json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == {
        "running": True,
        "started": False,
        "pid": int(pid),
        "socket": str(sock),
        "data_dir": str(data),
    }
    # A second foreground daemon cannot run: refused with the holder's pid (exit 1).
    foreground = crawler(daemon_env, "start", "--foreground")
    assert foreground.returncode == 1
    lines = foreground.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {pid}" in lines[0], foreground.stderr
    assert answers(sock)


def test_control_api_rejects_bad_bodies(daemon_env: dict[str, str]) -> None:
    client = ControlClient(sock_of(daemon_env))
    status, body = client.post("/fetch", {"symbols": "AAPL:US"})
    assert status == 400 and "'symbols' must be a list" in body["error"]["message"]
    status, body = client.post("/fetch", {"symbols": ["AAPL:US"], "fresh": "yes"})
    assert status == 400 and "'fresh'" in body["error"]["message"]
    status, body = client.post("/symbols", {"symbol": 5})
    assert status == 400 and "'symbol'" in body["error"]["message"]
    status, body = client.post("/symbols", {"symbol": "AAPL:XX"})
    assert status == 400 and body["error"]["type"] == "SymbolError"
    status, body = client.delete("/symbols/NOPE%3AUS")
    assert status == 404
    status, _ = client.get("/metrics")
    assert status == 200


def test_status_over_the_socket_leaves_no_store_connection_open(
    daemon_env: dict[str, str],
) -> None:
    """Each control connection is served on a thread of its own, and a status reads every
    store: the ended thread's SQLite connections used to stay open until a full garbage
    collection (two descriptors and a page cache per store per call; the daemon's RSS grew
    about 0.5 MB per `/status`). They now close with their thread."""
    pid = int((data_of(daemon_env) / "crawler.pid").read_text())
    data = str(data_of(daemon_env))

    def store_fds() -> int:
        count = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(data)
            except OSError:  # closed between listdir and readlink
                continue
        return count

    def collected() -> bool:
        status = json.loads(crawler(daemon_env, "status", "--json").stdout)
        return bool(status["scheduler"]["collection_metrics"]["total_collections"])

    # After the first collection, whose workers open their own (long-lived) connections.
    wait_until(collected, 30, "the daemon's first collection")
    before = store_fds()
    seen = []
    for _ in range(60):
        assert ControlClient(sock_of(daemon_env)).get("/status")[0] == 200
        seen.append(store_fds())
    # A leak adds about 4 per call until a garbage collection happens to free some (60 to
    # 100 over the 60 calls here); descriptors SQLite parks for reuse, or a daemon thread
    # opening its first connection meanwhile, about 15.
    assert max(seen) - before < 30, seen


def test_history_and_export_through_daemon(daemon_env: dict[str, str], tmp_path: Path) -> None:
    assert crawler(daemon_env, "fetch", "VOD:LN", "--fresh").returncode == 0
    history = json.loads(crawler(daemon_env, "history", "VOD:LN", "--since", "1h", "--json").stdout)
    assert history["symbol"] == "VOD:LN" and history["quotes"]
    csv_text = crawler(daemon_env, "history", "VOD:LN", "--csv").stdout
    assert csv_text.startswith("symbol,") and "VOD:LN" in csv_text
    out = tmp_path / "export.jsonl"
    exported = crawler(
        daemon_env, "export", "--format", "jsonl", "--symbols", "VOD:LN", "-o", str(out)
    )
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and {r["symbol"] for r in rows} == {"VOD:LN"}


# -- daemons of their own -------------------------------------------------------------------


def test_restart_keeps_the_watchlist(
    own_market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = crawler_env(own_market, tmp_path_factory.mktemp("r"))
    assert crawler(env, "start").returncode == 0
    assert crawler(env, "symbols", "add", "VOD:LN", "EURUSD:CUR").returncode == 0
    stopped = crawler(env, "stop", "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["stopped"] is True
    assert not sock_of(env).exists()
    assert crawler(env, "status").returncode == 3
    again = crawler(env, "stop")  # like `systemctl stop` of an inactive unit: exit 0
    assert again.returncode == 0 and "not running" in again.stdout
    assert crawler(env, "start").returncode == 0
    try:
        listed = json.loads(crawler(env, "symbols", "list", "--json").stdout)
        assert [s["symbol"] for s in listed["symbols"]] == ["VOD:LN", "EURUSD:CUR"]
    finally:
        assert crawler(env, "stop").returncode == 0


def test_stale_socket_and_pidfile_after_kill_9_are_replaced(
    own_market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = crawler_env(own_market, tmp_path_factory.mktemp("k"))
    proc = start_foreground(env)
    try:
        wait_until(lambda: answers(sock_of(env)), 20, "the daemon's socket")
        proc.kill()
        proc.wait(10)
        assert sock_of(env).exists() and (data_of(env) / "crawler.pid").exists()
        assert not answers(sock_of(env))
        assert crawler(env, "status").returncode == 3
        restarted = crawler(env, "start")
        assert restarted.returncode == 0, restarted.stderr
        assert answers(sock_of(env))
    finally:
        finish(proc)
        crawler(env, "stop")


def _status(env: dict[str, str]) -> dict[str, Any]:
    result = crawler(env, "status", "--json")
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_reload_and_sighup_apply_live_settings_and_name_the_rest(
    own_market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = crawler_env(own_market, tmp_path_factory.mktemp("h"))
    config = Path(env["CRAWLER_CONFIG"])
    assert crawler(env, "start").returncode == 0  # detached: its own log file
    try:
        before = _status(env)
        assert before["scheduler"]["scheduler_state"]["update_interval_seconds"] == 3600
        config.write_text(
            CONFIG_TOML.replace("update_interval_seconds = 3600", "update_interval_seconds = 600")
            + '[budget]\ntotal_usd = 1.25\n[sources]\norder = ["yfinance", "bright_data"]\n'
            + '[daemon]\nlog_level = "debug"\nmetrics_port = 9\n'
        )
        reloaded = crawler(env, "reload", "--json")
        assert reloaded.returncode == 0, reloaded.stderr
        plan = json.loads(reloaded.stdout)
        assert sorted(plan["applied"]) == [
            "log_level", "sources_order", "total_budget", "update_interval_seconds"
        ]  # fmt: skip
        assert plan["restart_needed"] == ["metrics_port"]
        assert "metrics_port" in plan["message"] and "restart" in plan["message"]
        after = _status(env)
        assert after["scheduler"]["scheduler_state"]["update_interval_seconds"] == 600
        assert Decimal(after["budget"]["budget_total"]) == Decimal("1.25")
        fetched = json.loads(crawler(env, "fetch", "MSFT:US", "--json").stdout)
        assert fetched["quotes"][0]["source"] == "yfinance"  # the new order, without a restart
        # A file that does not validate changes nothing: one line, exit 2, same settings.
        config.write_text(CONFIG_TOML + "[budget]\ntotal_usd = -1\n")
        refused = crawler(env, "reload")
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert Decimal(_status(env)["budget"]["budget_total"]) == Decimal("1.25")
        # SIGHUP after logrotate moved the log away: reopened, and the file re-read.
        config.write_text(CONFIG_TOML + "[budget]\ntotal_usd = 2.5\n")
        log_file = data_of(env) / "crawler.log"
        log_file.rename(data_of(env) / "crawler.log.1")
        pid = int((data_of(env) / "crawler.pid").read_text())
        os.kill(pid, signal.SIGHUP)
        wait_until(
            lambda: Decimal(_status(env)["budget"]["budget_total"]) == Decimal("2.5"),
            20,
            "the SIGHUP reload",
        )
        wait_until(
            lambda: log_file.exists() and "configuration reloaded" in log_file.read_text(),
            20,
            "the reopened log file",
        )
        assert answers(sock_of(env))
    finally:
        crawler(env, "stop")


def _receive(notify: socket.socket, deadline_s: float) -> list[str]:
    notify.settimeout(deadline_s)
    try:
        data = notify.recv(4096)
    except TimeoutError:
        return []
    return data.decode().splitlines()


def test_sd_notify_ready_watchdog_stopping_and_sigterm(
    own_market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("n")
    env = crawler_env(own_market, base)
    notify_path = base / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    proc = start_foreground(env, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="2000000")
    try:
        ready: list[str] = []
        end = time.monotonic() + 20
        while not ready and time.monotonic() < end:
            lines = _receive(notify, 1.0)
            if "READY=1" in lines:
                # Right now, before anything else: the control socket must already answer.
                assert answers(sock_of(env)), "READY=1 arrived before the control socket answered"
                # ...and the scheduler already runs, its collection job scheduled.
                now = ControlClient(sock_of(env), timeout_s=10).call("GET", "/status")
                assert now["scheduler"]["scheduler_state"]["is_running"] is True, now["scheduler"]
                jobs = {job["id"]: job for job in now["scheduler"]["scheduled_jobs"]}
                assert jobs["collection"]["next_run"] is not None, jobs
                ready = lines
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert ready, "no READY=1 within 20 s"
        status_line = next(line for line in ready if line.startswith("STATUS="))
        assert "tracking 0 symbols" in status_line and "budget $" in status_line

        pings = 0
        end = time.monotonic() + 3.2
        while time.monotonic() < end:
            pings += _receive(notify, max(0.01, end - time.monotonic())).count("WATCHDOG=1")
        assert pings >= 2, f"{pings} WATCHDOG=1 in 3 s with WATCHDOG_USEC=2000000"

        # SIGTERM is a clean stop: STOPPING=1, exit code 0 (not killed), socket and pid file
        # gone. How fast is not asserted (load decides that); the 60 s only ends the wait for
        # a daemon that would not stop by itself (one waiting for its next collection).
        proc.send_signal(signal.SIGTERM)
        stopping = False
        end = time.monotonic() + 60
        while not stopping and time.monotonic() < end:
            stopping = "STOPPING=1" in _receive(notify, 1.0)
        assert stopping, "no STOPPING=1 after SIGTERM"
        assert proc.wait(timeout=60) == 0
        assert not sock_of(env).exists()
        assert not (data_of(env) / "crawler.pid").exists()
    finally:
        notify.close()
        finish(proc)


def test_sigint_takes_the_same_path(
    own_market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = crawler_env(own_market, tmp_path_factory.mktemp("i"))
    proc = start_foreground(env)
    try:
        wait_until(lambda: answers(sock_of(env)), 20, "the daemon's socket")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert not sock_of(env).exists()
    finally:
        output = finish(proc)
    stopping = [json.loads(line) for line in output.splitlines() if '"stopping"' in line]
    assert [event["reason"] for event in stopping] == ["SIGINT"]


def test_once_runs_each_job_and_exits(
    own_market: FakeMarket, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = crawler_env(own_market, tmp_path_factory.mktemp("o"))
    assert crawler(env, "symbols", "add", "AAPL:US").returncode == 0
    result = crawler(env, "start", "--once")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["collection"]["quotes"] == 1
    assert set(report) >= {"collection", "budget_rollover", "cache_cleanup"}
    assert not sock_of(env).exists()


def test_zz_api_key_never_printed_or_logged(daemon_env: dict[str, str], market: FakeMarket) -> None:
    # Provoke the paths most likely to leak it: config, errors, a debug traceback, and a
    # collection of our own (its scheduler line is checked below, whatever ran before).
    assert crawler(daemon_env, "collect").returncode in (0, 1)
    shown = crawler(daemon_env, "config", "show", "--json")
    assert json.loads(shown.stdout)["bright_data_api_key"].startswith("****")
    crawler(daemon_env, "config", "show")
    market.bright_data.set_page("ZZZZ:US", "target_404")
    market.yahoo.unknown("ZZZZ")
    crawler(daemon_env, "--debug", "fetch", "ZZZZ:US")
    crawler(daemon_env, "--debug", "fetch", "AAPL:QQ")
    log = (data_of(daemon_env) / "crawler.log").read_text()
    assert "crawler started" in log  # the log is the one we think
    assert '"logger": "crawler.scheduler"' in log and "collection: " in log  # stdlib, as JSON
    assert API_KEY not in log
    for text in OUTPUTS:
        assert API_KEY not in text
