"""The fake Yahoo streamer: a real websocket server on 127.0.0.1 speaking Yahoo's protocol.

    fake = YahooStreamFake(tick_rate=5.0)      # ticks per second per subscribed symbol
    fake.start()                               # fake.url == "ws://127.0.0.1:PORT/"
    # the client sends {"subscribe": ["AAPL", "EURUSD=X"]} / {"unsubscribe": [...]}
    fake.subscribed()                          # {"AAPL", "EURUSD=X"} across connections
    fake.framing = "base64"                    # bare base64 frames instead of JSON-wrapped
    fake.garbage_rate = 0.1                    # that share of frames is garbage
    fake.disconnect_all()                      # drop every connection now (client reconnects)
    fake.disconnect_after_frames = 100         # ...or cut each connection after 100 frames
    fake.refuse = True                         # refuse new connections (an outage)
    fake.send_frame(json.dumps({...}))         # one frame, as given, to every connection now
    fake.set_price("AAPL", 250.0)              # move a symbol now (tests cross alert lines)
    fake.stop()

Frames are `PricingData` protobuf messages as Yahoo sends them: time in milliseconds
(zig-zag), float32 prices, no currency for FX, and two fields (46, 47) a decoder must skip.
With `tick_rate` 0 (the default) subscriptions are kept but nothing is sent: tests of other
features see no streamed quotes unless they ask for them.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import threading
import time
import zlib
from typing import Literal

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from fakemarket.yahoo import _UNKNOWN_PREFIXES, EXCHANGE_DELAY_MIN, _profile

__all__ = ["YahooStreamFake", "encode_pricing"]

Framing = Literal["json", "base64"]
_PERIOD_S = 0.05


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= 0xFFFFFFFFFFFFFFFF
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def encode_pricing(
    yahoo_id: str,
    price: float,
    time_ms: int,
    *,
    currency: str | None = "USD",
    exchange: str = "NMS",
    change: float = 0.0,
    change_percent: float = 0.0,
    day_volume: int = 0,
    day_high: float = 0.0,
    day_low: float = 0.0,
    open_price: float = 0.0,
    previous_close: float = 0.0,
    price_hint: int = 2,
) -> bytes:
    """One `PricingData` message as Yahoo encodes it (plus unknown fields 46 and 47)."""

    def text(number: int, value: str) -> bytes:
        data = value.encode()
        return _key(number, 2) + _varint(len(data)) + data

    def f32(number: int, value: float) -> bytes:
        return _key(number, 5) + struct.pack("<f", value)

    def sint(number: int, value: int) -> bytes:
        return _key(number, 0) + _varint(_zigzag(value))

    parts = [text(1, yahoo_id), f32(2, price), sint(3, time_ms)]
    if currency:
        parts.append(text(4, currency))
    parts += [text(5, exchange), _key(6, 0) + _varint(8), _key(7, 0) + _varint(1)]
    parts += [f32(8, change_percent), sint(9, day_volume), f32(10, day_high), f32(11, day_low)]
    parts += [f32(12, change), f32(15, open_price), f32(16, previous_close)]
    parts += [sint(27, price_hint), _key(46, 0) + _varint(3), text(47, "unknown")]
    return b"".join(parts)


class _Instrument:
    """A random walk around a price fixed by the symbol's name (stable across runs)."""

    def __init__(self, yahoo_id: str) -> None:
        seed = zlib.crc32(yahoo_id.encode())
        fx = yahoo_id.endswith("=X")
        self.previous_close = (1.0 + seed % 100 / 100) if fx else float(20 + seed % 480)
        self.price = self.previous_close
        self.high = self.low = self.price
        self.volume = 0
        self.rng = random.Random(seed)
        # The currency the Yahoo fake's chart gives the same symbol (BTC-EUR in EUR, 7203.T in
        # JPY, VOD.L in GBp); FX frames carry none, as Yahoo's do.
        self.currency: str | None = None if fx else _profile(yahoo_id)[1]
        self.delay_ms = 60_000 * EXCHANGE_DELAY_MIN.get(_profile(yahoo_id)[2], 15)

    def tick(self) -> None:
        self.price *= 1 + self.rng.uniform(-0.0005, 0.0005)
        self.high, self.low = max(self.high, self.price), min(self.low, self.price)
        self.volume += self.rng.randint(1, 500)


class YahooStreamFake:
    """See the module docstring. Thread-safe knobs; one sender thread per connection."""

    def __init__(self, *, port: int = 0, tick_rate: float = 0.0, framing: Framing = "json") -> None:
        self.port = port
        self.tick_rate = tick_rate
        self.framing: Framing = framing
        self.garbage_rate = 0.0
        self.refuse = False
        self.disconnect_after_frames: int | None = None
        self.frames_sent = 0
        self.subscribe_messages: list[dict[str, list[str]]] = []
        self.connections_total = 0
        self._lock = threading.Lock()
        self._connections: dict[ServerConnection, set[str]] = {}
        self._instruments: dict[str, _Instrument] = {}
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """ws://127.0.0.1:PORT/ (after `start()`)."""
        return f"ws://127.0.0.1:{self.port}/"

    def start(self) -> YahooStreamFake:
        self._server = serve(self._handle, "127.0.0.1", self.port)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-stream", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.disconnect_all()
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def reset(self) -> None:
        """Knobs back to their defaults; records cleared (connections stay)."""
        with self._lock:
            self.tick_rate, self.framing, self.garbage_rate, self.refuse = 0.0, "json", 0.0, False
            self.disconnect_after_frames = None
            self.frames_sent = 0
            self.subscribe_messages.clear()

    def subscribed(self) -> set[str]:
        """Every symbol some open connection is subscribed to."""
        with self._lock:
            return set().union(*self._connections.values()) if self._connections else set()

    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def disconnect_all(self) -> None:
        """Close every open connection (abruptly, as a network cut would)."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.socket.close()

    def send_frame(self, frame: str | bytes) -> int:
        """Send `frame` as it is (hostile prices or times, a huge frame) to every open
        connection now; returns how many connections it went to."""
        with self._lock:
            connections = list(self._connections)
        sent = 0
        for conn in connections:
            try:
                conn.send(frame)
            except (ConnectionClosed, OSError):
                continue
            sent += 1
        return sent

    def set_price(self, yahoo_id: str, price: float) -> float:
        """Move `yahoo_id` to `price` now (its ticks walk on from there, by at most 0.05 % a
        tick): how tests cross an alert's line. Returns the price it had."""
        with self._lock:
            inst = self._instruments.get(yahoo_id)
            if inst is None:
                inst = self._instruments[yahoo_id] = _Instrument(yahoo_id)
            old, inst.price = inst.price, price
            inst.high, inst.low = max(inst.high, price), min(inst.low, price)
            return old

    def price_of(self, yahoo_id: str) -> float:
        """`yahoo_id`'s current price (its previous close until it ticks)."""
        with self._lock:
            inst = self._instruments.get(yahoo_id)
            return inst.price if inst is not None else _Instrument(yahoo_id).price

    def frame_for(self, yahoo_id: str, now_ms: int | None = None) -> str:
        """The next frame for `yahoo_id` in the current framing."""
        with self._lock:
            inst = self._instruments.get(yahoo_id)
            if inst is None:
                inst = self._instruments[yahoo_id] = _Instrument(yahoo_id)
            inst.tick()
            change = inst.price - inst.previous_close
            payload = encode_pricing(
                yahoo_id,
                inst.price,
                # Ticks lag as Yahoo's quotes do: by the exchange's `exchangeDataDelayedBy`.
                (int(time.time() * 1000) if now_ms is None else now_ms) - inst.delay_ms,
                currency=inst.currency,
                change=change,
                change_percent=100 * change / inst.previous_close,
                day_volume=inst.volume,
                day_high=inst.high,
                day_low=inst.low,
                open_price=inst.previous_close,
                previous_close=inst.previous_close,
                price_hint=4 if inst.currency is None else 2,
            )
        message = base64.b64encode(payload).decode("ascii")
        if self.framing == "json":
            return json.dumps({"type": "pricing", "message": message})
        return message

    # -- connections -----------------------------------------------------------------------

    def _handle(self, conn: ServerConnection) -> None:
        if self.refuse:
            conn.close(1013, "try again later")
            return
        with self._lock:
            self._connections[conn] = set()
            self.connections_total += 1
        sender = threading.Thread(target=self._send_ticks, args=(conn,), daemon=True)
        sender.start()
        try:
            for message in conn:
                self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            sender.join(2)

    def _on_message(self, conn: ServerConnection, message: str | bytes) -> None:
        try:
            request = json.loads(message)
        except ValueError:
            return  # Yahoo ignores what it does not understand
        if not isinstance(request, dict):
            return
        with self._lock:
            symbols = self._connections.get(conn)
            if symbols is None:
                return
            for verb in ("subscribe", "unsubscribe"):
                names = request.get(verb)
                if isinstance(names, list):
                    clean = [n for n in names if isinstance(n, str)]
                    self.subscribe_messages.append({verb: clean})
                    if verb == "subscribe":
                        symbols.update(clean)
                    else:
                        symbols.difference_update(clean)

    def _send_ticks(self, conn: ServerConnection) -> None:
        owed = 0.0
        cursor = 0
        sent = 0
        last_s = time.monotonic()
        while True:
            time.sleep(_PERIOD_S)
            with self._lock:
                if conn not in self._connections:
                    return
                # Yahoo streams nothing for a symbol it does not know (as its chart 404s).
                names = sorted(n for n in self._connections[conn] if not _unknown(n))
            now_s = time.monotonic()
            owed += len(names) * self.tick_rate * (now_s - last_s)
            last_s = now_s
            if not names or self.tick_rate <= 0:
                owed = 0.0
                continue
            due = int(owed)
            owed -= due
            frames: list[str] = []
            for _ in range(due):
                name = names[cursor % len(names)]
                cursor += 1
                if self.garbage_rate and random.random() < self.garbage_rate:
                    frames.append(random.choice(["%%garbage%%", '{"type":"pricing"}', "AAEC"]))
                else:
                    frames.append(self.frame_for(name))
            try:
                for frame in frames:
                    conn.send(frame)
            except (ConnectionClosed, OSError):
                return
            with self._lock:
                self.frames_sent += len(frames)
            sent += len(frames)
            limit = self.disconnect_after_frames
            if limit is not None and sent >= limit:
                conn.socket.close()  # a cut, not a close handshake
                return


def _unknown(yahoo_id: str) -> bool:
    """A symbol the fake Yahoo does not know ("ZZZZ1.L", "UNKNOWN"): never ticked."""
    return yahoo_id.upper().startswith(_UNKNOWN_PREFIXES)
