"""Issue 23 items 6 and 7 over real HTTP: the fake market's hostile answers reach the real
sources, parsers and hybrid, and wrong data is never served, cached or stored as a quote. A
refused record is an error for its own symbol only (with the reason); the rest of a Yahoo batch
is served and the chart is asked for the refused one; the stream skips impossible ticks."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol, parse_symbol, to_yahoo
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.sources.bright_data import BrightDataSource
from crawler.sources.yahoo_stream import YahooStream
from crawler.sources.yahoo_throttle import YahooThrottle
from crawler.sources.yfinance_source import YFinanceSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from crawler.utils.exceptions import CrawlerError, ImplausibleQuoteError
from fakemarket.brightdata import BrightDataFake
from fakemarket.stream import YahooStreamFake, encode_pricing
from fakemarket.yahoo import YahooFake

COST = Decimal("0.0015")
YEAR_3270_S = int(datetime(3270, 1, 1, tzinfo=UTC).timestamp())


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[QuoteCache]:
    cache = QuoteCache(tmp_path / "cache", ttl_s=900)
    yield cache
    cache.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[BudgetLedger]:
    ledger = BudgetLedger(tmp_path / "ledger", 1000 * COST, COST)
    yield ledger
    ledger.close()


@pytest.fixture
def make_hybrid(
    yahoo_fake: YahooFake,
    bright_data_fake: BrightDataFake,
    cache: QuoteCache,
    ledger: BudgetLedger,
    tmp_path: Path,
) -> Iterator[Callable[..., HybridDataSource]]:
    made: list[HybridDataSource] = []

    def make(*, paid: bool = False, batch_size: int = 50) -> HybridDataSource:
        sources: list[Any] = []
        if paid:
            sources.append(
                BrightDataSource(bright_data_fake.url, "test-key", "web_unlocker1", ledger)
            )
        sources.append(
            YFinanceSource(
                endpoint=yahoo_fake.url, cache_dir=tmp_path / "yfinance", timeout_s=5,
                deadline_s=15, batch_size=batch_size, throttle=YahooThrottle(1000.0),
            )
        )  # fmt: skip
        hybrid = HybridDataSource(sources=sources, cache=cache, ledger=ledger, max_workers=8)
        made.append(hybrid)
        return hybrid

    yield make
    for hybrid in made:
        hybrid.cleanup()


def error_of(result: Quote | CrawlerError) -> str:
    assert isinstance(result, CrawlerError), result
    assert "internal error" not in result.message, result.message
    return result.message


# -- Yahoo batch: one absurd number never sinks the batch (item 7) -----------------------------

BATCH = ["AAPL:US", "QQQ:US", "SPOT:US"]


@pytest.mark.parametrize(
    ("hostile", "reason"),
    [
        ({"regularMarketPrice": 1e300}, "no instrument trades there"),  # priceHint 2
        ({"regularMarketPrice": 1e300, "priceHint": None}, "no instrument trades there"),
        ({"regularMarketPrice": 10**400}, "no instrument trades there"),
        ({"regularMarketPrice": -5.25}, "a stock price must be above zero"),
        ({"regularMarketTime": YEAR_3270_S}, "3270-01-01 00:00:00 UTC refused"),
    ],
)
def test_a_hostile_batch_record_fails_only_its_symbol_and_the_chart_is_asked(
    yahoo_fake: YahooFake,
    make_hybrid: Callable[..., HybridDataSource],
    cache: QuoteCache,
    hostile: dict[str, Any],
    reason: str,
) -> None:
    yahoo_fake.set_raw("SPOT", **hostile)  # in the batch record and in the chart's meta
    hybrid = make_hybrid()

    results = hybrid.fetch_many(BATCH)

    for text in ("AAPL:US", "QQQ:US"):
        quote = results[text]
        assert isinstance(quote, Quote) and quote.source == "yfinance", quote
    assert yahoo_fake.count("quote") == 1
    assert yahoo_fake.count("chart", "SPOT") == 1  # the fallback was asked, and refused too
    assert reason in error_of(results["SPOT:US"])
    assert cache.get_last_known("SPOT:US") is None  # nothing wrong was kept


def test_the_chart_fallback_serves_a_symbol_whose_batch_record_was_refused(
    yahoo_fake: YahooFake, make_hybrid: Callable[..., HybridDataSource]
) -> None:
    yahoo_fake.set_raw("SPOT", only="quote", regularMarketPrice=10**400)
    results = make_hybrid().fetch_many(BATCH)
    spot = results["SPOT:US"]
    assert isinstance(spot, Quote), spot
    assert spot.price == Decimal(str(yahoo_fake.quote_for("SPOT").price)).quantize(Decimal("0.01"))
    assert yahoo_fake.count("chart", "SPOT") == 1 and yahoo_fake.count("chart") == 1


@pytest.mark.parametrize("change", [10**400, 1e300])
def test_an_absurd_change_costs_only_the_change(
    yahoo_fake: YahooFake, make_hybrid: Callable[..., HybridDataSource], change: object
) -> None:
    yahoo_fake.set_raw("SPOT", regularMarketChange=change)
    results = make_hybrid().fetch_many(BATCH)
    assert all(isinstance(q, Quote) for q in results.values()), results
    spot = results["SPOT:US"]
    assert isinstance(spot, Quote) and spot.change is None and spot.price > 0
    assert yahoo_fake.count("chart") == 0


# -- Yahoo chart: clean per-symbol errors (item 7) --------------------------------------------


def test_chart_previous_close_1e_minus_300_and_deep_nesting_fail_cleanly_per_symbol(
    yahoo_fake: YahooFake, make_hybrid: Callable[..., HybridDataSource]
) -> None:
    yahoo_fake.set_raw("AAPL", previousClose=1e-300, chartPreviousClose=1e-300)
    yahoo_fake.set_chart_body("QQQ", b'{"chart":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    hybrid = make_hybrid(batch_size=1)  # no batch: the per-symbol chart path

    results = hybrid.fetch_many(BATCH)

    aapl = results["AAPL:US"]
    assert isinstance(aapl, Quote) and aapl.previous_close is None and aapl.change is None
    assert "nested too deep" in error_of(results["QQQ:US"])
    assert isinstance(results["SPOT:US"], Quote)


# -- Bloomberg pages through Bright Data (item 6) ---------------------------------------------


def test_a_commented_out_decoy_script_is_not_the_quote(
    bright_data_fake: BrightDataFake, make_hybrid: Callable[..., HybridDataSource]
) -> None:
    bright_data_fake.set_page("AAPL:US", "decoy_comment")
    quote = make_hybrid(paid=True).get_quote("AAPL:US")
    assert quote.source == "bright_data"
    assert quote.price == bright_data_fake.quote_for("AAPL:US").price != Decimal("0.01")


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ({"page": "two_scripts"}, "quotes disagree"),
        ({"extra": {"price": "0"}}, "above zero"),
        ({"extra": {"price": "-12.5"}}, "above zero"),
        ({"extra": {"price": "1.5T"}}, "not a price"),
        ({"extra": {"price": Decimal("1E+30")}}, "no instrument trades there"),
        ({"extra": {"lastUpdate": "9999-12-31T00:00:00.000Z"}}, "9999-12-31"),
    ],
)
def test_a_wrong_bloomberg_quote_is_refused_and_yahoo_serves_the_symbol(
    bright_data_fake: BrightDataFake,
    yahoo_fake: YahooFake,
    make_hybrid: Callable[..., HybridDataSource],
    cache: QuoteCache,
    setting: dict[str, Any],
    reason: str,
) -> None:
    if "page" in setting:
        bright_data_fake.set_page("IBM:US", setting["page"])
    else:
        bright_data_fake.set_quote("IBM:US", extra=setting["extra"])
    hybrid = make_hybrid(paid=True)

    quote = hybrid.get_quote("IBM:US")

    assert quote.source == "yfinance"  # paid for, refused, and the free source covered it
    assert bright_data_fake.billed_count == 1
    assert reason in str(hybrid.get_statistics()["source_usage"]["bright_data"]["last_error"])
    kept = cache.get_last_known("IBM:US")
    assert kept is not None and kept.source == "yfinance"


def test_a_quote_a_thousandfold_off_its_last_good_one_is_refused_then_stale_is_served(
    bright_data_fake: BrightDataFake,
    yahoo_fake: YahooFake,
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(paid=True)
    good = hybrid.get_quote("IBM:US")
    assert good.source == "bright_data"
    bright_data_fake.set_quote("IBM:US", price=good.price / 10_000)  # a misplaced point
    yahoo_fake.set_raw("IBM", regularMarketPrice=float(good.price) * 5_000)

    again = hybrid.get_quote("IBM:US", force_fresh=True)

    assert again.stale and again.price == good.price
    usage = hybrid.get_statistics()["source_usage"]
    assert "last good quote" in str(usage["bright_data"]["last_error"])
    assert "last good quote" in str(usage["yfinance"]["last_error"])
    assert hybrid.plausibility.refusals == 2
    # A real 90 % crash is a quote.
    low = (good.price / 10).quantize(Decimal("0.01"))
    bright_data_fake.set_quote("IBM:US", price=low)
    crashed = hybrid.get_quote("IBM:US", force_fresh=True)
    assert crashed.source == "bright_data" and crashed.price == low


# -- the stream (item 6) ---------------------------------------------------------------------


class StreamHarness:
    def __init__(self, url: str) -> None:
        self.landed: list[Quote] = []
        self.lock = threading.Lock()
        symbol = parse_symbol("AAPL:US")
        self.wanted: dict[str, Symbol] = {to_yahoo(symbol): symbol}
        self.stream = YahooStream(
            url, wanted=lambda: dict(self.wanted), sink=self.sink, refresh_s=0.05,
            flush_interval_s=0.05, connect_timeout_s=2.0, backoff_initial_s=0.05,
            backoff_max_s=0.2,
        )  # fmt: skip

    def sink(self, quotes: list[Quote]) -> None:
        with self.lock:
            self.landed.extend(quotes)


def wait_until(predicate: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


def frame(price: float, when: datetime | None = None) -> str:
    at_ms = int((when or datetime.now(UTC)).timestamp() * 1000)
    payload = encode_pricing("AAPL", price, at_ms, currency="USD")
    return json.dumps({"type": "pricing", "message": base64.b64encode(payload).decode()})


def test_impossible_ticks_are_skipped_and_never_land(tmp_path: Path) -> None:
    fake = YahooStreamFake().start()  # silent: only the frames sent by hand
    harness = StreamHarness(fake.url)
    harness.stream.start()
    try:
        wait_until(lambda: fake.subscribed() == {"AAPL"}, "the subscription")
        hostile = [
            frame(9.99995e-41),
            frame(3e38),
            frame(262.36, datetime(2001, 9, 10, tzinfo=UTC)),
            frame(262.36, datetime(2036, 6, 1, tzinfo=UTC)),
            frame(-5.25),
        ]
        for done, text in enumerate(hostile, 1):
            # One at a time: the stream keeps only the newest tick per symbol between flushes.
            fake.send_frame(text)
            wait_until(lambda n=done: harness.stream.bad_frames >= n, f"tick {done} refused")
        assert harness.landed == []
        fake.send_frame(frame(262.36))
        wait_until(lambda: len(harness.landed) == 1, "the good tick")
        assert harness.landed[0].price == Decimal("262.36")
        assert harness.stream.bad_frames == len(hostile)
    finally:
        harness.stream.stop()
        fake.stop()


def test_implausible_quote_error_is_a_parse_error_for_the_symbol() -> None:
    assert issubclass(ImplausibleQuoteError, CrawlerError)
