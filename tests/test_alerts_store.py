"""One contract for both alert stores (embedded diskcache, a real redis-server): rules keep
their fields and order, states round-trip, a firing is claimed once across processes' worth of
clients, and a store that cannot be reached is a StorageError."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.alerts.rules import AlertRule, RuleState
from crawler.alerts.store import (
    MAX_RULES,
    AlertStore,
    EmbeddedAlertStore,
    RedisAlertStore,
)
from crawler.store.redis_client import RedisConnection
from crawler.utils.exceptions import StorageError, StoreUnavailableError, UsageError


@pytest.fixture(params=["embedded", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    """(backend, a factory of stores over one shared place)."""
    if request.param == "embedded":
        yield "embedded", lambda **kw: EmbeddedAlertStore(tmp_path / "alerts", **kw)
        return
    url = request.getfixturevalue("redis_url")
    connections: list[RedisConnection] = []

    def make(**kw: int) -> RedisAlertStore:
        connections.append(RedisConnection(url))
        return RedisAlertStore(connections[-1], **kw)

    yield "redis", make
    for conn in connections:
        conn.close()


def store_of(make_store: tuple[str, object], **kw: int) -> AlertStore:
    factory = make_store[1]
    assert callable(factory)
    store: AlertStore = factory(**kw)
    return store


def test_rules_round_trip_in_id_order(make_store: tuple[str, object]) -> None:
    store = store_of(make_store)
    version = store.version()
    first = store.add(
        AlertRule.build(
            kind="above", symbol="AAPL:US", threshold="200.5",
            notify=("json://u:pw@127.0.0.1:9/",),
        )
    )  # fmt: skip
    second = store.add(AlertRule.build(kind="stale", symbol="VOD:LN", duration="15m"))
    third = store.add(AlertRule.build(kind="budget", threshold="80"))
    assert [first.id, second.id, third.id] == [1, 2, 3]
    assert store.version() > version
    again = store_of(make_store)  # another client sees the same
    rules = again.rules()
    assert rules == [first, second, third]
    assert rules[0].threshold == Decimal("200.5") and rules[0].notify == (
        "json://u:pw@127.0.0.1:9/",
    )
    assert again.states() == {1: RuleState(), 2: RuleState(), 3: RuleState()}
    assert again.remove(2) and not again.remove(2)
    assert [rule.id for rule in store.rules()] == [1, 3]
    assert store.add(AlertRule.build(kind="below", symbol="X:US", threshold="1")).id == 4


def test_states_round_trip_and_not_for_removed_rules(make_store: tuple[str, object]) -> None:
    store = store_of(make_store)
    rule = store.add(
        AlertRule.build(kind="move", symbol="AAPL:US", threshold="3", basis="last-alert")
    )
    state = RuleState(armed=False, fires=2, reference=Decimal("101.25"), fired_value="+3.00%")
    store.save_state(rule.id, state)
    assert store_of(make_store).state(rule.id) == state
    store.remove(rule.id)
    store.save_state(rule.id, state)  # a late save of a removed rule writes nothing
    assert store.states() == {}


def test_a_firing_is_claimed_once_among_racing_clients(make_store: tuple[str, object]) -> None:
    stores = [store_of(make_store) for _ in range(6)]
    rule = stores[0].add(AlertRule.build(kind="above", symbol="AAPL:US", threshold="1"))
    wins: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def race(store: AlertStore) -> None:
        barrier.wait()
        wins.append(store.claim(rule.id, 1, "node"))

    threads = [threading.Thread(target=race, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(wins) == [False] * 5 + [True]
    assert stores[1].claim(rule.id, 2)  # the next firing is a new claim


def test_the_number_of_rules_is_bounded(make_store: tuple[str, object]) -> None:
    store = store_of(make_store, max_rules=3)
    for _ in range(3):
        store.add(AlertRule.build(kind="budget", threshold="50"))
    with pytest.raises(UsageError, match="already 3 alerts"):
        store.add(AlertRule.build(kind="budget", threshold="50"))
    assert MAX_RULES == 1000


def test_an_unreachable_redis_is_a_storage_error() -> None:
    store = RedisAlertStore(RedisConnection("redis://127.0.0.1:1/0"))
    with pytest.raises(StoreUnavailableError):
        store.rules()
    with pytest.raises(StorageError):
        store.claim(1, 1)


def test_a_firing_waits_while_redis_is_away_and_goes_once_it_is_back(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from crawler.alerts.evaluator import AlertEvaluator
    from crawler.events import EventBus
    from crawler.normalizer.schemas import Quote
    from tests.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    server = RedisServer(tmp_path / "redis", persistent=True)  # it comes back with its keys
    server.start()
    connection = RedisConnection(server.url)
    try:
        store = RedisAlertStore(connection)
        rule = store.add(AlertRule.build(kind="above", symbol="AAPL:US", threshold="100"))
        bus = EventBus()
        evaluator = AlertEvaluator(store, events=bus, node="n1")
        bus.add_quote_listener(evaluator.on_quote)
        evaluator.reload()
        now = datetime.now(UTC)
        quote = Quote(symbol="AAPL:US", price=Decimal("101"), source="test", as_of=now)
        server.stop()
        bus.publish_quote(quote)
        evaluator.drain()  # the claim cannot be made: nothing delivered, still armed
        assert evaluator.fired == 0
        assert evaluator.rules()[0][1].armed
        server.start()
        assert connection.ping()
        bus.publish_quote(quote)
        evaluator.drain()
        assert evaluator.fired == 1
        assert store.state(rule.id).fires == 1
    finally:
        connection.close()
        server.stop()
