"""What the dashboard knows, kept in one place whatever the number of tabs: the daemon is asked
once, and every tab is told.

    hub = Hub(ControlClient(socket_path))
    hub.start()                 # one /v1/events stream, a poller, a flusher (threads)
    hub.snapshot()              # rows, status, budget, collections, errors: a page's first paint
    with hub.subscribe() as tab:
        message = tab.get(timeout_s=10)   # bytes: one JSON batch of changed rows and news
    hub.stop()

The daemon's cost does not grow with tabs: one event stream (of the daemon's 16 watcher slots)
feeds every tab, and is open only while a tab is (or was, `idle_grace_s` ago); while a tab is
open, `/v1/status` without rows is read every `status_every_s` (every second while a collection
runs: its progress), `/v1/budget` every `budget_every_s` and after each collection, and the
whole watchlist (`/v1/status` with every row) at most every `rows_every_s`, when the tracked
count changes, and after a symbol is added or removed here. Quote events are folded into rows
and sent to tabs in batches every `flush_every_s` (the newest quote of each symbol once), so
1,000 streaming symbols cost a tab a few messages a second. A tab more than `tab_queue_size`
batches behind is dropped (its page reconnects and reloads its snapshot): a stuck tab never
holds the hub up.

What is known, and how events fold into it, is `crawler.dashboard.board.Board` (no I/O); the hub
is that board plus the reading: the event stream, the polls and the flusher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from crawler.daemon.client import ControlClient
from crawler.dashboard.board import SPARK_POINTS, Board, Tab, as_float, epoch_ms, row_from_status
from crawler.utils.exceptions import CrawlerError
from crawler.utils.sse import iter_sse

__all__ = ["Hub", "Tab", "epoch_ms", "iter_sse", "row_from_status"]

log = logging.getLogger("crawler.dashboard")

#: Not `collection_progress` (one per symbol) nor `budget` (one per paid request): each event
#: costs the daemon its building and sending, and a status read a second while a collection
#: runs gives its progress for less.
_EVENT_TYPES = "quote,breaker,stream,budget_exhausted,collection_start,collection_end"
#: How often the status is read while a collection runs (its progress).
_COLLECTING_STATUS_EVERY_S = 1.0
#: Well above the daemon's 15 s keep-alive comments.
_EVENTS_READ_TIMEOUT_S = 60.0


class Hub(Board):
    """The daemon's state as the dashboard shows it; see the module docstring."""

    def __init__(
        self,
        client: ControlClient,
        *,
        status_every_s: float = 5.0,
        budget_every_s: float = 15.0,
        rows_every_s: float = 60.0,
        flush_every_s: float = 0.25,
        max_tabs: int = 8,
        tab_queue_size: int = 64,
        idle_grace_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            max_tabs=max_tabs, tab_queue_size=tab_queue_size, idle_grace_s=idle_grace_s, clock=clock
        )
        self.client = client
        self._events_client = ControlClient(client.socket_path, timeout_s=_EVENTS_READ_TIMEOUT_S)
        self.status_every_s = status_every_s
        self.budget_every_s = budget_every_s
        self.rows_every_s = rows_every_s
        self.flush_every_s = flush_every_s
        self._rows_lock = threading.Lock()  # one full-status read at a time
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._events_stream: Any = None
        self._rows_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Read the daemon once, then follow it on background threads."""
        with suppress(CrawlerError):
            self.refresh_rows()
            self.refresh_status()
            self.refresh_budget()
        for name, target in (
            ("dashboard-events", self._events_loop),
            ("dashboard-poll", self._poll_loop),
            ("dashboard-flush", self._flush_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop following the daemon; every tab is closed."""
        self._stop.set()
        self._wake.set()
        _close_quietly(self._events_stream)
        for tab in self._tabs:
            tab.close()
        for thread in self._threads:
            thread.join(timeout_s)

    # -- reading the daemon ------------------------------------------------------------------

    def refresh_rows(self) -> None:
        """Every symbol's row from a full `/v1/status` (the watchlist may have changed)."""
        with self._rows_lock:
            try:
                document = self.client.call("GET", "/status")
            except CrawlerError:
                with self._lock:
                    self._mark_down()
                raise
            try:  # only whether a key is set reaches the page, never the (masked) key
                config = self.client.call("GET", "/config")
                masked = config.get("bright_data_api_key")
                self.key_set = isinstance(masked, str) and masked.startswith("****")
            except CrawlerError:
                pass
            rows = {}
            for entry in document.get("symbols") or []:
                row = row_from_status(entry)
                rows[str(row["symbol"])] = row
            with self._lock:
                self.daemon_up = True
                self._rows_at = self._clock()
                self._rows_wanted = False
                self.rows = rows
                self._take_status(document)
                self._pending["reset_rows"] = True
                for symbol, row in rows.items():
                    self._note_spark(symbol, row.get("t"), row.get("price"))
        self._wake.set()

    def refresh_status(self) -> None:
        """Everything but the rows, from `/v1/status?rows=0`."""
        try:
            document = self.client.call("GET", "/status", query={"rows": "0"})
        except CrawlerError:
            with self._lock:
                self._mark_down()
            raise
        with self._lock:
            self.daemon_up = True
            self._take_status(document)

    def refresh_budget(self) -> None:
        """The budget report from `/v1/budget`."""
        budget = self.client.call("GET", "/budget")
        with self._lock:
            self._budget_at = self._clock()
            if budget != self.budget:
                self.budget = budget
                self._pending["budget"] = budget

    # -- the event stream -------------------------------------------------------------------

    def _events_loop(self) -> None:
        backoff_s = 0.5
        while not self._stop.is_set():
            if self._idle():
                self._tab_came.wait(1.0)
                self._tab_came.clear()
                continue
            try:
                stream = self._events_client.stream("GET", "/events", query={"types": _EVENT_TYPES})
            except CrawlerError as exc:
                with self._lock:
                    self.events_connected = False
                    self.events_error = exc.message
                    if "not running" in exc.message:
                        self._mark_down()
                    self._pending["events"] = self._events_state()
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            self._events_stream = stream
            backoff_s = 0.5
            with self._lock:
                was_down = not self.daemon_up
                self.events_connected = True
                self.events_error = None
                self.daemon_up = True
                self._pending["events"] = self._events_state()
                self._pending["daemon_up"] = True
            if was_down or self._rows_at is None:
                self._rows_wanted = True
                self._wake.set()
            try:
                for event in iter_sse(stream):
                    self._apply(event)
                    if self._stop.is_set():
                        break
            except CrawlerError as exc:
                with self._lock:
                    self.events_error = exc.message
            finally:
                self._events_stream = None
                _close_quietly(stream)
            with self._lock:
                self.events_connected = False
                self._pending["events"] = self._events_state()
            self._stop.wait(backoff_s)

    # -- polling -----------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            stream = self._events_stream
            if stream is not None and self._idle():
                with self._lock:
                    self._rows_at = None  # quotes will be missed: read the rows at the next tab
                _close_quietly(stream)
            now = self._clock()
            watched = bool(self._tabs)
            try:
                if self._rows_wanted or (watched and _due(self._rows_at, self.rows_every_s, now)):
                    self.refresh_rows()
                elif watched and _due(
                    self._status_at,
                    _COLLECTING_STATUS_EVERY_S if self.collecting else self.status_every_s,
                    now,
                ):
                    self.refresh_status()
                if watched and _due(self._budget_at, self.budget_every_s, now):
                    self.refresh_budget()
            except CrawlerError as exc:
                log.debug("polling the daemon failed: %s", exc.message)
                self._stop.wait(1.0)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self.flush()

    # -- what pages ask for -----------------------------------------------------------------

    def snapshot(self, symbol: str | None = None) -> dict[str, Any]:
        """A page's first paint; reads the daemon now if what is known is too old. With
        `symbol`, only that symbol's row (a symbol's page needs no other)."""
        now = self._clock()
        with suppress(CrawlerError):
            if _due(self._rows_at, self.rows_every_s, now) or self._rows_wanted:
                self.refresh_rows()
            elif _due(self._status_at, self.status_every_s, now):
                self.refresh_status()
            if _due(self._budget_at, self.budget_every_s, now):
                self.refresh_budget()
        with self._lock:
            if symbol is None:
                rows = list(self.rows.values())
            else:
                rows = [self.rows[symbol]] if symbol in self.rows else []
            return {
                "rows": rows,
                "status": self.status,
                "budget": self.budget,
                "collections": list(self.collections),
                "progress": self.progress,
                "errors": list(self.errors),
                "daemon_up": self.daemon_up,
                "events": self._events_state(),
            }

    def spark_points(self, symbols: Iterable[str]) -> dict[str, list[float]]:
        """The last prices of each symbol (oldest first), read from the history once per
        symbol and kept up to date by the event stream after that."""
        answer: dict[str, list[float]] = {}
        for symbol in symbols:
            with self._lock:
                known = symbol in self.rows
                seeded = symbol in self._spark_seeded
            if not known:
                continue
            if not seeded:
                self._seed_spark(symbol)
            with self._lock:
                answer[symbol] = [price for _t, price in self.sparks.get(symbol, ())]
        return answer

    def _seed_spark(self, symbol: str) -> None:
        try:
            body = self.client.call(
                "GET", "/history", query={"symbol": symbol, "limit": str(SPARK_POINTS)}
            )
        except CrawlerError:
            return
        points = []
        for quote in reversed(body.get("quotes") or []):
            t, value = epoch_ms(quote.get("as_of")), as_float(quote.get("price"))
            if t is not None and value is not None:
                points.append((t, value))
        with self._lock:
            merged = {t: value for t, value in points}
            merged.update(self.sparks.get(symbol, ()))
            series: deque[tuple[int, float]] = deque(sorted(merged.items()), maxlen=SPARK_POINTS)
            self.sparks[symbol] = series
            self._spark_seeded.add(symbol)

    def want_rows(self) -> None:
        """Read the whole watchlist again soon (a symbol was added or removed)."""
        self._rows_wanted = True
        self._wake.set()


def _due(at: float | None, every_s: float, now: float) -> bool:
    return at is None or now - at >= every_s


def _close_quietly(stream: Any) -> None:
    """Close the event stream (None: none is open); it may be closing from the other side."""
    close = getattr(stream, "close", None)
    if close is not None:
        with suppress(Exception):
            close()
