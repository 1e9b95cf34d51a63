"""`GET /v1/events`: the event bus as Server-Sent Events on the control socket.

    curl -N --unix-socket SOCK 'http://localhost/v1/events'
    curl -N --unix-socket SOCK 'http://localhost/v1/events?symbols=AAPL:US,EURUSD&types=quote'

Each event is one `data:` line holding one JSON object with a `type` (see `crawler.events`),
then a blank line. A comment line (": keep-alive") goes out when nothing happened for
`heartbeat_s`, so a reader that went away is noticed and its slot freed. A reader too slow to
keep up is dropped: it gets a last `{"type": "dropped", "reason": ...}` event and the stream
ends; the daemon never waits for it. All watcher slots taken: 503 ServiceUnavailable.

The answer rides on the control server's streamed responses (chunked transfer coding), so this
module needs nothing from the HTTP layer beyond `Response(stream=...)`.
"""

from __future__ import annotations

import json
from collections.abc import Generator

from crawler.daemon.control_server import ControlServer, Request, Response
from crawler.events import EventBus, Subscription
from crawler.normalizer.symbols import parse_symbol
from crawler.utils.exceptions import SymbolError

__all__ = ["EVENT_TYPES", "HEARTBEAT_S", "EventStream", "register_event_routes"]

#: Seconds of silence before a keep-alive comment (also how soon a gone reader is noticed).
HEARTBEAT_S = 15.0
#: Events written in one chunk at most: a burst of ticks costs one write, not hundreds.
_BATCH = 256
#: What `?types=` may name.
EVENT_TYPES = frozenset(
    {
        "quote",
        "breaker",
        "budget",
        "budget_exhausted",
        "collection_start",
        "collection_progress",
        "collection_end",
        "stream",
        "alert",
    }
)
_SSE_TYPE = "text/event-stream; charset=utf-8"


class EventStream:
    """The body of one SSE answer: iterate for chunks; `close()` frees the watcher slot.

    Its own iterator (not a generator handed out by `__iter__`), so closing it releases the
    subscription even when the server never started iterating.
    """

    def __init__(
        self,
        sub: Subscription,
        *,
        symbols: frozenset[str] | None = None,
        types: frozenset[str] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self._sub = sub
        self._symbols = symbols
        self._types = types
        self._heartbeat_s = heartbeat_s
        self._chunks: Generator[bytes, None, None] = self._generate()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        """End the stream and leave the bus (idempotent)."""
        self._chunks.close()
        self._sub.close()

    def _wanted(self, data: dict[str, object]) -> bool:
        if self._types is not None and data["type"] not in self._types:
            return False
        if self._symbols is not None and "symbol" in data:
            return data["symbol"] in self._symbols
        return True

    def _generate(self) -> Generator[bytes, None, None]:
        sub = self._sub
        # retry: how long EventSource clients wait before reconnecting after a cut.
        yield b"retry: 2000\n: connected\n\n"
        while True:
            event = sub.get(self._heartbeat_s)
            if event is None:
                if sub.closed:
                    if sub.dropped:
                        dropped = {"type": "dropped", "reason": sub.dropped}
                        yield b"data: " + json.dumps(dropped).encode() + b"\n\n"
                    return
                yield b": keep-alive\n\n"
                continue
            parts: list[bytes] = []
            for _ in range(_BATCH):
                if self._wanted(event.data):
                    parts.append(b"data: " + event.encoded() + b"\n\n")
                event = sub.get(0) if not sub.closed else None
                if event is None:
                    break
            if parts:
                yield b"".join(parts)


def _csv_set(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


def open_event_stream(bus: EventBus, request: Request) -> Response:
    """The SSE answer for `request` (`?symbols=a,b`, `?types=quote,breaker`); 400 on bad ones."""
    symbols: frozenset[str] | None = None
    raw_symbols = _csv_set(request.query.get("symbols"))
    if raw_symbols is not None:
        try:
            symbols = frozenset(parse_symbol(text).canonical for text in raw_symbols)
        except SymbolError as exc:
            return Response.error(400, "BadRequest", f"symbols: {exc.message}")
    types: frozenset[str] | None = None
    raw_types = _csv_set(request.query.get("types"))
    if raw_types is not None:
        unknown = sorted(set(raw_types) - EVENT_TYPES)
        if unknown:
            allowed = ", ".join(sorted(EVENT_TYPES))
            return Response.error(
                400, "BadRequest", f"unknown event type {unknown[0]!r}; use: {allowed}"
            )
        types = frozenset(raw_types)
    sub = bus.subscribe()  # TooManyWatchersError → 503
    return Response(
        stream=EventStream(sub, symbols=symbols, types=types),
        content_type=_SSE_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def register_event_routes(server: ControlServer, bus: EventBus) -> None:
    """`GET /v1/events` on `server`, fed by `bus`."""
    server.route("GET", "/v1/events", lambda request: open_event_stream(bus, request))
