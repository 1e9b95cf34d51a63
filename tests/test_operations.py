"""Operations, the one place both the daemon's routes and the offline CLI call: the parts
that are not already proven through the CLI and the daemon."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crawler.config import load_settings
from crawler.normalizer.schemas import AssetClass
from crawler.service.verbs import Operations
from crawler.utils.exceptions import DaemonError
from fakemarket.brightdata import BrightDataFake


@pytest.fixture
def ops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bright_data_fake: BrightDataFake
) -> Iterator[Operations]:
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("CRAWLER_CONFIG", str(config))
    settings = load_settings(
        overrides={
            "data_dir": tmp_path / "data",
            "bright_data_endpoint": bright_data_fake.url,
            "bright_data_api_key": "test-key",
            "bright_data_zone": "web_unlocker1",
            "sources_order": ["bright_data"],
            "cache_ttl_seconds": 900,
            "update_interval_seconds": 900,
        }
    )
    operations = Operations.offline(settings)
    yield operations
    operations.close()


def _status_of(ops: Operations, symbol: str) -> dict[str, object]:
    return next(s for s in ops.status()["symbols"] if s["symbol"] == symbol)


def test_a_fresh_quote_with_a_moving_source_clock_is_not_stale(
    ops: Operations, bright_data_fake: BrightDataFake
) -> None:
    bright_data_fake.set_quote("AAPL:US", last_update=datetime.now(UTC) - timedelta(minutes=1))
    ops.add_symbol("AAPL:US")
    assert ops.fetch(["AAPL:US"])["errors"] == {}
    assert _status_of(ops, "AAPL:US")["stale"] is False


def test_a_quote_whose_source_time_has_not_moved_is_stale_though_just_fetched(
    ops: Operations, bright_data_fake: BrightDataFake
) -> None:
    # The source still says 40 minutes ago: longer than one interval plus the TTL (30 min).
    # Crypto never closes, so this holds on any day (a closed market's close is not stale).
    bright_data_fake.set_quote("XBTUSD:CUR", last_update=datetime.now(UTC) - timedelta(minutes=40))
    ops.add_symbol("XBTUSD:CUR", AssetClass.CRYPTO)
    assert ops.fetch(["XBTUSD:CUR"])["errors"] == {}
    entry = _status_of(ops, "XBTUSD:CUR")
    assert entry["stale"] is True
    assert entry["fetched_age_s"] is not None and float(str(entry["fetched_age_s"])) < 60


def test_concurrent_status_requests_share_one_build(ops: Operations) -> None:
    for i in range(300):
        ops.add_symbol(f"S{i}:US")
    ops.status()  # warm the calendars, so the builds below are alike
    barrier = threading.Barrier(8)
    documents: list[dict[str, object]] = []

    def ask() -> None:
        barrier.wait()
        documents.append(ops.status())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(documents) == 8
    assert len({id(document) for document in documents}) < 8  # some shared a build
    assert all(len(document["symbols"]) == 300 for document in documents)  # type: ignore[arg-type]


def test_a_failed_status_build_is_logged_once_and_each_caller_gets_a_short_error(
    ops: Operations, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13 item 8: every waiter re-raised the shared exception, whose traceback grew with
    each (one log entry reached 477 KB). The build's clock here fails (slowly, so callers
    pile up behind the build): one traceback in the log, one line per caller."""
    builds: list[int] = []
    started = threading.Event()

    def failing_now() -> datetime:
        builds.append(1)
        started.set()
        time.sleep(0.3)  # a slow failure: the other callers arrive and wait on this build
        raise OSError(24, "Too many open files")

    shared = Operations(ops.settings, hybrid=ops.hybrid, watchlist=ops.watchlist,
                        now=failing_now)  # fmt: skip
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            shared.status()
        except BaseException as exc:  # collected and checked below
            errors.append(exc)

    first = threading.Thread(target=ask)
    first.start()
    assert started.wait(10)
    threads = [threading.Thread(target=ask) for _ in range(15)]
    for thread in threads:
        thread.start()
    for thread in [first, *threads]:
        thread.join(30)
    assert len(errors) == 16
    assert len(builds) < 16  # callers shared builds
    assert all(isinstance(exc, DaemonError) for exc in errors)
    assert all("Too many open files" in str(exc) and "\n" not in str(exc) for exc in errors)
    assert all(len(traceback.extract_tb(exc.__traceback__)) < 10 for exc in errors)
    logged = [r for r in caplog.records if r.getMessage() == "building the status failed"]
    assert len(logged) == len(builds)  # once per failed build, not once per caller
