"""The fake market's freshness: Yahoo's delay fields and lagging times, the stream's lag, and
Bloomberg's lag knob per market (what the cost policy is tested against)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from crawler.normalizer.bloomberg import parse_bloomberg_page
from crawler.normalizer.symbols import parse_symbol
from crawler.normalizer.yahoo_stream import decode_frame
from fakemarket import FakeMarket

#: A Tuesday: New York, London and Tokyo each trade at some hour of it.
TUESDAY = datetime(2026, 3, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def _records(market: FakeMarket, at: datetime, *symbols: str) -> dict[str, dict[str, object]]:
    market.yahoo.set_clock(lambda: at)
    crumb = market.yahoo.crumb
    cookie = f"A3={market.yahoo.cookie_value}"
    answer = requests.get(
        market.yahoo.url + "/v7/finance/quote",
        params={"symbols": ",".join(symbols), "crumb": crumb},
        headers={"Cookie": cookie},
        timeout=5,
    )
    return {r["symbol"]: r for r in answer.json()["quoteResponse"]["result"]}


def test_yahoo_records_carry_the_exchange_delay_and_lag_by_it_while_trading(
    market: FakeMarket,
) -> None:
    at = TUESDAY + timedelta(hours=14, minutes=37, seconds=20)  # NY, London open; Tokyo shut
    got = _records(market, at, "AAPL", "VOD.L", "7203.T", "GC=F", "EURUSD=X", "BTC-USD")
    minute = at.replace(second=0)
    expected = {"AAPL": 0, "VOD.L": 15, "GC=F": 10, "EURUSD=X": 0, "BTC-USD": 0}
    for symbol, delay_min in expected.items():
        record = got[symbol]
        assert record["exchangeDataDelayedBy"] == delay_min, symbol
        assert record["marketState"] == "REGULAR", symbol
        lag = minute - datetime.fromtimestamp(int(record["regularMarketTime"]), UTC)
        assert lag == timedelta(minutes=delay_min), symbol
    tokyo = got["7203.T"]
    assert tokyo["exchangeDataDelayedBy"] == 20 and tokyo["marketState"] == "CLOSED"
    # Closed: its time is the last close (15:30 in Tokyo = 06:30 UTC), not now minus a delay.
    assert tokyo["regularMarketTime"] == int((TUESDAY + timedelta(hours=6, minutes=30)).timestamp())
    assert got["AAPL"]["quoteSourceName"] == "Nasdaq Real Time Price"
    assert got["VOD.L"]["quoteSourceName"] == "Delayed Quote"
    market.yahoo.set_clock(lambda: datetime.now(UTC))


def test_the_stream_lags_as_yahoo_does(market: FakeMarket) -> None:
    now_ms = int(TUESDAY.timestamp() * 1000)
    us = decode_frame(market.stream.frame_for("AAPL", now_ms))
    london = decode_frame(market.stream.frame_for("VOD.L", now_ms))
    assert us.as_of == TUESDAY
    assert london.as_of == TUESDAY - timedelta(minutes=15)


def test_bloomberg_lag_is_a_knob_per_market(market: FakeMarket) -> None:
    market.bright_data.set_clock(lambda: TUESDAY)
    market.bright_data.set_lag("LN", 15)
    try:
        fresh = parse_bloomberg_page(
            _page(market, "AAPL:US"), parse_symbol("AAPL:US"), fetched_at=TUESDAY
        )
        late = parse_bloomberg_page(
            _page(market, "VOD:LN"), parse_symbol("VOD:LN"), fetched_at=TUESDAY
        )
    finally:
        market.bright_data.reset()
        market.bright_data.set_clock(lambda: datetime.now(UTC))
    assert fresh.as_of == TUESDAY
    assert late.as_of == TUESDAY - timedelta(minutes=15)


def _page(market: FakeMarket, symbol: str) -> bytes:
    answer = requests.post(
        market.bright_data.url + "/request",
        headers={"Authorization": f"Bearer {market.api_key}"},
        json={
            "zone": market.zone,
            "url": f"https://www.bloomberg.com/quote/{symbol}",
            "format": "raw",
        },
        timeout=5,
    )
    assert answer.status_code == 200, answer.text[:200]
    return answer.content


def test_json_of_the_chart_lags_too(market: FakeMarket) -> None:
    at = TUESDAY + timedelta(hours=10)
    market.yahoo.set_clock(lambda: at)
    try:
        body = requests.get(market.yahoo.url + "/v8/finance/chart/VOD.L", timeout=5).content
    finally:
        market.yahoo.set_clock(lambda: datetime.now(UTC))
    meta = json.loads(body)["chart"]["result"][0]["meta"]
    assert meta["regularMarketTime"] == int((at - timedelta(minutes=15)).timestamp())
