"""The event bus and `GET /v1/events` (Server-Sent Events) over a real control socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.daemon.control_server import ControlServer
from crawler.daemon.sse import register_event_routes
from crawler.events import EventBus, TooManyWatchersError
from crawler.normalizer.schemas import Quote

NOW = datetime(2026, 1, 6, 15, 0, tzinfo=UTC)


def quote(symbol: str = "AAPL:US", price: str = "262.36") -> Quote:
    return Quote(symbol=symbol, price=Decimal(price), source="yahoo_stream", currency="USD")


# -- the bus ---------------------------------------------------------------------------------


def test_published_events_reach_every_subscriber_in_order() -> None:
    bus = EventBus(now=lambda: NOW)
    with bus.subscribed() as one, bus.subscribed() as two:
        bus.publish("breaker", name="yfinance", old="closed", new="open")
        bus.publish_quote(quote())
        for sub in (one, two):
            first, second = sub.get(0), sub.get(0)
            assert first is not None and second is not None
            assert first.data == {
                "type": "breaker",
                "at": NOW.isoformat(),
                "name": "yfinance",
                "old": "closed",
                "new": "open",
            }
            assert second.type == "quote"
            assert json.loads(second.encoded())["price"] == "262.36"
            assert sub.get(0) is None


def test_nothing_is_built_when_nobody_watches() -> None:
    bus = EventBus()
    bus.publish_quote(quote())
    assert bus.statistics()["published"] == 0
    with bus.subscribed():
        bus.publish_quote(quote())
    assert bus.statistics()["published"] == 1


def test_a_slow_subscriber_is_dropped_and_the_others_keep_their_events() -> None:
    bus = EventBus(queue_size=3)
    slow, fast = bus.subscribe(), bus.subscribe()
    for i in range(4):
        bus.publish("tick", n=i)
        event = fast.get(0)
        assert event is not None and event.data["n"] == i
    assert slow.closed and slow.dropped is not None and "too slow" in slow.dropped
    assert bus.statistics()["watchers"] == 1
    assert bus.statistics()["dropped_watchers"] == 1
    # Publishing goes on without it, and the dropped reader is told the stream ended.
    bus.publish("tick", n=4)
    drained = [slow.get(0) for _ in range(4)]
    assert drained[-1] is None
    assert fast.get(0) is not None


def test_watchers_are_bounded_and_a_closed_slot_is_reusable() -> None:
    bus = EventBus(max_subscribers=2)
    first = bus.subscribe()
    bus.subscribe()
    with pytest.raises(TooManyWatchersError, match="2 watchers"):
        bus.subscribe()
    first.close()
    bus.subscribe().close()


def test_close_wakes_a_blocked_reader() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(sub.get(30)))
    reader.start()
    bus.close()
    reader.join(5)
    assert not reader.is_alive() and got == [None]
    assert sub.dropped is None


# -- the SSE route over a real socket --------------------------------------------------------


@pytest.fixture
def bus() -> EventBus:
    return EventBus(max_subscribers=2, queue_size=64)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "control.sock"


@pytest.fixture
def server(sock_path: Path, bus: EventBus) -> Iterator[ControlServer]:
    server = ControlServer(sock_path, client_timeout_s=5)
    register_event_routes(server, bus)
    server.start()
    try:
        yield server
    finally:
        bus.close()
        server.stop()


class SSEReader:
    """A raw HTTP/1.1 client of /v1/events: the head, then `data:` lines as they come."""

    def __init__(self, path: Path, target: str = "/v1/events") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        self.sock.sendall(request.encode())
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.head = head.decode("latin-1").lower()

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        before, _, self.buffer = self.buffer.partition(marker)
        return before

    def body(self) -> bytes:
        """The rest, to EOF (an error answer's JSON, or a stream that ended)."""
        while data := self.sock.recv(65536):
            self.buffer += data
        return self.buffer

    def event(self) -> dict[str, object]:
        """The next `data:` event (chunk framing and comments skipped)."""
        while True:
            line = self._until(b"\n")
            if line.startswith(b"data: "):
                data = json.loads(line[len(b"data: ") :])
                assert isinstance(data, dict)
                return data

    def close(self) -> None:
        self.sock.close()


def wait_for_watchers(bus: EventBus, count: int) -> None:
    # The route subscribes before the head goes out, so after the head this holds at once.
    assert bus.statistics()["watchers"] == count


def test_events_stream_as_server_sent_events(server: ControlServer, bus: EventBus) -> None:
    reader = SSEReader(server.socket_path)
    try:
        assert reader.status == 200
        assert "content-type: text/event-stream" in reader.head
        assert "transfer-encoding: chunked" in reader.head
        wait_for_watchers(bus, 1)
        bus.publish("collection_start", symbols=3, fetching=3, skipped=0)
        bus.publish_quote(quote("EURUSD:CUR", "1.0489"))
        assert reader.event()["type"] == "collection_start"
        landed = reader.event()
        assert landed["type"] == "quote" and landed["symbol"] == "EURUSD:CUR"
        assert landed["price"] == "1.0489"
    finally:
        reader.close()


def test_symbol_and_type_filters(server: ControlServer, bus: EventBus) -> None:
    reader = SSEReader(server.socket_path, "/v1/events?symbols=eurusd:cur,AAPL&types=quote")
    try:
        assert reader.status == 200
        bus.publish("breaker", name="yfinance", old="closed", new="open")
        bus.publish_quote(quote("MSFT:US"))
        bus.publish_quote(quote("AAPL:US"))
        bus.publish_quote(quote("EURUSD:CUR", "1.05"))
        assert reader.event()["symbol"] == "AAPL:US"
        assert reader.event()["symbol"] == "EURUSD:CUR"
    finally:
        reader.close()


def test_bad_filters_are_400_naming_the_fix(server: ControlServer) -> None:
    reader = SSEReader(server.socket_path, "/v1/events?types=quote,nonsense")
    assert reader.status == 400
    assert "unknown event type 'nonsense'" in reader.body().decode()
    reader.close()
    reader = SSEReader(server.socket_path, "/v1/events?symbols=AAPL,%21%21")
    assert reader.status == 400
    assert b"symbols:" in reader.body()
    reader.close()


def test_a_watcher_past_the_limit_gets_503(server: ControlServer, bus: EventBus) -> None:
    readers = [SSEReader(server.socket_path) for _ in range(2)]
    try:
        extra = SSEReader(server.socket_path)
        assert extra.status == 503
        assert b"watchers are already connected" in extra.body()
        extra.close()
        # A watcher that hangs up frees its slot (noticed at the next write).
        readers.pop().close()
        for _ in range(200):
            bus.publish("tick")
            if bus.statistics()["watchers"] < 2:
                break
            threading.Event().wait(0.01)
        again = SSEReader(server.socket_path)
        assert again.status == 200
        again.close()
    finally:
        for reader in readers:
            reader.close()


def test_a_reader_that_stops_reading_is_dropped_without_blocking_publishers(
    server: ControlServer, bus: EventBus
) -> None:
    stalled = SSEReader(server.socket_path)  # never reads again
    live = SSEReader(server.socket_path)
    try:
        payload = "x" * 4000
        for i in range(2000):  # far more than the socket buffers and the queue hold
            bus.publish("tick", n=i, pad=payload)
            if i % 50 == 0:
                while True:  # the live reader keeps up
                    event = live.event()
                    if event["n"] == i:
                        break
        assert bus.statistics()["dropped_watchers"] >= 1
        assert bus.statistics()["watchers"] == 1
    finally:
        stalled.close()
        live.close()


def test_daemon_stop_ends_open_streams(server: ControlServer, bus: EventBus) -> None:
    reader = SSEReader(server.socket_path)
    bus.close()
    rest = reader.body()  # returns: the stream ended with its last chunk
    assert rest.endswith(b"0\r\n\r\n")
    reader.close()


# -- the real daemon -------------------------------------------------------------------------


def test_daemon_streams_quotes_and_collection_events(tmp_path: Path) -> None:
    from fakemarket import FakeMarket
    from tests.faults.daemon_harness import DaemonHarness

    with FakeMarket() as market:
        daemon = DaemonHarness(market, tmp_path)
        daemon.start()
        try:
            for symbol in ("AAPL:US", "MSFT:US"):
                assert daemon.cli("symbols", "add", symbol).returncode == 0
            reader = SSEReader(daemon.socket_path)
            try:
                assert reader.status == 200
                collected = daemon.cli("collect")
                assert collected.returncode == 0, collected.stderr
                seen: list[dict[str, object]] = []
                while not seen or seen[-1]["type"] != "collection_end":
                    seen.append(reader.event())
            finally:
                reader.close()
        finally:
            assert daemon.stop() == 0
    types = [event["type"] for event in seen]
    assert types[0] == "collection_start" and seen[0]["fetching"] == 2
    assert types.count("collection_progress") == 2
    quotes = {event["symbol"]: event for event in seen if event["type"] == "quote"}
    assert set(quotes) == {"AAPL:US", "MSFT:US"}
    assert all(event["source"] == "bright_data" for event in quotes.values())
    assert seen[-1]["quotes"] == 2
    # Bright Data was paid: the watcher saw the budget move.
    budgets = [event for event in seen if event["type"] == "budget"]
    assert budgets and budgets[-1]["requests_used"] == 2


def test_budget_events_and_one_exhaustion_per_day(tmp_path: Path) -> None:
    from fakemarket import FakeMarket
    from tests.faults.daemon_harness import DaemonHarness

    with FakeMarket() as market:
        daemon = DaemonHarness(market, tmp_path, TOTAL_BUDGET="0.003")  # two requests a day
        daemon.start()
        try:
            reader = SSEReader(daemon.socket_path, "/v1/events?types=budget,budget_exhausted")
            try:
                fetched = daemon.cli("fetch", "AAPL:US", "MSFT:US", "IBM:US", "VOD:LN")
                assert fetched.returncode == 0, fetched.stderr
                more = daemon.cli("fetch", "--fresh", "AAPL:US", "ORCL:US")
                assert more.returncode == 0, more.stderr
                events = [reader.event() for _ in range(3)]
                # Skipping Bright Data for the rest of the day announces nothing more.
                reader.sock.settimeout(1.0)
                with pytest.raises(TimeoutError):
                    reader.event()
            finally:
                reader.close()
        finally:
            assert daemon.stop() == 0
    # Two paid requests settle concurrently: their events may interleave with the exhaustion.
    assert sorted(e["type"] for e in events) == ["budget", "budget", "budget_exhausted"]
    exhausted = next(e for e in events if e["type"] == "budget_exhausted")
    assert exhausted["requests_used"] == 2
    assert any(e["type"] == "budget" and e["remaining_usd"] == "0" for e in events)


def test_quotes_from_yahoos_batch_path_reach_watchers_too(tmp_path: Path) -> None:
    from fakemarket import FakeMarket
    from tests.faults.daemon_harness import DaemonHarness

    with FakeMarket() as market:
        daemon = DaemonHarness(market, tmp_path, SOURCES_ORDER="yfinance")
        daemon.start()
        try:
            reader = SSEReader(daemon.socket_path, "/v1/events?types=quote")
            try:
                fetched = daemon.cli("fetch", "AAPL:US", "MSFT:US", "VOD:LN")
                assert fetched.returncode == 0, fetched.stderr
                events = [reader.event() for _ in range(3)]
            finally:
                reader.close()
        finally:
            assert daemon.stop() == 0
    assert {e["symbol"] for e in events} == {"AAPL:US", "MSFT:US", "VOD:LN"}
    assert {e["source"] for e in events} == {"yfinance"}


def test_a_breaker_opening_is_an_event(tmp_path: Path) -> None:
    from fakemarket import FakeMarket
    from tests.faults.daemon_harness import DaemonHarness

    with FakeMarket() as market:
        market.bright_data.faults.set("*", status=503)  # every Bright Data call fails
        daemon = DaemonHarness(market, tmp_path)
        daemon.start()
        try:
            reader = SSEReader(daemon.socket_path, "/v1/events?types=breaker")
            try:
                fetched = daemon.cli("fetch", "AAPL:US", "MSFT:US", "IBM:US", "ORCL:US")
                assert fetched.returncode == 0, fetched.stderr  # yfinance served them
                event = reader.event()
            finally:
                reader.close()
        finally:
            assert daemon.stop() == 0
    assert (event["name"], event["old"], event["new"]) == ("bright_data", "closed", "open")
