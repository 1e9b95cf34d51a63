"""`crawler watch [SYMBOLS...]`: a live board fed by the daemon's event stream (`/v1/events`).

    crawler watch                  # every tracked symbol, a table that updates in place
    crawler watch AAPL:US EURUSD   # just these
    crawler watch --json | jq .    # one JSON object per event and line, for pipes (events
                                   # from now on: no snapshot of the quotes already there)
    crawler watch > quotes.txt     # off a terminal: a text line per quote, flushed as it lands

The board starts from the last quotes `/status` knows, then applies `quote` events as they land
(any source: the stream, a collection, a fetch); the age column ticks between events. Breaker,
stream and collection events show in the line under the table. When the watchlist is taller
than the terminal, the symbols that have ticked since the watch began come first (in the order
they first ticked, so rows do not jump about) and the caption says how many rows are hidden:
otherwise a 1,000-symbol watchlist on a Sunday shows a screen of closed stocks and none of the
crypto that is moving. Ctrl-C exits 0. The daemon
must run (exit 3 otherwise); if it stops, the watch ends with exit 3; if it drops us for being
too slow, exit 1.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from crawler.cli.common import client_for, fail, load
from crawler.daemon.client import ControlClient
from crawler.utils.exceptions import CrawlerError, DaemonError
from crawler.utils.sse import iter_sse as read_sse
from crawler.utils.text import clean_data

__all__ = ["Board", "iter_sse", "quote_line", "register", "watch"]

#: The socket read timeout: well above the daemon's 15 s keep-alive comments.
_READ_TIMEOUT_S = 60.0
_REFRESH_PER_S = 4
_EVENT_TYPES = "quote,breaker,stream,budget_exhausted,collection_start,collection_end,alert"
#: Terminal lines the board needs besides its rows: borders, header, its rule, the caption and
#: a spare for a caption that wraps.
_CHROME_LINES = 7


def iter_sse(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects of the `data:` lines of a Server-Sent Events body (comments skipped),
    read by `crawler.utils.sse` and cleaned of terminal escapes (upstream names, errors)."""
    for event in read_sse(chunks):
        yield clean_data(event)


class Board:
    """The rows of the live table: the newest quote per symbol, and a line of news. Pure."""

    def __init__(self, symbols: Iterable[str] = ()) -> None:
        self.rows: dict[str, dict[str, Any]] = {name: {} for name in symbols}
        self.flash: dict[str, float] = {}  # symbol → monotonic s of its last update
        self.ticked: dict[str, None] = {}  # symbols updated during the watch, first-tick order
        self.news = "waiting for events"
        self.updates = 0

    def apply(self, event: Mapping[str, Any], now_s: float) -> None:
        """Fold one event in."""
        kind = event.get("type")
        if kind == "quote":
            symbol = str(event.get("symbol"))
            self.rows[symbol] = dict(event)
            self.flash[symbol] = now_s
            self.ticked.setdefault(symbol, None)
            self.updates += 1
        elif kind == "breaker":
            self.news = f"breaker {event.get('name')}: {event.get('old')} → {event.get('new')}"
        elif kind == "stream":
            self.news = f"stream {event.get('state')}: {event.get('detail')}"
        elif kind == "alert":
            self.news = f"ALERT {event.get('rule')}: {event.get('message')}"
        elif kind == "budget_exhausted":
            self.news = f"budget exhausted for {event.get('day')} (${event.get('spent_usd')})"
        elif kind == "collection_start":
            self.news = f"collection started: {event.get('fetching')} symbols to fetch"
        elif kind == "collection_end":
            self.news = (
                f"collection done: {event.get('quotes')} quotes, "
                f"{len(event.get('errors') or {})} errors in {event.get('duration_s')}s"
            )

    def shown(self, max_rows: int | None = None) -> tuple[list[str], int]:
        """The symbols to draw, at most `max_rows`, and how many are left out. When they do not
        all fit, those that ticked during the watch come first; otherwise the given order."""
        names = list(self.rows)
        if max_rows is None or len(names) <= max_rows:
            return names, 0
        quiet = [name for name in names if name not in self.ticked]
        ordered = [name for name in self.ticked if name in self.rows] + quiet
        keep = max(1, max_rows)
        return ordered[:keep], len(ordered) - keep

    def table(self, now: datetime, now_s: float, max_rows: int | None = None) -> Any:
        """A rich Table of the board at `now` (ages computed at render, so they tick), of at
        most `max_rows` rows (all when None)."""
        from rich.table import Table
        from rich.text import Text

        from crawler.cli.render import format_age

        names, hidden = self.shown(max_rows)
        caption = self.news
        if hidden:
            caption += (
                f"; {hidden} more not shown (quiet since the watch began): "
                "`crawler watch SYMBOL...` picks them"
            )
        table = Table(caption=caption, caption_justify="left")
        for name, justify in (
            ("symbol", "left"), ("price", "right"), ("change", "right"), ("change %", "right"),
            ("source", "left"), ("age", "right"),
        ):  # fmt: skip
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for symbol in names:
            quote = self.rows[symbol]
            if not quote:
                table.add_row(symbol, "-", "-", "-", "no quote yet", "-")
                continue
            style = _direction_style(quote.get("change"))
            price = f"{quote.get('price')} {quote.get('currency') or ''}".strip()
            fresh = now_s - self.flash.get(symbol, -1e9) < 1.0
            table.add_row(
                symbol,
                Text(price, style="bold" if fresh else ""),
                Text(_signed(quote.get("change")), style=style),
                Text(_signed(quote.get("change_pct"), "%"), style=style),
                str(quote.get("source", "-")),
                format_age(_age_s(quote, now)),
            )
        return table


def _direction_style(change: Any) -> str:
    try:
        value = float(change)
    except (TypeError, ValueError):
        return ""
    return "green" if value > 0 else "red" if value < 0 else ""


def _signed(value: Any, suffix: str = "") -> str:
    """+1.25 / -0.4 as sent (exact); a percentage to two places."""
    if value is None:
        return "-"
    if suffix:
        try:
            return f"{float(value):+.2f}{suffix}"
        except (TypeError, ValueError):
            return str(value)
    text = str(value)
    return text if text.startswith(("-", "+")) or text in ("0", "0.0") else "+" + text


def _age_s(quote: Mapping[str, Any], now: datetime) -> float | None:
    stamp = quote.get("as_of") or quote.get("fetched_at")
    if not isinstance(stamp, str):
        return None
    try:
        return max(0.0, (now - datetime.fromisoformat(stamp)).total_seconds())
    except ValueError:
        return None


def _canonical(symbols: list[str]) -> list[str]:
    from crawler.normalizer.symbols import parse_symbol

    try:
        return [parse_symbol(text).canonical for text in symbols]
    except CrawlerError as exc:
        fail(exc.message, 2)


def _open_events(client: ControlClient, symbols: list[str]) -> Iterator[bytes]:
    query = {"types": _EVENT_TYPES}
    if symbols:
        query["symbols"] = ",".join(symbols)
    return client.stream("GET", "/v1/events", query=query)


def _end_of_stream(last: dict[str, Any] | None) -> None:
    """Why the stream ended, as an exit: dropped for slowness (1), else the daemon left (3)."""
    if last is not None and last.get("type") == "dropped":
        fail(f"the daemon dropped this watch: {last.get('reason')}; run it again", 1)
    fail("the daemon closed the event stream (it stopped); the watch ended", 3)


NdJsonOpt = Annotated[
    bool, typer.Option("--json", help="One JSON object per event and line (NDJSON).")
]
MajorUnitsOpt = Annotated[
    bool, typer.Option("--major-units", help="GBp, ZAc, ILA prices in GBP, ZAR, ILS.")
]


def watch(
    ctx: typer.Context,
    symbols: Annotated[
        list[str] | None, typer.Argument(help="Symbols to watch (default: every tracked one).")
    ] = None,
    as_json: NdJsonOpt = False,
    major_units: MajorUnitsOpt = False,
) -> None:
    """Watch quotes live (Ctrl-C to quit): price, change, source, age, as they land."""
    wanted = _canonical(list(symbols or []))
    settings = load(ctx)
    client = client_for(settings, timeout_s=_READ_TIMEOUT_S)
    units = _in_major_units if major_units or settings.major_units else None
    try:
        if as_json:
            _watch_json(client, wanted, units)
        elif not sys.stdout.isatty():
            _watch_lines(client, wanted, units)
        else:
            _watch_table(client, wanted, units)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _in_major_units(event: dict[str, Any]) -> dict[str, Any]:
    """A quote event (or a status row's last quote) with GBp, ZAc, ILA in GBP, ZAR, ILS."""
    from crawler.normalizer.units import major_dict

    return major_dict(event)


Units = Callable[[dict[str, Any]], dict[str, Any]] | None


def _watch_json(client: ControlClient, wanted: list[str], units: Units = None) -> None:
    last: dict[str, Any] | None = None
    events = iter_sse(_open_events(client, wanted))
    out = sys.stdout
    try:
        for event in events:
            if units is not None and event.get("type") == "quote":
                event = units(event)
            last = event
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            out.flush()
    except BrokenPipeError:  # `| head` closed the pipe: done, quietly
        raise typer.Exit(0) from None
    except DaemonError as exc:
        fail(exc.message, 3)
    _end_of_stream(last)


def quote_line(quote: Mapping[str, Any]) -> str:
    """One quote as a line of text: time (UTC), symbol, price, currency, change %, source."""
    stamp = quote.get("as_of") or quote.get("fetched_at")
    try:
        when = datetime.fromisoformat(str(stamp)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        when = "-"
    return " ".join(
        (
            when,
            str(quote.get("symbol")),
            str(quote.get("price", "-")),
            str(quote.get("currency") or "-"),
            _signed(quote.get("change_pct"), "%"),
            str(quote.get("source", "-")),
        )
    )


def _watch_lines(client: ControlClient, wanted: list[str], units: Units = None) -> None:
    """Off a terminal (`crawler watch > file`): the last quotes, then a line per event as it
    lands, each flushed at once, so the file holds what was seen even after a kill. Events
    other than quotes are lines starting with "# " (what the board's caption would say)."""
    status = client.call("GET", "/status")
    out = sys.stdout
    board = Board()
    last: dict[str, Any] | None = None
    try:
        for row in status.get("symbols") or []:
            quote = row.get("last_quote")
            if isinstance(quote, dict) and (not wanted or row.get("symbol") in wanted):
                out.write(quote_line(quote if units is None else units(quote)) + "\n")
        out.flush()
        for event in iter_sse(_open_events(client, wanted)):
            last = event
            if event.get("type") == "quote":
                out.write(quote_line(event if units is None else units(event)) + "\n")
            else:
                board.apply(event, time.monotonic())
                out.write(f"# {board.news}\n")
            out.flush()
    except BrokenPipeError:
        raise typer.Exit(0) from None
    except DaemonError as exc:
        fail(exc.message, 3)
    _end_of_stream(last)


def _watch_table(client: ControlClient, wanted: list[str], units: Units = None) -> None:
    from rich.live import Live

    from crawler.cli.render import console

    status = client.call("GET", "/status")
    rows = {row.get("symbol"): row.get("last_quote") for row in status.get("symbols") or []}
    board = Board(wanted or [str(name) for name in rows])
    for name in list(board.rows):
        quote = rows.get(name)
        if isinstance(quote, dict):
            board.rows[name] = quote if units is None else units(quote)
        elif name not in rows:
            board.rows[name] = {"symbol": name, "source": "not tracked"}
    live_stats = status.get("stream")
    if isinstance(live_stats, dict):
        board.news = f"stream {live_stats.get('state')}, {live_stats.get('subscribed')} subscribed"
    stream = _open_events(client, wanted)
    inbox: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()

    def read() -> None:
        try:
            for event in iter_sse(stream):
                inbox.put(event)
            inbox.put(None)
        except BaseException as exc:  # handed to the main thread, which owns the exit
            inbox.put(exc)

    threading.Thread(target=read, name="crawler-watch", daemon=True).start()
    last: dict[str, Any] | None = None
    screen = console()

    def max_rows() -> int | None:
        # Off a terminal the board is printed once at exit, whole; on one, what fits (read at
        # each refresh, so a resized window follows).
        return max(1, screen.height - _CHROME_LINES) if screen.is_terminal else None

    with Live(
        board.table(datetime.now(UTC), time.monotonic(), max_rows()),
        console=screen,
        refresh_per_second=_REFRESH_PER_S,
    ) as live:
        while True:
            ended = False
            deadline_s = time.monotonic() + 1 / _REFRESH_PER_S
            while (left_s := deadline_s - time.monotonic()) > 0:
                try:
                    item = inbox.get(timeout=left_s)
                except queue.Empty:
                    break
                if item is None:
                    ended = True
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, DaemonError):
                        fail(item.message, 3)
                    raise item
                last = item
                if units is not None and item.get("type") == "quote":
                    item = units(item)
                board.apply(item, time.monotonic())
            live.update(board.table(datetime.now(UTC), time.monotonic(), max_rows()))
            if ended:
                break
    _end_of_stream(last)


def register(app: typer.Typer) -> None:
    """Add `watch` to `app`."""
    app.command()(watch)
