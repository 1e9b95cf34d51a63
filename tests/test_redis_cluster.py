"""Several nodes on one Redis, in one process: the real wiring (`HybridDataSource(settings)`
opens the Redis backend from `redis_url`), the fake market over HTTP, a real redis-server.

Faults use their own redis-server (stopped and restarted here), never the session's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis

from crawler.config import Settings, load_settings
from crawler.normalizer.schemas import AssetClass
from crawler.orchestrator.collection import Collector
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.store.history import HistoryStore
from crawler.utils.exceptions import ConfigError
from fakemarket import FakeMarket
from fakemarket.yahoo import QUOTE_FAULT_KEY
from tests.redis_server import RedisServer, redis_server_binary

COST = Decimal("0.0015")
SYMBOLS = [f"R{i:02d}:US" for i in range(30)]


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as started:
        yield started


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server this test may stop and restart."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with AOF (fsync always): stopped and started, it keeps its data."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    server = RedisServer(tmp_path / "redis-aof", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def node_settings(market: FakeMarket, base: Path, url: str, name: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": base / name,
        "redis_url": url,
        "node_name": name,
        "bright_data_endpoint": market.bright_data.url,
        "bright_data_api_key": market.api_key,
        "bright_data_zone": market.zone,
        "yfinance_endpoint": market.yahoo.url,
        "max_workers": 8,
        "request_timeout_seconds": 2,
        "quote_deadline_seconds": 5,
    }
    values.update(extra)
    return load_settings(values)


@pytest.fixture
def make_node(market: FakeMarket, tmp_path: Path) -> Iterator[Callable[..., HybridDataSource]]:
    made: list[HybridDataSource] = []

    def make(url: str, name: str, **extra: Any) -> HybridDataSource:
        hybrid = HybridDataSource(node_settings(market, tmp_path, url, name, **extra))
        made.append(hybrid)
        return hybrid

    yield make
    for hybrid in made:
        hybrid.cleanup()


def run_together(actions: list[Callable[[], Any]]) -> list[Any]:
    """Start every action at once (a barrier) and return their results."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = actions[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_three_nodes_collecting_together_pay_each_symbol_once(
    redis_url: str, market: FakeMarket, make_node: Callable[..., HybridDataSource]
) -> None:
    market.bright_data.faults.set("*", latency_s=0.02)  # fetches overlap between the nodes
    nodes = [make_node(redis_url, f"node-{i}") for i in range(3)]
    results = run_together([lambda n=n: n.fetch_many(SYMBOLS) for n in nodes])
    assert market.bright_data.billed_count == len(SYMBOLS)
    for result in results:  # every node answered every symbol
        assert all(not isinstance(outcome, Exception) for outcome in result.values()), result
    stats = nodes[0].ledger.statistics()
    assert stats["requests_billed"] == len(SYMBOLS)
    assert stats["total_cost"] == COST * len(SYMBOLS)
    waited = sum(n.get_statistics()["leases"]["waited_for_other_node"] for n in nodes)
    assert waited + sum(n.cache.statistics()["hits"] for n in nodes) > 0


def test_forced_collections_of_three_nodes_still_pay_each_symbol_once(
    redis_url: str, market: FakeMarket, make_node: Callable[..., HybridDataSource]
) -> None:
    # A collection's fetch of the close is forced (past the cache); in a cluster it is still
    # one fetch per symbol per interval, whichever node gets there first.
    market.bright_data.faults.set("*", latency_s=0.02)
    nodes = [make_node(redis_url, f"node-{i}") for i in range(3)]
    results = run_together([
        lambda n=n: n.fetch_many(SYMBOLS, force_fresh=True, once_per_interval=True)
        for n in nodes
    ])  # fmt: skip
    assert market.bright_data.billed_count == len(SYMBOLS)
    for result in results:
        assert all(getattr(q, "stale", True) is False for q in result.values()), result


def test_fresh_storm_from_three_nodes_never_exceeds_the_budget(
    redis_url: str, market: FakeMarket, make_node: Callable[..., HybridDataSource]
) -> None:
    budget_requests = 25
    nodes = [
        make_node(redis_url, f"node-{i}", total_budget=COST * budget_requests) for i in range(3)
    ]
    run_together([lambda n=n: n.fetch_many(SYMBOLS, force_fresh=True) for n in nodes])
    stats = nodes[0].ledger.statistics()
    assert market.bright_data.billed_count == budget_requests
    assert stats["requests_billed"] == budget_requests
    assert stats["open_reservations"] == 0
    assert stats["total_cost"] == COST * budget_requests


def test_an_add_on_one_node_is_collected_by_another(
    redis_url: str, market: FakeMarket, make_node: Callable[..., HybridDataSource],
    tmp_path: Path,
) -> None:  # fmt: skip
    one, other = make_node(redis_url, "node-a"), make_node(redis_url, "node-b")
    assert one.stores is not None and other.stores is not None
    one.stores.watchlist.add("R01:US", one_asset())
    history = HistoryStore(tmp_path / "history-b", 30)
    try:
        first = Collector().collect(one, one.stores.watchlist.items())
        report = Collector().collect(other, other.stores.watchlist.items(), history)
        # node-b read node-a's quote from the shared cache and still recorded it locally.
        assert first.quotes == report.quotes == 1
        assert report.sources == {"cache": 1}
        assert report.recorded == 1
    finally:
        history.close()
    assert market.bright_data.billed_count == 1


def one_asset() -> Any:
    from crawler.normalizer.schemas import AssetClass

    return AssetClass.STOCKS


def test_redis_unreachable_no_paid_request_free_and_local_keep_serving(
    persistent_redis: RedisServer, market: FakeMarket,
    make_node: Callable[..., HybridDataSource],
) -> None:  # fmt: skip
    own_redis = persistent_redis  # it comes back with its data: nothing to recover
    node = make_node(own_redis.url, "node-a")
    assert node.get_quote("R01:US").source == "bright_data"
    own_redis.stop()
    billed = market.bright_data.billed_count
    served = node.fetch_many(["R01:US", "R02:US"], force_fresh=True)
    assert market.bright_data.billed_count == billed  # the budget cannot be checked: no spend
    assert all(getattr(q, "source", None) == "yfinance" for q in served.values()), served
    stats = node.get_statistics()
    assert stats["cost_tracking"]["store_reachable"] is False
    assert stats["cache_statistics"]["store_reachable"] is False
    assert stats["source_usage"]["bright_data"]["total_requests"] == 1  # the one before
    # The local copy of the last-known quote still answers.
    assert node.cache.get_last_known("R01:US") is not None
    assert node.stores is not None and node.stores.describe()["reachable"] is False
    # Redis comes back: the same objects reconnect by themselves and pay again.
    own_redis.start()
    assert node.stores.describe()["reachable"] is True  # a real probe, as status makes
    assert node.get_quote("R03:US").source == "bright_data"


def test_redis_restarted_empty_mid_day_pays_nothing_until_the_nodes_have_reported(
    own_redis: RedisServer, market: FakeMarket, make_node: Callable[..., HybridDataSource]
) -> None:
    # The whole recovery (reports, the grace, the re-seed) is in tests/test_redis_recovery.py
    # with injected clocks; here the real wiring: a node that notices the loss pays nothing.
    a, b = make_node(own_redis.url, "node-a"), make_node(own_redis.url, "node-b")
    a.fetch_many(SYMBOLS[:6])
    b.fetch_many(SYMBOLS[6:10], force_fresh=True)
    assert a.ledger.statistics()["requests_billed"] == 10
    own_redis.restart()  # empty: no persistence
    served = b.fetch_many(SYMBOLS[10:12], force_fresh=True)
    served.update(a.fetch_many(SYMBOLS[12:14], force_fresh=True))
    assert all(getattr(q, "source", None) == "yfinance" for q in served.values()), served
    assert market.bright_data.billed_count == 10
    stats = a.ledger.statistics()
    assert stats["recovering"] is True and stats["budget_remaining"] == 0
    assert a.stores is not None
    recovery = a.stores.describe()["ledger"]
    assert recovery["state"] == "recovering" and recovery["reported"] == ["node-a", "node-b"]


def test_redis_url_is_masked_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    settings = load_settings(
        {"data_dir": tmp_path, "redis_url": "redis://:hunter2-secret@127.0.0.1:6399/0"}
    )
    assert "hunter2" not in str(settings.public_dict())
    assert settings.public_dict()["redis_url"] == "redis://:****@127.0.0.1:6399/0"
    assert "hunter2" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        load_settings({"data_dir": tmp_path, "redis_url": "http://:pw-secret@host:6379"})
    assert "pw-secret" not in caught.value.message
    assert "redis://" in caught.value.message and "\n" not in caught.value.message


def test_keys_in_redis_have_the_documented_shapes(
    redis_url: str, make_node: Callable[..., HybridDataSource]
) -> None:
    node = make_node(redis_url, "node-a", update_interval_seconds=600)
    node.get_quote("R01:US")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = set(client.keys("crawler:*"))
        day = node.ledger.day()
        assert {"crawler:quote:R01:US", "crawler:last:R01:US", "crawler:lease:R01:US",
                f"crawler:ledger:day:{day}"} <= keys  # fmt: skip
        assert 0 < client.pttl("crawler:lease:R01:US") <= 600_000
        assert 0 < client.pttl("crawler:quote:R01:US") <= 900_000
        assert client.ttl("crawler:last:R01:US") == -1
        assert client.get("crawler:lease:R01:US") == "node-a|done"
    finally:
        client.close()


def test_fresh_after_the_intervals_fetch_is_done_fetches_at_once(
    redis_url: str, market: FakeMarket, tmp_path: Path
) -> None:
    def no_waiting(seconds: float) -> None:
        raise AssertionError(f"waited {seconds}s although no fetch was in flight")

    one = HybridDataSource(node_settings(market, tmp_path, redis_url, "node-a"))
    other = HybridDataSource(node_settings(market, tmp_path, redis_url, "node-b"), sleep=no_waiting)
    try:
        one.get_quote("R01:US")
        assert other.get_quote("R01:US").from_cache is True  # the interval's quote, shared
        assert other.get_quote("R01:US", force_fresh=True).source == "bright_data"
        assert market.bright_data.billed_count == 2
    finally:
        one.cleanup()
        other.cleanup()


def test_a_lease_held_by_a_dead_node_costs_a_short_wait_not_a_payment(
    redis_url: str, market: FakeMarket, tmp_path: Path
) -> None:
    slept: list[float] = []
    dead = HybridDataSource(node_settings(market, tmp_path, redis_url, "node-dead"))
    alive = HybridDataSource(
        node_settings(market, tmp_path, redis_url, "node-b"), sleep=slept.append
    )
    try:
        assert dead.leases is not None
        dead.leases.acquire("R01:US", ttl_s=60)  # then "killed": never fetched, never done
        served = alive.fetch_many(["R01:US", "R02:US"])
        assert market.bright_data.billed_count == 1  # only R02; R01 stays node-dead's
        assert "node-dead" in str(served["R01:US"])
        assert 0 < sum(slept) <= alive.get_statistics()["leases"]["ttl_s"]
        assert alive.get_statistics()["leases"]["not_ready_in_time"] == 1
    finally:
        dead.cleanup()
        alive.cleanup()


def test_a_breaker_opened_on_one_node_stops_the_others(
    redis_url: str, market: FakeMarket, make_node: Callable[..., HybridDataSource]
) -> None:
    one, other = make_node(redis_url, "node-a"), make_node(redis_url, "node-b")
    market.bright_data.faults.set("*", status=503)
    for symbol in SYMBOLS[:6]:  # Bright Data fails (yfinance answers) until a's breaker opens
        one.get_quote(symbol)
        if one.breakers["bright_data"].state == "open":
            break
    assert one.breakers["bright_data"].state == "open"
    asked = len(market.bright_data.log_requests())
    quote = other.get_quote(SYMBOLS[10])
    assert quote.source == "yfinance"
    assert len(market.bright_data.log_requests()) == asked  # b never called the outage
    assert other.breakers["bright_data"].state == "closed"  # b's own breaker saw nothing
    assert other.usage["bright_data"].skipped == 1


def test_a_nodes_pacing_share_follows_the_work_it_leases(
    redis_url: str, market: FakeMarket, make_node: Callable[..., HybridDataSource]
) -> None:
    """Issue 18: three nodes collecting 10 symbols on a 20-request budget (the day's last
    collection) pay for all 10, each for the ones it leased. Each used to take a third of what
    was left (6 of 10 paid, 4 left to the free path while the budget had room)."""
    from datetime import UTC, datetime

    from crawler.orchestrator.spending import SpendingPolicy

    late = datetime(2026, 3, 10, 23, 50, tzinfo=UTC)
    nodes = [make_node(redis_url, f"node-{i}", total_budget=Decimal("0.03")) for i in range(3)]
    for node in nodes:
        assert node.stores is not None
        node.stores.nodes.beat({}, ttl_s=30)
    tracked = [(name, AssetClass.STOCKS) for name in SYMBOLS[:10]]
    collectors = [
        Collector(now=lambda: late, spending=SpendingPolicy(policy="paced")) for _ in nodes
    ]
    reports = run_together(
        [lambda n=n, c=c: c.collect(n, tracked) for n, c in zip(nodes, collectors, strict=True)]
    )
    assert market.bright_data.billed_count == 10
    assert sum(r.sources.get("bright_data", 0) for r in reports) == 10


def test_nodes_batching_on_yahoo_together_ask_for_each_symbol_once(
    redis_url: str, market: FakeMarket, make_node: Callable[..., HybridDataSource]
) -> None:
    """Without a Bright Data key every node takes yfinance's batch path: its symbols take the
    same fetch leases as paid ones, so nodes collecting at once do not ask Yahoo twice (one
    IP's rate limit is what a cluster is for)."""
    market.yahoo.faults.set(QUOTE_FAULT_KEY, latency_s=0.2)  # the nodes' batches overlap
    nodes = [
        make_node(redis_url, f"node-{i}", bright_data_api_key="", yfinance_max_rps=1000)
        for i in range(3)
    ]
    results = run_together([lambda n=n: n.fetch_many(SYMBOLS) for n in nodes])
    for result in results:  # every node answered every symbol
        assert all(not isinstance(outcome, Exception) for outcome in result.values()), result
    # Answered batches only: one refused for a crumb another node's login rotated is repeated
    # with a fresh crumb, as it must be.
    answered = [r for r in market.yahoo.requests_of("quote") if r.outcome == "quote"]
    asked = [s for r in answered for s in parse_qs(urlsplit(r.path).query)["symbols"][0].split(",")]
    charts = len(market.yahoo.requests_of("chart"))
    assert sorted(asked) == sorted(s.split(":")[0] for s in SYMBOLS) and charts == 0
