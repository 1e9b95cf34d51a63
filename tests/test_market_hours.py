"""MarketHours against the real exchange_calendars data, with explicit `at=` instants."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.markets.calendars import INDEX_MARKETS, SUFFIX_MARKETS
from crawler.markets.hours import MarketHours
from crawler.markets.savings import simulate_week
from crawler.normalizer.schemas import AssetClass

REPO_ROOT = Path(__file__).resolve().parents[1]
NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday
STOCKS = AssetClass.STOCKS
A = AssetClass


@pytest.fixture(scope="module")
def hours() -> MarketHours:
    # One instance for the module: each calendar is built once (~0.3 s each).
    return MarketHours(now=lambda: NOW)


# -- exchanges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "asset_class", "at", "expected"),
    [
        ("AAPL:US", STOCKS, datetime(2026, 11, 25, 12, 0, tzinfo=NY), True),
        ("AAPL:US", STOCKS, datetime(2026, 11, 26, 12, 0, tzinfo=NY), False),  # Thanksgiving
        ("AAPL:US", STOCKS, datetime(2026, 11, 27, 12, 59, tzinfo=NY), True),  # early close 13:00
        ("AAPL:US", STOCKS, datetime(2026, 11, 27, 13, 1, tzinfo=NY), False),
        ("AAPL:US", STOCKS, datetime(2026, 7, 2, 12, 0, tzinfo=NY), True),
        ("AAPL:US", STOCKS, datetime(2026, 7, 3, 12, 0, tzinfo=NY), False),  # July 4th observed
        ("AAPL:US", STOCKS, datetime(2026, 11, 25, 9, 29, tzinfo=NY), False),
        ("AAPL:US", STOCKS, datetime(2026, 11, 25, 9, 30, tzinfo=NY), True),
        ("AAPL:US", STOCKS, datetime(2026, 11, 25, 16, 0, tzinfo=NY), False),  # close excluded
        ("SPX:IND", A.INDICES, datetime(2026, 11, 26, 12, 0, tzinfo=NY), False),
        ("SPX:IND", A.INDICES, datetime(2026, 11, 25, 12, 0, tzinfo=NY), True),
        # The LSE has no lunch break.
        ("VOD:LN", STOCKS, datetime(2026, 11, 27, 12, 30, tzinfo=LONDON), True),
        ("VOD:LN", STOCKS, datetime(2026, 11, 27, 7, 59, tzinfo=LONDON), False),
        ("VOD:LN", STOCKS, datetime(2026, 11, 27, 8, 0, tzinfo=LONDON), True),
        ("VOD:LN", STOCKS, datetime(2026, 11, 27, 16, 30, tzinfo=LONDON), False),
        ("VOD:LN", STOCKS, datetime(2026, 11, 28, 12, 30, tzinfo=LONDON), False),  # Saturday
        # Tokyo: lunch 11:30-12:30, afternoon to 15:30 since November 2024.
        ("7203:JP", STOCKS, datetime(2026, 11, 27, 10, 0, tzinfo=TOKYO), True),
        ("7203:JP", STOCKS, datetime(2026, 11, 27, 12, 0, tzinfo=TOKYO), False),
        ("7203:JP", STOCKS, datetime(2026, 11, 27, 13, 0, tzinfo=TOKYO), True),
        ("7203:JP", STOCKS, datetime(2026, 11, 27, 15, 25, tzinfo=TOKYO), True),
        ("7203:JP", STOCKS, datetime(2026, 11, 27, 15, 31, tzinfo=TOKYO), False),
        ("7203:JP", STOCKS, datetime(2026, 11, 3, 10, 0, tzinfo=TOKYO), False),  # Culture Day
        # FX: Sunday 17:00 to Friday 17:00 New York.
        ("EURUSD:CUR", A.FOREX, datetime(2026, 11, 28, 12, 0, tzinfo=NY), False),  # Saturday
        ("EURUSD:CUR", A.FOREX, datetime(2026, 11, 29, 16, 59, tzinfo=NY), False),
        ("EURUSD:CUR", A.FOREX, datetime(2026, 11, 29, 17, 30, tzinfo=NY), True),  # Sunday
        ("EURUSD:CUR", A.FOREX, datetime(2026, 11, 27, 16, 59, tzinfo=NY), True),  # Friday
        ("EURUSD:CUR", A.FOREX, datetime(2026, 11, 27, 17, 1, tzinfo=NY), False),
        ("USDJPY:CUR", A.FOREX, datetime(2026, 11, 26, 12, 0, tzinfo=NY), True),  # no holidays
        ("EURUSD:CUR", A.FOREX, datetime(2026, 3, 8, 17, 30, tzinfo=NY), True),  # DST Sunday
        # Crypto never closes.
        ("XBTUSD:CUR", A.CRYPTO, datetime(2026, 11, 29, 3, 0, tzinfo=NY), True),
        ("XBTUSD:CUR", A.FOREX, datetime(2026, 11, 28, 12, 0, tzinfo=NY), True),
        # CME Globex: Sunday 18:00 to Friday 17:00 New York, halted 17:00-18:00 daily.
        ("GC1:COM", A.COMMODITIES, datetime(2026, 11, 24, 16, 30, tzinfo=NY), True),
        ("GC1:COM", A.COMMODITIES, datetime(2026, 11, 24, 17, 30, tzinfo=NY), False),
        ("GC1:COM", A.COMMODITIES, datetime(2026, 11, 24, 18, 30, tzinfo=NY), True),
        ("GC1:COM", A.COMMODITIES, datetime(2026, 11, 28, 12, 0, tzinfo=NY), False),
        ("GC1:COM", A.COMMODITIES, datetime(2026, 11, 29, 18, 30, tzinfo=NY), True),
        ("GC1:COM", A.COMMODITIES, datetime(2026, 11, 26, 13, 30, tzinfo=NY), False),  # Thanksg.
        # Treasuries: Sunday 18:00 to Friday 17:00 New York.
        ("T 4 11/15/35:GOV", A.BONDS, datetime(2026, 11, 29, 17, 30, tzinfo=NY), False),
        ("T 4 11/15/35:GOV", A.BONDS, datetime(2026, 11, 29, 18, 30, tzinfo=NY), True),
        ("T 4 11/15/35:GOV", A.BONDS, datetime(2026, 11, 27, 17, 1, tzinfo=NY), False),
        # What we cannot judge is open.
        ("FOO:ZZ", STOCKS, datetime(2026, 11, 28, 12, 0, tzinfo=NY), True),
        ("AAPL:US", STOCKS, datetime(1990, 1, 6, 12, 0, tzinfo=NY), True),  # before the data
        ("AAPL:US", STOCKS, datetime(2090, 1, 7, 12, 0, tzinfo=NY), True),  # after the data
    ],
)
def test_is_open(
    hours: MarketHours, symbol: str, asset_class: AssetClass, at: datetime, expected: bool
) -> None:
    assert hours.is_open(symbol, asset_class, at=at) is expected


@pytest.mark.parametrize(
    ("symbol", "asset_class", "at", "next_open", "next_close"),
    [
        # Thanksgiving noon: next open Friday 09:30, and Friday closes early at 13:00.
        (
            "AAPL:US",
            STOCKS,
            datetime(2026, 11, 26, 12, 0, tzinfo=NY),
            datetime(2026, 11, 27, 9, 30, tzinfo=NY),
            datetime(2026, 11, 27, 13, 0, tzinfo=NY),
        ),
        # Tokyo mid-morning: the next close is lunch, not the end of the day.
        (
            "7203:JP",
            STOCKS,
            datetime(2026, 11, 27, 10, 0, tzinfo=TOKYO),
            datetime(2026, 11, 27, 12, 30, tzinfo=TOKYO),
            datetime(2026, 11, 27, 11, 30, tzinfo=TOKYO),
        ),
        (
            "7203:JP",
            STOCKS,
            datetime(2026, 11, 27, 12, 0, tzinfo=TOKYO),
            datetime(2026, 11, 27, 12, 30, tzinfo=TOKYO),
            datetime(2026, 11, 27, 15, 30, tzinfo=TOKYO),
        ),
        # FX on a Saturday; and in the week clocks spring forward.
        (
            "EURUSD:CUR",
            A.FOREX,
            datetime(2026, 11, 28, 12, 0, tzinfo=NY),
            datetime(2026, 11, 29, 17, 0, tzinfo=NY),
            datetime(2026, 12, 4, 17, 0, tzinfo=NY),
        ),
        (
            "EURUSD:CUR",
            A.FOREX,
            datetime(2026, 3, 8, 17, 30, tzinfo=NY),
            datetime(2026, 3, 15, 17, 0, tzinfo=NY),
            datetime(2026, 3, 13, 17, 0, tzinfo=NY),
        ),
        (
            "GC1:COM",
            A.COMMODITIES,
            datetime(2026, 11, 24, 17, 30, tzinfo=NY),
            datetime(2026, 11, 24, 18, 0, tzinfo=NY),
            datetime(2026, 11, 25, 17, 0, tzinfo=NY),
        ),
        ("XBTUSD:CUR", A.CRYPTO, datetime(2026, 11, 29, 3, 0, tzinfo=NY), None, None),
        ("FOO:ZZ", STOCKS, datetime(2026, 11, 29, 3, 0, tzinfo=NY), None, None),
    ],
)
def test_next_open_and_close(
    hours: MarketHours,
    symbol: str,
    asset_class: AssetClass,
    at: datetime,
    next_open: datetime | None,
    next_close: datetime | None,
) -> None:
    got_open = hours.next_open(symbol, asset_class, at=at)
    got_close = hours.next_close(symbol, asset_class, at=at)
    assert got_open == next_open and got_close == next_close
    for got in (got_open, got_close):
        assert got is None or got.tzinfo == UTC


def test_session_status_and_default_now(hours: MarketHours) -> None:
    status = hours.session_status("AAPL:US", STOCKS)  # NOW is a Saturday
    assert status == {
        "symbol": "AAPL:US",
        "market": "XNYS",
        "at": "2026-11-28T12:00:00+00:00",
        "open": False,
        "next_open": "2026-11-30T14:30:00+00:00",
        "next_close": "2026-11-30T21:00:00+00:00",
    }
    assert hours.session_status("FOO:ZZ", STOCKS)["market"] == "UNKNOWN"
    # A naive `at` is UTC.
    assert hours.is_open("AAPL:US", STOCKS, at=datetime(2026, 11, 25, 15, 0))


@pytest.mark.parametrize(
    ("symbol", "asset_class", "market"),
    [
        ("AAPL:US", STOCKS, "XNYS"),
        ("MSFT:UW", STOCKS, "XNYS"),
        ("VOD:LN", STOCKS, "XLON"),
        ("7203:JP", STOCKS, "XTKS"),
        ("7203:JT", STOCKS, "XTKS"),
        ("SAP:GY", STOCKS, "XETR"),
        ("MC:FP", STOCKS, "XPAR"),
        ("ASML:NA", STOCKS, "XAMS"),
        ("700:HK", STOCKS, "XHKG"),
        ("BHP:AU", STOCKS, "XASX"),
        ("RY:CN", STOCKS, "XTSE"),
        ("NESN:SW", STOCKS, "XSWX"),
        ("ENI:IM", STOCKS, "XMIL"),
        ("SAN:SM", STOCKS, "XMAD"),
        ("005930:KS", STOCKS, "XKRX"),
        ("2330:TT", STOCKS, "XTAI"),
        ("RELIANCE:IN", STOCKS, "XBOM"),
        ("PETR4:BZ", STOCKS, "BVMF"),
        ("600519:CH", STOCKS, "XSHG"),
        ("SPX:IND", A.INDICES, "XNYS"),
        ("INDU:IND", A.INDICES, "XNYS"),
        ("UKX:IND", A.INDICES, "XLON"),
        ("NKY:IND", A.INDICES, "XTKS"),
        ("DAX:IND", A.INDICES, "XETR"),
        ("HSI:IND", A.INDICES, "XHKG"),
        ("EURUSD:CUR", A.FOREX, "FX"),
        ("USDTRY:CUR", A.FOREX, "FX"),  # not Tether
        ("XBTUSD:CUR", A.FOREX, "CRYPTO"),
        ("XBTUSD:CUR", A.CRYPTO, "CRYPTO"),
        ("GC1:COM", A.COMMODITIES, "CME"),
        ("T 4 11/15/35:GOV", A.BONDS, "BONDS"),
        ("FOO:ZZ", STOCKS, "UNKNOWN"),
        ("NOSUFFIX", STOCKS, "UNKNOWN"),
        ("ZZZ:IND", A.INDICES, "UNKNOWN"),
        ("aapl:us", STOCKS, "XNYS"),
        ("EURUSD:CUR", None, "FX"),
        ("SPX:IND", None, "XNYS"),
    ],
)
def test_market_of(
    hours: MarketHours, symbol: str, asset_class: AssetClass | None, market: str
) -> None:
    assert hours.market_of(symbol, asset_class) == market


def test_a_calendar_that_cannot_load_is_logged_and_left_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hours = MarketHours(now=lambda: NOW)
    with caplog.at_level(logging.WARNING, logger="crawler.markets.hours"):
        hours.preload(["NOT_A_CALENDAR"])
    assert "treating it as always open" in caplog.text
    assert [r.market for r in caplog.records] == ["NOT_A_CALENDAR"]  # type: ignore[attr-defined]


def test_every_mapped_market_is_an_exchange_calendar() -> None:
    import exchange_calendars

    names = set(exchange_calendars.get_calendar_names(include_aliases=True))
    missing = (set(SUFFIX_MARKETS.values()) | set(INDEX_MARKETS.values())) - names
    assert not missing


@pytest.mark.parametrize(
    ("symbol", "mic", "week_start"),
    [
        ("AAPL:US", "XNYS", datetime(2026, 11, 23, tzinfo=UTC)),  # Thanksgiving + early close
        ("AAPL:US", "XNYS", datetime(2026, 3, 6, tzinfo=UTC)),  # across the DST change
        ("VOD:LN", "XLON", datetime(2026, 12, 21, tzinfo=UTC)),  # Christmas, early closes
        ("7203:JP", "XTKS", datetime(2026, 11, 2, tzinfo=UTC)),  # lunch breaks, Culture Day
    ],
)
def test_agrees_with_is_open_on_minute_for_a_whole_week(
    hours: MarketHours, symbol: str, mic: str, week_start: datetime
) -> None:
    import exchange_calendars
    import pandas as pd

    disagreements = []
    # exchange_calendars 4.x on pandas 3 warns about its own use of .values: not ours to fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        calendar = exchange_calendars.get_calendar(mic)
        for minute in range(0, 7 * 24 * 60):
            at = week_start + timedelta(minutes=minute)
            expected = calendar.is_open_on_minute(pd.Timestamp(at), ignore_breaks=False)
            if hours.is_open(symbol, STOCKS, at=at) != expected:
                disagreements.append(at)
    assert disagreements == []


@settings(max_examples=150, deadline=None)
@given(
    at=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2026, 12, 1), timezones=st.just(UTC)
    ),
    case=st.sampled_from(
        [
            ("AAPL:US", STOCKS),
            ("7203:JP", STOCKS),
            ("VOD:LN", STOCKS),
            ("EURUSD:CUR", A.FOREX),
            ("GC1:COM", A.COMMODITIES),
            ("T 4 11/15/35:GOV", A.BONDS),
        ]
    ),
)
def test_next_open_and_close_are_the_edges_of_is_open(
    hours: MarketHours, at: datetime, case: tuple[str, AssetClass]
) -> None:
    symbol, asset_class = case
    next_open = hours.next_open(symbol, asset_class, at=at)
    next_close = hours.next_close(symbol, asset_class, at=at)
    assert next_open is not None and next_close is not None
    assert next_open > at and next_close > at
    tick = timedelta(microseconds=1)
    assert hours.is_open(symbol, asset_class, at=next_open)
    assert not hours.is_open(symbol, asset_class, at=next_open - tick)
    assert not hours.is_open(symbol, asset_class, at=next_close)
    assert hours.is_open(symbol, asset_class, at=next_close - tick)
    # Open now means it closes before it next opens, and vice versa.
    assert hours.is_open(symbol, asset_class, at=at) == (next_close < next_open)


def test_importing_hours_does_not_import_pandas_or_exchange_calendars() -> None:
    code = textwrap.dedent(
        """
        import sys
        from datetime import UTC, datetime
        import crawler.markets.hours, crawler.markets.savings, crawler.markets.calendars
        heavy = [m for m in ("pandas", "exchange_calendars", "numpy") if m in sys.modules]
        print("after import:", heavy)
        from crawler.markets.hours import MarketHours
        from crawler.normalizer.schemas import AssetClass
        hours = MarketHours()
        hours.is_open("EURUSD:CUR", AssetClass.FOREX)  # a rule: still no pandas
        hours.is_open("XBTUSD:CUR", AssetClass.CRYPTO)
        print("after rules:", [m for m in ("pandas", "exchange_calendars") if m in sys.modules])
        hours.is_open("AAPL:US", AssetClass.STOCKS, at=datetime(2026, 11, 25, 15, tzinfo=UTC))
        print("after a stock:", [m for m in ("pandas", "exchange_calendars") if m in sys.modules])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.splitlines() == [
        "after import: []",
        "after rules: []",
        "after a stock: ['pandas', 'exchange_calendars']",  # lazily, on first use
    ]


# -- the saving -----------------------------------------------------------------------------

WEEK_OF_NOV_2 = datetime(2026, 11, 2, tzinfo=UTC)  # Monday; New York already on EST
WATCHLIST = [
    ("AAPL:US", STOCKS),
    ("MSFT:US", STOCKS),
    ("VOD:LN", STOCKS),
    ("HSBA:LN", STOCKS),
    ("7203:JP", STOCKS),
    ("EURUSD:CUR", A.FOREX),
    ("USDJPY:CUR", A.FOREX),
    ("XBTUSD:CUR", A.CRYPTO),
]


def test_simulated_week_saves_requests_with_exact_counts(hours: MarketHours) -> None:
    week = simulate_week(WATCHLIST, WEEK_OF_NOV_2, 900, hours)
    by_symbol = {entry["symbol"]: entry for entry in week["symbols"]}
    polls = 7 * 24 * 4
    assert week["polls"] == polls
    assert week["requests_without"] == polls * len(WATCHLIST)
    # Crypto is always open: skipping saves nothing.
    assert (
        by_symbol["XBTUSD:CUR"]["requests_with"]
        == by_symbol["XBTUSD:CUR"]["requests_without"]
        == polls
    )
    # NYSE 14:30-21:00 UTC: 26 open polls + 1 for the close, five days.
    assert by_symbol["AAPL:US"]["requests_with"] == 5 * 27
    # LSE 08:00-16:30 UTC: 34 + 1, five days.
    assert by_symbol["VOD:LN"]["requests_with"] == 5 * 35
    # Tokyo 00:00-02:30 and 03:30-06:30 UTC: 10 + 1 + 12 + 1, four days (3 Nov is a holiday).
    assert by_symbol["7203:JP"]["requests_with"] == 4 * 24
    # FX open Monday 00:00 to Friday 22:00 UTC (472 polls), 1 for the close, Sunday 22:00-24:00.
    assert by_symbol["EURUSD:CUR"]["requests_with"] == 472 + 1 + 8
    expected_with = 2 * 135 + 2 * 175 + 96 + 2 * 481 + polls
    assert week["requests_with"] == expected_with
    assert week["saved"] == polls * len(WATCHLIST) - expected_with > 0


def test_thanksgiving_week_saves_more(hours: MarketHours) -> None:
    week = simulate_week([("AAPL:US", STOCKS)], datetime(2026, 11, 23, tzinfo=UTC), 900, hours)
    # Mon-Wed 27 each, Thursday closed, Friday 14:30-18:00 UTC: 14 + 1.
    assert week["requests_with"] == 3 * 27 + 15


def test_simulate_week_rejects_a_bad_interval(hours: MarketHours) -> None:
    with pytest.raises(ValueError, match="interval_s=0"):
        simulate_week(WATCHLIST, WEEK_OF_NOV_2, 0, hours)
