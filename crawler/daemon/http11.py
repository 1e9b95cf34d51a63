"""HTTP/1.1 on one control connection: parse requests, call the handler, write JSON answers.

`ConnectionHandler` speaks keep-alive HTTP/1.1 (and 1.0) with bounded everything: the body
(Content-Length or chunked, never both), the query, chunk lines and trailers. Every error is
answered in JSON (`{"error": {"type": ..., "message": ...}}`), never in HTML. A `Response.stream`
goes out chunked (to HTTP/1.0: raw, then close). `raw_error_response` and `lingering_close` answer
and close connections the server refuses before a handler exists.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import socket
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from crawler.daemon.messages import (
    ERROR_TYPE_BY_STATUS,
    INTERNAL_ERROR,
    Handler,
    Problem,
    Request,
    Response,
    status_for_error,
)
from crawler.daemon.socket_file import PeerCredentials
from crawler.utils.exceptions import CrawlerError

if TYPE_CHECKING:
    from crawler.daemon.control_server import _UnixServer

__all__ = ["LINGER_S", "ConnectionHandler", "encode_json", "lingering_close", "raw_error_response"]

logger = logging.getLogger("crawler.control")

_MAX_QUERY_FIELDS = 100
#: A header line: a token, a colon, a value; or an obs-fold continuation (SP/HT first).
_FIELD_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:|[ \t]")
_MAX_CHUNK_LINE_BYTES = 1024
_MAX_TRAILER_LINES = 100
LINGER_S = 1.0  # how long a refused or finished connection is drained before it is closed
_LINGER_MAX_BYTES = 1024 * 1024


def encode_json(payload: Any) -> bytes:
    """`payload` as one line of UTF-8 JSON (ValueError for NaN or infinity)."""
    # allow_nan=False: NaN is not JSON, and jq or a browser would choke on it later.
    return json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


def raw_error_response(status: int, message: str) -> bytes:
    """A complete HTTP answer, for connections refused before a handler object exists."""
    body = encode_json(
        {"error": {"type": ERROR_TYPE_BY_STATUS.get(status, "HTTPError"), "message": message}}
    )
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
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


class _LineRecorder:
    """Reads through to `stream`, keeping each line read (the request's header lines)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.lines: list[bytes] = []

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._stream.readline(limit)
        self.lines.append(line)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ConnectionHandler(http.server.BaseHTTPRequestHandler):
    """Parses requests on one connection (keep-alive aware) and answers in JSON, never HTML."""

    protocol_version = "HTTP/1.1"
    # Requests without a version would otherwise be HTTP/0.9 and answered with no status line.
    default_request_version = "HTTP/1.0"
    server_version = "crawler-control/1"
    sys_version = ""

    server: _UnixServer

    def version_string(self) -> str:
        """The Server header, without the base class's trailing Python version."""
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # A client that stalls mid-request is dropped after this long (TimeoutError in the base).
        self.connection.settimeout(self.server.client_timeout_s)

    @property
    def peer(self) -> PeerCredentials:
        """Who is on the other end (the server passes SO_PEERCRED as the client address)."""
        return cast(PeerCredentials, self.client_address)

    def address_string(self) -> str:
        return f"pid {self.peer.pid} uid {self.peer.uid}"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s: %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        logger.info("control client %s: %s", self.address_string(), format % args)

    # -- errors -------------------------------------------------------------------------------

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer a protocol error (the base class's parser calls this) in JSON, then close."""
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # so a status line is written
        self.log_error("code %d, message %s", code, message)
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send_problem(Problem(code, message or phrase, close=True))

    def _send_problem(self, problem: Problem) -> None:
        error_type = ERROR_TYPE_BY_STATUS.get(problem.status, "HTTPError")
        body = {"error": {"type": error_type, "message": problem.message}}
        if problem.close:
            self.close_connection = True
        self._send_response(Response(problem.status, body, headers=problem.headers))

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it, instead of saying 100 Continue."""
        try:
            self._check_headers()
            self._declared_length()
        except Problem as problem:
            problem.close = True
            self._send_problem(problem)
            return False
        return super().handle_expect_100()

    # -- requests -----------------------------------------------------------------------------

    def parse_request(self) -> bool:
        # The stdlib parses headers from text in which a bare CR already ends a line, and takes a
        # "From x" line for an mbox envelope: keep the raw lines so `_check_headers` sees them.
        # The list fills as the headers are read, so it is complete by `handle_expect_100`.
        recorder = _LineRecorder(self.rfile)
        self._raw_header_lines = recorder.lines
        original, self.rfile = self.rfile, recorder  # type: ignore[assignment]
        try:
            return super().parse_request()
        finally:
            self.rfile = original

    def _check_headers(self) -> None:
        """Refuse what the standard library's lenient parser lets through: a line that is not
        `name: value` (no colon, or a bad name) and a CR anywhere but before the final LF."""
        if getattr(self.headers, "defects", None):
            raise Problem(400, "a header line is malformed", close=True)
        for line in getattr(self, "_raw_header_lines", ()):
            if line in (b"\r\n", b"\n", b""):
                continue  # the blank line that ends the headers (or EOF)
            content = line.removesuffix(b"\n").removesuffix(b"\r")
            if b"\r" in content:
                raise Problem(400, "a header contains a bare CR", close=True)
            if not _FIELD_LINE.match(content):
                shown = content[:60].decode("latin-1")
                raise Problem(400, f"a header line is not 'name: value': {shown!r}", close=True)

    def _dispatch(self) -> None:
        control = self.server.control
        try:
            if len(self.requestline.split()) != 3:
                raise Problem(400, "the request line needs a method, a path and HTTP/1.x")
            self._check_headers()
            raw_path, query = self._split_target()
            raw_body = self._read_body()
            segments = self._decode_segments(raw_path)
            handler, params = control._match(self.command, segments)
            body = self._decode_json(raw_body)
        except Problem as problem:
            self._send_problem(problem)
            return
        request = Request(
            method=self.command,
            path=raw_path,
            query=query,
            body=body,
            headers={name.lower(): value for name, value in self.headers.items()},
            peer_uid=self.peer.uid,
            peer_pid=self.peer.pid,
            path_params=params,
            raw_body=raw_body,
        )
        response = self._call(handler, request)
        if self.server.stopping:
            self.close_connection = True
        self._send_response(response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def _split_target(self) -> tuple[str, dict[str, str]]:
        target = self.path
        if not target.isascii():
            raise Problem(400, "the request target must be ASCII; percent-encode other bytes")
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

    def _declared_length(self) -> int | None:
        """The Content-Length, validated; None when the body is chunked or absent."""
        limit = self.server.control.max_body_bytes
        encodings = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if encodings:
            if lengths:  # both at once is how requests get smuggled
                raise Problem(400, "Transfer-Encoding and Content-Length together", close=True)
            codings = [c.strip().lower() for value in encodings for c in value.split(",")]
            if codings != ["chunked"]:
                raise Problem(501, "only the chunked transfer coding is supported", close=True)
            return None
        if not lengths:
            return None
        values = {value.strip() for value in lengths}
        if len(values) != 1:
            raise Problem(400, "conflicting Content-Length headers", close=True)
        (value,) = values
        if not (value.isascii() and value.isdigit()):
            problem = f"Content-Length must be a non-negative integer, not {value[:40]!r}"
            raise Problem(400, problem, close=True)
        # Compare the digit count first: int() of a 10,000-digit string is itself an error.
        if len(value.lstrip("0")) > 18 or int(value) > limit:
            raise Problem(413, f"the body is over the {limit}-byte limit", close=True)
        return int(value)

    def _read_body(self) -> bytes:
        length = self._declared_length()
        if length is not None:
            data = self.rfile.read(length)
            if len(data) < length:
                raise Problem(400, "the body ended before Content-Length bytes", close=True)
            return data
        if self.headers.get("Transfer-Encoding"):
            return self._read_chunked()
        # No length and not chunked: there is no body (RFC 9112 section 6.3).
        return b""

    def _read_chunked(self) -> bytes:
        limit = self.server.control.max_body_bytes
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(_MAX_CHUNK_LINE_BYTES + 1)
            if len(line) > _MAX_CHUNK_LINE_BYTES or not line.endswith(b"\n"):
                raise Problem(400, "bad chunk-size line", close=True)
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or size_text.strip(b"0123456789abcdefABCDEF"):
                raise Problem(400, "bad chunk size", close=True)
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise Problem(413, f"the body is over the {limit}-byte limit", close=True)
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.read(2) != b"\r\n":
                raise Problem(400, "a chunk is shorter than its size", close=True)
            parts.append(data)
        for _ in range(_MAX_TRAILER_LINES):
            line = self.rfile.readline(_MAX_CHUNK_LINE_BYTES + 1)
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)
            if not line or len(line) > _MAX_CHUNK_LINE_BYTES:
                raise Problem(400, "bad chunked trailer", close=True)
        raise Problem(400, "too many trailer lines", close=True)

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
            log("%s %s -> %d %s: %s", request.method, request.path, status, type(exc).__name__, exc)
            return Response.error(status, type(exc).__name__, exc.message)
        except Exception:
            logger.exception("control handler for %s %s failed", request.method, request.path)
            return INTERNAL_ERROR

    # -- responses ----------------------------------------------------------------------------

    def _send_response(self, response: Response) -> None:
        try:
            payload, content_type = self._encode(response)
        except (TypeError, ValueError):
            # Encode before the status line is written, so a body json cannot take is still a
            # clean 500 rather than a half-sent 200.
            logger.exception("control response for %s %s is not JSON-able", self.command, self.path)
            response = INTERNAL_ERROR
            payload, content_type = self._encode(response)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if payload is None and response.stream is not None:
            self._send_stream(response.stream, content_type)
            return
        if response.status in (204, 304) or response.status < 200:
            payload = None
        else:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload or b"")))
        self._send_connection_header()
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    @staticmethod
    def _encode(response: Response) -> tuple[bytes | None, str]:
        if response.stream is not None:
            return None, response.content_type or "application/octet-stream"
        if response.text is not None:
            content_type = response.content_type or "text/plain; charset=utf-8"
            return response.text.encode("utf-8"), content_type
        return encode_json(response.body), response.content_type or "application/json"

    def _send_connection_header(self) -> None:
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0":
            self.send_header("Connection", "keep-alive")

    def _send_stream(self, stream: Iterable[bytes], content_type: str) -> None:
        chunked = self.request_version != "HTTP/1.0"
        self.send_header("Content-Type", content_type)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True  # an HTTP/1.0 reader finds the end at EOF
        self._send_connection_header()
        self.end_headers()
        iterator = iter(stream)
        try:
            for chunk in iterator:
                if not chunk:
                    continue  # an empty chunk would end the body early
                if chunked:
                    self.wfile.write(b"%X\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
            logger.debug("control client went away during a streamed answer to %s", self.path)
        except Exception:
            # Too late for an error status: cut the connection without the last chunk so the
            # client sees an incomplete answer instead of a short file that looks complete.
            self.close_connection = True
            logger.exception("streamed answer to %s %s failed", self.command, self.path)
        finally:
            close = getattr(iterator, "close", None)
            if callable(close):
                close()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
