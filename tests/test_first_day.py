"""A user's first day as the README tells it (issue 22): the real CLI in subprocesses, a real
daemon started as `make run` starts it (config.toml of the checkout, data in ./data), the fake
market over HTTP. Each test names the issue's item it holds."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.daemon.client import ControlClient
from fakemarket import FakeMarket
from tests.faults.daemon_harness import REPO, DaemonHarness, clean_env, one_clean_line

CHECKOUT_CONFIG = """\
[storage]
data_dir = "data"
[scheduler]
auto_update_enabled = false
jitter_seconds = 0
[market_hours]
enabled = false
"""


class Checkout:
    """A daemon run from a "checkout" directory the way `make run` runs it, and a user's
    shell that is elsewhere (another directory, the same HOME, none of crawler's variables)."""

    def __init__(self, market: FakeMarket, base: Path) -> None:
        self.base = base
        self.checkout = base / "checkout"
        self.elsewhere = base / "elsewhere"
        for directory in (self.checkout, self.elsewhere, base / "home"):
            directory.mkdir(parents=True, exist_ok=True)
        (self.checkout / "config.toml").write_text(CHECKOUT_CONFIG)
        self.env = clean_env(base, **market.environment(), STREAM_ENABLED="false")
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket_path = self.checkout / "data" / "crawler.sock"

    def start(self) -> None:
        log = (self.base / "daemon.out").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crawler", "start", "--foreground"],
            env={**self.env, "CRAWLER_CONFIG": "config.toml"},  # as `make run` sets it
            cwd=self.checkout,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.base / "daemon.out").read_text()
            try:
                status, body = ControlClient(self.socket_path, timeout_s=2).get("/health")
            except Exception:
                time.sleep(0.05)
                continue
            if status == 200 and body.get("pid") == self.proc.pid:
                return
        raise AssertionError((self.base / "daemon.out").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crawler", *args],
            env=self.env,
            cwd=cwd or self.elsewhere,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


@pytest.fixture
def checkout(market: FakeMarket, tmp_path: Path) -> Iterator[Checkout]:
    run = Checkout(market, tmp_path)
    try:
        yield run
    finally:
        run.stop()


# -- item 4: outside the checkout ------------------------------------------------------------


def test_status_in_another_directory_finds_the_daemon_started_in_the_checkout(
    checkout: Checkout,
) -> None:
    checkout.start()
    assert checkout.cli("symbols", "add", "AAPL:US", cwd=checkout.checkout).returncode == 0
    status = checkout.cli("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    body = json.loads(status.stdout)
    assert body["running"] is True
    assert [row["symbol"] for row in body["symbols"]] == ["AAPL:US"]
    assert body["daemon"]["socket"] == str(checkout.socket_path)
    table = checkout.cli("status")
    assert table.returncode == 0 and "AAPL:US" in table.stdout
    assert f"socket {checkout.socket_path}" in table.stdout and table.stderr == ""
    listed = checkout.cli("symbols", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert f"using the one running at {checkout.socket_path}" in listed.stderr
    assert [s["symbol"] for s in json.loads(listed.stdout)["symbols"]] == ["AAPL:US"]
    assert not (checkout.base / "home" / ".local" / "share" / "crawler").exists()
    # `crawler socket` names it, for curl.
    where = checkout.cli("socket")
    assert where.returncode == 0 and where.stdout.strip() == str(checkout.socket_path)


def test_a_named_socket_is_never_swapped_for_another_daemon(checkout: Checkout) -> None:
    checkout.start()
    elsewhere = checkout.base / "other" / "crawler.sock"
    result = subprocess.run(
        [sys.executable, "-m", "crawler", "status"],
        env={**checkout.env, "CRAWLER_SOCKET": str(elsewhere)},
        cwd=checkout.elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3 and str(elsewhere) in result.stdout


def test_symbols_list_without_a_daemon_does_not_create_a_data_dir(checkout: Checkout) -> None:
    result = checkout.cli("symbols", "list")
    assert result.returncode == 3
    line = one_clean_line(result.stderr)
    assert "no data dir at" in line and "crawler start" in line
    assert not (checkout.base / "home" / ".local" / "share" / "crawler").exists()
    history = checkout.cli("history", "AAPL:US")
    assert history.returncode == 3 and "no data dir" in history.stderr
    assert not (checkout.base / "home" / ".local" / "share" / "crawler").exists()


def test_after_the_daemon_stops_status_says_not_running(checkout: Checkout) -> None:
    checkout.start()
    checkout.stop()
    result = checkout.cli("status")
    assert result.returncode == 3 and "not running" in result.stdout


# -- item 12: watch > file -------------------------------------------------------------------


def test_watch_redirected_to_a_file_writes_a_line_per_quote(tmp_path: Path) -> None:
    with FakeMarket(stream_tick_rate=5.0) as market:
        daemon = DaemonHarness(market, tmp_path)
        daemon.start()
        try:
            assert daemon.cli("symbols", "add", "AAPL:US", "EURUSD:CUR").returncode == 0
            out = tmp_path / "quotes.txt"
            with out.open("wb") as handle:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "crawler", "watch", "AAPL:US", "EURUSD:CUR"],
                    env=daemon.env,
                    cwd=tmp_path,
                    stdout=handle,
                    stderr=subprocess.PIPE,
                )
                deadline = time.monotonic() + 30
                while out.read_text().count("yahoo_stream") < 3:
                    assert time.monotonic() < deadline, out.read_text()
                    assert proc.poll() is None
                    time.sleep(0.05)
                proc.send_signal(signal.SIGINT)
                _, stderr = proc.communicate(timeout=10)
            assert proc.returncode == 0, stderr
            lines = [line for line in out.read_text().splitlines() if "yahoo_stream" in line]
            shape = re.compile(r"\d{4}-\d\d-\d\dT\S+Z (AAPL:US|EURUSD:CUR) \d")
            assert all(shape.match(line) for line in lines), lines
        finally:
            daemon.stop()


# -- item 13: --debug true, help -------------------------------------------------------------


def test_debug_true_is_one_usage_line_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "crawler", "--debug", "true", "status"],
        env=clean_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    line = one_clean_line(result.stderr)
    assert "--debug is a flag and takes no value" in line
    assert "crawler --debug status" in line


@pytest.mark.parametrize(
    "command", [[], ["fetch"], ["symbols", "add"], ["history"], ["watch"], ["export"]]
)
def test_help_shows_flags_without_type_artefacts(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "home").mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "crawler", *command, "--help"],
        env={**clean_env(tmp_path), "COLUMNS": "100"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for artefact in ("<bool>", "<list[", "{symbol", "<str>", "<path>", "<int>"):
        assert artefact not in result.stdout, result.stdout
    assert "--json" in result.stdout or not command or command == ["export"]


# -- item 15: the README's curl example -----------------------------------------------------


def test_the_readme_curl_example_works_as_written(checkout: Checkout) -> None:
    """In a user's shell (none of crawler's variables set), from another directory."""
    readme = (REPO / "README.md").read_text()
    (line,) = [ln.strip() for ln in readme.splitlines() if ln.strip().startswith("curl -N")]
    checkout.start()
    assert "CRAWLER_SOCKET" not in checkout.env
    env = {**checkout.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"}
    proc = subprocess.Popen(
        ["bash", "-c", line], env=env, cwd=checkout.elsewhere,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith("retry:")  # the stream is open
        assert checkout.cli("fetch", "AAPL:US").returncode == 0
        first = ""
        while not first.startswith("data:"):
            first = proc.stdout.readline()
            assert first, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert json.loads(first[5:])["type"] == "quote"
