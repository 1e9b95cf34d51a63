"""Issue 22 item 9: symbols Yahoo does not know are remembered (in the data dir) and not asked
again every collection; they come back after a backoff of 1 h doubling to a day, so a newly
listed symbol is found. The fake Yahoo over real HTTP; the clock injected."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.normalizer.schemas import Quote
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.sources.yfinance_source import YFinanceSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from crawler.store.yahoo_unknowns import YahooUnknowns
from crawler.utils.exceptions import NoSourceAvailableError
from fakemarket.yahoo import YahooFake

COST = Decimal("0.0015")
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


class Now:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


def test_backoff_starts_at_an_hour_doubles_and_stops_at_a_day(tmp_path: Path) -> None:
    now = Now()
    memory = YahooUnknowns(tmp_path / "unknown.json", now=now)
    memory.note_unknown("HOLD9:US")
    assert memory.skip("HOLD9:US")
    waits = []
    for _ in range(7):
        entry = memory.entry("HOLD9:US")
        assert entry is not None
        waits.append(entry.backoff_s / 3600)
        now.at = entry.retry_at  # due again: asked, and still unknown
        assert not memory.skip("HOLD9:US")
        memory.note_unknown("HOLD9:US")
    assert waits == [1, 2, 4, 8, 16, 24, 24]
    # Told twice within one period (a batch, then a chart): one step, not two.
    before = memory.entry("HOLD9:US")
    memory.note_unknown("HOLD9:US")
    assert memory.entry("HOLD9:US") == before
    # Listed after all: forgotten.
    memory.note_served("HOLD9:US")
    assert not memory.skip("HOLD9:US") and memory.entry("HOLD9:US") is None


def test_the_memory_survives_a_restart(tmp_path: Path) -> None:
    now = Now()
    YahooUnknowns(tmp_path / "unknown.json", now=now).note_unknown("HOLD9:US")
    again = YahooUnknowns(tmp_path / "unknown.json", now=now)
    assert again.skip("HOLD9:US")
    assert again.statistics() == {"remembered": 1, "not_asked_now": 1}
    (tmp_path / "unknown.json").write_text("{not json")  # a damaged file starts afresh
    assert YahooUnknowns(tmp_path / "unknown.json", now=now).statistics()["remembered"] == 0


@pytest.fixture
def hybrid_parts(tmp_path: Path, yahoo_fake: YahooFake) -> Iterator[tuple[HybridDataSource, Now]]:
    now = Now()
    ledger = BudgetLedger(tmp_path / "ledger", 1000 * COST, COST)
    cache = QuoteCache(tmp_path / "cache", ttl_s=1)
    source = YFinanceSource(endpoint=yahoo_fake.url, cache_dir=tmp_path / "yfinance", timeout_s=5)
    hybrid = HybridDataSource(
        sources=[source],
        cache=cache,
        ledger=ledger,
        unknowns=YahooUnknowns(tmp_path / "unknown.json", now=now),
    )
    try:
        yield hybrid, now
    finally:
        hybrid.cleanup()
        cache.close()
        ledger.close()


def test_a_second_collection_asks_yahoo_nothing_about_symbols_it_did_not_know(
    yahoo_fake: YahooFake, hybrid_parts: tuple[HybridDataSource, Now]
) -> None:
    hybrid, now = hybrid_parts
    known = [f"K{i}:US" for i in range(3)]
    unknown = [f"ZZZZ{i}:US" for i in range(40)]
    first = hybrid.fetch_many(known + unknown, force_fresh=True)
    assert all(isinstance(first[name], Quote) for name in known)
    # Left out of the batch answer is Yahoo's "unknown": no chart asked for each of the 40.
    assert yahoo_fake.count("chart") == 0
    asked_first = {s for batch in yahoo_fake.batch_symbols() for s in batch}
    assert {f"ZZZZ{i}" for i in range(40)} <= asked_first
    yahoo_fake.reset()

    second = hybrid.fetch_many(known + unknown, force_fresh=True)
    assert all(isinstance(second[name], Quote) for name in known)
    asked_second = {s for batch in yahoo_fake.batch_symbols() for s in batch}
    assert asked_second == {"K0", "K1", "K2"} and yahoo_fake.count("chart") == 0
    assert "Yahoo does not know it" in str(second["ZZZZ0:US"])

    # Listed an hour later: the retry asks again, and it is served.
    yahoo_fake.set_quote("ZZZZ7", price=12.5)
    now.at += timedelta(hours=1)
    third = hybrid.fetch_many(["ZZZZ7:US"], force_fresh=True)
    assert isinstance(third["ZZZZ7:US"], Quote) and third["ZZZZ7:US"].price == Decimal("12.5")
    assert hybrid.unknowns is not None and hybrid.unknowns.entry("ZZZZ7:US") is None


def test_a_symbol_whose_chart_says_unknown_is_remembered_too(
    yahoo_fake: YahooFake, hybrid_parts: tuple[HybridDataSource, Now]
) -> None:
    hybrid, _ = hybrid_parts
    for _ in range(3):  # one symbol at a time: the chart path
        with pytest.raises(NoSourceAvailableError, match="Yahoo does not know"):
            hybrid.get_quote("ZZZZQ:US", force_fresh=True)
    assert yahoo_fake.count("chart", "ZZZZQ") == 1


def test_a_cluster_shares_the_memory_through_redis(tmp_path: Path, redis_url: str) -> None:
    from crawler.store.redis_client import RedisConnection

    now = Now()
    ticks = iter(float(i) * 100 for i in range(1000))  # each read is past SHARED_READ_S
    one_redis, other_redis = RedisConnection(redis_url), RedisConnection(redis_url)
    one = YahooUnknowns(tmp_path / "a.json", now=now, redis=one_redis, clock=lambda: next(ticks))
    other = YahooUnknowns(
        tmp_path / "b.json", now=now, redis=other_redis, clock=lambda: next(ticks)
    )
    try:
        one.note_unknown("HOLD9:US")
        assert other.skip("HOLD9:US")  # told by the first node's answer: not asked here
        other.note_served("HOLD9:US")  # listed after all, found by the other node
        assert not one.skip("HOLD9:US")
    finally:
        one_redis.close()
        other_redis.close()
