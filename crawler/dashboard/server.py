"""The dashboard's HTTP server: pages, their JSON, a live event stream, and three actions.

    server = DashboardServer(hub, token, "127.0.0.1", 8484)
    server.start()            # serves on a background thread; server.url has the token
    server.stop()

Routes (every one needs the session cookie, got once from `/?token=...`):

    GET  /                         the watchlist, the budget, the sources, the collections
    GET  /symbol?s=AAPL:US         one symbol: its price chart and the CSV download
    GET  /static/{app.js,...}      the page's script and style (no CDN, no build step)
    GET  /api/snapshot[?symbol=]   everything a page draws first (Hub.snapshot)
    GET  /api/events               Server-Sent Events: one JSON batch of changes per message
    GET  /api/sparks?symbols=a,b   the last prices of those symbols (sparklines)
    GET  /api/history?symbol=&range=1h|1d|1w|1m|1y|all      chart points, at most 2,000
    GET  /api/history.csv?symbol=&range=...                 the same history as a CSV file
    POST /api/symbols            {"symbol": "TSLA:US"}      add (CSRF token needed)
    POST /api/symbols/remove     {"symbol": "TSLA:US"}      remove (CSRF token needed)
    POST /api/collect                                       a collection now (CSRF token needed)

Refused before anything else: a Host header that is not ours (421: DNS rebinding), a request
for a frame (403, besides `X-Frame-Options: DENY` and `frame-ancestors 'none'`), a request
without the cookie (401), a POST without the CSRF header, JSON, or from another origin (403).
At most `max_connections` connections at once (503 past them), each closed after
`idle_timeout_s` of silence; event streams are capped by the hub's tabs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlsplit

from crawler.daemon.client import ControlClient
from crawler.dashboard.charts import chart_points, csv_lines
from crawler.dashboard.hub import Hub
from crawler.dashboard.security import (
    CSRF_HEADER,
    SECURITY_HEADERS,
    Keys,
    Tickets,
    allowed_hosts,
    host_allowed,
)
from crawler.utils.connection_cap import ConnectionCap
from crawler.utils.exceptions import CrawlerError, DaemonError
from crawler.utils.server_thread import ServerThread

__all__ = ["RANGES", "DashboardServer"]

log = logging.getLogger("crawler.dashboard")

#: The chart's range picker: our name → the daemon's `since` (None: all of it).
RANGES: dict[str, str | None] = {
    "1h": "1h", "1d": "1d", "1w": "7d", "1m": "30d", "1y": "365d", "all": None,
}  # fmt: skip
_MAX_BODY_BYTES = 4096
_MAX_SPARK_SYMBOLS = 200
_KEEPALIVE_S = 10.0
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "symbol.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_PAGES = {"/": "index.html", "/symbol": "symbol.html"}
_FRAME_DESTS = {"iframe", "frame", "embed", "object", "fencedframe"}


def _static(name: str) -> bytes:
    return resources.files("crawler.dashboard").joinpath("static", name).read_bytes()


class _CappedServer(ConnectionCap, ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's 5 drops the SYNs of a burst (a browser opens 6 connections at once, each
    # dropped one is retried a second later): connections past the cap are better answered.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[_Handler], cap: int) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.set_cap(cap)
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that goes away mid-request (a reset, a closed tab) is no error to print.
        log.debug("a dashboard connection failed", exc_info=True)

    def refuse(self, request: Any) -> None:
        with contextlib.suppress(OSError):
            request.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                b"Connection: close\r\nRetry-After: 1\r\n\r\n"
            )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "crawler-dashboard"
    sys_version = ""
    # Set on the subclass the server builds:
    timeout: ClassVar[float] = 15.0
    hub: ClassVar[Hub]
    keys: ClassVar[Keys]
    hosts: ClassVar[frozenset[str]]
    origins: ClassVar[frozenset[str]]
    long_client: ClassVar[ControlClient]
    tickets: ClassVar[Tickets]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- answers ---------------------------------------------------------------------------

    def _head(self, status: int, content_type: str, length: int | None, **extra: str) -> None:
        self.send_response(status)
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str, **extra: str) -> None:
        self._head(status, content_type, len(body), **extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")
        self._send(status, data, "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _refuse_page(self, status: int, message: str) -> None:
        body = (
            f"<!doctype html><meta charset=utf-8><title>crawler dashboard</title><p>{message}</p>"
        ).encode()
        self._send(status, body, "text/html; charset=utf-8")

    # -- the gate ----------------------------------------------------------------------------

    def _gate(self) -> bool:
        """Whether the request may go on; answers it when not."""
        if not host_allowed(self.headers.get("Host"), self.hosts):
            self._send(421, b"wrong Host header\n", "text/plain; charset=utf-8")
            return False
        if (self.headers.get("Sec-Fetch-Dest") or "").lower() in _FRAME_DESTS:
            self._send(403, b"the dashboard does not open in frames\n", "text/plain")
            return False
        return True

    def _cookie(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(self.keys.cookie_name)
        return morsel.value if morsel is not None else None

    def _signed_in(self) -> bool:
        return self.keys.cookie_ok(self._cookie())

    # -- GET ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._gate():
            return
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if url.path == "/" and ("token" in query or "ticket" in query):
            if not (
                self.keys.token_ok(query.get("token")) or self.tickets.redeem(query.get("ticket"))
            ):
                self._refuse_page(
                    403,
                    "This token is not the dashboard's. Run `crawler "
                    "dashboard` again and open the address it prints.",
                )
                return
            self._head(303, "text/plain", 0, Location="/", Set_Cookie=self.keys.set_cookie())
            return
        if not self._signed_in():
            if url.path in _PAGES:
                self._refuse_page(
                    401,
                    "Open the address `crawler dashboard` printed (it "
                    "carries the token), or run it again.",
                )
            else:
                self._error(401, "not signed in: open the address `crawler dashboard` printed")
            return
        try:
            self._route_get(url.path, query)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _route_get(self, path: str, query: dict[str, str]) -> None:
        if path in _PAGES:
            page = _static(_PAGES[path]).replace(b"{{csrf}}", self.keys.csrf.encode("ascii"))
            self._send(200, page, "text/html; charset=utf-8")
        elif path.startswith("/static/") and path[len("/static/") :] in _STATIC:
            name = path[len("/static/") :]
            self._send(200, _static(name), _STATIC[name])
        elif path == "/api/snapshot":
            self._json(200, self.hub.snapshot(query.get("symbol")))
        elif path == "/api/events":
            self._events()
        elif path == "/api/sparks":
            names = [s for s in query.get("symbols", "").split(",") if s][:_MAX_SPARK_SYMBOLS]
            self._json(200, self.hub.spark_points(names))
        elif path == "/api/history":
            self._history(query, as_csv=False)
        elif path == "/api/history.csv":
            self._history(query, as_csv=True)
        else:
            self._error(404, f"no such page: {path}")

    def _events(self) -> None:
        tab = self.hub.subscribe()
        if tab is None:
            self._error(503, f"{self.hub.max_tabs} dashboard tabs are open already; close one")
            return
        with tab:
            self._head(200, "text/event-stream; charset=utf-8", None)
            self.wfile.write(b"retry: 2000\n: connected\n\n")
            self.wfile.flush()
            while True:
                message = tab.get(_KEEPALIVE_S)
                if message is None:
                    return
                self.wfile.write(b"data: " + message + b"\n\n" if message else b": keep-alive\n\n")
                self.wfile.flush()

    def _history(self, query: dict[str, str], *, as_csv: bool) -> None:
        symbol = query.get("symbol", "")
        range_name = query.get("range", "all")
        if not symbol or range_name not in RANGES:
            self._error(400, "give symbol= and range= (" + ", ".join(RANGES) + ")")
            return
        params = {"symbol": symbol, "format": "csv", "limit": "0", "order": "oldest"}
        since = RANGES[range_name]
        if since is not None:
            params["since"] = since
        headers: dict[str, str] = {}
        try:
            stream = self.long_client.stream("GET", "/history", query=params, headers=headers)
        except CrawlerError as exc:
            self._error(400 if "not running" not in exc.message else 503, exc.message)
            return
        try:
            if as_csv:
                name = re.sub(r"[^A-Za-z0-9]+", "_", symbol).strip("_") + f"-{range_name}.csv"
                self._head(
                    200, "text/csv; charset=utf-8", None,
                    Content_Disposition=f'attachment; filename="{name}"',
                )  # fmt: skip
                for chunk in stream:
                    self.wfile.write(chunk)
                return
            rows_text = headers.get("x-crawler-rows")
            rows = int(rows_text) if rows_text and rows_text.isdigit() else None
            points = chart_points(csv_lines(stream), rows)
            self._json(200, {"symbol": symbol, "range": range_name, "rows": rows,
                             "points": points})  # fmt: skip
        except DaemonError as exc:
            log.info("history for the dashboard failed: %s", exc.message)
            self.close_connection = True
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    # -- POST --------------------------------------------------------------------------------

    def do_POST(self) -> None:
        if not self._gate():
            return
        if not self._signed_in():
            self._error(401, "not signed in")
            return
        if not self.keys.csrf_ok(self.headers.get(CSRF_HEADER)):
            self._error(403, "missing or wrong CSRF token: reload the page")
            return
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self.origins:
            self._error(403, "a request from another origin")
            return
        if (self.headers.get("Sec-Fetch-Site") or "same-origin") != "same-origin":
            self._error(403, "a request from another site")
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        length_text = self.headers.get("Content-Length") or "0"
        if content_type != "application/json" or not length_text.isdigit():
            self._error(415, "send JSON")
            return
        length = int(length_text)
        if length > _MAX_BODY_BYTES:
            self._error(413, "the body is too large")
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._error(400, "the body is not JSON")
            return
        if not isinstance(body, dict):
            self._error(400, "the body must be a JSON object")
            return
        path = urlsplit(self.path).path
        if path == "/api/symbols":
            self._symbol_action(body, add=True)
        elif path == "/api/symbols/remove":
            self._symbol_action(body, add=False)
        elif path == "/api/collect":
            threading.Thread(target=self._collect, name="dashboard-collect", daemon=True).start()
            self._json(202, {"started": True})
        else:
            self._error(404, f"no such action: {path}")

    def _symbol_action(self, body: dict[str, Any], *, add: bool) -> None:
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol.strip() or len(symbol) > 64:
            self._error(400, "give a symbol, e.g. TSLA:US")
            return
        try:
            if add:
                status, answer = self.hub.client.post("/symbols", {"symbol": symbol.strip()})
            else:
                status, answer = self.hub.client.delete("/symbols/" + quote(symbol, safe=""))
        except CrawlerError as exc:
            self._error(503, exc.message)
            return
        if status >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            message = error.get("message") if isinstance(error, dict) else str(answer)
            self._error(status, str(message))
            return
        self.hub.want_rows()
        self._json(status, answer)

    def _collect(self) -> None:
        try:
            self.long_client.post("/collect")
        except CrawlerError as exc:
            log.info("collect from the dashboard failed: %s", exc.message)

    def do_HEAD(self) -> None:
        self._error(405, "GET or POST")

    def do_OPTIONS(self) -> None:  # no CORS: no preflight is ever answered
        self._error(405, "GET or POST")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS


class DashboardServer:
    """The dashboard on `host`:`port` (0: a free port); see the module docstring."""

    def __init__(
        self,
        hub: Hub,
        token: str,
        host: str,
        port: int,
        *,
        max_connections: int = 32,
        idle_timeout_s: float = 15.0,
    ) -> None:
        self.hub = hub
        self._token = token
        self.keys = Keys(token)
        self.host = host
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self._served = ServerThread(port)
        self._tickets = Tickets()

    @property
    def port(self) -> int:
        return self._served.port

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The address to open: it carries the token (exchanged for a cookie at once)."""
        return f"{self.origin}/?token={quote(self._token, safe='')}"

    def one_time_url(self) -> str:
        """An address that signs in once, within two minutes (for a browser we start)."""
        return f"{self.origin}/?ticket={self._tickets.issue()}"

    def start(self) -> None:
        """Bind and serve on a background thread; DaemonError when the port is taken."""
        hub, keys, idle = self.hub, self.keys, self.idle_timeout_s
        long_client = ControlClient(hub.client.socket_path, timeout_s=600.0)

        class Handler(_Handler):
            timeout = idle

        Handler.hub, Handler.keys, Handler.long_client = hub, keys, long_client
        Handler.tickets = self._tickets
        try:
            server = _CappedServer((self.host, self._served.requested_port), Handler,
                                   self.max_connections)  # fmt: skip
        except OSError as exc:
            raise DaemonError(
                f"cannot serve the dashboard on {self.host}:{self._served.requested_port} "
                f"({exc.strerror}); choose another with --port (0: any free port)"
            ) from exc
        port = int(server.server_address[1])
        self.keys = Handler.keys = Keys(self._token, port)
        Handler.hosts = allowed_hosts(self.host, port)
        Handler.origins = frozenset("http://" + host for host in Handler.hosts)
        self._served.serve(server, "dashboard-http", poll_interval_s=0.2)

    def stop(self, timeout_s: float = 2.0) -> None:
        self._served.stop(timeout_s)
