"""The control API: each route validates its input and calls one `Operations` method.

Every path below is served under `/v1` (`GET /v1/status`); the unversioned paths stay as
deprecated aliases for one release. `GET /v1/ping` (built into the server) answers the API
version, also sent with every answer in the `Crawler-Api-Version` header.

    GET    /status                      everything `crawler status` shows
    GET    /health                      {"status": "ok", "pid": ...}: cheap, for probes
    POST   /fetch      {"symbols": [...], "fresh": false, "asset_class": null}
    GET    /symbols
    POST   /symbols    {"symbol": "TSLA:US", "asset_class": null}   201 added, 200 already there
    DELETE /symbols/{symbol}            404 NotTracked when it was not tracked
    POST   /collect                     a collection now; its report
    POST   /stop                        202; the daemon stops as on SIGTERM
    GET    /config                      effective settings, secrets masked
    GET    /budget                      today's spend, pace, paid per hour, top symbols, targets
    GET    /metrics                     Prometheus text exposition (format 0.0.4)
    GET    /history?symbol=&since=&until=&limit=&order=newest|oldest&format=json|csv|jsonl
                                        newest first; limit 100 by default, 0 = all (csv)
    GET    /export?format=csv|jsonl&since=&until=&symbols=a,b     streamed

A body field of the wrong type is a 400 BadRequest naming the field; errors raised by the
operations map to statuses through `crawler.daemon.control_server.ERROR_STATUS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from crawler.daemon.control_server import ControlServer, Handler, Request, Response
from crawler.operations import Operations

__all__ = ["register_routes"]

_CSV_TYPE = "text/csv; charset=utf-8"
_JSONL_TYPE = "application/jsonl; charset=utf-8"
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_FETCH_SYMBOLS = 1000
#: A streamed history says how many rows it holds and how many matched (it may be cut).
_ROWS_HEADER = "X-Crawler-Rows"
_TOTAL_ROWS_HEADER = "X-Crawler-Rows-Total"


class _BadRequest(Exception):
    """A request whose fields do not have the types the route needs."""


def _checked(handler: Callable[[Request], Response]) -> Handler:
    def run(request: Request) -> Response:
        try:
            return handler(request)
        except _BadRequest as exc:
            return Response.error(400, "BadRequest", str(exc))

    return run


def _body(request: Request) -> dict[str, Any]:
    if request.body is None:
        return {}
    if not isinstance(request.body, dict):
        raise _BadRequest("the body must be a JSON object")
    return request.body


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _BadRequest(f"'{name}' must be a string or null, not {type(value).__name__}")
    return value


def _required_str(body: dict[str, Any], name: str) -> str:
    value = _optional_str(body, name)
    if value is None:
        raise _BadRequest(f"'{name}' is required (a string)")
    return value


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise _BadRequest(f"'{name}' must be true or false, not {type(value).__name__}")
    return value


def _unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise _BadRequest(f"unknown field '{extra[0]}'; allowed: {', '.join(sorted(allowed))}")


def _int_query(request: Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise _BadRequest(f"'{name}' must be a whole number, not {text!r}")
    return int(text)


def register_routes(
    server: ControlServer, ops: Operations, request_stop: Callable[[str], None]
) -> None:
    """Register the control API on `server`; `request_stop(reason)` begins the shutdown."""

    def status(request: Request) -> Response:
        return Response(body=ops.status())

    def health(request: Request) -> Response:
        return Response(
            body={
                "status": "ok",
                "pid": os.getpid(),
                "data_dir": str(ops.settings.data_dir),
            }
        )

    def fetch(request: Request) -> Response:
        body = _body(request)
        _unknown_fields(body, {"symbols", "fresh", "asset_class"})
        symbols = body.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise _BadRequest("'symbols' must be a list of strings, e.g. [\"AAPL:US\"]")
        if not symbols or len(symbols) > _MAX_FETCH_SYMBOLS:
            raise _BadRequest(f"'symbols' must hold 1 to {_MAX_FETCH_SYMBOLS} symbols")
        result = ops.fetch(symbols, _bool(body, "fresh"), _optional_str(body, "asset_class"))
        return Response(body=result)

    def list_symbols(request: Request) -> Response:
        return Response(body=ops.list_symbols())

    def add_symbol(request: Request) -> Response:
        body = _body(request)
        _unknown_fields(body, {"symbol", "asset_class"})
        result = ops.add_symbol(_required_str(body, "symbol"), _optional_str(body, "asset_class"))
        return Response(status=201 if result["added"] else 200, body=result)

    def remove_symbol(request: Request) -> Response:
        result = ops.remove_symbol(request.path_params["symbol"])
        if not result["removed"]:
            return Response.error(404, "NotTracked", f"{result['symbol']} is not tracked")
        return Response(body=result)

    def collect(request: Request) -> Response:
        return Response(body=ops.collect())

    def stop(request: Request) -> Response:
        request_stop("POST /stop")
        return Response(status=202, body={"stopping": True, "pid": os.getpid()})

    def config(request: Request) -> Response:
        return Response(body=ops.config())

    def budget(request: Request) -> Response:
        return Response(body=ops.budget())

    def metrics(request: Request) -> Response:
        return Response(text=ops.metrics_text(), content_type=_METRICS_TYPE)

    def history(request: Request) -> Response:
        query = request.query
        symbol = query.get("symbol")
        if not symbol:
            raise _BadRequest("'symbol' is required, e.g. ?symbol=AAPL:US")
        fmt = query.get("format", "json")
        order = query.get("order", "newest")
        if order not in ("newest", "oldest"):
            raise _BadRequest(f"'order' must be newest or oldest, not {order!r}")
        since, until = query.get("since"), query.get("until")
        limit, oldest_first = _int_query(request, "limit"), order == "oldest"
        if fmt == "json":
            return Response(body=ops.history(symbol, since, until, limit, oldest_first))
        if fmt not in ("csv", "jsonl"):
            raise _BadRequest(f"'format' must be json, csv or jsonl, not {fmt!r}")
        sent, total, stream = ops.history_export(fmt, symbol, since, until, limit, oldest_first)
        return Response(
            stream=stream,
            content_type=_CSV_TYPE if fmt == "csv" else _JSONL_TYPE,
            headers={_ROWS_HEADER: str(sent), _TOTAL_ROWS_HEADER: str(total)},
        )

    def export(request: Request) -> Response:
        query = request.query
        fmt = query.get("format", "csv")
        raw = query.get("symbols")
        symbols = [s for s in raw.split(",") if s.strip()] if raw else None
        stream = ops.export(fmt, query.get("since"), query.get("until"), symbols)
        return Response(stream=stream, content_type=_CSV_TYPE if fmt == "csv" else _JSONL_TYPE)

    table: list[tuple[str, str, Callable[[Request], Response]]] = [
        ("GET", "/status", status),
        ("GET", "/health", health),
        ("POST", "/fetch", fetch),
        ("GET", "/symbols", list_symbols),
        ("POST", "/symbols", add_symbol),
        ("DELETE", "/symbols/{symbol}", remove_symbol),
        ("POST", "/collect", collect),
        ("POST", "/stop", stop),
        ("GET", "/config", config),
        ("GET", "/budget", budget),
        ("GET", "/metrics", metrics),
        ("GET", "/history", history),
        ("GET", "/export", export),
    ]
    for method, path, handler in table:
        server.route(method, path, _checked(handler))
