"""The daemon's event bus: what happens, told to whoever watches (`GET /v1/events`).

    bus = EventBus()
    with bus.subscribe() as sub:                   # TooManyWatchersError past `max_subscribers`
        bus.publish("breaker", name="yfinance", old="closed", new="open")
        event = sub.get(timeout_s=1.0)             # an Event, or None on timeout / once closed
        event.data                                 # {"type": "breaker", "at": "...", ...}
        event.encoded()                            # b'{"type":"breaker",...}' (made once)

Quote listeners (`add_quote_listener`) are called with every published Quote, on the
publisher's thread, whether anyone watches or not: the alerts look at quotes there, the one
place every source's quotes pass. A listener must be quick and must not block.

Publishing never blocks and never fails: each subscriber has its own bounded queue, and a
subscriber whose queue is full (a reader slower than the events) is dropped (`sub.dropped`
says why) rather than slowing the daemon or growing without bound. With nobody subscribed,
`publish` returns before building anything, so the hot paths (every quote, every tick) pay one
attribute read.

Event types (each `data` has `type` and `at`, the UTC time it was published):

    quote                a quote landed (any source, the stream included): the Quote's fields
    breaker              a circuit breaker changed state: name, old, new
    budget               a paid request was settled: spent_usd, remaining_usd, used_pct
    budget_exhausted     today's budget ran out: spent_usd, requests_used
    collection_start     symbols (how many will be looked at)
    collection_progress  done, total, symbol, ok (one per symbol fetched)
    collection_end       the collection's report (CollectionReport.as_dict())
    stream               the live stream's connection changed: state, detail
    alert                an alert fired (`crawler.alerts`): id, kind, symbol, rule, value,
                         threshold, message, fires, node, notify (URLs masked); test: true
                         for `crawler alerts test`
    dropped              sent by the SSE route, last, to a reader dropped for being slow
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

from crawler.utils.clock import utc_now
from crawler.utils.exceptions import DaemonError

if TYPE_CHECKING:
    from crawler.normalizer.schemas import Quote

__all__ = [
    "DEFAULT_MAX_SUBSCRIBERS",
    "DEFAULT_QUEUE_SIZE",
    "Event",
    "EventBus",
    "Subscription",
    "TooManyWatchersError",
]

#: Watchers at once: well under the control socket's 64 connections, so watchers can never
#: take every slot and lock `crawler status` out.
DEFAULT_MAX_SUBSCRIBERS = 16
#: Events a subscriber may lag behind before it is dropped (a few seconds of 500 symbols
#: streaming at 5 ticks/s each, far more than a live reader ever lags).
DEFAULT_QUEUE_SIZE = 8192


def _log_listener_failure() -> None:
    from crawler.logging import get_logger

    get_logger("crawler.events").exception("a quote listener failed")


class TooManyWatchersError(DaemonError):
    """Every watcher slot is taken (the route answers 503)."""


class Event:
    """One published event: `data` (JSON-safe, with `type` and `at`); `encoded()` its JSON."""

    __slots__ = ("_encoded", "data", "type")

    def __init__(self, data: dict[str, Any]) -> None:
        self.type: str = data["type"]
        self.data = data
        self._encoded: bytes | None = None

    def encoded(self) -> bytes:
        """Compact JSON, encoded once however many subscribers send it (a benign race)."""
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = json.dumps(
                self.data, separators=(",", ":"), default=str
            ).encode("utf-8")
        return encoded


class Subscription:
    """One watcher's bounded queue. Iterate with `get()`; `close()` (or the `with`) leaves."""

    def __init__(self, bus: EventBus, queue_size: int) -> None:
        self._bus = bus
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=queue_size)
        self.dropped: str | None = None
        self.closed = False

    def get(self, timeout_s: float | None = None) -> Event | None:
        """The next event; None after `timeout_s` without one, or once closed or dropped."""
        if self.closed and self._queue.empty():
            return None
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def _offer(self, event: Event | None) -> bool:
        """Queue `event` without blocking; False when the queue is full."""
        try:
            self._queue.put_nowait(event)
            return True
        except queue.Full:
            return False

    def _end(self, reason: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.dropped = reason
        # Wake a reader blocked in get(); room is made if the queue is full.
        while not self._offer(None):
            with suppress(queue.Empty):
                self._queue.get_nowait()

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        self._bus._remove(self, None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of events to bounded subscriber queues; see the module docstring."""

    def __init__(
        self,
        *,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if max_subscribers < 1 or queue_size < 1:
            raise ValueError("max_subscribers and queue_size must be at least 1")
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        self._now = now
        self._lock = threading.Lock()
        # Replaced, never mutated: publishers iterate a snapshot without taking the lock.
        self._subscribers: tuple[Subscription, ...] = ()
        self._closed = False
        # Replaced, never mutated, like _subscribers.
        self._quote_listeners: tuple[Callable[[Quote], None], ...] = ()
        self.published = 0
        self.dropped_subscribers = 0

    @property
    def watched(self) -> bool:
        """Whether anyone is subscribed (publishers may skip building an event when not)."""
        return bool(self._subscribers)

    def subscribe(self) -> Subscription:
        """A new subscription; raises TooManyWatchersError when all slots are taken."""
        with self._lock:
            if self._closed:
                raise DaemonError("the daemon is stopping; no new watchers")
            if len(self._subscribers) >= self.max_subscribers:
                raise TooManyWatchersError(
                    f"{self.max_subscribers} watchers are already connected; close one and retry"
                )
            sub = Subscription(self, self.queue_size)
            self._subscribers = (*self._subscribers, sub)
            return sub

    @contextmanager
    def subscribed(self) -> Iterator[Subscription]:
        """`with bus.subscribed() as sub:` the subscription, closed on the way out."""
        sub = self.subscribe()
        try:
            yield sub
        finally:
            sub.close()

    def publish(self, event_type: str, **fields: Any) -> None:
        """Send an event of `event_type` with `fields` to every subscriber; never blocks."""
        if not self._subscribers:
            return
        self._fan_out(Event({"type": event_type, "at": self._now().isoformat(), **fields}))

    def add_quote_listener(self, listener: Callable[[Quote], None]) -> None:
        """Call `listener(quote)` for every quote published from now on (see the docstring)."""
        with self._lock:
            self._quote_listeners = (*self._quote_listeners, listener)

    def publish_quote(self, quote: Quote) -> None:
        """A `quote` event from a Quote (its JSON fields), built only when someone watches;
        the quote listeners get the Quote itself either way."""
        for listener in self._quote_listeners:
            try:
                listener(quote)
            except Exception:  # a listener's bug must not fail the publisher (a collection)
                _log_listener_failure()
        if not self._subscribers:
            return
        data = quote.to_json_dict()
        self._fan_out(Event({"type": "quote", "at": self._now().isoformat(), **data}))

    def _fan_out(self, event: Event) -> None:
        self.published += 1
        for sub in self._subscribers:
            if not sub._offer(event):
                self._remove(sub, f"too slow: more than {self.queue_size} events behind")

    def _remove(self, sub: Subscription, reason: str | None) -> None:
        with self._lock:
            if sub not in self._subscribers:
                sub._end(sub.dropped or reason)
                return
            self._subscribers = tuple(s for s in self._subscribers if s is not sub)
            if reason is not None:
                self.dropped_subscribers += 1
        sub._end(reason)

    def close(self) -> None:
        """End every subscription (their readers see None) and refuse new ones."""
        with self._lock:
            self._closed = True
            subs, self._subscribers = self._subscribers, ()
        for sub in subs:
            sub._end(None)

    def statistics(self) -> dict[str, Any]:
        """watchers, max_watchers, published, dropped_watchers."""
        return {
            "watchers": len(self._subscribers),
            "max_watchers": self.max_subscribers,
            "published": self.published,
            "dropped_watchers": self.dropped_subscribers,
        }
