"""One contract, every store backend: embedded (diskcache) and Redis (a real redis-server).

Modelled on huey's tests/test_storage.py: each test takes `backend`, a factory for one
backend's stores, and states what any backend must do. A backend that drifts from the embedded
one (today's behaviour) fails here. Clocks are injected; nothing sleeps except the one lease
expiry on Redis, whose clock is the server's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.store.backend import CacheStore, LedgerStore, QuoteTimesStore, WatchlistStore
from crawler.store.breaker_board import BreakerBoard, LocalBreakerBoard, RedisBreakerBoard
from crawler.store.cache import QuoteCache
from crawler.store.cache.redis import RedisQuoteCache
from crawler.store.leases import FetchLeases, LocalLeases, RedisLeases
from crawler.store.ledger import BudgetLedger
from crawler.store.ledger.redis import RedisLedger
from crawler.store.nodes import LocalNodes, NodeRegistry, RedisNodes
from crawler.store.quote_times import QuoteTimes
from crawler.store.quote_times.redis import RedisQuoteTimes
from crawler.store.redis_client import RedisConnection
from crawler.store.watchlist import Watchlist
from crawler.store.watchlist.redis import RedisWatchlist
from crawler.utils.exceptions import BudgetExhaustedError, WatchlistFullError

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "store_worker.py"
COST = Decimal("0.0015")
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Clocks:
    """A settable wall clock (datetimes) and epoch clock (seconds) that move together."""

    def __init__(self) -> None:
        self.now = NOON

    def wall(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Backend:
    """Builds one backend's stores in `tmp`; every store built is closed after the test."""

    name: str
    tmp: Path
    url: str | None
    clocks: Clocks = field(default_factory=Clocks)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def _redis(self) -> RedisConnection:
        assert self.url is not None
        conn = RedisConnection(self.url)
        self._closers.append(conn.close)
        return conn

    def _dir(self, name: str, node: str = "a") -> Path:
        return self.tmp / node / name

    def ledger(self, requests: int, node: str = "a", timezone: str = "UTC") -> LedgerStore:
        budget = COST * requests
        out: LedgerStore
        if self.name == "redis":
            out = RedisLedger(self._redis(), self._dir("ledger-local", node), budget, COST,
                              timezone=timezone, now=self.clocks.wall, clock=self.clocks.epoch,
                              boot_id=lambda: "boot-1")  # fmt: skip
        else:  # one directory for every "node": that is what embedded sharing means
            # Real time (the monotonic clock) moves with the test's clock: one simulated boot.
            out = BudgetLedger(self._dir("ledger"), budget, COST, timezone=timezone,
                               now=self.clocks.wall, clock=self.clocks.epoch,
                               boot_id=lambda: "boot-1")  # fmt: skip
        self._closers.append(out.close)
        return out

    def cache(self, ttl_s: float = 60, node: str = "a") -> CacheStore:
        out: CacheStore
        if self.name == "redis":
            local = QuoteCache(self._dir("cache-local", node), ttl_s, clock=self.clocks.epoch)
            out = RedisQuoteCache(self._redis(), ttl_s, local, clock=self.clocks.epoch)
        else:
            out = QuoteCache(self._dir("cache"), ttl_s, clock=self.clocks.epoch)
        self._closers.append(out.close)
        return out

    def watchlist(self, node: str = "a", max_symbols: int = 10_000) -> WatchlistStore:
        out: WatchlistStore
        if self.name == "redis":
            local = Watchlist(self._dir("watchlist-local", node))
            out = RedisWatchlist(self._redis(), local, max_symbols=max_symbols)
        else:
            out = Watchlist(self._dir("watchlist"), max_symbols=max_symbols)
        self._closers.append(out.close)
        return out

    def leases(self, node: str) -> FetchLeases:
        out: FetchLeases
        if self.name == "redis":
            out = RedisLeases(self._redis(), node)
        else:
            out = LocalLeases(self._dir("leases"), node, clock=self.clocks.epoch)
        self._closers.append(out.close)
        return out

    def nodes(self, node: str) -> NodeRegistry:
        if self.name == "redis":
            return RedisNodes(self._redis(), node, clock=self.clocks.epoch)
        local = LocalNodes(self._dir("nodes"), node, clock=self.clocks.epoch)
        self._closers.append(local.close)
        return local

    def quote_times(self, node: str = "a") -> QuoteTimesStore:
        out: QuoteTimesStore
        if self.name == "redis":
            out = RedisQuoteTimes(self._redis(), QuoteTimes(self._dir("times-local", node)))
        else:
            out = QuoteTimes(self._dir("times"))
        self._closers.append(out.close)
        return out

    def breakers(self, node: str) -> BreakerBoard:
        out: BreakerBoard
        if self.name == "redis":
            out = RedisBreakerBoard(self._redis(), node, clock=self.clocks.epoch)
        else:
            out = LocalBreakerBoard(self._dir("breakers"), node, clock=self.clocks.epoch)
        self._closers.append(out.close)
        return out

    def env(self) -> dict[str, str]:
        """The environment for tests/store_worker.py to use this backend."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("STORE_REDIS_URL", None)
        if self.url is not None:
            env["STORE_REDIS_URL"] = self.url
        return env

    def close(self) -> None:
        for close in reversed(self._closers):
            close()


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    made = Backend(request.param, tmp_path, url)
    try:
        yield made
    finally:
        made.close()


def quote(symbol: str = "AAPL:US", price: str = "262.36") -> Quote:
    return Quote(symbol=symbol, price=Decimal(price), source="bright_data",
                 fetched_at=NOON)  # fmt: skip


# -- the ledger: money -------------------------------------------------------------------------


def test_ledger_settle_bills_once_and_release_gives_the_money_back(backend: Backend) -> None:
    ledger = backend.ledger(requests=10)
    first, second = ledger.reserve(), ledger.reserve()
    assert ledger.settle(first) is True
    assert ledger.settle(first) is False  # a retry never bills twice
    assert ledger.release(first) is False
    assert ledger.release(second) is True
    assert ledger.settle(second) is False
    stats = ledger.statistics()
    assert stats["requests_billed"] == 1
    assert stats["open_reservations"] == 0
    assert stats["total_cost"] == COST
    assert stats["billed_cost"] == COST
    assert stats["reserved_cost"] == Decimal(0)
    assert stats["budget_remaining"] == COST * 9


def test_ledger_breakdown_counts_billed_requests_by_hour_and_label(backend: Backend) -> None:
    ledger = backend.ledger(requests=10)
    ledger.settle(ledger.reserve(label="AAPL:US"))
    ledger.settle(ledger.reserve(label="AAPL:US"))
    ledger.release(ledger.reserve(label="VOD:LN"))  # not billed: not counted
    ledger.settle(ledger.reserve())
    breakdown = ledger.breakdown()
    assert breakdown["by_label"] == {"AAPL:US": 2}
    assert breakdown["by_hour"] == {"12": 3}


def test_ledger_never_above_the_budget_and_an_open_hold_counts(backend: Backend) -> None:
    ledger = backend.ledger(requests=3)
    held = [ledger.reserve() for _ in range(3)]
    assert ledger.can_reserve() is False
    with pytest.raises(BudgetExhaustedError) as caught:
        ledger.reserve()
    assert caught.value.current_usage == 3
    assert caught.value.budget_limit == 3
    assert caught.value.cost_spent == COST * 3
    ledger.release(held[0])
    assert ledger.can_reserve() is True
    ledger.reserve()
    stats = ledger.statistics()
    assert (stats["requests_used"], stats["open_reservations"]) == (3, 3)
    assert stats["budget_used_pct"] == 100.0


def test_ledger_statistics_keep_the_seed_keys(backend: Backend) -> None:
    stats = backend.ledger(requests=4).statistics()
    seed_keys = {"total_cost", "budget_used_pct", "budget_remaining", "requests_used",
                 "requests_allowed", "day"}  # fmt: skip
    assert seed_keys <= set(stats)
    assert stats["requests_allowed"] == 4
    assert stats["day"] == "2026-03-02"


def test_ledger_statistics_keys_match_the_embedded_ledger(backend: Backend) -> None:
    assert set(backend.ledger(requests=4).statistics()) >= set(
        BudgetLedger(backend.tmp / "keys", COST, COST).statistics()
    )


def test_ledger_a_new_day_key_but_24_hours_hold_one_budget(backend: Backend) -> None:
    ledger = backend.ledger(requests=2)
    backend.clocks.advance(11 * 3600 + 59 * 60)  # 23:59 UTC
    ledger.settle(ledger.reserve())
    ledger.settle(ledger.reserve())
    assert not ledger.can_reserve()
    backend.clocks.advance(60)  # midnight UTC: a new day key ...
    assert ledger.day() == "2026-03-03"
    assert ledger.statistics()["requests_used"] == 0
    assert not ledger.can_reserve()  # ... but the last 24 hours already hold a day's budget
    backend.clocks.advance(24 * 3600)
    assert ledger.can_reserve()
    ledger.reserve()
    assert ledger.statistics()["requests_used"] == 1
    assert "2026-03-02" in ledger.days() and "2026-03-04" in ledger.days()


def test_ledger_clock_stepped_back_opens_no_fresh_budget(backend: Backend) -> None:
    ledger = backend.ledger(requests=2)
    ledger.settle(ledger.reserve())
    ledger.settle(ledger.reserve())
    backend.clocks.advance(-24 * 3600)  # the wall clock steps back a day (real time does too
    # here, which only makes it harder: the stored high water must hold the day)
    assert ledger.day() == "2026-03-02"
    assert not ledger.can_reserve()
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve()


def test_ledger_time_zone_change_waits_for_the_day_end(backend: Backend) -> None:
    ledger = backend.ledger(requests=2)
    ledger.settle(ledger.reserve())
    ledger.settle(ledger.reserve())
    moved = backend.ledger(requests=2, timezone="Pacific/Kiritimati")  # already 03-03 there
    assert moved.day() == "2026-03-02"
    with pytest.raises(BudgetExhaustedError):
        moved.reserve()


def test_ledger_refuses_with_one_rule_and_says_when_money_frees_up(backend: Backend) -> None:
    ledger = backend.ledger(requests=2)
    for _ in range(2):
        ledger.settle(ledger.reserve())
    assert ledger.can_reserve() is False
    with pytest.raises(BudgetExhaustedError) as caught:
        ledger.reserve()
    # Both backends word it alike (crawler.store.ledger.exhausted_error): a new budget day
    # frees money once the 24 hours before it have aged out.
    assert caught.value.message.startswith("daily budget exhausted: 2/2 requests, $0.003 spent")
    assert "money frees up at 2026-03-03 12:0" in caught.value.message, caught.value.message


def test_ledger_day_is_in_the_budget_time_zone(backend: Backend) -> None:
    ledger = backend.ledger(requests=2, timezone="Asia/Tokyo")
    assert ledger.day() == "2026-03-02"  # 21:00 in Tokyo
    backend.clocks.advance(3 * 3600)
    assert ledger.day() == "2026-03-03"


def test_ledger_is_one_budget_for_every_node_and_thread(backend: Backend) -> None:
    requests = 40
    ledgers = [backend.ledger(requests=requests, node=name) for name in ("a", "b", "c")]
    granted: list[int] = []
    lock = threading.Lock()

    def run(ledger: LedgerStore) -> None:
        mine = 0
        while True:
            try:
                reservation = ledger.reserve()
            except BudgetExhaustedError:
                break
            mine += 1
            if mine % 4 == 0:
                ledger.release(reservation)
            else:
                ledger.settle(reservation)
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=run, args=(ledgers[i % 3],)) for i in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = ledgers[0].statistics()
    assert stats["requests_billed"] == requests
    assert stats["open_reservations"] == 0
    assert stats["total_cost"] == COST * requests


def test_ledger_processes_racing_never_overspend(backend: Backend) -> None:
    requests = 30
    # Opened once first: three processes creating one new SQLite file at the same instant is
    # not what this test is about.
    backend.ledger(requests=requests)
    args = [
        "ledger-race",
        str(backend.tmp / "a" / "ledger-local" if backend.url else backend.tmp / "a" / "ledger"),
        str(COST * requests),
        str(COST),
        NOON.isoformat(),
        "4",
    ]
    pipe = subprocess.PIPE
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=pipe,
            stdout=pipe,
            stderr=pipe,
            text=True,
            cwd=REPO,
            env=backend.env(),
        )
        for _ in range(3)
    ]
    results: list[dict[str, Any]] = []
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline().strip()
            assert line == "ready", worker.stderr.read() if worker.stderr else line
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert sum(result["settled"] for result in results) == requests
    stats = backend.ledger(requests=requests).statistics()
    assert stats["requests_billed"] == requests
    assert stats["open_reservations"] == 0


# -- the cache -----------------------------------------------------------------------------


def test_cache_fresh_until_the_ttl_then_only_last_known(backend: Backend) -> None:
    cache = backend.cache(ttl_s=60)
    assert cache.get("AAPL:US") is None
    cache.put(quote())
    hit = cache.get("AAPL:US")
    assert hit is not None and hit.price == Decimal("262.36")
    assert hit.from_cache is True and hit.stale is False
    backend.clocks.advance(60)
    assert cache.get("AAPL:US") is None
    last = cache.get_last_known("AAPL:US")
    assert last is not None and last.price == Decimal("262.36")
    assert last.from_cache is True and last.stale is True
    stats = cache.statistics()
    assert (stats["hits"], stats["misses"], stats["hit_rate_pct"]) == (1, 2, 33.33)
    assert stats["last_known"] == 1
    assert stats["ttl_s"] == 60


def test_cache_put_replaces_and_is_seen_by_every_node(backend: Backend) -> None:
    writer, reader = backend.cache(node="a"), backend.cache(node="b")
    writer.put(quote(price="1.00"))
    writer.put(quote(price="2.00"))
    seen = reader.get("AAPL:US")
    assert seen is not None and seen.price == Decimal("2.00")
    assert reader.get("VOD:LN") is None


def test_cache_cleanup_keeps_last_known_and_clear_drops_all(backend: Backend) -> None:
    cache = backend.cache(ttl_s=10)
    cache.put(quote("AAPL:US"))
    cache.put(quote("VOD:LN"))
    backend.clocks.advance(11)
    cache.cleanup()
    assert cache.get("AAPL:US") is None
    assert cache.get_last_known("VOD:LN") is not None
    assert cache.clear() >= 2
    assert cache.get_last_known("VOD:LN") is None


# -- the watchlist -------------------------------------------------------------------------


def test_watchlist_order_duplicates_and_removal(backend: Backend) -> None:
    watchlist = backend.watchlist()
    assert watchlist.add("AAPL:US", AssetClass.STOCKS) is True
    assert watchlist.add("EURUSD:CUR", AssetClass.FOREX) is True
    assert watchlist.add("AAPL:US", AssetClass.FOREX) is False  # the first class is kept
    assert watchlist.items() == [("AAPL:US", AssetClass.STOCKS),
                                 ("EURUSD:CUR", AssetClass.FOREX)]  # fmt: skip
    assert "AAPL:US" in watchlist and len(watchlist) == 2
    assert watchlist.remove("AAPL:US") is True
    assert watchlist.remove("AAPL:US") is False
    assert watchlist.symbols() == ["EURUSD:CUR"]


def test_watchlist_an_add_on_one_node_is_seen_by_another(backend: Backend) -> None:
    one, other = backend.watchlist(node="a"), backend.watchlist(node="b")
    one.add("AAPL:US", AssetClass.STOCKS)
    other.add("VOD:LN", AssetClass.STOCKS)
    assert one.symbols() == other.symbols() == ["AAPL:US", "VOD:LN"]


def test_watchlist_full_is_a_storage_error(backend: Backend) -> None:
    watchlist = backend.watchlist(max_symbols=2)
    watchlist.add("A:US", AssetClass.STOCKS)
    watchlist.add("B:US", AssetClass.STOCKS)
    with pytest.raises(WatchlistFullError, match=r"full \(2 symbols\).*C:US"):
        watchlist.add("C:US", AssetClass.STOCKS)
    assert watchlist.symbols() == ["A:US", "B:US"]


def test_watchlist_concurrent_adds_all_kept(backend: Backend) -> None:
    watchlists = [backend.watchlist(node=name) for name in ("a", "b")]

    def run(index: int) -> None:
        for i in range(index, 60, 4):
            watchlists[index % 2].add(f"S{i}:US", AssetClass.STOCKS)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(watchlists[0].symbols()) == sorted(f"S{i}:US" for i in range(60))


# -- fetch leases --------------------------------------------------------------------------


def test_lease_is_held_by_one_node_until_released(backend: Backend) -> None:
    a, b = backend.leases("node-a"), backend.leases("node-b")
    assert a.acquire("AAPL:US", ttl_s=60) is True
    assert b.acquire("AAPL:US", ttl_s=60) is False
    assert a.acquire("AAPL:US", ttl_s=60) is True  # the holder renews its own
    assert b.holder("AAPL:US") == "node-a"
    assert b.release("AAPL:US") is False  # not b's to give back
    assert b.acquire("VOD:LN", ttl_s=60) is True  # per symbol
    assert a.release("AAPL:US") is True
    assert b.holder("AAPL:US") is None
    assert b.acquire("AAPL:US", ttl_s=60) is True


def test_lease_marked_done_is_held_but_not_in_flight(backend: Backend) -> None:
    a, b = backend.leases("node-a"), backend.leases("node-b")
    assert b.in_flight("AAPL:US") is False
    a.acquire("AAPL:US", ttl_s=60)
    assert b.in_flight("AAPL:US") is True
    assert b.mark_done("AAPL:US") is False  # not b's
    assert a.mark_done("AAPL:US") is True
    assert b.in_flight("AAPL:US") is False
    assert b.holder("AAPL:US") == "node-a"
    assert b.acquire("AAPL:US", ttl_s=60) is False  # done, but still this interval's
    assert a.acquire("AAPL:US", ttl_s=60) is True
    assert b.in_flight("AAPL:US") is True
    a.mark_done("AAPL:US")
    assert a.release("AAPL:US") is True
    assert b.acquire("AAPL:US", ttl_s=60) is True


def test_lease_expires_by_itself(backend: Backend) -> None:
    a, b = backend.leases("node-a"), backend.leases("node-b")
    if backend.name == "redis":  # Redis' clock is the server's: a tiny PX, then poll
        assert a.acquire("AAPL:US", ttl_s=0.05) is True
        deadline = time.monotonic() + 5
        while b.holder("AAPL:US") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        assert a.acquire("AAPL:US", ttl_s=60) is True
        backend.clocks.advance(60)
    assert b.holder("AAPL:US") is None
    assert b.acquire("AAPL:US", ttl_s=60) is True


def test_lease_only_one_of_many_racers_wins(backend: Backend) -> None:
    racers = [backend.leases(f"node-{i}") for i in range(6)]
    wins: list[str] = []
    lock = threading.Lock()

    def run(leases: FetchLeases) -> None:
        if leases.acquire("AAPL:US", ttl_s=60):
            with lock:
                wins.append(leases.node)

    threads = [threading.Thread(target=run, args=(r,)) for r in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1


# -- node heartbeats -----------------------------------------------------------------------


def test_nodes_beat_list_and_forget(backend: Backend) -> None:
    a = backend.nodes("node-a")
    a.beat({"pid": 11, "last_collection": {"quotes": 3}}, ttl_s=60)
    listed = a.nodes()
    assert [n["node"] for n in listed] == ["node-a"]
    assert listed[0]["pid"] == 11 and listed[0]["last_collection"] == {"quotes": 3}
    assert listed[0]["beat_at"] == backend.clocks.epoch()
    a.forget()
    assert a.nodes() == []


# -- the closed-market memory --------------------------------------------------------------


def test_quote_times_never_move_back_and_are_shared(backend: Backend) -> None:
    one, other = backend.quote_times("a"), backend.quote_times("b")
    early, late = NOON, NOON + timedelta(hours=1)
    one.record({"VOD:LN": late, "AAPL:US": early}, paid=["VOD:LN"])
    other.record({"VOD:LN": early}, paid=["VOD:LN"])  # older: changes nothing
    seen = other.snapshot()
    assert seen["VOD:LN"].last_quote_at == late and seen["VOD:LN"].last_paid_at == late
    assert seen["AAPL:US"].last_quote_at == early and seen["AAPL:US"].last_paid_at is None
    other.forget("VOD:LN")
    assert set(one.snapshot()) == {"AAPL:US"}


# -- shared breaker state ------------------------------------------------------------------


def test_breaker_open_on_one_node_is_seen_by_the_others_until_it_ends(backend: Backend) -> None:
    a, b = backend.breakers("node-a"), backend.breakers("node-b")
    assert b.open_elsewhere("bright_data") is None
    a.post_open("bright_data", recovery_s=120)
    assert a.open_elsewhere("bright_data") is None  # a's own breaker speaks for itself
    seen = b.open_elsewhere("bright_data")
    assert seen is not None and seen[0] == "node-a" and 0 < seen[1] <= 120
    assert b.open_elsewhere("yfinance") is None  # per source
    b.post_closed("bright_data")  # b's trial call succeeded: the outage is over
    assert b.open_elsewhere("bright_data") is None
    a.post_open("bright_data", recovery_s=120)
    backend.clocks.advance(121)
    assert b.open_elsewhere("bright_data") is None
