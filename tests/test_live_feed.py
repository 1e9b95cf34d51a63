"""The live stream in the real daemon, against the fake market's streamer: streamed symbols are
never paid for, history is thinned, subscriptions follow the watchlist, and polling takes over
when the stream is down."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness


def wait_until(predicate: Callable[[], bool], what: str, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket(stream_tick_rate=5.0) as market:
        yield market


@pytest.fixture
def daemon(market: FakeMarket, tmp_path: Path) -> Iterator[DaemonHarness]:
    daemon = DaemonHarness(market, tmp_path, STREAM_HISTORY_INTERVAL_SECONDS="3600")
    daemon.start()
    try:
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.log_tail()


def status(daemon: DaemonHarness) -> dict[str, Any]:
    code, body = daemon.client().get("/status")
    assert code == 200 and isinstance(body, dict)
    return body


def streamed(daemon: DaemonHarness) -> set[str]:
    return {
        row["symbol"]
        for row in status(daemon)["symbols"]
        if (row.get("last_quote") or {}).get("source") == "yahoo_stream"
    }


def paid_requests(market: FakeMarket) -> int:
    return len(market.bright_data.log_requests())


def test_streamed_symbols_are_never_paid_for(market: FakeMarket, daemon: DaemonHarness) -> None:
    for symbol in ("AAPL:US", "EURUSD:CUR", "VOD:LN"):
        assert daemon.cli("symbols", "add", symbol).returncode == 0
    wait_until(lambda: streamed(daemon) == {"AAPL:US", "EURUSD:CUR", "VOD:LN"}, "streamed quotes")
    assert market.stream.subscribed() == {"AAPL", "EURUSD=X", "VOD.L"}

    # Asked for fresh quotes and a collection (its closing fetch is fresh too): all from the
    # stream, nothing from Bright Data.
    fetched = daemon.cli("fetch", "--fresh", "--json", "AAPL:US", "EURUSD:CUR", "VOD:LN")
    assert fetched.returncode == 0, fetched.stderr
    sources = {q["symbol"]: q["source"] for q in json.loads(fetched.stdout)["quotes"]}
    assert set(sources.values()) == {"yahoo_stream"}
    collected = daemon.cli("collect", "--json")
    assert collected.returncode == 0, collected.stderr
    assert paid_requests(market) == 0

    body = status(daemon)
    assert body["stream"]["state"] == "connected"
    assert body["stream"]["subscribed"] == 3
    assert body["stream"]["bad_frames"] == 0
    assert body["breakers"]["yahoo_stream"]["state"] == "closed"
    # The stream lags as Yahoo does: London by its 15-minute `exchangeDataDelayedBy`.
    delay_s = {"AAPL:US": 0, "EURUSD:CUR": 0, "VOD:LN": 900}
    ages = {row["symbol"]: row["age_s"] - delay_s[row["symbol"]] for row in body["symbols"]}
    assert all(0 <= age < 10 for age in ages.values()), ages

    code, text = daemon.client().get("/v1/metrics")
    assert code == 200 and isinstance(text, str)
    lines = text.splitlines()
    assert "crawler_stream_connected 1.0" in lines
    assert "crawler_stream_subscribed_symbols 3.0" in lines
    ticks = next(line for line in lines if line.startswith("crawler_stream_ticks_total "))
    assert float(ticks.split()[1]) > 0

    # Dozens of ticks, one history row per symbol: at most one per interval (3600 s here).
    code, history = daemon.client().get("/history?symbol=AAPL:US")
    assert code == 200
    assert len(history["quotes"]) == 1, history


def test_subscriptions_follow_the_watchlist(market: FakeMarket, daemon: DaemonHarness) -> None:
    assert daemon.cli("symbols", "add", "AAPL:US").returncode == 0
    assert daemon.cli("symbols", "add", "MSFT:US").returncode == 0
    wait_until(lambda: market.stream.subscribed() == {"AAPL", "MSFT"}, "the subscription")
    assert daemon.cli("symbols", "remove", "MSFT:US").returncode == 0
    wait_until(lambda: market.stream.subscribed() == {"AAPL"}, "the unsubscription")
    assert daemon.cli("symbols", "remove", "AAPL:US").returncode == 0
    wait_until(lambda: market.stream.connection_count() == 0, "the hang-up")


def test_polling_takes_over_when_the_stream_is_down(
    market: FakeMarket, daemon: DaemonHarness
) -> None:
    assert daemon.cli("symbols", "add", "AAPL:US").returncode == 0
    wait_until(lambda: streamed(daemon) == {"AAPL:US"}, "a streamed quote")
    market.stream.stop()  # the streamer goes away: connection cut, reconnects refused
    wait_until(lambda: status(daemon)["stream"]["state"] != "connected", "the stream to drop")
    fetched = daemon.cli("fetch", "--fresh", "--json", "AAPL:US")
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["quotes"][0]["source"] == "bright_data"
    assert paid_requests(market) == 1


# -- market opens and closes, on a clock we move ----------------------------------------------


def test_subscriptions_follow_market_hours_and_the_close_is_kept(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from crawler.markets.hours import MarketHours
    from crawler.normalizer.symbols import parse_symbol
    from crawler.orchestrator.live import LiveFeed
    from crawler.store.cache import QuoteCache
    from crawler.store.watchlist import Watchlist
    from fakemarket.stream import YahooStreamFake

    # Tuesday 15:00 UTC: New York and London trade, Tokyo has closed; crypto never closes.
    wall = [datetime(2026, 1, 6, 15, 0, tzinfo=UTC)]
    offset_s = [0.0]
    watchlist = Watchlist(tmp_path / "watchlist")
    for name in ("AAPL:US", "VOD:LN", "7203:JP", "XBTUSD:CUR"):
        symbol = parse_symbol(name)
        watchlist.add(symbol, symbol.asset_class)
    cache = QuoteCache(tmp_path / "cache", ttl_s=900)
    fake = YahooStreamFake(tick_rate=20.0).start()
    feed = LiveFeed(
        fake.url,
        watchlist=watchlist,
        cache=cache,
        market_hours=MarketHours(now=lambda: wall[0]),
        fresh_s=900,
        closed_grace_s=900,
        clock=lambda: time.monotonic() + offset_s[0],
    )
    feed.stream.refresh_s = feed.stream.flush_interval_s = 0.05
    feed.start()
    try:
        wait_until(lambda: fake.subscribed() == {"AAPL", "VOD.L", "BTC-USD"}, "open markets")
        wait_until(lambda: feed.live_quote("AAPL:US") is not None, "a streamed AAPL")
        # 22:00 UTC: New York and London have closed.
        wall[0] = datetime(2026, 1, 6, 22, 0, tzinfo=UTC)
        feed.stream.refresh()
        wait_until(lambda: fake.subscribed() == {"BTC-USD"}, "closed markets unsubscribed")
        closing = feed.live_quote("AAPL:US")
        assert closing is not None and closing.source == "yahoo_stream"  # the close, kept
        offset_s[0] += 1000  # past the TTL, within TTL + one collection interval
        assert feed.live_quote("AAPL:US") is not None
        # Still ticking: the next flush makes it fresh on the moved clock too.
        wait_until(lambda: feed.live_quote("XBTUSD:CUR") is not None, "a fresh XBTUSD tick")
        offset_s[0] += 1000  # past the grace: polling's turn
        assert feed.live_quote("AAPL:US") is None
        last = cache.get_last_known("AAPL:US")
        assert last is not None and last.source == "yahoo_stream"
        # Market-hours skipping switched off (a configuration reload): everything streams.
        feed.set_market_hours(None)
        wanted = {"AAPL", "VOD.L", "7203.T", "BTC-USD"}
        wait_until(lambda: fake.subscribed() == wanted, "every symbol subscribed")
    finally:
        feed.stop()
        fake.stop()
        cache.close()
        watchlist.close()
