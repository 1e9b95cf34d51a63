"""The metrics port: GET /metrics on 127.0.0.1 only, at most `max_connections` at once, an idle
client dropped after `client_timeout_s` (prometheus_client's WSGI server, subclassed).

    server = MetricsHTTPServer(ops.metrics_registry, port=9108)
    server.start()                                      # server.stop() later

The figures come from `crawler.service.metrics`; this module only serves them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer

from crawler.logging import get_logger
from crawler.service.metrics import CONTENT_TYPE, MetricsRecorder, build_registry, exposition
from crawler.utils.connection_cap import ConnectionCap
from crawler.utils.exceptions import ConfigError, DaemonError
from crawler.utils.server_thread import ServerThread

__all__ = ["MetricsHTTPServer"]

log = get_logger("crawler.metrics")

_LOOPBACK: Final = "127.0.0.1"


class _Handler(WSGIRequestHandler):
    """prometheus_client's silent handler, with a socket timeout: an idle or stalled client is
    dropped after `timeout` seconds (StreamRequestHandler applies it to the connection)."""

    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics request", peer=self.address_string(), request=format % args)


class _CappedServer(ConnectionCap, ThreadingWSGIServer):
    """prometheus_client's threading WSGI server with at most `max_connections` at once; the
    next one is closed at once instead of getting a thread (a scraper never needs many)."""

    allow_reuse_address = True
    # Connections waiting to be accepted (and refused, when full) queue in the kernel, not in
    # our descriptors; socketserver's 5 made a flood drop SYNs, so a real scraper waited too.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], max_connections: int
    ) -> None:
        self.set_cap(max_connections)
        super().__init__(address, handler)

    def refuse(self, request: Any) -> None:
        log.warning("metrics port busy; closing a connection", connections=self.max_connections)


def _app(render: Callable[[], str]) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: GET or HEAD /metrics answers the exposition; other paths 404, other
    methods 405, a failing render 500 (logged). None of them stops the server."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def answer(
            status: str, body: bytes, content_type: str, *extra: tuple[str, str]
        ) -> list[bytes]:
            headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra]
            start_response(status, headers)
            return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]

        text_type = "text/plain; charset=utf-8"
        if environ.get("PATH_INFO") != "/metrics":
            return answer("404 Not Found", b"not found; metrics are at /metrics\n", text_type)
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return answer(
                "405 Method Not Allowed", b"only GET /metrics\n", text_type, ("Allow", "GET, HEAD")
            )
        try:
            body = render().encode("utf-8")
        except Exception:  # a scrape must never take the server down
            log.exception("rendering metrics failed")
            return answer("500 Internal Server Error", b"rendering metrics failed\n", text_type)
        return answer("200 OK", body, CONTENT_TYPE)

    return app


class MetricsHTTPServer:
    """Serves GET /metrics on 127.0.0.1:`port` (never another interface) from `source`: a
    registry, a MetricsRecorder, or a callable returning the exposition text.

    prometheus_client's `start_http_server` with two guarantees added by subclassing its server:
    at most `max_connections` connections at once, and each dropped after `client_timeout_s`
    of silence. `port` 0 asks the OS for a free port (see `.port` once started); the daemon
    builds this server only when `settings.metrics_port` is not 0, which means "off". `start()`
    raises DaemonError when the port cannot be bound.
    """

    def __init__(
        self,
        source: CollectorRegistry | MetricsRecorder | Callable[[], str],
        port: int,
        *,
        max_connections: int = 16,
        client_timeout_s: float = 10.0,
    ) -> None:
        if isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"METRICS_PORT {port!r} must be 0 to 65535 (0 = off)")
        if max_connections < 1 or client_timeout_s <= 0:
            raise ValueError("max_connections >= 1 and client_timeout_s > 0")
        if isinstance(source, MetricsRecorder):
            registry = build_registry(dict, source)
            self._render: Callable[[], str] = lambda: exposition(registry)
        elif isinstance(source, CollectorRegistry):
            given = source
            self._render = lambda: exposition(given)
        else:
            self._render = source
        self.max_connections = max_connections
        self.client_timeout_s = client_timeout_s
        self._served = ServerThread(port)

    @property
    def port(self) -> int:
        """The bound port (the requested one until started)."""
        return self._served.port

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT/metrics"""
        return f"http://{_LOOPBACK}:{self.port}/metrics"

    def start(self) -> None:
        """Bind and serve on a background thread. A no-op when already started."""
        if self._served.server is not None:
            return
        timeout_s = self.client_timeout_s

        class Handler(_Handler):
            timeout = timeout_s

        try:
            server = _CappedServer((_LOOPBACK, self._served.requested_port), Handler,
                                   self.max_connections)  # fmt: skip
        except OSError as exc:
            raise DaemonError(
                f"cannot serve metrics on {_LOOPBACK}:{self._served.requested_port} "
                f"({exc.strerror}); "
                "choose a free METRICS_PORT, or 0 to turn the metrics port off"
            ) from exc
        server.set_app(_app(self._render))
        self._served.serve(server, "crawler-metrics", poll_interval_s=0.1)
        log.info("metrics served", url=self.url)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop serving and close the socket. Idempotent."""
        self._served.stop(timeout_s)

    def __enter__(self) -> MetricsHTTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
