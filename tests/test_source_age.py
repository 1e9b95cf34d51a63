"""A quote whose own time predates its market's last session is flagged: in `fetch --json`
and in `status`, through Operations over the Yahoo fake, and by the rule on real calendars."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crawler.cli.render import yahoo_line
from crawler.config import load_settings
from crawler.markets.hours import MarketHours
from crawler.markets.source_age import predates_last_session
from crawler.normalizer.schemas import AssetClass
from crawler.service.verbs import Operations
from fakemarket.yahoo import YahooFake

# Monday 2025-02-17, 15:00 UTC: US markets closed for Presidents' Day; LSE open.
MONDAY = datetime(2025, 2, 17, 15, 0, tzinfo=UTC)
FRIDAY_CLOSE = datetime(2025, 2, 14, 21, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def hours() -> MarketHours:
    return MarketHours()


def test_a_holiday_weekend_close_is_not_suspended(hours: MarketHours) -> None:
    # The AAPL fixture: fetched on a US holiday, Friday's close is the latest there is.
    assert not predates_last_session(FRIDAY_CLOSE, "AAPL:US", AssetClass.STOCKS, hours, MONDAY)


def test_a_months_old_time_is_suspended(hours: MarketHours) -> None:
    # The WSKT.JK fixture's own time, seen months later.
    as_of = datetime(2024, 7, 23, 20, 0, tzinfo=UTC)
    now = datetime(2025, 2, 17, 11, 0, tzinfo=UTC)
    assert predates_last_session(as_of, "WSKT:IJ", AssetClass.STOCKS, hours, now)
    assert predates_last_session(as_of, "AAPL:US", AssetClass.STOCKS, hours, now)


def test_a_quote_before_the_last_full_session_is_suspended(hours: MarketHours) -> None:
    # Thursday's close seen on Monday: Friday traded without this instrument.
    thursday = datetime(2025, 2, 13, 21, 0, tzinfo=UTC)
    assert predates_last_session(thursday, "AAPL:US", AssetClass.STOCKS, hours, MONDAY)


def test_young_quotes_and_missing_times_are_never_flagged(hours: MarketHours) -> None:
    recent = MONDAY - timedelta(hours=20)
    assert not predates_last_session(recent, "AAPL:US", AssetClass.STOCKS, hours, MONDAY)
    assert not predates_last_session(None, "AAPL:US", AssetClass.STOCKS, hours, MONDAY)


def test_crypto_never_closes_so_a_day_old_time_is_stale_at_the_source(hours: MarketHours) -> None:
    # The ZRC-USD fixture: a coin whose feed stopped in 2022.
    as_of = datetime(2022, 2, 5, 18, 29, tzinfo=UTC)
    assert predates_last_session(as_of, "ZRCUSD:CUR", AssetClass.CRYPTO, hours, MONDAY)
    day_old = MONDAY - timedelta(hours=25)
    assert predates_last_session(day_old, "XBTUSD:CUR", AssetClass.CRYPTO, hours, MONDAY)


def test_without_calendars_four_days_decide() -> None:
    assert not predates_last_session(FRIDAY_CLOSE, "AAPL:US", None, None, MONDAY)
    assert predates_last_session(MONDAY - timedelta(days=5), "AAPL:US", None, None, MONDAY)


@pytest.fixture
def yahoo_ops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yahoo_fake: YahooFake
) -> Iterator[Operations]:
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("CRAWLER_CONFIG", str(config))
    settings = load_settings(
        overrides={
            "data_dir": tmp_path / "data",
            "yfinance_endpoint": yahoo_fake.url,
            "sources_order": ["yfinance"],
            "yfinance_max_rps": 50,
        }
    )
    operations = Operations.offline(settings)
    yield operations
    operations.close()


def test_fetch_json_and_status_flag_a_suspended_yahoo_quote(
    yahoo_ops: Operations, yahoo_fake: YahooFake
) -> None:
    months_ago = int((datetime.now(UTC) - timedelta(days=200)).timestamp())
    yahoo_fake.set_quote("WSKT.JK", regular_market_time=months_ago, currency="IDR")
    yahoo_ops.add_symbol("WSKT:IJ")
    yahoo_ops.add_symbol("AAPL:US")

    answer = yahoo_ops.fetch(["WSKT:IJ", "AAPL:US"])

    assert answer["errors"] == {}
    flags = {q["symbol"]: q["source_stale"] for q in answer["quotes"]}
    assert flags == {"WSKT:IJ": True, "AAPL:US": False}
    status = yahoo_ops.status()
    by_symbol = {s["symbol"]: s for s in status["symbols"]}
    assert by_symbol["WSKT:IJ"]["source_stale"] is True
    assert by_symbol["AAPL:US"]["source_stale"] is False
    yahoo = status["yahoo"]
    assert yahoo["batch_requests"] == 1 and yahoo["batch_quotes"] == 2
    assert yahoo["throttle"]["max_requests_per_second"] == 50
    line = yahoo_line(yahoo)
    assert line is not None and "1 batch requests" in line and "THROTTLED" not in line


def test_the_status_line_says_when_yahoo_throttles_us() -> None:
    line = yahoo_line(
        {
            "batch_requests": 3,
            "batch_quotes": 120,
            "batch_fallbacks": 2,
            "fetches": 2,
            "throttle": {
                "max_requests_per_second": 2.0,
                "throttled": True,
                "paused_for_s": 28.0,
                "rate_limited_total": 1,
            },
        }
    )
    assert line is not None
    assert "THROTTLED by Yahoo (HTTP 429)" in line and "at most 2 requests/s" in line
    assert yahoo_line(None) is None
