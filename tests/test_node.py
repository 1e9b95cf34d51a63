"""One wiring (`crawler.node.build_node`) for the daemon and the offline CLI: a node closes
everything it opened, whoever built it. Real stores (embedded and Redis), real sources against
the fake market over HTTP, the real scheduler and stream; only the leftovers are looked at: the
process's open files and its threads, before and after."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.config import Settings, load_settings
from crawler.node import Hooks, build_node
from crawler.service.verbs import Operations
from fakemarket import FakeMarket

#: Long enough for a thread that is ending to end; a leaked one never does.
_JOIN_S = 10.0


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket(stream_tick_rate=20.0) as market:
        yield market


def _settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, market: FakeMarket, **extra: object
) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text("")  # the checkout's ./config.toml must not leak in
    monkeypatch.setenv("CRAWLER_CONFIG", str(config))
    return load_settings(
        overrides={
            "data_dir": tmp_path / "data",
            "bright_data_endpoint": market.bright_data.url,
            "bright_data_api_key": market.api_key,
            "bright_data_zone": market.zone,
            "yfinance_endpoint": market.yahoo.url,
            "yfinance_stream_endpoint": market.stream.url,
            "market_hours_enabled": False,
            **extra,
        }
    )


def _open_files() -> dict[str, str]:
    """fd → what it points at, for this process."""
    files: dict[str, str] = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            files[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the fd listdir itself used, closed since
            continue
    return files


class Leftovers:
    """What was open before: `check()` names the threads and files opened since and still
    open (a thread still ending is given `_JOIN_S` to end)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = str(data_dir)
        # yfinance's cookie database is its own, once per process (a module singleton that
        # outlives any source), not a node's.
        self.yfinance_cache = str(data_dir / "yfinance")
        self.threads = set(threading.enumerate())
        self.files = _open_files()

    def check(self) -> list[str]:
        left: list[str] = []
        for thread in set(threading.enumerate()) - self.threads:
            thread.join(_JOIN_S)
            if thread.is_alive():
                left.append(f"thread {thread.name}")
        for fd, target in _open_files().items():
            if target.startswith(self.yfinance_cache) or self.files.get(fd) == target:
                continue
            if target.startswith((self.data_dir, "socket:")):
                left.append(f"fd {fd} → {target}")
        return left


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_the_offline_cli_closes_all_its_node_opened(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    market: FakeMarket,
) -> None:
    extra = {"redis_url": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    settings = _settings(tmp_path, monkeypatch, market, **extra)
    (tmp_path / "data").mkdir()
    leftovers = Leftovers(tmp_path / "data")
    ops = Operations.offline(settings)
    ops.add_symbol("AAPL:US")
    ops.add_symbol("VOD:LN")
    assert ops.fetch(["AAPL:US", "VOD:LN"], fresh=True)["errors"] == {}
    assert ops.status()["symbols"]
    ops.close()
    assert leftovers.check() == []


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_a_daemon_node_started_then_closed_leaves_nothing_open(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    market: FakeMarket,
) -> None:
    extra = {"redis_url": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    settings = _settings(tmp_path, monkeypatch, market, stream_enabled=True, **extra)
    (tmp_path / "data").mkdir()
    leftovers = Leftovers(tmp_path / "data")
    watchdog = threading.Event()
    node = build_node(settings, daemon=Hooks(watchdog=watchdog.set, watchdog_interval_s=0.1))
    parts = node.daemon
    assert parts is not None and parts.live is not None
    parts.scheduler.add_symbol("AAPL:US")
    node.start()
    assert parts.scheduler.force_collection()["quotes"] == 1
    assert watchdog.wait(_JOIN_S)  # the scheduler's jobs run
    node.close()
    node.close()  # twice is harmless
    assert leftovers.check() == []


def test_a_build_that_fails_half_way_closes_what_it_had_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, market: FakeMarket
) -> None:
    # The history's retention is checked when the history is built: after the stores and
    # the sources, which must not stay open behind the error.
    settings = _settings(tmp_path, monkeypatch, market)
    settings = settings.model_copy(update={"history_retention_days": 0})
    (tmp_path / "data").mkdir()
    leftovers = Leftovers(tmp_path / "data")
    with pytest.raises(Exception, match="retention_days"):
        build_node(settings, daemon=Hooks())
    assert leftovers.check() == []
