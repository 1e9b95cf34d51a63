"""An outage of each source lasting several breaker periods.

What could be lost: requests (and money) thrown at a dead source, or the source itself, if the
breaker never lets a trial through after the outage ends. Asserted, per source, with the
breaker's clock injected (nothing sleeps through a recovery period) and the fake market's own
request log as the witness:

- the breaker opens after exactly `failure_threshold` failed fetches;
- while it is open, the fake receives no request at all, however many quotes are asked for;
- at each recovery point exactly one trial fetch reaches the fake, even with many callers at
  once (one request for either source: a failed yfinance chart is not retried);
- once the fake is back, the first successful fetch comes within one recovery period, and
  from then on every fetch reaches the source again;
- Bright Data: the ledger's billed spend equals the fake's billed count plus the outage's plain
  503s (they do not prove Bright Data billed nothing, so they count as spent), nothing left
  reserved.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.normalizer.schemas import Quote
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.sources.base import QuoteSource
from crawler.sources.bright_data import BrightDataSource
from crawler.sources.yfinance_source import YFinanceSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from crawler.utils.exceptions import CrawlerError, NoSourceAvailableError
from fakemarket.brightdata import BrightDataFake
from fakemarket.core import FakeService
from fakemarket.yahoo import YahooFake
from tests.faults.helpers import ManualClock

COST = Decimal("0.0015")
PERIODS = 3  # breaker periods the outage lasts
POLLS_PER_PERIOD = 10
CALLERS = 8  # concurrent callers at each recovery point


@dataclass
class Setup:
    name: str
    fake: FakeService
    source: QuoteSource
    break_it: Callable[[], object]
    heal_it: Callable[[], object]
    #: Requests one failed fetch makes: Bright Data 1 (max_attempts=1); yfinance 3, its own
    #: crumb refresh (chart, crumb, chart again) on any failed chart request.
    requests_per_failure: int


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[BudgetLedger]:
    ledger = BudgetLedger(tmp_path / "ledger", 10_000 * COST, COST)
    yield ledger
    ledger.close()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[QuoteCache]:
    cache = QuoteCache(tmp_path / "cache", ttl_s=900)
    yield cache
    cache.close()


@pytest.fixture(params=["bright_data", "yfinance"])
def setup(
    request: pytest.FixtureRequest,
    bright_data_fake: BrightDataFake,
    yahoo_fake: YahooFake,
    ledger: BudgetLedger,
    tmp_path: Path,
) -> Iterator[Setup]:
    source: QuoteSource
    fake: FakeService
    if request.param == "bright_data":
        fake = bright_data_fake
        # One attempt per fetch, so one trial is one request (retries have their own tests).
        source = BrightDataSource(
            bright_data_fake.url, "test-key", "web_unlocker1", ledger,
            connect_timeout_s=1, read_timeout_s=2, deadline_s=5, max_attempts=1,
            sleep=lambda _s: None,
        )  # fmt: skip
    else:
        fake = yahoo_fake
        source = YFinanceSource(
            endpoint=yahoo_fake.url, cache_dir=tmp_path / "yfinance", timeout_s=2, deadline_s=5
        )
    # The fake answers slowly, so that concurrent callers really overlap the trial call.
    fake.faults.set("*", latency_s=0.05)
    yield Setup(
        name=request.param,
        fake=fake,
        source=source,
        break_it=lambda: fake.faults.set("*", status=503, latency_s=0.05),
        heal_it=lambda: fake.faults.set("*", latency_s=0.05),
        # yfinance no longer retries a failed chart with another cookie strategy (3 requests):
        # one failure is one request for both.
        requests_per_failure=1,
    )
    source.close()


def test_outage_for_several_breaker_periods(
    setup: Setup, ledger: BudgetLedger, cache: QuoteCache, bright_data_fake: BrightDataFake
) -> None:
    clock = ManualClock()
    hybrid = HybridDataSource(
        sources=[setup.source], cache=cache, ledger=ledger, clock=clock, max_workers=CALLERS
    )
    breaker = hybrid.breakers[setup.name]
    period_s = breaker.recovery_timeout
    names = (f"F{i}:US" for i in itertools.count())  # every call a new symbol: no cache help

    def requests() -> int:
        return len(setup.fake.log_requests())

    def fetch_one() -> Quote | CrawlerError:
        try:
            return hybrid.get_quote(next(names))
        except CrawlerError as exc:
            return exc

    try:
        warm = fetch_one()  # the source works (yfinance also gets its cookie and crumb here)
        assert isinstance(warm, Quote), warm
        assert warm.source == setup.name

        setup.break_it()
        before = requests()
        for _ in range(breaker.failure_threshold):
            assert isinstance(fetch_one(), NoSourceAvailableError)
        assert breaker.state == "open"
        assert requests() - before == breaker.failure_threshold * setup.requests_per_failure

        for period in range(PERIODS):
            seen = requests()
            for _ in range(POLLS_PER_PERIOD - 1):
                clock.advance(period_s / POLLS_PER_PERIOD)
                outcomes = hybrid.fetch_many([next(names) for _ in range(CALLERS)])
                assert all(isinstance(o, NoSourceAvailableError) for o in outcomes.values())
                assert requests() == seen, f"period {period}: a request reached a dead source"
            clock.advance(period_s / POLLS_PER_PERIOD + 0.001)  # just past the recovery point
            outcomes = hybrid.fetch_many([next(names) for _ in range(CALLERS)])
            assert all(isinstance(o, NoSourceAvailableError) for o in outcomes.values())
            assert requests() == seen + setup.requests_per_failure, (
                f"period {period}: not one trial"
            )
            assert breaker.state == "open"  # the failed trial reopened it

        # The fake comes back a third of the way into a period; callers keep polling.
        clock.advance(period_s / 3)
        setup.heal_it()
        back_at = clock()
        first_success_at = None
        for _ in range(2 * POLLS_PER_PERIOD):
            clock.advance(period_s / POLLS_PER_PERIOD)
            if isinstance(fetch_one(), Quote):
                first_success_at = clock()
                break
        assert first_success_at is not None, "the source never recovered"
        assert first_success_at - back_at <= period_s + 1e-6
        assert breaker.state == "closed"

        seen = requests()
        outcomes = hybrid.fetch_many([next(names) for _ in range(CALLERS)])
        assert all(isinstance(o, Quote) for o in outcomes.values()), outcomes
        # Every fetch reaches the source again: one request each for Bright Data, one batch
        # quote request for all of them for yfinance.
        expected = CALLERS if setup.name == "bright_data" else 1
        assert requests() == seen + expected
    finally:
        hybrid.cleanup()

    stats = ledger.statistics()
    unknown = sum(
        1 for r in bright_data_fake.log_requests() if r.outcome.startswith("unbilled:forced_")
    )
    assert stats["open_reservations"] == 0
    assert stats["billed_cost"] == (bright_data_fake.billed_count + unknown) * COST
    assert stats["requests_billed"] == bright_data_fake.billed_count + unknown
