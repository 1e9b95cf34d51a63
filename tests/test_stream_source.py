"""The stream client against the fake streamer over a real websocket on 127.0.0.1:
subscriptions follow what is wanted, both framings, garbage, cuts, outages, the breaker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol, parse_symbol
from crawler.orchestrator.circuit_breaker import CircuitBreaker
from crawler.sources.yahoo_stream import StreamState, YahooStream
from fakemarket.stream import YahooStreamFake


def wait_until(predicate: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


class Harness:
    """A YahooStream on fast timings, what it wants settable, what it landed recorded."""

    def __init__(self, url: str, breaker: CircuitBreaker | None = None) -> None:
        self.wanted: dict[str, Symbol] = {}
        self.landed: list[Quote] = []
        self.states: list[str] = []
        self.lock = threading.Lock()
        self.stream = YahooStream(
            url,
            wanted=lambda: dict(self.wanted),
            sink=self.sink,
            breaker=breaker,
            refresh_s=0.05,
            flush_interval_s=0.05,
            connect_timeout_s=2.0,
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
            on_state=lambda state, detail: self.states.append(state),
        )

    def sink(self, quotes: list[Quote]) -> None:
        with self.lock:
            self.landed.extend(quotes)

    def want(self, *names: str) -> None:
        self.wanted = {}
        for name in names:
            symbol = parse_symbol(name)
            from crawler.normalizer.symbols import to_yahoo

            self.wanted[to_yahoo(symbol)] = symbol
        self.stream.refresh()

    def symbols_landed(self) -> set[str]:
        with self.lock:
            return {q.symbol for q in self.landed}


@pytest.fixture
def fake() -> Iterator[YahooStreamFake]:
    fake = YahooStreamFake(tick_rate=20.0).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def harness(fake: YahooStreamFake) -> Iterator[Harness]:
    harness = Harness(fake.url)
    harness.stream.start()
    try:
        yield harness
    finally:
        harness.stream.stop()


def test_nothing_wanted_never_dials_out(fake: YahooStreamFake, harness: Harness) -> None:
    wait_until(lambda: harness.stream.state == StreamState.IDLE, "the idle state")
    harness.stream.refresh()
    assert fake.connections_total == 0


def test_subscriptions_follow_what_is_wanted(fake: YahooStreamFake, harness: Harness) -> None:
    harness.want("AAPL:US", "EURUSD:CUR", "VOD:LN")
    wait_until(lambda: fake.subscribed() == {"AAPL", "EURUSD=X", "VOD.L"}, "the subscription")
    wait_until(lambda: len(harness.symbols_landed()) == 3, "a quote of each")
    by_symbol = {q.symbol: q for q in harness.landed}
    assert by_symbol["VOD:LN"].currency == "GBp"
    assert by_symbol["EURUSD:CUR"].currency == "USD"  # FX frames carry none: the pair's
    assert all(q.source == "yahoo_stream" and q.price > Decimal(0) for q in by_symbol.values())
    assert harness.stream.latest("AAPL:US") is not None
    assert harness.stream.is_live("AAPL:US")

    harness.want("AAPL:US")
    wait_until(lambda: fake.subscribed() == {"AAPL"}, "the unsubscription")
    assert {"unsubscribe": ["EURUSD=X", "VOD.L"]} in fake.subscribe_messages
    assert not harness.stream.is_live("VOD:LN")

    harness.want()  # nothing left: the connection is closed
    wait_until(lambda: fake.connection_count() == 0, "the hang-up")
    wait_until(lambda: harness.stream.state == StreamState.IDLE, "the idle state")


def test_streamed_quotes_keep_their_own_currency(fake: YahooStreamFake, harness: Harness) -> None:
    """The fake streams each symbol in the currency its chart gives it: a euro crypto pair in
    EUR and Tokyo in JPY (it said USD for everything but London, so `crawler watch` showed
    XBTEUR:CUR in USD)."""
    harness.want("XBTEUR:CUR", "7203:JP", "XBTUSD:CUR")
    wait_until(lambda: len(harness.symbols_landed()) == 3, "a quote of each")
    by_symbol = {q.symbol: q.currency for q in harness.landed}
    assert by_symbol == {"XBTEUR:CUR": "EUR", "7203:JP": "JPY", "XBTUSD:CUR": "USD"}


def test_bare_base64_frames_and_garbage(fake: YahooStreamFake, harness: Harness) -> None:
    fake.framing = "base64"
    fake.garbage_rate = 0.3
    harness.want("MSFT:US")
    wait_until(lambda: harness.stream.bad_frames >= 3, "garbage frames to be counted")
    before = harness.stream.quotes_flushed
    wait_until(lambda: harness.stream.quotes_flushed > before + 2, "good frames among them")
    assert harness.stream.state == StreamState.CONNECTED
    assert harness.stream.breaker.state == "closed"


def test_a_cut_connection_reconnects_and_resubscribes(
    fake: YahooStreamFake, harness: Harness
) -> None:
    harness.want("AAPL:US", "MSFT:US")
    wait_until(lambda: fake.subscribed() == {"AAPL", "MSFT"}, "the subscription")
    fake.disconnect_all()
    wait_until(lambda: fake.connections_total >= 2, "the reconnection")
    wait_until(lambda: fake.subscribed() == {"AAPL", "MSFT"}, "the resubscription")
    assert harness.stream.disconnects >= 1
    harness.landed.clear()
    wait_until(lambda: harness.symbols_landed() == {"AAPL:US", "MSFT:US"}, "ticks again")


def test_an_outage_opens_the_streams_own_breaker_and_recovery_closes_it(
    fake: YahooStreamFake,
) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        name="yahoo_stream", failure_threshold=2, recovery_timeout=30.0, clock=lambda: now[0]
    )
    port = fake.port
    fake.stop()  # connection refused from now on
    harness = Harness(f"ws://127.0.0.1:{port}/", breaker=breaker)
    harness.want("AAPL:US")
    harness.stream.start()
    try:
        wait_until(lambda: breaker.state == "open", "the breaker to open")
        assert harness.stream.last_error is not None
        assert "cannot connect" in harness.stream.last_error
        assert StreamState.BACKING_OFF in harness.states
        assert harness.stream.connects == 0
        # Back up on the same port; once the recovery time has passed, a trial call closes it.
        revived = YahooStreamFake(port=port, tick_rate=20.0).start()
        try:
            now[0] += 31.0
            harness.stream.refresh()
            wait_until(lambda: breaker.state == "closed", "the breaker to close")
            wait_until(lambda: "AAPL:US" in harness.symbols_landed(), "streamed quotes")
        finally:
            harness.stream.stop()
            revived.stop()
    finally:
        harness.stream.stop()


def test_stop_is_prompt_with_a_live_connection(fake: YahooStreamFake, harness: Harness) -> None:
    harness.want("AAPL:US")
    wait_until(lambda: harness.stream.state == StreamState.CONNECTED, "the connection")
    harness.stream.stop(timeout_s=5)
    assert harness.stream._thread is not None and not harness.stream._thread.is_alive()
    assert harness.stream.state == StreamState.STOPPED


def test_periodic_cuts_are_survived(fake: YahooStreamFake, harness: Harness) -> None:
    fake.disconnect_after_frames = 20
    harness.want("AAPL:US")
    wait_until(lambda: fake.connections_total >= 3, "three connections")
    wait_until(lambda: harness.stream.disconnects >= 2, "the cuts to be seen")
    fake.disconnect_after_frames = None
    harness.landed.clear()
    wait_until(lambda: harness.symbols_landed() == {"AAPL:US"}, "ticks after the cuts")
    assert harness.stream.breaker.state == "closed"  # each reconnect succeeded


def test_a_server_that_hangs_up_at_once_is_retried_with_backoff(
    fake: YahooStreamFake, harness: Harness
) -> None:
    fake.refuse = True  # accepts the handshake, then closes (1013 try again later)
    harness.want("AAPL:US")
    wait_until(lambda: harness.stream.disconnects >= 2, "two hang-ups")
    assert fake.connections_total == 0  # refused before it counted as a connection
    assert harness.stream.quotes_flushed == 0
    assert StreamState.BACKING_OFF in harness.states
    fake.refuse = False
    wait_until(lambda: "AAPL:US" in harness.symbols_landed(), "quotes once it accepts again")
