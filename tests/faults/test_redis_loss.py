"""Redis forgets (FLUSHALL) under two real daemons: the ledger fails closed (issue 23, item 1).

The attack's scenario: budget 200 requests, pacing off; node A pays 5, node B's collection
pays 195 (the whole budget), FLUSHALL, then A's `fetch --fresh` of 150 new symbols. Before
the fix A re-seeded the day from the 5 it had seen itself and paid all 150 (350 billed, 175 %).
Now no node pays until every live node has reported its own spend (B within one heartbeat);
the re-seed is the sum of the nodes' own spends, so the day is known to be spent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

COST = Decimal("0.0015")
BUDGET_REQUESTS = 200
#: One heartbeat (10 s) plus slack: how long a live node may take to report after a loss.
REPORT_WITHIN_S = 30.0


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as started:
        yield started


def node(market: FakeMarket, base: Path, url: str, name: str, **extra: str) -> DaemonHarness:
    settings = {
        "REDIS_URL": url,
        "NODE_NAME": name,
        "TOTAL_BUDGET": str(COST * BUDGET_REQUESTS),
        "BUDGET_PACING": "off",
        "BUDGET_POLICY": "seed",  # Bright Data first, as when the issue was filed: money moves
        "MAX_WORKERS": "8",
        "YFINANCE_MAX_RPS": "1000",  # the free path while a recovery holds the money: no wait
    }
    return DaemonHarness(market, base / name, **{**settings, **extra})


def symbols(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:03d}:US" for i in range(count)]


def status(daemon: DaemonHarness) -> dict[str, Any]:
    code, body = daemon.client().get("/status")
    assert code == 200, body
    assert isinstance(body, dict)
    return body


def wait_recovered(daemon: DaemonHarness) -> dict[str, Any]:
    """Poll /status until the ledger's recovery is over (the other node reports on its beat)."""
    deadline = time.monotonic() + REPORT_WITHIN_S
    body = status(daemon)
    while time.monotonic() < deadline:
        body = status(daemon)
        if (body["store"].get("ledger") or {}).get("state") == "ok":
            return body
        time.sleep(0.2)
    raise AssertionError(f"the recovery did not end: {body['store']}")


def fetch_fresh(daemon: DaemonHarness, names: list[str]) -> dict[str, Any]:
    result = daemon.cli("fetch", "--fresh", "--json", *names, timeout_s=300)
    assert result.returncode in (0, 1), result.stderr
    out = json.loads(result.stdout)
    assert isinstance(out, dict)
    return out


def spend_the_day(a: DaemonHarness, b: DaemonHarness, market: FakeMarket) -> None:
    """A pays 5 by hand; B's collection of 195 watched symbols pays the rest of the day."""
    a.start()
    b.start()
    fetch_fresh(a, symbols("A", 5))
    assert market.bright_data.billed_count == 5
    added = a.cli("symbols", "add", *symbols("B", 195))
    assert added.returncode == 0, added.stderr
    code, report = b.client(timeout_s=300).post("/collect")
    assert code == 200, report
    assert market.bright_data.billed_count == BUDGET_REQUESTS


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def test_flushall_after_the_day_is_spent_pays_nothing_more(
    redis_url: str, market: FakeMarket, tmp_path: Path
) -> None:
    a, b = node(market, tmp_path, redis_url, "node-a"), node(market, tmp_path, redis_url, "node-b")
    try:
        spend_the_day(a, b, market)
        flush(redis_url)
        served = fetch_fresh(a, symbols("N", 150))
        billed = market.bright_data.billed_count
        print(f"two-node FLUSHALL: billed {billed} of a {BUDGET_REQUESTS}-request budget")
        assert billed <= BUDGET_REQUESTS, billed
        sources = {q["source"] for q in served["quotes"]}
        assert "bright_data" not in sources, sources  # free sources served meanwhile
        # The recovery ends once B has reported (its heartbeat): the day is known to be spent.
        body = wait_recovered(a)
        budget = body["budget"]
        assert budget["requests_used"] >= BUDGET_REQUESTS, budget
        assert Decimal(budget["reseeded_cost"]) == COST * BUDGET_REQUESTS, budget
        assert set(body["store"]["ledger"]["reported"]) == {"node-a", "node-b"}
        fetch_fresh(a, symbols("M", 20))  # the spend is known: still nothing more
        fetch_fresh(b, symbols("L", 20))
        assert market.bright_data.billed_count == billed == BUDGET_REQUESTS
        shown = a.cli("status")
        assert shown.returncode == 0, shown.stderr
        assert "recovered" in shown.stdout, shown.stdout
        # The fixture's Redis runs without persistence, as the attacked one did: status says so.
        assert "appendonly no" in shown.stdout and "appendfsync everysec" in shown.stdout
    finally:
        a.kill()
        b.kill()


def test_a_killed_node_is_waited_for_and_reports_when_it_comes_back(
    redis_url: str, market: FakeMarket, tmp_path: Path
) -> None:
    a, b = node(market, tmp_path, redis_url, "node-a"), node(market, tmp_path, redis_url, "node-b")
    try:
        spend_the_day(a, b, market)
        # A has seen B beating (every node lists its peers at each of its own beats; a node
        # that joins, pays and dies within one beat of a loss could go unnoticed).
        deadline = time.monotonic() + REPORT_WITHIN_S
        while "node-b" not in status(a)["store"]["ledger"].get("peers", []):
            assert time.monotonic() < deadline, status(a)["store"]["ledger"]
            time.sleep(0.2)
        b.kill()  # its heartbeat key outlives it: A saw it alive just before the loss
        flush(redis_url)
        fetch_fresh(a, symbols("N", 10))
        assert market.bright_data.billed_count == BUDGET_REQUESTS
        ledger = status(a)["store"]["ledger"]
        assert ledger["state"] == "recovering" and ledger["waiting_for"] == ["node-b"], ledger
        shown = a.cli("status")
        assert "node-b" in shown.stdout and "free sources only" in shown.stdout, shown.stdout
        assert "Bright Data paused: Redis lost the cluster's spend" in shown.stdout  # the money
        b.start()  # B reports what it paid from its data dir
        body = wait_recovered(a)
        assert body["budget"]["requests_used"] >= BUDGET_REQUESTS, body["budget"]
        fetch_fresh(a, symbols("M", 10))
        assert market.bright_data.billed_count == BUDGET_REQUESTS
    finally:
        a.kill()
        b.kill()


def test_a_changed_time_zone_after_the_flush_opens_no_fresh_day(
    redis_url: str, market: FakeMarket, tmp_path: Path
) -> None:
    a, b = node(market, tmp_path, redis_url, "node-a"), node(market, tmp_path, redis_url, "node-b")
    try:
        spend_the_day(a, b, market)
        day = status(a)["budget"]["day"]
        flush(redis_url)
        # A restarts in a zone whose date is not today's UTC date (one always differs).
        now = datetime.now(UTC)
        zone = next(z for z in ("Pacific/Kiritimati", "Etc/GMT+12")
                    if now.astimezone(ZoneInfo(z)).date() != now.date())  # fmt: skip
        a.stop()
        a.env["BUDGET_TIMEZONE"] = zone
        a.start()
        fetch_fresh(a, symbols("Z", 30))
        body = wait_recovered(a)
        fetch_fresh(a, symbols("Y", 30))
        billed = market.bright_data.billed_count
        print(f"FLUSHALL + BUDGET_TIMEZONE={zone}: billed {billed} of {BUDGET_REQUESTS}")
        assert billed == BUDGET_REQUESTS
        assert body["budget"]["day"] == day  # the cluster's day, restored from the nodes
        assert Decimal(body["budget"]["window_cost"]) >= COST * BUDGET_REQUESTS
    finally:
        a.kill()
        b.kill()


def listed(daemon: DaemonHarness) -> list[str]:
    result = daemon.cli("symbols", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [row["symbol"] for row in json.loads(result.stdout)["symbols"]]


def test_the_watchlist_is_rebuilt_from_the_nodes_and_removals_stay_removed(
    redis_url: str, market: FakeMarket, tmp_path: Path
) -> None:
    """Item 2: every node holds a copy; after FLUSHALL the list comes back from them, and a
    symbol removed before the loss (or after it) is not brought back by a node whose copy is
    older than the removal."""
    a, b, c = (node(market, tmp_path, redis_url, name) for name in ("node-a", "node-b", "node-c"))
    names = symbols("W", 10)
    try:
        for daemon in (a, b, c):
            daemon.start()
        assert a.cli("symbols", "add", *names).returncode == 0
        assert listed(c) == names  # c's copy holds all ten ...
        c.stop()  # ... and c sleeps through what follows
        assert b.cli("symbols", "remove", names[1], names[2]).returncode == 0  # before the loss
        assert listed(a) == [n for n in names if n not in names[1:3]]
        flush(redis_url)
        # Redis is empty; a removal now rebuilds the list from a's copy first, then removes.
        assert a.cli("symbols", "remove", names[3]).returncode == 0
        c.start()  # c's copy is older than all three removals: it must not undo them
        expected = [n for n in names if n not in names[1:4]]
        for daemon in (c, b, a):
            assert listed(daemon) == expected, daemon.base.name
        body = status(c)
        rebuilt = body["store"]["watchlist_rebuilt"]
        assert rebuilt["symbols"] == len(expected) and rebuilt["removals"] == 3, rebuilt
        assert set(rebuilt["merged"]) == {"node-a", "node-b", "node-c"}, rebuilt
        shown = c.cli("status")
        assert "watchlist rebuilt" in shown.stdout, shown.stdout
        assert "Redis lost the shared list" in a.log_tail(1_000_000)
    finally:
        for daemon in (a, b, c):
            daemon.kill()


def test_kill_9_mid_collection_then_flushall_never_overspends(
    redis_url: str, market: FakeMarket, tmp_path: Path
) -> None:
    """A node killed while paying, then Redis emptied: what it had asked for (granted, or
    asked and never answered) is in its own record, so the re-seeded day holds at least what
    was billed, and the day never goes past the budget."""
    budget = 100
    a = node(market, tmp_path, redis_url, "node-a", TOTAL_BUDGET=str(COST * budget))
    market.bright_data.faults.set("*", latency_s=0.05)
    try:
        a.start()
        assert a.cli("symbols", "add", *symbols("K", 150)).returncode == 0
        # The collection runs in the daemon; kill -9 it once 40 are billed.
        proc = subprocess.Popen([sys.executable, "-m", "crawler", "collect"], env=a.env,
                                cwd=a.base, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while market.bright_data.billed_count < 40:
            assert time.monotonic() < deadline, market.bright_data.billed_count
            time.sleep(0.01)
        a.kill()
        proc.wait(30)
        flush(redis_url)
        billed_before = market.bright_data.billed_count
        market.bright_data.faults.clear()
        a.start()
        fetch_fresh(a, symbols("J", 150))  # the recovery's grace: free sources meanwhile
        body = wait_recovered(a)
        assert body["budget"]["requests_used"] >= billed_before, (body["budget"], billed_before)
        fetch_fresh(a, symbols("H", 150))
        billed = market.bright_data.billed_count
        print(f"kill -9 at {billed_before} billed, FLUSHALL: {billed} billed of {budget}")
        assert billed <= budget
    finally:
        a.kill()
