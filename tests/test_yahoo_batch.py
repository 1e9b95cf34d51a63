"""Yahoo batch quotes end to end: the hybrid asks yfinance for many symbols at once, over real
HTTP against the fake market, with real cache/ledger files; the throttle's clock is fake where
a pause would otherwise be waited out.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import parse_symbol
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.sources.bright_data import BrightDataSource
from crawler.sources.yahoo_throttle import YahooThrottle
from crawler.sources.yfinance_source import YFinanceSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from crawler.utils.exceptions import (
    APIError,
    CrawlerError,
    NoSourceAvailableError,
    RateLimitedError,
    TransientSourceError,
)
from fakemarket.brightdata import BrightDataFake
from fakemarket.yahoo import QUOTE_FAULT_KEY, YahooFake

COST = Decimal("0.0015")


class FakeTime:
    """Monotonic seconds that only `sleep` moves (the throttle never really waits)."""

    def __init__(self) -> None:
        self.now_s = 5_000.0
        self.lock = threading.Lock()
        self.slept_s = 0.0

    def clock(self) -> float:
        with self.lock:
            return self.now_s

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now_s += seconds
            self.slept_s += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def throttle(fake_time: FakeTime) -> YahooThrottle:
    return YahooThrottle(2.0, clock=fake_time.clock, sleep=fake_time.sleep, random=lambda: 1.0)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[BudgetLedger]:
    ledger = BudgetLedger(tmp_path / "ledger", 1000 * COST, COST)
    yield ledger
    ledger.close()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[QuoteCache]:
    cache = QuoteCache(tmp_path / "cache", ttl_s=900)
    yield cache
    cache.close()


@pytest.fixture
def make_yf(
    yahoo_fake: YahooFake, tmp_path: Path, throttle: YahooThrottle
) -> Iterator[Callable[..., YFinanceSource]]:
    made: list[YFinanceSource] = []

    def make(**overrides: Any) -> YFinanceSource:
        options: dict[str, Any] = {
            "endpoint": yahoo_fake.url,
            "cache_dir": tmp_path / "yfinance",
            "timeout_s": 3,
            "deadline_s": 10,
            "batch_size": 50,
            "throttle": throttle,
            "max_workers": 8,
        }
        options.update(overrides)
        source = YFinanceSource(**options)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


@pytest.fixture
def make_hybrid(
    cache: QuoteCache, ledger: BudgetLedger
) -> Iterator[Callable[..., HybridDataSource]]:
    made: list[HybridDataSource] = []

    def make(*sources: Any, **overrides: Any) -> HybridDataSource:
        options: dict[str, Any] = {"cache": cache, "ledger": ledger, "max_workers": 16}
        options.update(overrides)
        hybrid = HybridDataSource(sources=list(sources), **options)
        made.append(hybrid)
        return hybrid

    yield make
    for hybrid in made:
        hybrid.cleanup()


def data_requests(fake: YahooFake) -> int:
    return fake.count("quote") + fake.count("chart")


def stocks(n: int) -> list[str]:
    return [f"S{i:04d}:US" for i in range(n)]


# -- the request count ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 50, 51, 120])
def test_n_known_symbols_cost_ceil_n_over_batch_size_requests(
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
    n: int,
) -> None:
    hybrid = make_hybrid(make_yf())
    symbols = stocks(n)

    results = hybrid.fetch_many(symbols)

    assert all(isinstance(r, Quote) for r in results.values()), results
    assert list(results) == symbols
    for text in symbols[:3]:
        quote = results[text]
        assert isinstance(quote, Quote)
        expected = yahoo_fake.quote_for(text.split(":")[0])
        assert quote.price == Decimal(str(expected.price)).quantize(Decimal("0.01"))
        assert quote.currency == "USD" and quote.source == "yfinance"
    assert yahoo_fake.count("chart") == 0
    assert yahoo_fake.count("quote") == math.ceil(n / 50)
    assert data_requests(yahoo_fake) <= math.ceil(n / 50) + 1
    assert sorted(s for batch in yahoo_fake.batch_symbols() for s in batch) == sorted(
        t.split(":")[0] for t in symbols
    )
    usage = hybrid.get_statistics()["source_usage"]["yfinance"]
    assert usage["successes"] == n


def test_a_second_round_is_served_from_the_cache_without_a_request(
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(make_yf())
    hybrid.fetch_many(stocks(60))
    yahoo_fake.reset()
    results = hybrid.fetch_many(stocks(60))
    assert all(isinstance(r, Quote) and r.from_cache for r in results.values())
    assert data_requests(yahoo_fake) == 0
    again = hybrid.fetch_many(stocks(60), force_fresh=True)
    assert all(isinstance(r, Quote) and not r.from_cache for r in again.values())
    assert yahoo_fake.count("quote") == 2


# -- what the batch leaves open goes to the chart ---------------------------------------------


def test_omitted_and_partial_records_fall_back_to_the_chart_one_by_one(
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    yahoo_fake.omit("MSFT")  # Yahoo left it out
    yahoo_fake.set_partial("VOD.L", "currency")  # asked with fewer fields: never guessed
    yahoo_fake.set_partial("NVDA", "regularMarketPrice")
    hybrid = make_hybrid(make_yf())

    results = hybrid.fetch_many(["AAPL:US", "MSFT:US", "VOD:LN", "NVDA:US", "ZZZZ:US"])

    assert yahoo_fake.count("quote") == 1
    assert {r.symbol for r in yahoo_fake.requests_of("chart")} == {"MSFT", "VOD.L", "NVDA", "ZZZZ"}
    vod = results["VOD:LN"]
    assert isinstance(vod, Quote) and vod.currency == "GBp"  # from the chart, in pence
    for key in ("AAPL:US", "MSFT:US", "NVDA:US"):
        assert isinstance(results[key], Quote), results[key]
    unknown = results["ZZZZ:US"]
    assert isinstance(unknown, NoSourceAvailableError)
    assert "does not know" in unknown.message
    stats = hybrid.breakers["yfinance"].get_statistics()
    assert stats["state"] == "closed"


def test_gbp_pence_and_crypto_change_come_through_the_batch_exactly(
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    yahoo_fake.set_quote("VOD.L", price=7234.5, previous_close=7100.1, currency="GBp")
    yahoo_fake.set_quote("BTC-USD", price=96077.45, previous_close=96137.88, change=-1225.8906)
    hybrid = make_hybrid(make_yf())

    results = hybrid.fetch_many(["VOD:LN", "XBTUSD:CUR"])

    vod, btc = results["VOD:LN"], results["XBTUSD:CUR"]
    assert isinstance(vod, Quote) and isinstance(btc, Quote)
    assert (vod.currency, str(vod.price), str(vod.change)) == ("GBp", "7234.50", "134.40")
    assert str(btc.change) == "-1225.89"  # Yahoo's 24 h figure, not 96077.45 - 96137.88
    assert yahoo_fake.count("chart") == 0


# -- the crumb --------------------------------------------------------------------------------


def test_an_invalid_crumb_is_refreshed_once_and_the_batch_repeated(
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    source = make_yf()
    hybrid = make_hybrid(source)
    hybrid.fetch_many(stocks(3))
    yahoo_fake.rotate_crumb()
    yahoo_fake.reset()

    results = hybrid.fetch_many(["AAPL:US", "MSFT:US"])

    assert all(isinstance(r, Quote) for r in results.values())
    outcomes = [r.outcome for r in yahoo_fake.requests_of("quote")]
    assert outcomes == ["quote:invalid_crumb", "quote"]
    assert yahoo_fake.count("crumb") == 1
    assert source.statistics()["crumb_refreshes"] == 1


def test_a_crumb_refused_twice_is_one_clean_error_not_a_loop(
    yahoo_fake: YahooFake, make_yf: Callable[..., YFinanceSource]
) -> None:
    source = make_yf()
    source.fetch_batch([parse_symbol("AAPL:US")])
    yahoo_fake.reset()
    yahoo_fake.refuse_crumbs(5)  # whatever crumb is sent, for the next 5 batch requests
    with pytest.raises(APIError, match="refused the crumb twice"):
        source.fetch_batch([parse_symbol("AAPL:US")])
    assert yahoo_fake.count("quote") == 2
    assert yahoo_fake.count("crumb") == 1
    assert source.statistics()["crumb_refreshes"] == 1


# -- 429 --------------------------------------------------------------------------------------


def test_a_429_on_a_batch_pauses_every_worker_counts_toward_the_breaker_and_shows(
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
    throttle: YahooThrottle,
    fake_time: FakeTime,
) -> None:
    source = make_yf()
    hybrid = make_hybrid(source)
    hybrid.fetch_many(stocks(2))  # warm: cookie and crumb
    yahoo_fake.faults.set(QUOTE_FAULT_KEY, status=429, retry_after_s=30)

    results = hybrid.fetch_many(["AAPL:US", "MSFT:US"])

    for outcome in results.values():
        assert isinstance(outcome, NoSourceAvailableError)
        assert "rate-limited" in outcome.message
    assert yahoo_fake.count("quote", None) >= 2
    assert yahoo_fake.count("chart") == 0  # a 429 is not answered with 2 more requests
    breaker = hybrid.breakers["yfinance"].get_statistics()
    assert breaker["total_failures"] == 1  # one request failed, once
    assert breaker["consecutive_failures"] == 1
    stats = source.statistics()["throttle"]
    assert stats["throttled"] is True and stats["paused_for_s"] == 30.0
    assert stats["rate_limited_total"] == 1

    # A pause longer than a quote's deadline (10 s): refused at once, nothing sent.
    yahoo_fake.faults.clear()
    sent = yahoo_fake.count("quote")
    results = hybrid.fetch_many(["NVDA:US"])
    refused = results["NVDA:US"]
    assert isinstance(refused, NoSourceAvailableError) and "pause" in refused.message
    assert yahoo_fake.count("quote") == sent

    fake_time.sleep(25)  # 5 s of the pause left: within the deadline, so it is waited out
    before_s = fake_time.clock()
    results = hybrid.fetch_many(["NVDA:US"])
    assert isinstance(results["NVDA:US"], Quote)
    assert fake_time.clock() - before_s >= 5.0
    assert source.statistics()["throttle"]["throttled"] is False


def test_a_429_from_the_source_is_rate_limited(
    yahoo_fake: YahooFake, make_yf: Callable[..., YFinanceSource]
) -> None:
    source = make_yf()
    yahoo_fake.faults.set(QUOTE_FAULT_KEY, status=429)
    with pytest.raises(RateLimitedError):
        source.fetch_batch([parse_symbol("AAPL:US")])
    assert source.statistics()["batch_failed"] == 1


# -- when Bright Data can serve, it is asked first, one by one ---------------------------------


def test_with_bright_data_available_the_batch_path_is_not_used(
    yahoo_fake: YahooFake,
    bright_data_fake: BrightDataFake,
    ledger: BudgetLedger,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    bd = BrightDataSource(bright_data_fake.url, "test-key", "web_unlocker1", ledger, deadline_s=5)
    try:
        hybrid = make_hybrid(bd, make_yf())
        results = hybrid.fetch_many(["AAPL:US", "MSFT:US"])
        assert {r.source for r in results.values() if isinstance(r, Quote)} == {"bright_data"}
        assert data_requests(yahoo_fake) == 0
    finally:
        bd.close()


def test_with_the_budget_spent_yfinance_batches_instead(
    yahoo_fake: YahooFake,
    bright_data_fake: BrightDataFake,
    tmp_path: Path,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    spent = BudgetLedger(tmp_path / "spent", COST, COST)
    spent.settle(spent.reserve())
    bd = BrightDataSource(bright_data_fake.url, "test-key", "web_unlocker1", spent, deadline_s=5)
    try:
        hybrid = make_hybrid(bd, make_yf(), ledger=spent)
        results = hybrid.fetch_many(stocks(70))
        assert all(isinstance(r, Quote) and r.source == "yfinance" for r in results.values())
        assert yahoo_fake.count("quote") == 2 and yahoo_fake.count("chart") == 0
        assert bright_data_fake.log_requests() == []
    finally:
        bd.close()
        spent.close()


# -- deadlines and concurrency ------------------------------------------------------------------


def test_fallbacks_that_do_not_fit_the_deadline_are_reported_not_silent(
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    yahoo_fake.omit("*")  # every symbol needs its chart
    yahoo_fake.faults.set("*", latency_s=0.3)
    yahoo_fake.faults.set(QUOTE_FAULT_KEY)  # the batch itself answers at once
    hybrid = make_hybrid(make_yf(), max_workers=2)

    with caplog.at_level("WARNING", logger="crawler.hybrid"):
        results = hybrid.fetch_many(stocks(12), deadline_s=0.5)

    missed = [r for r in results.values() if isinstance(r, TransientSourceError)]
    assert missed and all("deadline" in r.message for r in missed)
    assert any("missed the deadline" in r.getMessage() for r in caplog.records)
    hybrid.cleanup()
    assert yahoo_fake.count("chart") < 12  # the ones that had not started were not asked


def test_a_concurrent_get_quote_waits_for_the_batch_instead_of_asking_again(
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(make_yf())
    hybrid.fetch_many(["WARM:US"])
    yahoo_fake.reset()
    yahoo_fake.faults.set(QUOTE_FAULT_KEY, latency_s=0.3)
    outcome: dict[str, Quote | BaseException] = {}

    def single() -> None:
        try:
            outcome["single"] = hybrid.get_quote("S0001:US")
        except CrawlerError as exc:
            outcome["single"] = exc

    batch_done = threading.Event()

    def batch() -> None:
        hybrid.fetch_many(stocks(5))
        batch_done.set()

    runner = threading.Thread(target=batch)
    runner.start()
    while yahoo_fake.count("quote") == 0 and not batch_done.is_set():
        threading.Event().wait(0.01)
    single()
    runner.join(timeout=10)
    assert isinstance(outcome["single"], Quote)
    assert yahoo_fake.count("chart") == 0
    assert yahoo_fake.count("quote") == 1


def test_batch_answers_carry_the_source_time(
    yahoo_fake: YahooFake, make_yf: Callable[..., YFinanceSource]
) -> None:
    source = make_yf()
    answer = source.fetch_batch([parse_symbol("AAPL:US"), parse_symbol("ZZZ:IND")])
    assert "ZZZ:IND" in answer.errors  # no Yahoo form: never asked
    quote = answer.quotes["AAPL:US"]
    expected = yahoo_fake.quote_for("AAPL")
    assert quote.as_of == datetime.fromtimestamp(expected.regular_market_time, UTC)
    assert [b for b in yahoo_fake.batch_symbols()][-1] == ["AAPL"]


def test_cleanup_releases_callers_waiting_for_batches_that_never_ran(
    yahoo_fake: YahooFake,
    make_yf: Callable[..., YFinanceSource],
    make_hybrid: Callable[..., HybridDataSource],
) -> None:
    hybrid = make_hybrid(make_yf(), max_workers=1)  # one worker: the 2nd and 3rd batch queue
    hybrid.fetch_many(["WARM:US"])
    yahoo_fake.faults.set(QUOTE_FAULT_KEY, latency_s=0.3)
    results: dict[str, Quote | CrawlerError] = {}
    runner = threading.Thread(target=lambda: results.update(hybrid.fetch_many(stocks(120))))
    runner.start()
    while yahoo_fake.count("quote") < 2:  # the warm-up's and the first of the three
        threading.Event().wait(0.01)
    hybrid.cleanup()
    runner.join(timeout=10)
    assert not runner.is_alive(), "fetch_many still waits for batches that will never run"
    assert len(results) == 120
    released = [r for r in results.values() if isinstance(r, APIError)]
    assert released and all("cleaned up" in r.message or "internal" in r.message
                            for r in released)  # fmt: skip


def test_a_chart_refused_by_the_bucket_during_a_pause_sends_nothing_and_is_no_timeout(
    yahoo_fake: YahooFake, make_yf: Callable[..., YFinanceSource], throttle: YahooThrottle
) -> None:
    source = make_yf()
    source.fetch(parse_symbol("AAPL:US"))  # warm: cookie and crumb
    throttle.on_rate_limited("60")  # longer than the 10 s deadline
    yahoo_fake.reset()
    with pytest.raises(TransientSourceError, match="asked us to pause"):
        source.fetch(parse_symbol("MSFT:US"))
    assert yahoo_fake.log_requests() == []
    stats = source.statistics()
    assert stats["timeouts"] == 0
    assert stats["errors"] == {"TransientSourceError": 1}
