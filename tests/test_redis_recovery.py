"""The cluster ledger after Redis loses its data (`crawler.store.ledger.recovery`): the store-level
rules, on a real redis-server with injected clocks (the daemon-level scenarios are in
tests/faults/test_redis_loss.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from crawler.store.ledger.recovery import RECOVERY_GRACE_S
from crawler.store.ledger.redis import RedisLedger
from crawler.store.redis_client import PERSISTENCE, RedisConnection
from crawler.utils.exceptions import BudgetExhaustedError, StoreUnavailableError
from tests.redis_server import RedisServer, redis_server_binary

COST = Decimal("0.0015")
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOON

    def wall(self) -> datetime:
        return self.now

    def mono(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(redis_url: str, tmp_path: Path, clock: Clock) -> Iterator[Callable[..., RedisLedger]]:
    made: list[tuple[RedisLedger, RedisConnection]] = []
    live: list[str] = []

    def build(node: str, requests: int = 20, timezone: str = "UTC") -> RedisLedger:
        conn = RedisConnection(redis_url)
        if node not in live:
            live.append(node)  # as if every ledger's node beat
        ledger = RedisLedger(conn, tmp_path / node, COST * requests, COST, timezone=timezone,
                             now=clock.wall, clock=clock.mono, boot_id=lambda: "boot-1",
                             node=node, live_nodes=lambda: list(live))  # fmt: skip
        made.append((ledger, conn))
        return ledger

    yield build
    for ledger, conn in made:
        ledger.close()
        conn.close()


def pay(ledger: RedisLedger, requests: int) -> None:
    for _ in range(requests):
        ledger.settle(ledger.reserve())


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def test_a_new_cluster_pays_at_once(make: Callable[..., RedisLedger]) -> None:
    a, b = make("a"), make("b")
    pay(a, 2)
    pay(b, 3)
    assert a.statistics()["requests_billed"] == 5
    assert a.recovery_status()["state"] == "ok"


def test_after_a_flush_the_day_is_the_sum_of_what_the_nodes_paid(
    make: Callable[..., RedisLedger], redis_url: str, clock: Clock
) -> None:
    a, b = make("a"), make("b")
    pay(a, 5)  # a saw 5 ...
    pay(b, 15)  # ... b paid the rest of the day after a's last look
    flush(redis_url)
    with pytest.raises(StoreUnavailableError, match="waiting for b"):
        a.reserve()  # a reports its 5; b has not reported yet
    assert a.statistics()["recovering"] is True
    assert a.statistics()["budget_remaining"] == 0
    with pytest.raises(StoreUnavailableError):
        b.can_reserve()  # b reports its 15; the grace (two heartbeats) is not over
    clock.advance(RECOVERY_GRACE_S)
    with pytest.raises(BudgetExhaustedError):
        a.reserve()
    stats = a.statistics()
    assert stats["requests_used"] == 20 and stats["total_cost"] == COST * 20
    assert stats["window_cost"] == COST * 20  # the 24-hour window came back too
    assert stats["reseeded_cost"] == COST * 20 and stats["recovering"] is False
    assert a.recovery_status()["reported"] == ["a", "b"]


def test_the_highest_total_seen_counts_when_a_node_is_gone_for_good(
    make: Callable[..., RedisLedger], redis_url: str, clock: Clock
) -> None:
    a, b = make("a", requests=20), make("b", requests=20)
    pay(b, 12)
    pay(a, 1)  # a saw 13: b's spend counts even if b never reports
    flush(redis_url)
    with pytest.raises(StoreUnavailableError):
        a.reserve()
    clock.advance(RECOVERY_GRACE_S * 10)
    with pytest.raises(StoreUnavailableError, match="waiting for b"):
        a.reserve()  # b is expected (it beats): nobody pays until it reports
    status = a.recovery_status()
    assert status["waiting_for"] == ["b"] and status["timed_out"] is True
    assert "SREM crawler:ledger:expected" in status["message"]
    client = redis.Redis.from_url(redis_url)
    client.srem("crawler:ledger:expected", "b")  # the operator gives up on b
    client.close()
    b.close()
    a._live_nodes = lambda: ["a"]  # and b no longer beats
    pay(a, 7)  # 13 seen + 7 = the budget
    with pytest.raises(BudgetExhaustedError):
        a.reserve()


def test_a_changed_time_zone_after_a_flush_keeps_the_clusters_day(
    make: Callable[..., RedisLedger], redis_url: str, clock: Clock
) -> None:
    a = make("a", requests=20)
    pay(a, 20)
    assert a.day() == "2026-03-02"
    flush(redis_url)
    a.close()
    clock.advance(RECOVERY_GRACE_S)
    east = make("a", requests=20, timezone="Pacific/Kiritimati")  # already 03-03 there
    with pytest.raises(StoreUnavailableError):
        east.reserve()
    clock.advance(RECOVERY_GRACE_S)
    with pytest.raises(BudgetExhaustedError):
        east.reserve()
    assert east.day() == "2026-03-02"
    assert east.statistics()["requests_used"] == 20


def test_a_lost_day_key_under_a_live_epoch_is_recovered(
    make: Callable[..., RedisLedger], redis_url: str, clock: Clock
) -> None:
    a = make("a", requests=20)
    pay(a, 8)
    client = redis.Redis.from_url(redis_url)
    client.delete("crawler:ledger:day:2026-03-02")  # what eviction does
    client.close()
    with pytest.raises(StoreUnavailableError, match="evicted"):
        a.reserve()
    clock.advance(RECOVERY_GRACE_S)
    pay(a, 12)
    with pytest.raises(BudgetExhaustedError):
        a.reserve()


def test_a_release_is_not_counted_in_the_report(
    make: Callable[..., RedisLedger], redis_url: str, clock: Clock
) -> None:
    a = make("a", requests=20)
    pay(a, 4)
    a.release(a.reserve())
    pay(a, 1)  # the total a last saw is 5 again (the highest it saw counted the hold)
    flush(redis_url)
    with pytest.raises(StoreUnavailableError):
        a.reserve()
    clock.advance(RECOVERY_GRACE_S)
    pay(a, 15)
    with pytest.raises(BudgetExhaustedError):
        a.reserve()
    assert a.statistics()["requests_billed"] == 20


@pytest.mark.parametrize(
    ("persistent", "extra", "warned"),
    [
        (False, (), "appendonly no"),
        (True, (), None),
        (True, ("--maxmemory-policy", "allkeys-lru"), "maxmemory-policy allkeys-lru"),
        (True, ("--rename-command", "CONFIG", '""'), "persistence unknown"),
    ],
)
def test_status_says_how_redis_persists(
    tmp_path: Path, persistent: bool, extra: tuple[str, ...], warned: str | None
) -> None:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    server = RedisServer(tmp_path / "redis", persistent=persistent, extra_args=extra)
    server.start()
    conn = RedisConnection(server.url)
    try:
        shown = conn.persistence()
    finally:
        conn.close()
        server.stop()
    if warned is None:
        assert shown["warning"] is None, shown
        assert shown["appendonly"] == "yes" and shown["maxmemory_policy"] == "noeviction"
    else:
        assert warned in shown["warning"] and PERSISTENCE in shown["warning"], shown


# -- the watchlist -------------------------------------------------------------------------


def test_a_flushed_watchlist_comes_back_without_its_removals(
    redis_url: str, tmp_path: Path
) -> None:
    from crawler.normalizer.schemas import AssetClass
    from crawler.store.watchlist import Watchlist
    from crawler.store.watchlist.redis import RedisWatchlist

    conns: list[RedisConnection] = []

    def watchlist(node: str) -> RedisWatchlist:
        conns.append(RedisConnection(redis_url))
        return RedisWatchlist(conns[-1], Watchlist(tmp_path / node / "watchlist"), node=node)

    a, b = watchlist("a"), watchlist("b")
    try:
        for name in ("X:US", "Y:US", "Z:US"):
            a.add(name, AssetClass.STOCKS)
        assert b.symbols() == ["X:US", "Y:US", "Z:US"]  # b's copy: all three
        a.remove("Y:US")
        a.remove("Z:US")
        a.add("Z:US", AssetClass.STOCKS)  # re-added: newer than its tombstone
        flush(redis_url)
        assert b.symbols() == ["X:US", "Y:US", "Z:US"]  # b alone rebuilt from its old copy
        assert a.symbols() == ["X:US", "Z:US"]  # a merged: Y's tombstone wins, Z's re-add too
        assert b.symbols() == ["X:US", "Z:US"]
        assert b.local.symbols() == ["X:US", "Z:US"]  # and the copies follow
        rebuilt = a.rebuild_status()
        assert rebuilt is not None and rebuilt["by"] == "b" and rebuilt["merged"] == ["b", "a"]
        a.add("W:US", AssetClass.STOCKS)  # versions go on above everything known
        assert a.symbols() == ["X:US", "Z:US", "W:US"]
    finally:
        a.close()
        b.close()
        for conn in conns:
            conn.close()


def test_a_new_node_adopts_the_clusters_list_and_a_new_cluster_is_seeded(
    redis_url: str, tmp_path: Path
) -> None:
    from crawler.normalizer.schemas import AssetClass
    from crawler.store.watchlist import Watchlist
    from crawler.store.watchlist.redis import RedisWatchlist

    first_local = Watchlist(tmp_path / "first")
    first_local.add("S:US", AssetClass.STOCKS)  # a node that ran alone before
    conn = RedisConnection(redis_url)
    first = RedisWatchlist(conn, first_local, node="first")
    assert first.symbols() == ["S:US"]  # seeded the new cluster
    late_local = Watchlist(tmp_path / "late")
    late_local.add("L:US", AssetClass.STOCKS)
    late = RedisWatchlist(conn, late_local, node="late")
    try:
        assert late.symbols() == ["S:US"]  # joins: the cluster's list, not its own
        assert late.local.symbols() == ["S:US"]
        assert first.rebuild_status() is None  # nothing was lost
    finally:
        first.close()
        late.close()
        conn.close()
