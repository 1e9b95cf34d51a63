"""Yahoo's free websocket price stream, as a source that pushes instead of being asked.

    stream = YahooStream(
        "wss://streamer.finance.yahoo.com/?version=2",
        wanted=lambda: {"AAPL": parse_symbol("AAPL:US")},   # Yahoo id → Symbol, asked often
        sink=lambda quotes: ...,                              # the latest quote per symbol
    )
    stream.start()
    stream.latest("AAPL:US")      # (Quote, received monotonic s) of the last tick, or None
    stream.stop()

One thread owns the connection (websockets' sync client). It subscribes to what `wanted()`
returns, sending `{"subscribe": [...]}` / `{"unsubscribe": [...]}` as that changes (asked every
`refresh_s`, or at once after `refresh()`), and re-sends the whole subscription every
`resubscribe_s` as Yahoo's own client does. Each frame is decoded (`decode_frame`); only the
newest tick per symbol is kept, and every `flush_interval_s` those become Quotes handed to
`sink` in one batch: 500 symbols at 5 ticks/s cost one decode per tick and one store write per
symbol per flush, not per tick. A bad frame is counted and skipped, and so is a tick refused by
the plausibility rules (against the symbol's previous tick: `QuoteGate`). A frame over
`MAX_FRAME_BYTES` (64 KiB) is refused by the websocket client before it is buffered: the
connection closes (1009) and is made again with the usual backoff.

Nothing wanted, no connection: an empty watchlist never dials out. Connecting goes through the
stream's own circuit breaker; a failed connect or a dropped connection waits an exponential
backoff (`backoff_initial_s` doubling to `backoff_max_s`, with jitter) before the next try, and
every reconnect resubscribes the whole set.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from crawler.logging import get_logger
from crawler.normalizer.plausibility import QuoteGate
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol
from crawler.normalizer.yahoo_stream import (
    MAX_FRAME_BYTES,
    STREAM_SOURCE,
    decode_pricing,
    frame_payload,
    pricing_id,
    pricing_to_quote,
)
from crawler.sources.circuit_breaker import CircuitBreaker
from crawler.utils.clock import utc_now
from crawler.utils.error_map import ErrorTable, caught
from crawler.utils.exceptions import (
    CircuitBreakerError,
    CrawlerError,
    ParseError,
    TransientSourceError,
)

__all__ = ["StreamState", "YahooStream", "stream_errors"]

log = get_logger("crawler.stream")


def stream_errors() -> ErrorTable:
    """websockets' errors and ours when connecting (`crawler.utils.error_map`): refused, timed
    out, a handshake or URI websockets rejects, or any other of its errors, the stream could
    not open: TransientSourceError, which the breaker counts and the stream retries after a
    backoff. (A connection lost later is no error: `_session` records it and reconnects.)"""
    from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

    return (
        (OSError, TransientSourceError),
        (TimeoutError, TransientSourceError),
        (InvalidHandshake, TransientSourceError),
        (InvalidURI, TransientSourceError),
        (WebSocketException, TransientSourceError),
    )


class StreamState:
    """What the stream is doing (the `state` of its statistics and `stream` events)."""

    IDLE = "idle"  # nothing to subscribe to, no connection
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"


class YahooStream:
    """See the module docstring. `on_state(state, detail)` is told of connection changes."""

    name = STREAM_SOURCE

    def __init__(
        self,
        endpoint: str,
        *,
        wanted: Callable[[], Mapping[str, Symbol]],
        sink: Callable[[list[Quote]], None],
        breaker: CircuitBreaker | None = None,
        refresh_s: float = 5.0,
        flush_interval_s: float = 0.5,
        resubscribe_s: float = 15.0,
        connect_timeout_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._wanted = wanted
        self._sink = sink
        self.breaker = breaker or CircuitBreaker(
            name=STREAM_SOURCE, failure_threshold=3, recovery_timeout=60.0, clock=clock
        )
        self.refresh_s = refresh_s
        self.flush_interval_s = flush_interval_s
        self.resubscribe_s = resubscribe_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._now = now
        self._on_state = on_state
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._by_id: dict[str, Symbol] = {}
        # Yahoo id → the newest undecoded message since the last flush.
        self._pending: dict[str, bytes] = {}
        self._last: dict[str, tuple[Quote, float]] = {}
        self.state = StreamState.IDLE
        self.subscribed: frozenset[str] = frozenset()
        self._live: frozenset[str] = frozenset()  # canonical names of `subscribed`
        self.ticks = 0
        self.bad_frames = 0
        #: Every tick passes it against the symbol's previous one (plausibility).
        self.plausibility = QuoteGate()
        self.quotes_flushed = 0
        self.connects = 0
        self.disconnects = 0
        self.last_error: str | None = None
        self.last_tick_at: datetime | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run the stream on its own thread (returns at once)."""
        if self._thread is not None:
            raise RuntimeError("the stream is already started")
        self._thread = threading.Thread(target=self._run, name="crawler-stream", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Close the connection and end the thread (bounded by `timeout_s`). A stream never
        started stays silent (a daemon that failed to start says one line, not two)."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return  # never started (the daemon failed before it): nothing to report
        self._thread.join(timeout_s)
        self._set_state(StreamState.STOPPED, "stopped")

    close = stop

    def refresh(self) -> None:
        """Ask `wanted()` again now (the watchlist changed)."""
        self._wake.set()

    # -- what callers read -------------------------------------------------------------------

    def latest(self, canonical: str) -> tuple[Quote, float] | None:
        """The last streamed quote of `canonical` and when it arrived (monotonic s), or None."""
        return self._last.get(canonical)

    def is_live(self, canonical: str) -> bool:
        """Whether `canonical` is subscribed on a connected stream right now."""
        return self.state == StreamState.CONNECTED and canonical in self._live

    def statistics(self) -> dict[str, Any]:
        """state, subscribed, ticks, bad_frames, quotes, connects, disconnects, last_tick_at,
        last_error, breaker."""
        return {
            "state": self.state,
            "subscribed": len(self.subscribed),
            "ticks": self.ticks,
            "bad_frames": self.bad_frames,
            "quotes": self.quotes_flushed,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "last_tick_at": self.last_tick_at.isoformat() if self.last_tick_at else None,
            "last_error": self.last_error,
            "breaker": self.breaker.get_statistics(),
        }

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        backoff_s = self.backoff_initial_s
        while not self._stop.is_set():
            wanted = self._ask_wanted()
            if not wanted:
                self._set_state(StreamState.IDLE, "nothing to subscribe to")
                self._pause(self.refresh_s)
                continue
            try:
                conn = self.breaker.call(self._connect)
            except (CircuitBreakerError, CrawlerError) as exc:
                self.last_error = exc.message
                wait_s = max(backoff_s, self.breaker.recovery_remaining_s())
                self._set_state(StreamState.BACKING_OFF, f"{exc.message}; retry in {wait_s:.0f}s")
                self._pause(wait_s * random.uniform(1.0, 1.2))
                backoff_s = min(self.backoff_max_s, backoff_s * 2)
                continue
            started_s = self._clock()
            try:
                self._session(conn, wanted)
            finally:
                conn.close()
                self.subscribed = self._live = frozenset()
            if self._stop.is_set():
                break
            # A connection that lived a while was healthy: start the backoff over.
            if self._clock() - started_s > self.backoff_max_s:
                backoff_s = self.backoff_initial_s
            self._set_state(StreamState.BACKING_OFF, f"reconnecting in {backoff_s:.0f}s")
            self._pause(backoff_s * random.uniform(1.0, 1.2))
            backoff_s = min(self.backoff_max_s, backoff_s * 2)
        self._flush()

    def _pause(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _ask_wanted(self) -> dict[str, Symbol]:
        try:
            wanted = dict(self._wanted())
        except Exception:  # a watchlist or calendar problem must not kill the stream
            log.exception("the stream could not tell which symbols to subscribe to")
            with self._lock:
                return dict(self._by_id)
        with self._lock:
            self._by_id = wanted
        return wanted

    def _connect(self) -> Any:
        from websockets.sync.client import connect

        self._set_state(StreamState.CONNECTING, self._shown_endpoint())
        try:
            conn = connect(
                self.endpoint,
                open_timeout=self.connect_timeout_s,
                close_timeout=1.0,
                max_size=MAX_FRAME_BYTES,  # a bigger frame closes the connection (1009)
                compression=None,
            )
        except caught(stream_errors()) as exc:
            raise TransientSourceError(
                f"stream: cannot connect to {self._shown_endpoint()}: {type(exc).__name__}"
            ) from exc
        # Entered as websockets asks (a bare connect() is deprecated); `_run` closes it.
        conn.__enter__()
        self.connects += 1
        return conn

    def _shown_endpoint(self) -> str:
        # The endpoint carries no secret, but keep its query (tokens, if ever) out of logs.
        return self.endpoint.split("?", 1)[0]

    def _session(self, conn: Any, wanted: dict[str, Symbol]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self._subscribe(conn, set(wanted))
            self._set_state(StreamState.CONNECTED, f"{len(wanted)} symbols subscribed")
            now_s = self._clock()
            next_flush_s = now_s + self.flush_interval_s
            next_refresh_s = now_s + self.refresh_s
            next_resubscribe_s = now_s + self.resubscribe_s
            while not self._stop.is_set():
                timeout_s = max(0.0, min(next_flush_s, next_refresh_s) - self._clock())
                try:
                    message = conn.recv(timeout=timeout_s)
                except TimeoutError:
                    message = None
                if message is not None:
                    self._on_frame(message)
                now_s = self._clock()
                if now_s >= next_flush_s:
                    self._flush()
                    next_flush_s = now_s + self.flush_interval_s
                if self._wake.is_set() or now_s >= next_refresh_s:
                    self._wake.clear()
                    wanted = self._ask_wanted()
                    if not wanted:
                        return  # nothing left to watch: hang up
                    resubscribe = now_s >= next_resubscribe_s
                    self._subscribe(conn, set(wanted), resubscribe=resubscribe)
                    if resubscribe:
                        next_resubscribe_s = now_s + self.resubscribe_s
                    next_refresh_s = now_s + self.refresh_s
        except (ConnectionClosed, OSError) as exc:
            self.disconnects += 1
            self.last_error = f"stream: connection lost ({type(exc).__name__})"
            log.info("stream connection lost", error=self.last_error)
        finally:
            self._flush()

    def _subscribe(self, conn: Any, wanted: set[str], *, resubscribe: bool = False) -> None:
        current = set(self.subscribed)
        gone = sorted(current - wanted)
        new = sorted(wanted if resubscribe else wanted - current)
        if gone:
            conn.send(json.dumps({"unsubscribe": gone}))
            with self._lock:
                for yahoo_id in gone:
                    self._pending.pop(yahoo_id, None)
        if new:
            conn.send(json.dumps({"subscribe": new}))
        with self._lock:
            self._live = frozenset(s.canonical for i, s in self._by_id.items() if i in wanted)
        self.subscribed = frozenset(wanted)

    def _on_frame(self, message: str | bytes) -> None:
        # Only the id now: a tick superseded before the flush is never decoded in full.
        try:
            payload = frame_payload(message)
            yahoo_id = pricing_id(payload)
        except ParseError as exc:
            self._bad_frame(exc)
            return
        self.ticks += 1
        if yahoo_id in self.subscribed:
            self._pending[yahoo_id] = payload

    def _bad_frame(self, exc: ParseError) -> None:
        self.bad_frames += 1
        if self.bad_frames <= 3 or self.bad_frames % 1000 == 0:
            log.warning("stream: skipped a bad frame", bad_frames=self.bad_frames, error=str(exc))

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        fetched_at = self._now()
        received_s = self._clock()
        quotes: list[Quote] = []
        with self._lock:
            by_id = self._by_id
        for yahoo_id, payload in pending.items():
            symbol = by_id.get(yahoo_id)
            if symbol is None:
                continue
            try:
                quote = pricing_to_quote(decode_pricing(payload), symbol, fetched_at=fetched_at)
                last = self._last.get(symbol.canonical)
                self.plausibility.check(
                    quote, now=fetched_at, reference=last[0] if last else None, live=True
                )
            except ParseError as exc:  # ImplausibleQuoteError included: the tick is skipped
                self._bad_frame(exc)
                continue
            quotes.append(quote)
            self._last[symbol.canonical] = (quote, received_s)
        if not quotes:
            return
        self.quotes_flushed += len(quotes)
        self.last_tick_at = fetched_at
        try:
            self._sink(quotes)
        except Exception:  # a store problem must not end the stream; logged, tried next flush
            log.exception("storing streamed quotes failed", quotes=len(quotes))

    def _set_state(self, state: str, detail: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self._on_state is not None:
            try:
                self._on_state(state, detail)
            except Exception:
                log.exception("stream state observer failed")
