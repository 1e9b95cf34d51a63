"""Alerts end to end: the real daemon (`python -m crawler start --foreground`), the fake market's
streamer ticking over a real websocket, the real CLI, and Apprise posting to a real local HTTP
receiver (`json://127.0.0.1:PORT/hook`).

- A streamed tick crossing a line reaches the receiver once, the event stream once and the log;
  ticks past the line send nothing more until the price comes back past the band (re-armed);
  the next crossing is the second notice. The notify URL's password never shows.
- A stale-quote alert fires when the stream stops ticking; a budget alert when fetches spend
  past its share.
- A receiver that hangs does not hold a collection up: the collection completes while the
  notice is still blocked in the receiver.
- Three daemons on one Redis, each seeing the same crossing on its own stream: one notice.

No sleeps: every wait polls for its condition.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fakemarket import FakeMarket
from tests.alert_receiver import Receiver
from tests.faults.daemon_harness import DaemonHarness

SECRET = "S3cretPw0rd"


def wait_until(predicate: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


def alerts(daemon: DaemonHarness) -> dict[str, Any]:
    status, body = daemon.client().get("/alerts")
    assert status == 200 and isinstance(body, dict), body
    return body


def last_quote(daemon: DaemonHarness, symbol: str) -> dict[str, Any]:
    status, body = daemon.client().get("/status")
    assert status == 200 and isinstance(body, dict)
    for row in body["symbols"]:
        if row["symbol"] == symbol:
            return dict(row.get("last_quote") or {})
    return {}


class EventReader:
    """`GET /v1/events?types=alert` read on a thread: the alert events, as they come."""

    def __init__(self, daemon: DaemonHarness) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw = ""
        self._stream = daemon.client(timeout_s=120).stream(
            "GET", "/events", query={"types": "alert"}
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = ""
        try:
            for chunk in self._stream:
                text = chunk.decode()
                self.raw += text
                buffer += text
                while "\n" in buffer:
                    line, buffer = buffer.split("\n", 1)
                    if line.startswith("data: "):
                        self.events.append(json.loads(line[6:]))
        except Exception:  # the daemon stopping ends the stream
            return


def cli_ok(daemon: DaemonHarness, *args: str) -> str:
    done = daemon.cli(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket(stream_tick_rate=20.0) as started:
        yield started


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


def start(market: FakeMarket, base: Path, **settings: str) -> DaemonHarness:
    settings.setdefault("ALERTS_CHECK_INTERVAL_SECONDS", "0.2")
    settings.setdefault("STREAM_HISTORY_INTERVAL_SECONDS", "3600")
    daemon = DaemonHarness(market, base, **settings)
    daemon.start()
    return daemon


def test_a_streamed_crossing_is_delivered_once_until_rearmed(
    market: FakeMarket, receiver: Receiver, tmp_path: Path
) -> None:
    base = market.stream.price_of("AAPL")
    line = Decimal(str(round(base * 1.1, 2)))
    daemon = start(market, tmp_path)
    try:
        cli_ok(daemon, "symbols", "add", "AAPL:US")
        url = receiver.url("/hook", auth=f"alertuser:{SECRET}")
        added = cli_ok(daemon, "alerts", "add", "AAPL:US", "--above", str(line), "--notify", url)
        assert added.startswith("added alert 1: AAPL:US above") and SECRET not in added
        wait_until(lambda: last_quote(daemon, "AAPL:US").get("source") == "yahoo_stream", "a tick")
        wait_until(lambda: alerts(daemon)["evaluator"]["rules"] == 1, "the rule loaded")
        reader = EventReader(daemon)
        assert receiver.count() == 0  # under the line: nothing

        # 1. A tick past the line: one notice, one event.
        market.stream.set_price("AAPL", float(line) * 1.05)
        wait_until(lambda: receiver.count() == 1, "the notice")
        # Many more ticks above the line (and hovering at it) send nothing more.
        frames = market.stream.frames_sent
        wait_until(lambda: market.stream.frames_sent >= frames + 40, "40 more ticks")
        market.stream.set_price("AAPL", float(line) * 0.999)  # back under, inside the band
        frames = market.stream.frames_sent
        wait_until(lambda: market.stream.frames_sent >= frames + 40, "40 more ticks")
        market.stream.set_price("AAPL", float(line) * 1.01)
        frames = market.stream.frames_sent
        wait_until(lambda: market.stream.frames_sent >= frames + 40, "40 more ticks")
        assert receiver.count() == 1
        listed = alerts(daemon)["alerts"][0]
        assert (listed["state"], listed["fires"]) == ("fired", 1)

        notice = receiver.notices[0]
        assert notice["title"] == f"crawler alert: AAPL:US above {line}"
        assert notice["message"].startswith("AAPL:US at ") and "yahoo_stream" in notice["message"]
        expected_auth = "Basic " + base64.b64encode(f"alertuser:{SECRET}".encode()).decode()
        assert receiver.authorizations[0] == expected_auth  # the secret was used, not shown

        # 2. Back past the band: re-armed; the next crossing is the second notice.
        market.stream.set_price("AAPL", float(line) * 0.98)
        wait_until(lambda: alerts(daemon)["alerts"][0]["state"] == "armed", "the re-arm")
        assert receiver.count() == 1
        market.stream.set_price("AAPL", float(line) * 1.05)
        wait_until(lambda: receiver.count() == 2, "the second notice")
        wait_until(lambda: len(reader.events) == 2, "two alert events")
        assert [event["fires"] for event in reader.events] == [1, 2]
        event = reader.events[0]
        assert event["type"] == "alert" and event["rule"] == f"AAPL:US above {line}"
        assert event["notify"] == [f"json://alertuser:****@127.0.0.1:{receiver.port}/hook"]

        # 3. `alerts test` reaches it too; a refusing target is one line and exit 1.
        tested = daemon.cli("alerts", "test")
        assert tested.returncode == 0, tested.stderr
        assert receiver.notices[-1]["title"] == "crawler alert: test"
        receiver.status = 500
        refused = daemon.cli("alerts", "test", "--notify", url)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"error: json://alertuser:****@127.0.0.1:{receiver.port}/hook: the target refused "
            "or did not answer (see the log)"
        ]
        shown = [
            cli_ok(daemon, "alerts", "list"),
            cli_ok(daemon, "alerts", "list", "--json"),
            refused.stdout + refused.stderr,
            reader.raw,
        ]
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    log = daemon.log_path.read_text()
    assert '"event": "alert"' in log and "alert notice sent" in log
    for text in [*shown, log]:
        assert SECRET not in text


def test_stale_and_budget_alerts_fire(
    market: FakeMarket, receiver: Receiver, tmp_path: Path
) -> None:
    # A budget of 10 Bright Data requests: 5 fetched is 50 % (the seed's order: Bloomberg first).
    daemon = start(
        market, tmp_path, TOTAL_BUDGET="0.015", BUDGET_PACING="off", BUDGET_POLICY="seed"
    )

    def titled(title: str) -> list[dict[str, Any]]:
        return [notice for notice in list(receiver.notices) if notice["title"] == title]

    try:
        url = receiver.url()
        # The budget: the fifth paid quote reaches 50 % of it. Exactly the threshold, so the
        # evaluator's look at the budget can only fire after the last one, whenever it runs
        # (with six, a look between the fifth and the sixth said 50 % instead of 60 %).
        cli_ok(daemon, "alerts", "add", "--budget", "50", "--notify", url)
        cli_ok(daemon, "fetch", *[f"B{i}:US" for i in range(5)])
        wait_until(lambda: receiver.count() == 1, "the budget notice")
        assert receiver.notices[0]["title"] == "crawler alert: budget 50%"
        assert "50.0% of today's Bright Data budget is spent" in receiver.notices[0]["message"]

        # Stale: the stream stops ticking; three seconds later, one notice.
        cli_ok(daemon, "symbols", "add", "XBTUSD:CUR")
        cli_ok(daemon, "alerts", "add", "XBTUSD:CUR", "--stale", "3s", "--notify", url)
        wait_until(
            lambda: last_quote(daemon, "XBTUSD:CUR").get("source") == "yahoo_stream", "a tick"
        )
        market.stream.tick_rate = 0.0
        title = "crawler alert: XBTUSD:CUR stale 3s"
        wait_until(lambda: len(titled(title)) == 1, "the stale notice")
        assert "has had no new quote for" in titled(title)[0]["message"]
        # Ticking again re-arms it.
        market.stream.tick_rate = 20.0
        wait_until(
            lambda: alerts(daemon)["alerts"][1]["state"] == "armed", "the stale alert re-armed"
        )
        states = {a["rule"]: a["state"] for a in alerts(daemon)["alerts"]}
        assert states == {"XBTUSD:CUR stale 3s": "armed", "budget 50%": "fired"}
        assert len(titled("crawler alert: budget 50%")) == 1
    finally:
        assert daemon.stop() == 0, daemon.log_tail()


def test_a_hanging_receiver_does_not_hold_a_collection_up(
    market: FakeMarket, receiver: Receiver, tmp_path: Path
) -> None:
    symbols = [f"H{i}:US" for i in range(8)]
    daemon = start(market, tmp_path, STREAM_ENABLED="false", ALERTS_NOTIFY_TIMEOUT_SECONDS="120")
    try:
        cli_ok(daemon, "symbols", "add", *symbols)
        for symbol in symbols:  # each fires at its first quote
            cli_ok(daemon, "alerts", "add", symbol, "--above", "0.0001", "--notify", receiver.url())
        wait_until(lambda: alerts(daemon)["evaluator"]["rules"] == len(symbols), "the rules")
        receiver.hold()
        status, report = daemon.client(timeout_s=120).post("/collect")
        # The collection is complete, every quote landed, every alert fired, while the first
        # notice is still held in the receiver and the other seven wait in the notify queue.
        assert status == 200 and report["quotes"] == len(symbols), report
        wait_until(lambda: alerts(daemon)["evaluator"]["fired"] == len(symbols), "8 firings")
        assert receiver.in_flight == 1 and receiver.count() == 0
        notices = alerts(daemon)["evaluator"]["notices"]
        assert notices["sent"] == 0 and notices["pending"] < len(symbols)
        receiver.release()
        # Each firing reaches the receiver once: alone, or in a message with those that waited
        # together with it ("crawler: N alerts", one line each).
        wait_until(
            lambda: alerts(daemon)["evaluator"]["notices"]["sent"] == len(symbols), "all sent"
        )
        assert receiver.count() < len(symbols)  # the waiting ones went out together
        for symbol in symbols:
            assert sum(f"{symbol} at " in n["message"] for n in receiver.notices) == 1, symbol
        assert receiver.notices[-1]["title"].startswith("crawler: ")
        status, text = daemon.client().get("/metrics")
        lines = set(str(text).splitlines())
        assert status == 200 and "crawler_alerts_fired_total 8.0" in lines, text
        assert 'crawler_alert_notices_total{outcome="sent"} 8.0' in lines
        assert "crawler_alerts_rules 8.0" in lines and "crawler_alert_notices_pending 0.0" in lines
    finally:
        receiver.release()
        assert daemon.stop() == 0, daemon.log_tail()


def test_three_daemons_on_one_redis_deliver_a_crossing_once(
    market: FakeMarket, receiver: Receiver, tmp_path: Path, redis_url: str
) -> None:
    base = market.stream.price_of("MSFT")
    line = round(base * 1.1, 2)
    nodes = [
        DaemonHarness(
            market,
            tmp_path / f"node-{i}",
            REDIS_URL=redis_url,
            NODE_NAME=f"node-{i}",
            ALERTS_CHECK_INTERVAL_SECONDS="0.2",
            STREAM_HISTORY_INTERVAL_SECONDS="3600",
        )
        for i in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        cli_ok(nodes[0], "symbols", "add", "MSFT:US")
        url = receiver.url()
        cli_ok(nodes[1], "alerts", "add", "MSFT:US", "--above", str(line), "--notify", url)
        for node in nodes:  # every node streams MSFT and has loaded the rule
            wait_until(
                lambda n=node: last_quote(n, "MSFT:US").get("source") == "yahoo_stream",
                "each node's own tick",
            )
            wait_until(lambda n=node: alerts(n)["evaluator"]["rules"] == 1, "the rule loaded")
        market.stream.set_price("MSFT", line * 1.05)
        wait_until(lambda: receiver.count() == 1, "the notice")
        for node in nodes:  # each node saw the crossing on its own stream
            wait_until(
                lambda n=node: Decimal(str(last_quote(n, "MSFT:US")["price"])) > Decimal(str(line)),
                "each node's tick past the line",
            )
        frames = market.stream.frames_sent
        wait_until(lambda: market.stream.frames_sent >= frames + 60, "60 more ticks")
        assert receiver.count() == 1
        fired = [alerts(node)["evaluator"]["fired"] for node in nodes]
        assert sorted(fired) == [0, 0, 1]
        assert alerts(nodes[2])["alerts"][0]["fires"] == 1
    finally:
        for node in nodes:
            node.stop()
