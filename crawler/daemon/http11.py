"""HTTP/1.1 on one control connection: h11 parses and frames, we route and answer in JSON.

`ConnectionHandler` feeds the bytes of one connection to an `h11.Connection` (the sans-I/O
HTTP/1.1 state machine under httpx and uvicorn), which does the parsing, the framing
(Content-Length, chunked, keep-alive, HTTP/1.0) and the strictness: request and header lines,
obs-fold, conflicting Content-Length, unknown transfer codings. On top of it we keep our own
limits and policy: the body and header-block sizes, at most 100 header fields, Content-Length and
Transfer-Encoding together refused (h11 would let chunked win), HTTP/1.0 and 1.1 only, ASCII
targets, and a JSON answer for every error (`{"error": {"type": ..., "message": ...}}`), never
HTML. A `Response.stream` goes out chunked (to HTTP/1.0: raw, then close).
`raw_error_response` and `lingering_close` answer and close connections the server refuses before
a handler exists.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from crawler.daemon.messages import (
    API_VERSION,
    API_VERSION_HEADER,
    ERROR_TYPE_BY_STATUS,
    INTERNAL_ERROR,
    Handler,
    Problem,
    Request,
    Response,
    status_for_error,
)
from crawler.daemon.socket_file import PeerCredentials
from crawler.logging import get_logger
from crawler.utils.exceptions import CrawlerError

__all__ = [
    "LINGER_S",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_FIELDS",
    "ConnectionHandler",
    "ConnectionHost",
    "encode_json",
    "lingering_close",
    "raw_error_response",
]

logger = get_logger("crawler.control")

SERVER_NAME = b"crawler-control/1"
#: The request line and header block together; h11 answers 431 past it.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
_MAX_QUERY_FIELDS = 100
_RECV_BYTES = 65536
#: Methods some route might serve; any other is 501, like the standard library's server.
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_VERSIONS = frozenset({b"1.0", b"1.1"})
#: Picks a too-long Content-Length out of a refused head (h11 says only "bad Content-Length").
_HUGE_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*0*([0-9]{19,})[ \t]*\r?$")
LINGER_S = 1.0  # how long a refused or finished connection is drained before it is closed
_LINGER_MAX_BYTES = 1024 * 1024


def encode_json(payload: Any) -> bytes:
    """`payload` as one line of UTF-8 JSON (ValueError for NaN or infinity)."""
    # allow_nan=False: NaN is not JSON, and jq or a browser would choke on it later.
    return json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


def _error_body(status: int, message: str) -> bytes:
    error_type = ERROR_TYPE_BY_STATUS.get(status, "HTTPError")
    return encode_json({"error": {"type": error_type, "message": message}})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def raw_error_response(status: int, message: str) -> bytes:
    """A complete HTTP answer, for connections refused before a handler object exists."""
    body = _error_body(status, message)
    head = (
        f"HTTP/1.1 {status} {_phrase(status)}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def lingering_close(conn: socket.socket) -> None:
    """Close `conn` after reading what the peer is still sending (bounded in time and bytes).

    Closing a socket with unread input resets the peer, and a peer still writing its request
    gets EPIPE before it reads our answer (a 413 or 403 would be lost). Reading first is Apache's
    "lingering close".
    """
    try:
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_S
        drained = 0
        while drained < _LINGER_MAX_BYTES:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            conn.settimeout(remaining_s)
            chunk = conn.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass
    finally:
        conn.close()


class _Gone(Exception):
    """The peer closed, stalled past the timeout, or the socket failed: stop without answering."""


class ConnectionHost(Protocol):
    """What a connection needs of the server that accepted it (the control server's loop)."""

    @property
    def client_timeout_s(self) -> float:
        """Each request, head and body, must arrive within this many seconds."""

    @property
    def stopping(self) -> bool:
        """True once the server is shutting down: no further request on a kept-alive line."""

    @property
    def max_body_bytes(self) -> int:
        """A request body over this is refused with 413."""

    def match(self, method: str, segments: list[str]) -> tuple[Handler, dict[str, str]]:
        """The handler and path parameters for `method` on decoded `segments`, or a Problem
        (404, 405)."""


class ConnectionHandler:
    """Serves the requests of one connection (keep-alive aware) and answers in JSON, never HTML.

    Two phases per request. The server's loop waits for the head without a thread: it calls
    `begin_request`, then `feed` with each read and `head_ready` until the head is complete (or
    the peer closed, or sent garbage). A worker thread then calls `serve`, which reads the body,
    answers, and goes on with requests already received (pipelined); it returns True when the
    connection should go back to the loop to wait for its next request (keep-alive).

    Each request has one deadline from the moment the server starts waiting for it
    (`request_timeout_s`): its head and body must have arrived by then, however they trickle in
    (a timeout per read let one byte every few seconds hold a connection forever).
    """

    def __init__(self, conn: socket.socket, peer: PeerCredentials, server: ConnectionHost) -> None:
        self.connection = conn
        self.peer = peer
        self.server = server
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._head = bytearray()  # the raw bytes of the request head being read, for 414/413
        self._close = False
        self._out: list[bytes] = []  # framed bytes held back until the next flush
        self._method = "-"
        self._target = "-"
        self._ready: Any = None  # the head's event (or h11's refusal), once complete
        #: When the request being read must be complete (time.monotonic()).
        self.deadline = 0.0

    # -- the head, read by the server's loop ---------------------------------------------------

    def begin_request(self, deadline: float) -> None:
        """Start waiting for the next request, which must be complete by `deadline`."""
        self.deadline = deadline
        self._close = False
        self._ready = None
        # What h11 already holds of the next request counts towards its head.
        self._head = bytearray(self._h11.trailing_data[0][: MAX_HEADER_BYTES + 1])

    def feed(self, data: bytes) -> None:
        """Bytes read from the peer while waiting for a head (b"": the peer closed)."""
        if len(self._head) <= MAX_HEADER_BYTES:
            self._head += data
        self._h11.receive_data(data)

    def head_ready(self) -> bool:
        """Whether there is something for a worker: a complete head, or a refusal to send."""
        if self._ready is not None:
            return True
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            self._ready = exc
            return True
        if event is h11.NEED_DATA:
            return False
        self._ready = event
        return True

    @property
    def closed_by_peer(self) -> bool:
        """The peer closed between requests: nothing to answer."""
        return isinstance(self._ready, h11.ConnectionClosed)

    def request_line(self) -> tuple[str, str] | None:
        """The method and target of the complete head, or None (a refusal, or the end)."""
        if isinstance(self._ready, h11.Request):
            return self._ready.method.decode("ascii", "replace"), self._ready.target.decode(
                "ascii", "replace"
            )
        return None

    # -- the connection -----------------------------------------------------------------------

    def serve(self) -> bool:
        """Answer the request whose head is ready, then any already received after it. True:
        wait for the next one in the server's loop; False: close the connection."""
        try:
            while True:
                ready, self._ready = self._ready, None
                if isinstance(ready, h11.RemoteProtocolError):
                    self._send_problem(self._head_problem(ready))
                    return False
                if not isinstance(ready, h11.Request):
                    return False  # ConnectionClosed: the peer is done
                oversized = self._oversized_head()
                if oversized is not None:
                    self._send_problem(oversized)
                    return False
                self._handle(ready)
                if self._close or self._h11.our_state is not h11.DONE:
                    return False
                if self._h11.their_state is not h11.DONE:
                    return False  # the body was not read to its end: the framing is lost
                self._h11.start_next_cycle()
                self.begin_request(time.monotonic() + self.server.client_timeout_s)
                if not self.head_ready():
                    return not self.server.stopping
        except _Gone:
            return False

    def _next_event(self) -> Any:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            remaining_s = self.deadline - time.monotonic()
            if remaining_s <= 0:
                raise _Gone  # the whole request did not arrive in time: drop the client
            try:
                self.connection.settimeout(remaining_s)
                data = self.connection.recv(_RECV_BYTES)
            except OSError as exc:  # TimeoutError included: the stalled client is dropped
                raise _Gone from exc
            self._h11.receive_data(data)

    def _oversized_head(self) -> Problem | None:
        """A head over the limit that h11 parsed anyway (its limit only applies to a head that
        is still incomplete after a read, and one read can bring a whole oversized head)."""
        head = bytes(self._head[: MAX_HEADER_BYTES + 4])
        ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
        if ends and min(ends) <= MAX_HEADER_BYTES:
            return None
        if b"\n" not in head[:MAX_HEADER_BYTES]:
            return Problem(414, "the request line is too long", close=True)
        return Problem(431, f"the request head is over {MAX_HEADER_BYTES} bytes", close=True)

    def _head_problem(self, exc: h11.RemoteProtocolError) -> Problem:
        """The answer to a request head h11 refused, in our terms."""
        status = exc.error_status_hint
        head = bytes(self._head)
        if status == 431 and b"\n" not in head:
            return Problem(414, "the request line is too long", close=True)
        if "Missing mandatory Host" in str(exc):
            return Problem(400, "HTTP/1.1 requests need a Host header (any value)", close=True)
        if status == 400 and _HUGE_LENGTH.search(head):
            # h11 refuses any length over 20 digits as malformed; it is a well-formed number
            # far over our limit, and callers see the same 413 as for any other oversized body.
            return Problem(413, self._too_large(), close=True)
        if status == 431:
            return Problem(431, f"the request head is over {MAX_HEADER_BYTES} bytes", close=True)
        return Problem(status, f"malformed request: {exc}", close=True)

    def _too_large(self) -> str:
        return f"the body is over the {self.server.max_body_bytes}-byte limit"

    # -- one request --------------------------------------------------------------------------

    def _handle(self, event: h11.Request) -> None:
        self._method = event.method.decode("ascii")
        self._target = event.target.decode("ascii")
        try:
            self._check_head(event)
            raw_body = self._read_body()
            raw_path, query = self._split_target(self._target)
            segments = self._decode_segments(raw_path)
            handler, params = self.server.match(self._method, segments)
            body = self._decode_json(raw_body)
        except Problem as problem:
            self._send_problem(problem)
            return
        except _Gone:
            raise
        headers: dict[str, str] = {}
        for name, value in event.headers:
            headers.setdefault(name.decode("ascii"), value.decode("latin-1"))
        request = Request(
            method=self._method,
            path=raw_path,
            query=query,
            body=body,
            headers=headers,
            peer_uid=self.peer.uid,
            peer_pid=self.peer.pid,
            path_params=params,
            raw_body=raw_body,
        )
        response = self._call(handler, request)
        if self.server.stopping:
            self._close = True
        self._send_response(response)

    def _check_head(self, event: h11.Request) -> None:
        """Our policy on top of h11's parsing; every refusal closes (the body is never read)."""
        if event.http_version not in _VERSIONS:
            version = event.http_version.decode("ascii")
            raise Problem(505, f"HTTP/{version} is not supported; use HTTP/1.1", close=True)
        if self._method not in _KNOWN_METHODS:
            raise Problem(501, f"method {self._method} is not supported", close=True)
        if len(event.headers) > MAX_HEADER_FIELDS:
            raise Problem(431, f"more than {MAX_HEADER_FIELDS} header fields", close=True)
        names = {name for name, _ in event.headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            # h11 lets chunked win, as RFC 9112 allows; refusing both is what stops smuggling
            # through a proxy that would pick the other one.
            raise Problem(400, "Transfer-Encoding and Content-Length together", close=True)
        length = next((int(v) for n, v in event.headers if n == b"content-length"), None)
        if length is not None and length > self.server.max_body_bytes:
            raise Problem(413, self._too_large(), close=True)

    def _read_body(self) -> bytes:
        if self._h11.they_are_waiting_for_100_continue:
            # Only now, with the head checked: an oversized or malformed request is refused
            # before the client sends its body.
            self._send(h11.InformationalResponse(status_code=100, headers=[]))
        limit = self.server.max_body_bytes
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                event = self._next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                raise Problem(status, f"bad request body: {exc}", close=True) from None
            if isinstance(event, h11.Data):
                total += len(event.data)
                if total > limit:
                    raise Problem(413, self._too_large(), close=True)
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:  # ConnectionClosed half-way through the body
                raise _Gone

    @staticmethod
    def _split_target(target: str) -> tuple[str, dict[str, str]]:
        if target.startswith(("http://", "https://")):  # absolute-form, legal in HTTP/1.1
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not target.startswith("/"):
            raise Problem(400, f"the request target must start with '/': {target[:100]!r}")
        raw_path, _, raw_query = target.partition("?")
        query: dict[str, str] = {}
        try:
            pairs = parse_qsl(
                raw_query, keep_blank_values=True, errors="strict", max_num_fields=_MAX_QUERY_FIELDS
            )
        except ValueError as exc:  # UnicodeDecodeError included, and too many fields
            raise Problem(400, f"bad query string: {exc}") from None
        for key, value in pairs:
            query.setdefault(key, value)
        return raw_path, query

    @staticmethod
    def _decode_segments(raw_path: str) -> list[str]:
        # Split before decoding, so "BRK%2FB:US" stays one segment.
        try:
            return [unquote(segment, errors="strict") for segment in raw_path.split("/")[1:]]
        except UnicodeDecodeError:
            raise Problem(400, "the path is not valid UTF-8 once percent-decoded") from None

    @staticmethod
    def _decode_json(raw_body: bytes) -> Any:
        if not raw_body:
            return None
        try:
            text = raw_body.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(400, "the body is not valid UTF-8") from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise Problem(400, f"the body is not valid JSON: {exc}") from None

    def _call(self, handler: Handler, request: Request) -> Response:
        try:
            response = handler(request)
            if not isinstance(response, Response):
                raise TypeError(f"handler returned {type(response).__name__}, not Response")
            return response
        except CrawlerError as exc:
            status = status_for_error(exc)
            log = logger.warning if status >= 500 else logger.info
            log(
                "control request failed", method=request.method, path=request.path,
                status=status, error_type=type(exc).__name__, error=exc.message,
            )  # fmt: skip
            return Response.error(status, type(exc).__name__, exc.message)
        except Exception:
            logger.exception("control handler failed", method=request.method, path=request.path)
            return INTERNAL_ERROR

    # -- answers ------------------------------------------------------------------------------

    def _send(self, event: Any, *, flush: bool = True) -> None:
        """Frame `event`; with `flush`, write it and whatever was held back in one send (a
        head and a small body in one segment: one wake-up of the client, not two)."""
        data = self._h11.send(event)
        if data:
            self._out.append(data)
        if flush and self._out:
            payload = b"".join(self._out)
            self._out.clear()
            try:
                # A peer that does not read its answer is dropped after this long (a body's
                # recv may have left the socket with the request deadline's last moments).
                self.connection.settimeout(self.server.client_timeout_s)
                self.connection.sendall(payload)
            except OSError as exc:
                raise _Gone from exc

    def _send_problem(self, problem: Problem) -> None:
        logger.info(
            "control request refused", pid=self.peer.pid, uid=self.peer.uid,
            status=problem.status, error=problem.message,
        )  # fmt: skip
        if problem.close:
            self._close = True
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # an answer is already on its way; nothing more can be said
        body = _error_body(problem.status, problem.message)
        try:
            self._send_response(Response(problem.status, text=body.decode("utf-8"),
                                         content_type="application/json",
                                         headers=problem.headers))  # fmt: skip
        except h11.LocalProtocolError:
            # h11 will not answer a peer it has given up on in some states; say it by hand.
            with contextlib.suppress(OSError):
                self.connection.sendall(raw_error_response(problem.status, problem.message))

    def _send_response(self, response: Response) -> None:
        try:
            payload, content_type = self._encode(response)
        except (TypeError, ValueError):
            # Encode before the status line is written, so a body json cannot take is still a
            # clean 500 rather than a half-sent 200.
            logger.exception(
                "control response is not JSON-able", method=self._method, path=self._target
            )
            response = INTERNAL_ERROR
            payload, content_type = self._encode(response)
        headers: list[tuple[str, str]] = [
            ("Server", SERVER_NAME.decode()),
            (API_VERSION_HEADER, str(API_VERSION)),
            *response.headers.items(),
        ]
        headers.append(("Content-Type", content_type))
        if payload is not None and response.status not in (204, 304):
            headers.append(("Content-Length", str(len(payload))))
        if self._close:
            headers.append(("Connection", "close"))
        head = h11.Response(
            status_code=response.status, headers=headers, reason=_phrase(response.status)
        )
        if payload is None and response.stream is not None:
            self._send(head)  # a stream's head goes at once: its first chunk may take a while
            self._send_stream(response.stream)
            return
        self._send(head, flush=False)
        if payload and response.status not in (204, 304):
            self._send(h11.Data(data=payload), flush=False)
        self._send(h11.EndOfMessage())

    @staticmethod
    def _encode(response: Response) -> tuple[bytes | None, str]:
        if response.stream is not None:
            return None, response.content_type or "application/octet-stream"
        if response.text is not None:
            content_type = response.content_type or "text/plain; charset=utf-8"
            return response.text.encode("utf-8"), content_type
        return encode_json(response.body), response.content_type or "application/json"

    def _send_stream(self, stream: Iterable[bytes]) -> None:
        # Without a Content-Length h11 frames the body: chunked to HTTP/1.1, raw then close to
        # HTTP/1.0.
        iterator = iter(stream)
        try:
            for chunk in iterator:
                if chunk:  # an empty chunk would end the body early
                    self._send(h11.Data(data=chunk))
            self._send(h11.EndOfMessage())
        except _Gone:
            self._close = True
            logger.debug("control client went away during a streamed answer", path=self._target)
        except Exception:
            # Too late for an error status: cut the connection without the last chunk so the
            # client sees an incomplete answer instead of a short file that looks complete.
            self._close = True
            logger.exception("streamed answer failed", method=self._method, path=self._target)
        finally:
            close = getattr(iterator, "close", None)
            if callable(close):
                close()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
