"""Three real daemons on one real Redis, against one fake market: the cluster as operators run it.

- A watchlist added on one node is collected by all three at once, and each symbol is paid
  for once (fetch leases + the shared cache).
- kill -9 of one node mid-collection: the other two carry on collecting (the dead node's
  in-flight symbols from their last-known quotes), `crawler status` on a survivor still
  answers, and every lease the dead node left behind expires within an interval.
- A `crawler fetch --fresh` storm from all three never takes the day past the budget, and the
  shared ledger matches what the fake market billed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

COST = Decimal("0.0015")
SYMBOLS = [f"C{i:02d}:US" for i in range(45)]
BUDGET_REQUESTS = 200
INTERVAL_S = 600


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as started:
        # ~20 ms per page: the three nodes' fetches overlap, as on a real network.
        started.bright_data.faults.set("*", latency_s=0.02)
        yield started


@pytest.fixture
def cluster(redis_url: str, market: FakeMarket, tmp_path: Path) -> Iterator[list[DaemonHarness]]:
    nodes = [
        DaemonHarness(
            market,
            tmp_path / f"node-{i}",
            REDIS_URL=redis_url,
            NODE_NAME=f"node-{i}",
            TOTAL_BUDGET=str(COST * BUDGET_REQUESTS),
            UPDATE_INTERVAL_SECONDS=str(INTERVAL_S),
            MAX_WORKERS="8",
            # Spend first come: this test is about who pays, not how the day is paced, nor
            # whether a free source could have served (the needs-based policy's question).
            BUDGET_PACING="off",
            BUDGET_POLICY="seed",
        )
        for i in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def together(actions: list[Callable[[], Any]]) -> list[Any]:
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = actions[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def collect(node: DaemonHarness) -> dict[str, Any]:
    status, body = node.client(timeout_s=120).post("/collect")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def test_three_daemons_one_redis(
    cluster: list[DaemonHarness], market: FakeMarket, redis_url: str
) -> None:
    one = cluster[0]
    added = one.cli("symbols", "add", *SYMBOLS)
    assert added.returncode == 0, added.stderr

    # 1. All three collect the same watchlist at once: each symbol is paid for once.
    reports = together([lambda n=n: collect(n) for n in cluster])
    assert market.bright_data.billed_count == len(SYMBOLS)
    for report in reports:
        assert report["symbols"] == len(SYMBOLS), report
        assert report["quotes"] == len(SYMBOLS), report["errors"]
    # Each node beats within half a second of finishing a collection.
    listed: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, body = cluster[1].client().get("/status")
        assert status == 200
        store = body["store"]
        assert store["backend"] == "redis" and store["reachable"] is True
        listed = {node["node"]: node for node in store["nodes"]}
        if all((node.get("last_collection") or {}).get("quotes") for node in listed.values()):
            break
        time.sleep(0.1)
    assert set(listed) == {"node-0", "node-1", "node-2"}
    assert all(node["last_collection"]["quotes"] == len(SYMBOLS) for node in listed.values())
    shown = cluster[2].cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "node-0" in shown.stdout and "nodes (3 alive)" in shown.stdout

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        # 2. kill -9 one node in the middle of a collection; the others carry on.
        client.delete(*client.keys("crawler:quote:*"), *client.keys("crawler:lease:*"))
        market.bright_data.faults.set("*", latency_s=0.1)  # 45 symbols / 8 workers: ~0.6 s
        market.yahoo.faults.set("*", latency_s=0.5)  # whatever the source, still running
        victim = cluster[0]
        killer = threading.Timer(0.25, victim.kill)
        killer.start()
        with pytest.raises(Exception):  # noqa: B017 - the connection dies with the daemon
            collect(victim)
        killer.join()
        assert not victim.alive()
        left_behind = client.keys("crawler:lease:*")
        # Fresh-quote keys of the symbols it had in flight: leases not marked done, no quote
        # stored (a fetch can land just before the kill, ahead of its lease's "done").
        orphans = [
            quote_key
            for key, holder in zip(left_behind, client.mget(left_behind), strict=True)
            if holder == "node-0"
            and not client.exists(quote_key := key.replace("crawler:lease:", "crawler:quote:", 1))
        ]
        for key in left_behind:
            assert 0 < client.pttl(key) <= INTERVAL_S * 1000  # everything left expires
        survivors = together([lambda n=n: collect(n) for n in cluster[1:]])
        for report in survivors:
            # Every symbol answered: the ones node-0 had in flight (at most its 8 workers)
            # from their last-known quotes until its leases expire, the rest fetched.
            assert report["quotes"] == len(SYMBOLS), report["errors"]
            assert report["stale"] <= 8, report
        body = cluster[1].client().get("/status")[1]
        assert body["store"]["reachable"] is True
        assert {node["node"] for node in body["store"]["nodes"]} >= {"node-1", "node-2"}
        # Once the dead node's leases run out (one interval; PEXPIRE stands in for the wait),
        # the next collection fetches its symbols: nothing of it is left stale.
        for key in left_behind:
            client.pexpire(key, 1)
        deadline = time.monotonic() + 5
        while any(client.exists(key) for key in left_behind) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert orphans, "the killed node left no fetch in flight: nothing to take over"
        assert not any(client.exists(key) for key in orphans)  # not fetched while leased
        after = collect(cluster[1])
        assert after["quotes"] == len(SYMBOLS) and after["stale"] == 0, after
        assert all(client.exists(key) for key in orphans)  # fetched afresh, not left over
    finally:
        client.close()

    # 3. A --fresh storm from the two survivors and a new node-0 on the same data dir: never
    # past the budget, and the shared ledger matches what the fake market billed.
    market.bright_data.faults.set("*", latency_s=0.02)
    market.yahoo.faults.clear()
    cluster[0].start()
    storm = together([lambda n=n: n.cli("fetch", "--fresh", *SYMBOLS, timeout_s=120)
                      for n in cluster])  # fmt: skip
    assert all(result.returncode in (0, 1) for result in storm), [r.stderr for r in storm]
    budget = cluster[1].client().get("/status")[1]["budget"]
    fake = market.bright_data.billed_count
    # The killed node's reservations stay open, counted as spent (the safe side): the ledger
    # never claims more than was billed, and everything billed is on it, settled or open.
    assert budget["requests_billed"] <= fake <= budget["requests_used"] <= BUDGET_REQUESTS
    assert budget["open_reservations"] <= 8
    assert Decimal(budget["total_cost"]) == COST * budget["requests_used"]


def test_status_shows_a_lost_redis_and_reconnects(market: FakeMarket, tmp_path: Path) -> None:
    from tests.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    # With AOF, as the README asks: it comes back with the ledger (a Redis that comes back
    # empty is tests/faults/test_redis_loss.py's).
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    node = DaemonHarness(market, tmp_path / "node", REDIS_URL=server.url, NODE_NAME="solo",
                         BUDGET_POLICY="seed")  # fmt: skip
    try:
        node.start()
        assert node.cli("symbols", "add", "C01:US").returncode == 0
        assert collect(node)["sources"] == {"bright_data": 1}
        shown = node.cli("status")
        assert "Redis runs with" not in shown.stdout, shown.stdout  # AOF, noeviction: all well
        server.stop()
        shown = node.cli("status")
        assert shown.returncode == 0, shown.stderr
        assert "UNREACHABLE" in shown.stdout
        fetched = node.cli("fetch", "--fresh", "--json", "C02:US")
        assert fetched.returncode == 0, fetched.stderr
        assert json.loads(fetched.stdout)["quotes"][0]["source"] == "yfinance"
        assert market.bright_data.billed_count == 1  # nothing paid while Redis was away
        server.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if node.client().get("/status")[1]["store"]["reachable"]:
                break
            time.sleep(0.1)
        fetched = node.cli("fetch", "--fresh", "--json", "C03:US")
        assert json.loads(fetched.stdout)["quotes"][0]["source"] == "bright_data"
    finally:
        node.kill()
        server.stop()
