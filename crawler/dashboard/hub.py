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
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import datetime
from typing import Any

from crawler.daemon.client import ControlClient
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
SPARK_POINTS = 40
_MAX_COLLECTIONS = 20
_MAX_ERRORS = 50


def epoch_ms(iso: Any) -> int | None:
    """Milliseconds since the epoch of an ISO 8601 time, None when absent or unreadable."""
    if not isinstance(iso, str) or not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def row_from_status(entry: dict[str, Any]) -> dict[str, Any]:
    """A table row from one of `/v1/status`'s symbols."""
    quote = entry.get("last_quote") or {}
    market = entry.get("market") or {}
    return {
        "symbol": entry.get("symbol"),
        "asset_class": entry.get("asset_class"),
        "price": quote.get("price"),
        "currency": quote.get("currency"),
        "change": quote.get("change"),
        "change_pct": quote.get("change_pct"),
        "source": quote.get("source"),
        "t": epoch_ms(quote.get("as_of")),
        "stale": bool(entry.get("stale")),
        "pending": bool(entry.get("pending")),
        "market": market.get("market"),
        "market_open": market.get("open"),
        "next_open": market.get("next_open"),
    }


class Tab:
    """One open page's queue of batches (JSON bytes); None once it was dropped or closed."""

    def __init__(self, hub: Hub, size: int) -> None:
        self._hub = hub
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=size)
        self.closed = False

    def get(self, timeout_s: float) -> bytes | None:
        """The next batch; b"" after `timeout_s` without one; None once closed."""
        if self.closed and self._queue.empty():
            return None
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return b""

    def offer(self, message: bytes) -> bool:
        try:
            self._queue.put_nowait(message)
            return True
        except queue.Full:
            return False

    def close(self) -> None:
        self._hub._leave(self)
        if not self.closed:
            self.closed = True
            with suppress(queue.Full):
                self._queue.put_nowait(None)

    def __enter__(self) -> Tab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
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
        self.client = client
        self._events_client = ControlClient(client.socket_path, timeout_s=_EVENTS_READ_TIMEOUT_S)
        self.status_every_s = status_every_s
        self.budget_every_s = budget_every_s
        self.rows_every_s = rows_every_s
        self.flush_every_s = flush_every_s
        self.max_tabs = max_tabs
        self.tab_queue_size = tab_queue_size
        self._clock = clock
        self._lock = threading.RLock()
        self._rows_lock = threading.Lock()  # one full-status read at a time
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._events_stream: Any = None
        # State (under _lock)
        self.rows: dict[str, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}
        self.budget: dict[str, Any] = {}
        self.collections: deque[dict[str, Any]] = deque(maxlen=_MAX_COLLECTIONS)
        self.errors: deque[dict[str, Any]] = deque(maxlen=_MAX_ERRORS)
        self.progress: dict[str, Any] | None = None
        self.daemon_up = False
        self.collecting = False
        # No tab for `idle_grace_s`: the event stream is closed (the daemon builds no events
        # for us) until a tab comes back; a reload's gap is well inside the grace.
        self.idle_grace_s = idle_grace_s
        self._idle_since: float | None = clock()
        self._tab_came = threading.Event()
        self.key_set: bool | None = None
        self.events_connected = False
        self.events_error: str | None = None
        self.sparks: dict[str, deque[tuple[int, float]]] = {}
        self._spark_seeded: set[str] = set()
        self._rows_at: float | None = None
        self._status_at: float | None = None
        self._budget_at: float | None = None
        self._rows_wanted = False
        # The next batch
        self._pending_rows: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, Any] = {}
        self._pending_events: list[dict[str, Any]] = []
        self._tabs: tuple[Tab, ...] = ()

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
        stream = self._events_stream
        if stream is not None:
            with suppress(Exception):
                stream.close()
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

    def _take_status(self, document: dict[str, Any]) -> None:
        status = {key: value for key, value in document.items() if key != "symbols"}
        status["bright_data_key_set"] = self.key_set
        tracked = (status.get("symbols_summary") or {}).get("tracked")
        if isinstance(tracked, int) and tracked != len(self.rows):
            self._rows_wanted = True  # `crawler symbols add` elsewhere: no event says so
            self._wake.set()
        self._status_at = self._clock()
        if not self.collections:
            last = (status.get("scheduler") or {}).get("last_collection")
            if isinstance(last, dict) and last.get("started_at"):
                self.collections.appendleft(_collection_summary(last))
        running = ((status.get("scheduler") or {}).get("scheduler_state") or {}).get(
            "collection_in_progress"
        )
        # A status read before a collection's end event may be taken after it: while the
        # event stream is up, its start and end events say whether one runs.
        if isinstance(running, dict) and (self.collecting or not self.events_connected):
            progress: dict[str, Any] | None = {
                "done": running.get("done"), "total": running.get("total"),
                "at": running.get("started_at"),
            }  # fmt: skip
        elif self.collecting:  # started (its event came) but not yet in the status
            progress = self.progress
        else:
            progress = None
        if progress != self.progress:
            self.progress = progress
            self._pending["progress"] = progress
        if status != self.status:
            self.status = status
            self._pending["status"] = status

    def _mark_down(self) -> None:
        if self.daemon_up:
            self.daemon_up = False
            self._pending["daemon_up"] = False

    # -- the event stream -------------------------------------------------------------------

    def _idle(self) -> bool:
        """No tab has been open for the grace period."""
        since = self._idle_since
        return not self._tabs and since is not None and self._clock() - since >= self.idle_grace_s

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
                close = getattr(stream, "close", None)
                if close is not None:
                    with suppress(Exception):
                        close()
            with self._lock:
                self.events_connected = False
                self._pending["events"] = self._events_state()
            self._stop.wait(backoff_s)

    def _events_state(self) -> dict[str, Any]:
        return {"connected": self.events_connected, "error": self.events_error}

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        with self._lock:
            if kind == "quote":
                symbol = str(event.get("symbol"))
                row = self.rows.get(symbol)
                if row is None:
                    return  # fetched, not tracked
                row.update(
                    price=event.get("price"),
                    currency=event.get("currency"),
                    change=event.get("change"),
                    change_pct=event.get("change_pct"),
                    source=event.get("source"),
                    t=epoch_ms(event.get("as_of")),
                    stale=bool(event.get("stale")),
                    pending=False,
                )
                self._note_spark(symbol, row["t"], row["price"])
                self._pending_rows[symbol] = row
                return
            if kind == "collection_start":
                self.collecting = True
                self.progress = {"done": 0, "total": event.get("symbols"), "at": event.get("at")}
                self._pending["progress"] = self.progress
                self._wake.set()
            elif kind == "collection_progress":  # if ever subscribed to: folded all the same
                self.progress = {
                    "done": event.get("done"),
                    "total": event.get("total"),
                    "at": (self.progress or {}).get("at"),
                }
                self._pending["progress"] = self.progress
            elif kind == "collection_end":
                self.collecting = False
                summary = _collection_summary(event)
                if not self.collections or self.collections[0].get("started_at") != summary.get(
                    "started_at"
                ):
                    self.collections.appendleft(summary)
                for symbol, error in list((event.get("errors") or {}).items())[:10]:
                    self._error(event.get("at"), f"collection: {symbol}", _message(error))
                self.progress = None
                self._pending["progress"] = None
                self._pending["collections"] = list(self.collections)
                # The rows moved with the collection's quote events; only the budget is read.
                self._budget_at = None
                self._wake.set()
            elif kind == "breaker":
                self._error(
                    event.get("at"),
                    f"breaker {event.get('name')}",
                    f"{event.get('old')} → {event.get('new')}",
                )
                self._status_at = None
                self._wake.set()
            elif kind == "stream":
                if event.get("state") not in ("connected", "subscribed"):
                    what = f"stream {event.get('state')}"
                    self._error(event.get("at"), what, event.get("detail"))
                self._status_at = None
                self._wake.set()
            elif kind == "budget_exhausted":
                self._error(event.get("at"), "budget exhausted", f"${event.get('spent_usd')}")
                self._budget_at = None
                self._wake.set()
            elif kind == "budget":
                self._pending["budget_tick"] = {
                    key: event.get(key) for key in ("spent_usd", "remaining_usd", "used_pct")
                }
                return
            else:
                return
            self._pending_events.append({"type": kind, "at": event.get("at")})

    def _error(self, at: Any, what: str, detail: Any) -> None:
        entry = {"at": at, "what": what, "detail": "" if detail is None else str(detail)}
        self.errors.appendleft(entry)
        self._pending["errors"] = list(self.errors)

    def _note_spark(self, symbol: str, t: Any, price: Any) -> None:
        value = _float(price)
        if value is None or not isinstance(t, int):
            return
        points = self.sparks.get(symbol)
        if points is None:
            points = self.sparks[symbol] = deque(maxlen=SPARK_POINTS)
        if points and points[-1][0] >= t:
            return
        points.append((t, value))

    # -- polling and flushing ----------------------------------------------------------------

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
                close = getattr(stream, "close", None)
                if close is not None:
                    with suppress(Exception):
                        close()
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

    def flush(self) -> None:
        """Send what changed since the last flush to every tab, as one message."""
        with self._lock:
            if not (self._pending_rows or self._pending or self._pending_events):
                return
            batch: dict[str, Any] = dict(self._pending)
            if batch.pop("reset_rows", False):
                batch["all_rows"] = list(self.rows.values())
                self._pending_rows.clear()
            if self._pending_rows:
                batch["rows"] = list(self._pending_rows.values())
            if self._pending_events:
                batch["news"] = self._pending_events
            self._pending_rows, self._pending, self._pending_events = {}, {}, []
            tabs = self._tabs
        if not tabs:
            return
        message = json.dumps(batch, separators=(",", ":"), default=str).encode("utf-8")
        for tab in tabs:
            if not tab.offer(message):
                log.info("dropping a tab that is %d batches behind", self.tab_queue_size)
                tab.close()

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
            t, value = epoch_ms(quote.get("as_of")), _float(quote.get("price"))
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

    # -- tabs --------------------------------------------------------------------------------

    def subscribe(self) -> Tab | None:
        """A new tab's queue, or None when `max_tabs` are open."""
        with self._lock:
            if len(self._tabs) >= self.max_tabs:
                return None
            tab = Tab(self, self.tab_queue_size)
            self._tabs = (*self._tabs, tab)
            self._idle_since = None
        self._tab_came.set()
        self._wake.set()
        return tab

    def _leave(self, tab: Tab) -> None:
        with self._lock:
            self._tabs = tuple(t for t in self._tabs if t is not tab)
            if not self._tabs and self._idle_since is None:
                self._idle_since = self._clock()

    @property
    def tab_count(self) -> int:
        return len(self._tabs)


def _due(at: float | None, every_s: float, now: float) -> bool:
    return at is None or now - at >= every_s


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)
    return str(error)


def _collection_summary(report: dict[str, Any]) -> dict[str, Any]:
    errors = report.get("errors")
    return {
        "started_at": report.get("started_at"),
        "duration_s": report.get("duration_s"),
        "symbols": report.get("symbols"),
        "quotes": report.get("quotes"),
        "stale": report.get("stale"),
        "errors": len(errors) if isinstance(errors, dict | list) else errors,
        "sources": report.get("sources") or {},
        "skipped_closed": len(report.get("skipped_closed") or []),
        "paid_allowance": report.get("paid_allowance"),
        "succeeded": report.get("succeeded"),
    }
