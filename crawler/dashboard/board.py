"""What the dashboard knows, folded from the daemon's events and status documents, and the
open tabs it goes to: rows, status, budget, collections, errors, sparklines, the next batch.

    board.rows, board.status, board.budget     # the state a page's first paint shows
    board._apply(event)                        # one `/v1/events` event folded in
    board.flush()                              # what changed, as one JSON batch to every tab

No I/O and no threads of its own: `crawler.dashboard.hub.Hub` reads the daemon and feeds it.
Everything here is read and written under `_lock`; `_wake` asks the hub's poller to look again
(a collection ended, a breaker moved, the tracked count changed).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import Any

__all__ = ["SPARK_POINTS", "Board", "Tab", "as_float", "epoch_ms", "row_from_status"]

log = logging.getLogger("crawler.dashboard")

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


def as_float(value: Any) -> float | None:
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

    def __init__(self, board: Board, size: int) -> None:
        self._board = board
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
        self._board._leave(self)
        if not self.closed:
            self.closed = True
            with suppress(queue.Full):
                self._queue.put_nowait(None)

    def __enter__(self) -> Tab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Board:
    """The dashboard's state and its tabs; see the module docstring."""

    def __init__(
        self,
        *,
        max_tabs: int = 8,
        tab_queue_size: int = 64,
        idle_grace_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_tabs = max_tabs
        self.tab_queue_size = tab_queue_size
        self._clock = clock
        self._lock = threading.RLock()
        self._wake = threading.Event()
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
        self._status_at: float | None = None
        self._budget_at: float | None = None
        self._rows_wanted = False
        # The next batch
        self._pending_rows: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, Any] = {}
        self._pending_events: list[dict[str, Any]] = []
        self._tabs: tuple[Tab, ...] = ()

    # -- folding the status --------------------------------------------------------------------

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

    def _events_state(self) -> dict[str, Any]:
        return {"connected": self.events_connected, "error": self.events_error}

    # -- folding the events --------------------------------------------------------------------

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
        value = as_float(price)
        if value is None or not isinstance(t, int):
            return
        points = self.sparks.get(symbol)
        if points is None:
            points = self.sparks[symbol] = deque(maxlen=SPARK_POINTS)
        if points and points[-1][0] >= t:
            return
        points.append((t, value))

    # -- sending -----------------------------------------------------------------------------

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

    def _idle(self) -> bool:
        """No tab has been open for the grace period."""
        since = self._idle_since
        return not self._tabs and since is not None and self._clock() - since >= self.idle_grace_s


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
