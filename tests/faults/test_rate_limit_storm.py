"""429 storms with Retry-After.

What could be lost: money and goodwill, to a retry storm that ignores the server's hint. The
source's `sleep` and `clock` are injected (a ManualClock: waits are recorded and pass
instantly), and the fake's request log counts what actually went out. Asserted:

- every wait between attempts is exactly the server's Retry-After, outer 429 and the
  unlocker's own `sr_rate_limit` alike;
- one quote costs at most `max_attempts` requests, and no wait would end past the deadline;
- nothing is billed (ledger and fake agree) and no reservation is left open;
- through the hybrid fetcher, a storm over many symbols is cut short by the breaker: the fake
  sees at most `failure_threshold * max_attempts` requests, not one storm per symbol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.normalizer.symbols import parse_symbol
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.sources.bright_data import BrightDataSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from crawler.utils.exceptions import CrawlerError, NoSourceAvailableError, RateLimitedError
from fakemarket.brightdata import BrightDataFake
from tests.faults.helpers import ManualClock

COST = Decimal("0.0015")
MAX_ATTEMPTS = 3
DEADLINE_S = 30.0


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[BudgetLedger]:
    ledger = BudgetLedger(tmp_path / "ledger", 1_000 * COST, COST)
    yield ledger
    ledger.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def source(
    bright_data_fake: BrightDataFake, ledger: BudgetLedger, clock: ManualClock
) -> Iterator[BrightDataSource]:
    source = BrightDataSource(
        bright_data_fake.url, "test-key", "web_unlocker1", ledger,
        connect_timeout_s=1, read_timeout_s=2, deadline_s=DEADLINE_S,
        max_attempts=MAX_ATTEMPTS, sleep=clock.sleep, clock=clock, rng=lambda: 0.5,
    )  # fmt: skip
    yield source
    source.close()


def storm_outer_429(fake: BrightDataFake, retry_after_s: float) -> None:
    fake.faults.set("*", status=429, retry_after_s=retry_after_s)


def storm_unlocker(fake: BrightDataFake, retry_after_s: float) -> None:
    fake.unlocker_error("*", "sr_rate_limit", retry_after_s=retry_after_s)


STORMS: dict[str, Callable[[BrightDataFake, float], None]] = {
    "outer_429": storm_outer_429,
    "unlocker_sr_rate_limit": storm_unlocker,
}


def assert_nothing_billed(fake: BrightDataFake, ledger: BudgetLedger) -> None:
    stats = ledger.statistics()
    assert fake.billed_count == 0
    assert stats["requests_billed"] == 0
    assert stats["open_reservations"] == 0
    assert stats["total_cost"] == 0


@pytest.mark.parametrize("storm", sorted(STORMS))
@pytest.mark.parametrize("retry_after_s", [1.0, 7.0])
def test_retry_after_is_honoured_and_attempts_are_bounded(
    storm: str,
    retry_after_s: float,
    bright_data_fake: BrightDataFake,
    source: BrightDataSource,
    ledger: BudgetLedger,
    clock: ManualClock,
) -> None:
    STORMS[storm](bright_data_fake, retry_after_s)
    symbols = [f"R{i}:US" for i in range(10)]
    for name in symbols:
        clock.slept.clear()
        before = len(bright_data_fake.log_requests())
        with pytest.raises(RateLimitedError) as info:
            source.fetch(parse_symbol(name))
        assert info.value.retry_after_s == retry_after_s
        assert len(bright_data_fake.log_requests()) - before == MAX_ATTEMPTS
        assert clock.slept == [retry_after_s] * (MAX_ATTEMPTS - 1)  # exactly the hint
    assert {r.symbol for r in bright_data_fake.log_requests()} == set(symbols)
    assert_nothing_billed(bright_data_fake, ledger)


def test_a_retry_after_past_the_deadline_is_not_waited_for(
    bright_data_fake: BrightDataFake, source: BrightDataSource, ledger: BudgetLedger,
    clock: ManualClock,
) -> None:  # fmt: skip
    """Retry-After 20 s in a 30 s deadline: one wait (to 20 s), then a second would end at 40 s,
    past the deadline, so the source gives up after two requests instead of sleeping on."""
    storm_outer_429(bright_data_fake, 20.0)
    start = clock()
    with pytest.raises(RateLimitedError):
        source.fetch(parse_symbol("LATE:US"))
    assert clock.slept == [20.0]
    assert len(bright_data_fake.log_requests()) == 2
    assert clock() - start <= DEADLINE_S
    assert_nothing_billed(bright_data_fake, ledger)


def test_the_storm_ends_when_the_server_stops_limiting(
    bright_data_fake: BrightDataFake, source: BrightDataSource, ledger: BudgetLedger,
    clock: ManualClock,
) -> None:  # fmt: skip
    """Two rate-limited answers, then a quote: two waits of exactly Retry-After, one billed."""
    bright_data_fake.unlocker_error("*", "sr_rate_limit", times=2, retry_after_s=3)
    quote = source.fetch(parse_symbol("OK:US"))
    assert quote.symbol == "OK:US"
    assert clock.slept == [3.0, 3.0]
    assert len(bright_data_fake.log_requests()) == 3
    stats = ledger.statistics()
    assert bright_data_fake.billed_count == stats["requests_billed"] == 1
    assert stats["open_reservations"] == 0


def test_a_storm_over_many_symbols_is_cut_short_by_the_breaker(
    bright_data_fake: BrightDataFake, source: BrightDataSource, ledger: BudgetLedger,
    clock: ManualClock, tmp_path: Path,
) -> None:  # fmt: skip
    storm_outer_429(bright_data_fake, 2.0)
    cache = QuoteCache(tmp_path / "cache", ttl_s=900)
    hybrid = HybridDataSource(
        sources=[source], cache=cache, ledger=ledger, clock=clock, max_workers=1
    )
    try:
        results = hybrid.fetch_many([f"S{i}:US" for i in range(40)])
        threshold = hybrid.breakers["bright_data"].failure_threshold
    finally:
        hybrid.cleanup()
        cache.close()
    assert all(isinstance(r, CrawlerError) for r in results.values())
    assert all(isinstance(r, NoSourceAvailableError) for r in results.values())
    assert len(bright_data_fake.log_requests()) == threshold * MAX_ATTEMPTS
    assert set(clock.slept) == {2.0}
    assert_nothing_billed(bright_data_fake, ledger)
