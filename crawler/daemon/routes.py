"""The control API: each route validates its input and calls one `Operations` method.

Every path below is served under `/v1` (`GET /v1/status`); the unversioned paths stay as
deprecated aliases for one release. `GET /v1/ping` (built into the server) answers the API
version, also sent with every answer in the `Crawler-Api-Version` header.

    GET    /status?rows=N               everything `crawler status` shows (N symbol rows, stale
                                        and pending first; all without rows)
    GET    /health                      {"status": "ok", "pid": ...}: cheap, for probes
    POST   /fetch      {"symbols": [...], "fresh": false, "asset_class": null, "progress": false,
                        "paid": false}
                                        "progress": true streams JSON lines as symbols finish
    GET    /symbols
    POST   /symbols    {"symbol": "TSLA:US", "asset_class": null}   201 added, 200 already there
                       {"symbols": [...up to 1,000], "asset_class": null}   200 {"symbols": [one
                       answer each], "full": "..." when the watchlist filled up part-way}
    DELETE /symbols/{symbol}            404 NotTracked when it was not tracked
    POST   /collect                     a collection now; its report
    POST   /stop                        202; the daemon stops as on SIGTERM
    GET    /config                      effective settings, secrets masked
    GET    /budget                      today's spend, pace, paid per hour, top symbols, targets
    GET    /metrics                     Prometheus text exposition (format 0.0.4)
    GET    /history?symbol=&since=&until=&limit=&order=newest|oldest&format=json|csv|jsonl
                                        newest first; limit 100 by default, 0 = all (csv);
                                        &units=major: GBp, ZAc, ILA in GBP, ZAR, ILS
    POST   /backfill   {"symbols": [...], "all": false, "since": "1y", "until": null,
                        "interval": "1d", "progress": false}
                                        past bars from Yahoo's chart, only what is missing;
                                        "progress": true streams JSON lines (plan, progress,
                                        heartbeat every 10 s, then result or error)
    GET    /export?format=csv|jsonl|parquet&since=&until=&symbols=a,b&units=source|major
                                        streamed; X-Crawler-Rows

A body field of the wrong type is a 400 BadRequest naming the field; errors raised by the
operations map to statuses through `crawler.daemon.control_server.ERROR_STATUS`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from crawler.daemon.control_server import ControlServer, Request, Response
from crawler.daemon.fields import (
    BadRequest,
    body_of,
    checked,
    flag,
    int_query,
    optional_str,
    required_str,
    strings,
)
from crawler.service.exports import HistoryQuery
from crawler.service.verbs import Operations
from crawler.utils.exceptions import CrawlerError

__all__ = ["register_routes"]

log = logging.getLogger("crawler.daemon.routes")

_CSV_TYPE = "text/csv; charset=utf-8"
_JSONL_TYPE = "application/jsonl; charset=utf-8"
_PARQUET_TYPE = "application/vnd.apache.parquet"
_EXPORT_TYPES = {"csv": _CSV_TYPE, "jsonl": _JSONL_TYPE, "parquet": _PARQUET_TYPE}
_NDJSON_TYPE = "application/x-ndjson"
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_FETCH_SYMBOLS = 1000
_SYMBOLS = 'strings, e.g. ["AAPL:US"]'
#: A streamed history says how many rows it holds and how many matched (it may be cut).
_ROWS_HEADER = "X-Crawler-Rows"
_TOTAL_ROWS_HEADER = "X-Crawler-Rows-Total"


#: A streamed backfill sends a line at least this often, so a long 429 pause is not a timeout.
_HEARTBEAT_S = 10.0


def _backfill_with_progress(ops: Operations, arguments: dict[str, Any]) -> Iterator[bytes]:
    """`ops.backfill` as JSON lines: {"type": "plan", "requests"}, then {"type": "progress",
    "done", "total", "symbol"} after each request ({"type": "heartbeat"} when none came for a
    while), then {"type": "result", ...} or {"type": "error", "error": {...}}. The backfill
    runs on its own thread: a client that goes away stops only its progress."""
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def work() -> None:
        try:
            report = ops.backfill(
                **arguments,
                on_plan=lambda requests: lines.put({"type": "plan", "requests": requests}),
                on_progress=lambda done, total, symbol: lines.put(
                    {"type": "progress", "done": done, "total": total, "symbol": symbol}
                ),
            )
            lines.put({"type": "result", **report})
        except CrawlerError as exc:
            lines.put(
                {"type": "error", "error": {"type": type(exc).__name__, "message": exc.message}}
            )
        except BaseException:
            log.exception("backfill failed")
            lines.put(
                {
                    "type": "error",
                    "error": {"type": "InternalError", "message": "see the daemon log"},
                }
            )

    threading.Thread(target=work, name="backfill", daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=_HEARTBEAT_S)
        except queue.Empty:
            line = {"type": "heartbeat"}
        yield json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n"
        if line["type"] in ("result", "error"):
            return


def _fetch_with_progress(
    ops: Operations,
    symbols: list[str],
    fresh: bool,
    asset_class: str | None,
    total: int,
    paid: bool = False,
) -> Iterator[bytes]:
    """`ops.fetch` as JSON lines: {"type": "progress", "done", "total", "symbol", "ok"} as each
    symbol is served, then {"type": "result", "quotes", "errors"} (or {"type": "error",
    "error": {...}}). The fetch runs on its own thread: a client that goes away stops only
    its progress, never the fetch (whose quotes still reach the cache and the history)."""
    lines: queue.Queue[tuple[str, Any]] = queue.Queue()

    def on_done(key: str, outcome: object) -> None:
        lines.put(("progress", (key, not isinstance(outcome, CrawlerError))))

    def work() -> None:
        try:
            lines.put(
                ("result", ops.fetch(symbols, fresh, asset_class, on_done=on_done, paid=paid))
            )
        except CrawlerError as exc:
            lines.put(("error", {"type": type(exc).__name__, "message": exc.message}))
        except BaseException:
            log.exception("fetch with progress failed")
            lines.put(("error", {"type": "InternalError", "message": "see the daemon log"}))

    threading.Thread(target=work, name="fetch-progress", daemon=True).start()
    done = 0
    while True:
        kind, value = lines.get()
        if kind == "progress":
            done += 1
            key, ok = value
            line = {"type": "progress", "done": done, "total": total, "symbol": key, "ok": ok}
        elif kind == "result":
            line = {"type": "result", **value}
        else:
            line = {"type": "error", "error": value}
        yield json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n"
        if kind != "progress":
            return


def register_routes(
    server: ControlServer, ops: Operations, request_stop: Callable[[str], None]
) -> None:
    """Register the control API on `server`; `request_stop(reason)` begins the shutdown."""
    api = _Api(ops, request_stop)
    table: list[tuple[str, str, Callable[[Request], Response]]] = [
        ("GET", "/status", api.status),
        ("GET", "/health", api.health),
        ("POST", "/fetch", api.fetch),
        ("GET", "/symbols", api.list_symbols),
        ("POST", "/symbols", api.add_symbol),
        ("DELETE", "/symbols/{symbol}", api.remove_symbol),
        ("POST", "/collect", api.collect),
        ("POST", "/stop", api.stop),
        ("GET", "/config", api.config),
        ("GET", "/budget", api.budget),
        ("GET", "/metrics", api.metrics),
        ("GET", "/history", api.history),
        ("GET", "/export", api.export),
        ("POST", "/backfill", api.backfill),
    ]
    for method, path, handler in table:
        server.route(method, path, checked(handler))


def _symbol_list(body: dict[str, Any], name: str) -> list[str]:
    """1 to `_MAX_FETCH_SYMBOLS` symbols."""
    symbols = strings(body, name, _SYMBOLS)
    if not symbols or len(symbols) > _MAX_FETCH_SYMBOLS:
        raise BadRequest(f"'{name}' must hold 1 to {_MAX_FETCH_SYMBOLS} symbols")
    return symbols


def _major_units(request: Request) -> bool:
    """`units=major` (GBp → GBP...) or `units=source` (the default: as stored)."""
    units = request.query.get("units", "source")
    if units not in ("source", "major"):
        raise BadRequest(f"'units' must be source or major, not {units!r}")
    return units == "major"


class _Api:
    """The routes' handlers, each one `Operations` call."""

    def __init__(self, ops: Operations, request_stop: Callable[[str], None]) -> None:
        self.ops = ops
        self.request_stop = request_stop

    def status(self, request: Request) -> Response:
        symbol = request.query.get("symbol")
        if symbol:  # `crawler status SYMBOL`: one symbol, why it waits, its last error
            return Response(body=self.ops.symbol_status(symbol))
        return Response(body=self.ops.status(int_query(request, "rows")))

    def health(self, request: Request) -> Response:
        data_dir = str(self.ops.settings.data_dir)
        return Response(body={"status": "ok", "pid": os.getpid(), "data_dir": data_dir})

    def fetch(self, request: Request) -> Response:
        ops = self.ops
        body = body_of(request, {"symbols", "fresh", "asset_class", "progress", "paid"})
        symbols = _symbol_list(body, "symbols")
        fresh, asset_class = flag(body, "fresh"), optional_str(body, "asset_class")
        paid = flag(body, "paid")
        if flag(body, "progress"):
            parsed, _errors, _notices = ops.parse_symbols(symbols, asset_class)  # 400 first
            total = len({sym.canonical for sym in parsed})
            stream = _fetch_with_progress(ops, symbols, fresh, asset_class, total, paid)
            return Response(stream=stream, content_type=_NDJSON_TYPE)
        return Response(body=ops.fetch(symbols, fresh, asset_class, paid=paid))

    def backfill(self, request: Request) -> Response:
        body = body_of(request, {"symbols", "all", "since", "until", "interval", "progress"})
        arguments: dict[str, Any] = {
            "symbols": strings(body, "symbols", _SYMBOLS, optional=True),
            "all_tracked": flag(body, "all"),
            "since": optional_str(body, "since"),
            "until": optional_str(body, "until"),
            "interval": optional_str(body, "interval") or "1d",
        }
        if flag(body, "progress"):
            stream = _backfill_with_progress(self.ops, arguments)
            return Response(stream=stream, content_type=_NDJSON_TYPE)
        return Response(body=self.ops.backfill(**arguments))

    def list_symbols(self, request: Request) -> Response:
        return Response(body=self.ops.list_symbols())

    def add_symbol(self, request: Request) -> Response:
        body = body_of(request, {"symbol", "symbols", "asset_class"})
        asset_class = optional_str(body, "asset_class")
        if "symbols" in body:  # many in one request: `crawler symbols add` of a long list
            if "symbol" in body:
                raise BadRequest("give 'symbol' or 'symbols', not both")
            return Response(body=self.ops.add_symbols(_symbol_list(body, "symbols"), asset_class))
        result = self.ops.add_symbol(required_str(body, "symbol"), asset_class)
        return Response(status=201 if result["added"] else 200, body=result)

    def remove_symbol(self, request: Request) -> Response:
        result = self.ops.remove_symbol(request.path_params["symbol"])
        if not result["removed"]:
            return Response.error(404, "NotTracked", f"{result['symbol']} is not tracked")
        return Response(body=result)

    def collect(self, request: Request) -> Response:
        return Response(body=self.ops.collect())

    def stop(self, request: Request) -> Response:
        self.request_stop("POST /stop")
        return Response(status=202, body={"stopping": True, "pid": os.getpid()})

    def config(self, request: Request) -> Response:
        return Response(body=self.ops.config())

    def budget(self, request: Request) -> Response:
        return Response(body=self.ops.budget())

    def metrics(self, request: Request) -> Response:
        return Response(text=self.ops.metrics_text(), content_type=_METRICS_TYPE)

    def history(self, request: Request) -> Response:
        query = request.query
        symbol = query.get("symbol")
        if not symbol:
            raise BadRequest("'symbol' is required, e.g. ?symbol=AAPL:US")
        fmt = query.get("format", "json")
        order = query.get("order", "newest")
        if order not in ("newest", "oldest"):
            raise BadRequest(f"'order' must be newest or oldest, not {order!r}")
        since, until = query.get("since"), query.get("until")
        limit, oldest_first = int_query(request, "limit"), order == "oldest"
        major, kind = _major_units(request), query.get("kind", "all")
        asked = HistoryQuery(symbol, since, until, limit, oldest_first, major, kind)
        if fmt == "json":
            return Response(body=self.ops.history(asked))
        if fmt not in ("csv", "jsonl"):
            raise BadRequest(f"'format' must be json, csv or jsonl, not {fmt!r}")
        sent, total, stream = self.ops.history_export(fmt, asked)
        return Response(
            stream=stream,
            content_type=_CSV_TYPE if fmt == "csv" else _JSONL_TYPE,
            headers={_ROWS_HEADER: str(sent), _TOTAL_ROWS_HEADER: str(total)},
        )

    def export(self, request: Request) -> Response:
        query = request.query
        fmt = query.get("format", "csv")
        raw = query.get("symbols")
        symbols = [s for s in raw.split(",") if s.strip()] if raw else None
        rows, stream = self.ops.export(
            fmt,
            query.get("since"),
            query.get("until"),
            symbols,
            _major_units(request),
            query.get("kind", "all"),
            query.get("by", "fetched"),
        )
        return Response(
            stream=stream,
            content_type=_EXPORT_TYPES.get(fmt, _JSONL_TYPE),
            headers={_ROWS_HEADER: str(rows)},
        )
