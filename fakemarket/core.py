"""The shared machinery of every fake service: a real HTTP server on 127.0.0.1, a request log,
and fault knobs (latency, error rate, 429 with Retry-After, outage, garbage) set globally or per
symbol.

A service subclasses `FakeService` and implements `route(request) -> FakeResponse` and
`symbol_of(request)`. Faults are applied before `route` is called, so every service honours the
same knobs the same way:

    service.faults.set("*", latency_s=0.05)               # every request
    service.faults.set("AAPL:US", error_rate=1.0)         # one symbol always fails
    service.faults.set("*", status=429, retry_after_s=2)  # rate-limit storm
    service.set_outage("refuse")                          # listener closed: connection refused
    service.set_outage("hang")                            # accept, never answer
    service.set_outage(None)                              # back to normal
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

__all__ = ["FakeRequest", "FakeResponse", "FakeService", "Fault", "FaultTable", "OutageMode"]

OutageMode = Literal["refuse", "hang"] | None
GLOBAL = "*"


@dataclass
class Fault:
    """What to do to requests for one key (a symbol, or "*" for all).

    latency_s: sleep before answering. error_rate: probability of the service's own failure
    answer (`FakeService.error_response`). status: force this HTTP status (429 adds
    Retry-After when retry_after_s is set). garbage: answer 200 with random bytes.
    hang: accept the request and never answer (until the outage is lifted or the client quits).
    huge_body_bytes: pad the service's own answer with trailing spaces to this many bytes
    (still valid JSON or HTML): a body-size attack.
    """

    latency_s: float = 0.0
    error_rate: float = 0.0
    status: int | None = None
    retry_after_s: float | None = None
    garbage: bool = False
    hang: bool = False
    huge_body_bytes: int = 0


class FaultTable:
    """Thread-safe map of key → Fault; a symbol's own entry wins over the global one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}

    def set(self, key: str = GLOBAL, **knobs: object) -> Fault:
        fault = Fault(**knobs)  # type: ignore[arg-type]
        with self._lock:
            self._faults[key] = fault
        return fault

    def clear(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._faults.clear()
            else:
                self._faults.pop(key, None)

    def for_symbol(self, symbol: str | None) -> Fault:
        with self._lock:
            if symbol is not None and symbol in self._faults:
                return self._faults[symbol]
            return self._faults.get(GLOBAL, Fault())


@dataclass
class FakeRequest:
    """One request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    symbol: str | None = None
    received_at: float = field(default_factory=time.time)
    outcome: str = ""


@dataclass
class FakeResponse:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class FakeService:
    """Base of the fake services. Start with `start()` (port 0 picks a free one) or use as a
    context manager; `url` is `http://127.0.0.1:PORT`."""

    name = "fake"

    def __init__(self, port: int = 0, seed: int = 0) -> None:
        self.faults = FaultTable()
        self.requests: list[FakeRequest] = []
        self._log_lock = threading.Lock()
        self._random = random.Random(seed)
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._outage: OutageMode = None
        self._release_hung = threading.Event()
        self._in_flight = 0
        self._idle = threading.Condition()
        self.port = port

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeService:
        self._serve(self._requested_port)
        return self

    def stop(self) -> None:
        self._release_hung.set()
        self._close_listener()

    def __enter__(self) -> FakeService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_outage(self, mode: OutageMode) -> None:
        """ "refuse": close the listener (clients get connection refused); "hang": accept and
        never answer; None: serve normally again on the same port."""
        if mode == self._outage:
            return
        previous, self._outage = self._outage, mode
        if mode == "refuse":
            self._close_listener()
        elif previous == "refuse":
            self._serve(self.port)
        if mode != "hang":
            self._release_hung.set()
            self._release_hung = threading.Event()

    def reset(self) -> None:
        """Clear faults and the request log (not the service's own state)."""
        self.faults.clear()
        with self._log_lock:
            self.requests.clear()
        self.set_outage(None)

    # -- hooks for subclasses ------------------------------------------------------------
    def symbol_of(self, request: FakeRequest) -> str | None:
        """The symbol a request is about, for per-symbol faults and the log."""
        return None

    def route(self, request: FakeRequest) -> FakeResponse:
        raise NotImplementedError

    def error_response(self, request: FakeRequest) -> FakeResponse:
        """The service's own idea of a random failure (error_rate). Default: 500."""
        return FakeResponse(500, b'{"error":"internal error"}')

    # -- machinery -----------------------------------------------------------------------
    def log_requests(self, predicate: object = None) -> list[FakeRequest]:
        with self._log_lock:
            return list(self.requests)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no request is being answered (a slow answer the client gave up on still
        completes, and is billed, here). False when `timeout_s` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)

    def _record(self, request: FakeRequest) -> None:
        with self._log_lock:
            self.requests.append(request)

    def _serve(self, port: int) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY as well, so no answer ever waits for a delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                if service._outage == "refuse":
                    # A keep-alive connection made before the outage: drop it unanswered,
                    # as a dead host would, so no request gets through during an outage.
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = FakeRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with service._idle:
                    service._in_flight += 1
                try:
                    response = service._dispatch(request)
                finally:
                    with service._idle:
                        service._in_flight -= 1
                        service._idle.notify_all()
                if response is None:  # hang: hold the connection open, then drop it
                    service._release_hung.wait(timeout=600)
                    self.close_connection = True
                    return
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for key, value in response.headers.items():
                    self.send_header(key, value)
                # Headers and body leave in ONE write (what end_headers + a second write did
                # in two): with Nagle on, the body's segment waited ~40 ms for the client's
                # delayed ACK of the headers, on every keep-alive answer.
                self._headers_buffer.append(b"\r\n")
                if self.command != "HEAD":
                    self._headers_buffer.append(response.body)
                try:
                    self.flush_headers()
                except (BrokenPipeError, ConnectionResetError):
                    # The client stopped reading (a capped read of a huge body): its call.
                    self.close_connection = True

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self._server = Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _dispatch(self, request: FakeRequest) -> FakeResponse | None:
        request.symbol = self.symbol_of(request)
        fault = self.faults.for_symbol(request.symbol)
        if self._outage == "hang" or fault.hang:
            request.outcome = "hang"
            self._record(request)
            return None
        if fault.latency_s:
            time.sleep(fault.latency_s)
        if fault.status is not None:
            headers = {}
            if fault.retry_after_s is not None:
                headers["Retry-After"] = f"{fault.retry_after_s:g}"
            request.outcome = f"forced_{fault.status}"
            self._record(request)
            return self.forced_response(request, fault.status, headers)
        if fault.error_rate and self._random.random() < fault.error_rate:
            response = self.error_response(request)
            request.outcome = request.outcome or "error"
            self._record(request)
            return response
        if fault.garbage:
            request.outcome = "garbage"
            self._record(request)
            return FakeResponse(200, self._random.randbytes(256), content_type="text/html")
        response = self.route(request)
        request.outcome = request.outcome or str(response.status)
        if fault.huge_body_bytes > len(response.body):
            response.body += b" " * (fault.huge_body_bytes - len(response.body))
        self._record(request)
        return response

    def forced_response(
        self, request: FakeRequest, status: int, headers: dict[str, str]
    ) -> FakeResponse:
        """The answer for `Fault.status`; services may shape it (Yahoo's 429 body, ...)."""
        return FakeResponse(status, b'{"error":"forced"}', headers)


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
