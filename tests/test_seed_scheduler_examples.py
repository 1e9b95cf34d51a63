"""The seed's DataScheduler examples (docs: orchestrator-guide.md, section 3 and troubleshooting),
run as written with `src` → `crawler`.

Adapted only where the seed could not run offline or deterministically: the settings point at
the fake market through the environment (as a user would set them), and "let it run" waits
(`time.sleep(60)`, `asyncio.sleep(3600)`) are replaced by `scheduler.force_collection()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.config import reset_settings
from fakemarket import FakeMarket


@pytest.fixture(autouse=True)
def fake_market_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMarket]:
    """DATA_DIR in tmp_path and every endpoint at the fake market, as environment variables."""
    with FakeMarket() as market:
        config_file = tmp_path / "config.toml"
        config_file.write_text("")  # the checkout's ./config.toml must not leak in
        monkeypatch.setenv("CRAWLER_CONFIG", str(config_file))
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("BRIGHT_DATA_ENDPOINT", market.bright_data.url)
        monkeypatch.setenv("BRIGHT_DATA_ZONE", market.zone)
        monkeypatch.setenv("BRIGHT_DATA_API_KEY", market.api_key)
        monkeypatch.setenv("YFINANCE_ENDPOINT", market.yahoo.url)
        reset_settings()
        yield market
        reset_settings()


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    from crawler.normalizer.schemas import AssetClass
    from crawler.orchestrator import DataScheduler

    # Define tracking list
    symbols = ["AAPL:US", "MSFT:US", "GOOGL:US"]
    asset_classes = {
        "AAPL:US": AssetClass.STOCKS,
        "MSFT:US": AssetClass.STOCKS,
        "GOOGL:US": AssetClass.STOCKS,
    }

    # Create scheduler
    scheduler = DataScheduler(
        symbols=symbols,
        asset_classes=asset_classes,
        update_interval_minutes=15,  # Collect every 15 minutes
    )

    # Start scheduler
    scheduler.start()

    # ... let it run ...
    scheduler.force_collection()

    # Check statistics
    stats = scheduler.get_statistics()
    print(f"Collections: {stats['collection_metrics']['total_collections']}")
    print(f"Quotes Collected: {stats['collection_metrics']['total_quotes_collected']}")

    # Stop scheduler
    scheduler.stop()

    assert capsys.readouterr().out == "Collections: 1\nQuotes Collected: 3\n"
    assert stats["scheduler_state"]["update_interval_seconds"] == 900
    assert not scheduler.is_running


def test_dynamic_symbol_management(capsys: pytest.CaptureFixture[str]) -> None:
    from crawler.normalizer.schemas import AssetClass
    from crawler.orchestrator import DataScheduler

    scheduler = DataScheduler(["AAPL:US"], {"AAPL:US": AssetClass.STOCKS})

    # Add symbol during runtime
    scheduler.add_symbol("TSLA:US", AssetClass.STOCKS)
    assert scheduler.get_tracked_symbols() == ["AAPL:US", "TSLA:US"]

    # Remove symbol
    scheduler.remove_symbol("TSLA:US")

    # Get tracked symbols
    symbols = scheduler.get_tracked_symbols()
    print(f"Tracking {len(symbols)} symbols")

    assert capsys.readouterr().out == "Tracking 1 symbols\n"


def test_context_manager(capsys: pytest.CaptureFixture[str]) -> None:
    from crawler.normalizer.schemas import AssetClass
    from crawler.orchestrator import DataScheduler

    symbols = ["AAPL:US", "MSFT:US"]
    asset_classes = {"AAPL:US": AssetClass.STOCKS, "MSFT:US": AssetClass.STOCKS}

    with DataScheduler(symbols, asset_classes) as scheduler:
        # Scheduler is automatically started
        print("Scheduler running...")
        assert scheduler.is_running
        scheduler.force_collection()  # was: time.sleep(60)  # Run for 1 minute
    # Scheduler is automatically stopped on exit

    assert capsys.readouterr().out == "Scheduler running...\n"
    assert not scheduler.is_running
    assert scheduler.get_statistics()["collection_metrics"]["total_quotes_collected"] == 2


def test_force_collection(fake_market_env: FakeMarket) -> None:
    from crawler.orchestrator import DataScheduler

    scheduler = DataScheduler(["AAPL:US"])

    # Trigger immediate collection outside schedule
    scheduler.force_collection()

    assert scheduler.get_statistics()["collection_metrics"]["total_collections"] == 1
    assert fake_market_env.bright_data.billed_count == 1
    scheduler.stop()


def test_statistics(capsys: pytest.CaptureFixture[str]) -> None:
    from crawler.orchestrator import DataScheduler

    with DataScheduler(["AAPL:US", "VOD:LN"]) as scheduler:
        scheduler.force_collection()

        stats = scheduler.get_statistics()

        # Scheduler State
        state = stats["scheduler_state"]
        print(f"Running: {state['is_running']}")
        print(f"Symbols Tracked: {state['symbols_tracked']}")

        # Collection Metrics
        metrics = stats["collection_metrics"]
        print(f"Total Collections: {metrics['total_collections']}")
        print(f"Success Rate: {metrics['success_rate_pct']}%")
        print(f"Quotes Collected: {metrics['total_quotes_collected']}")

        # Scheduled Jobs
        for job in stats["scheduled_jobs"]:
            print(f"Job: {job['name']}")
            print(f"Next Run: {job['next_run']}")

    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        "Running: True",
        "Symbols Tracked: 2",
        "Total Collections: 1",
        "Success Rate: 100.0%",
        "Quotes Collected: 2",
    ]
    assert lines[5::2] == ["Job: Data Collection", "Job: Budget Roll-over", "Job: Cache Cleanup"]
    assert all(line.startswith("Next Run: 20") for line in lines[6::2])


def test_troubleshooting_scheduler_not_collecting(capsys: pytest.CaptureFixture[str]) -> None:
    from crawler.orchestrator import DataScheduler

    scheduler = DataScheduler(["AAPL:US"])  # never started: the case being diagnosed

    # Check scheduler state
    stats = scheduler.get_statistics()

    print(f"Running: {stats['scheduler_state']['is_running']}")
    print(f"Collections: {stats['collection_metrics']['total_collections']}")

    # Check scheduled jobs
    for job in stats["scheduled_jobs"]:
        print(f"{job['name']}: next run at {job['next_run']}")

    # Force collection to test
    scheduler.force_collection()

    assert capsys.readouterr().out.splitlines() == [
        "Running: False",
        "Collections: 0",
        "Data Collection: next run at None",
        "Budget Roll-over: next run at None",
        "Cache Cleanup: next run at None",
    ]
    assert scheduler.get_statistics()["collection_metrics"]["total_collections"] == 1
    scheduler.stop()


def test_quick_start_option_2() -> None:
    from crawler.normalizer.schemas import AssetClass
    from crawler.orchestrator import DataScheduler

    collected: list[int] = []

    async def main() -> None:
        # Option 2: Automated scheduling
        symbols = ["AAPL", "MSFT"]
        asset_classes = {
            "AAPL": AssetClass.STOCKS,
            "MSFT": AssetClass.STOCKS,
        }

        with DataScheduler(symbols, asset_classes) as scheduler:
            # Let it collect data for 1 hour  (was: await asyncio.sleep(3600))
            report = await asyncio.to_thread(scheduler.force_collection)
            collected.append(report["quotes"])

    asyncio.run(main())
    assert collected == [2]
