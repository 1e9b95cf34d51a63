"""HTTP/1.1 with JSON bodies over a Unix socket: the daemon's control interface.

    curl --unix-socket /run/crawler/control.sock http://localhost/status

The server is generic; the daemon registers its routes::

    server = ControlServer(Path("/run/crawler/control.sock"))
    server.route("GET", "/status", lambda request: Response(body={"state": "running"}))
    server.route("DELETE", "/symbols/{symbol}", remove_symbol)   # request.path_params["symbol"]
    server.start()            # returns once the socket accepts connections
    ...
    server.stop()             # stops accepting, closes connections, unlinks the socket

Who may talk to it, three layers deep: the socket's directory is 0700, the socket itself is 0600
(so other users cannot even connect), and every connection's peer uid (SO_PEERCRED) must be in
`allowed_uids` (the daemon's own uid and root by default) or it gets 403.

A handler raising a `CrawlerError` becomes a JSON error with the status from `ERROR_STATUS`
(`{"error": {"type": "SymbolError", "message": "..."}}`); any other exception becomes a 500 whose
message says only "see the daemon log" (the traceback goes to the `crawler.control` logger).
BudgetExhaustedError maps to 429 (the caller asked for more than today's quota allows; the daemon
itself is healthy), CircuitBreakerError to 503 (a temporary refusal, retry later).

One thread per connection, at most `max_connections` of them (the next one gets 503); each
connection has a socket timeout (`client_timeout_s`), so a client that stalls half-way through a
request is dropped and never blocks the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import json
import logging
import os
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from crawler.utils.exceptions import (
    APIError,
    BudgetExhaustedError,
    CircuitBreakerError,
    ConfigError,
    CrawlerError,
    DaemonAlreadyRunningError,
    DaemonError,
    SymbolError,
)

__all__ = [
    "ERROR_STATUS",
    "ControlServer",
    "Handler",
    "Request",
    "Response",
    "socket_is_live",
    "status_for_error",
]

logger = logging.getLogger("crawler.control")

# os.umask is process-wide: hold this lock while it is changed so that two servers starting in
# the same process do not restore each other's value. Threads that create files without taking
# it (other libraries) may still, for the microseconds of a bind, get files created 0600 and
# directories 0600 instead of their usual modes; start() runs once at daemon start-up, before
# the worker threads, so in practice nothing else creates files then.
_UMASK_LOCK = threading.Lock()
_SOCKET_UMASK = 0o177  # the socket comes out 0600: the owner may connect, nobody else

_MAX_QUERY_FIELDS = 100
_MAX_CHUNK_LINE_BYTES = 1024
_MAX_TRAILER_LINES = 100
_LINGER_S = 1.0
_LINGER_MAX_BYTES = 1024 * 1024
_MAX_REFUSAL_THREADS = 8

ERROR_STATUS: Mapping[type[CrawlerError], int] = MappingProxyType(
    {
        ConfigError: 400,
        SymbolError: 400,
        BudgetExhaustedError: 429,
        CircuitBreakerError: 503,
        APIError: 502,
        DaemonError: 503,
        CrawlerError: 500,
    }
)
"""HTTP status for each CrawlerError class; the nearest class in the MRO wins."""

# Protocol errors get stable type names (HTTPStatus phrases changed between Python versions).
_ERROR_TYPE_BY_STATUS: Mapping[int, str] = MappingProxyType(
    {
        400: "BadRequest",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        408: "RequestTimeout",
        411: "LengthRequired",
        413: "PayloadTooLarge",
        414: "URITooLong",
        431: "HeaderFieldsTooLarge",
        500: "InternalError",
        501: "NotImplemented",
        503: "ServiceUnavailable",
        505: "HTTPVersionNotSupported",
    }
)


def status_for_error(error: CrawlerError) -> int:
    """The HTTP status a handler's `error` is answered with (see `ERROR_STATUS`)."""
    for cls in type(error).__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return int(status)
    return 500


@dataclass(frozen=True)
class Request:
    """One parsed request, as a handler sees it.

    `path` is the path as sent (still percent-encoded, without the query); `path_params` and
    `query` are decoded (first value wins for a repeated query key). `body` is the parsed JSON
    body, None when the request had none. `headers` has lower-cased names.
    """

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    peer_uid: int
    peer_pid: int
    path_params: dict[str, str] = field(default_factory=dict)
    raw_body: bytes = b""


@dataclass(frozen=True)
class Response:
    """What a handler returns: a JSON `body`, or `text`, or a `stream` of bytes.

    `content_type` defaults to application/json for `body`, text/plain; charset=utf-8 for `text`
    (the Prometheus exposition wants "text/plain; version=0.0.4; charset=utf-8") and
    application/octet-stream for `stream`. A stream is sent with chunked transfer coding (to
    HTTP/1.0 clients: raw, then the connection closes); if it raises half-way the connection is
    cut without the final chunk, so the client sees a truncated answer rather than a short one.
    """

    status: int = 200
    body: Any = None
    content_type: str | None = None
    text: str | None = None
    stream: Iterable[bytes] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = [name for name in ("text", "stream") if getattr(self, name) is not None]
        if len(given) > 1 or (given and self.body is not None):
            raise ValueError("a Response carries one of body, text or stream, not several")
        if not 100 <= self.status <= 599:
            raise ValueError(f"HTTP status must be 100-599, not {self.status}")

    @classmethod
    def error(cls, status: int, error_type: str, message: str) -> Response:
        """The JSON error shape every failure uses: {"error": {"type": ..., "message": ...}}."""
        return cls(status=status, body={"error": {"type": error_type, "message": message}})


Handler = Callable[[Request], Response]

_INTERNAL_ERROR = Response.error(500, "InternalError", "internal error; see the daemon log")


class _Problem(Exception):
    """A request we answer with an error before (or instead of) calling a handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        close: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = dict(headers or {})


class _PeerCredentials(NamedTuple):
    pid: int
    uid: int
    gid: int


class _Route(NamedTuple):
    method: str
    segments: tuple[str, ...]  # a literal, or "{name}" for a parameter
    handler: Handler

    @property
    def param_count(self) -> int:
        return sum(1 for segment in self.segments if _is_param(segment))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for pattern, value in zip(self.segments, segments, strict=True):
            if _is_param(pattern):
                if not value:
                    return None
                params[pattern[1:-1]] = value
            elif pattern != value:
                return None
        return params


def _is_param(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _compile_path(path: str) -> tuple[str, ...]:
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/': {path!r}")
    segments = tuple(path.split("/")[1:])
    for segment in segments:
        if _is_param(segment):
            if not segment[1:-1].isidentifier():
                raise ValueError(f"route parameter must be {{identifier}}: {segment!r} in {path!r}")
        elif "{" in segment or "}" in segment:
            raise ValueError(f"a parameter must be a whole segment: {segment!r} in {path!r}")
    return segments


def _peer_credentials(conn: socket.socket) -> _PeerCredentials:
    size = struct.calcsize("3i")
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
    pid, uid, gid = struct.unpack("3i", raw)
    return _PeerCredentials(pid, uid, gid)


def _encode_json(payload: Any) -> bytes:
    # allow_nan=False: NaN is not JSON, and jq or a browser would choke on it later.
    return json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


def _raw_error_response(status: int, message: str) -> bytes:
    """A complete HTTP answer, for connections refused before a handler object exists."""
    body = _encode_json(
        {"error": {"type": _ERROR_TYPE_BY_STATUS.get(status, "HTTPError"), "message": message}}
    )
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _lingering_close(conn: socket.socket) -> None:
    """Close `conn` after reading what the peer is still sending (bounded in time and bytes).

    Closing a socket with unread input resets the peer, and a peer still writing its request
    gets EPIPE before it reads our answer (a 413 or 403 would be lost). Reading first is Apache's
    "lingering close".
    """
    try:
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _LINGER_S
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


def socket_is_live(path: Path, timeout_s: float = 1.0) -> bool:
    """Whether something accepts connections on the Unix socket at `path`.

    False when the file is missing or nobody listens (ECONNREFUSED: a stale socket left by a
    crash). Raises DaemonError when the answer is unknowable (no permission, not a socket).
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout_s)
    try:
        probe.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except (TimeoutError, BlockingIOError):
        return True  # a listener with a full backlog is still a listener
    except OSError as exc:
        raise DaemonError(f"cannot probe control socket {path}: {exc.strerror or exc}") from exc
    finally:
        probe.close()
    return True


def _secure_directory(directory: Path, socket_name: str) -> None:
    """Create `directory` 0700, or tighten it to 0700 if it is ours and holds only the socket.

    A shared directory (sticky like /tmp, someone else's, or holding other files like /run) is
    left alone with a warning: chmod-ing /run to 0700 would break the system, and the socket's
    own mode 0600 still keeps other users out.
    """
    try:
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)  # mkdir's mode went through the umask
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise DaemonError(f"cannot create control socket directory {directory}: {exc}") from exc
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise DaemonError(f"{directory} is not a directory; cannot put the control socket in it")
    if info.st_mode & 0o077 == 0:
        return
    with os.scandir(directory) as entries:
        others = any(entry.name != socket_name for entry in entries)
    if info.st_mode & stat.S_ISVTX or info.st_uid != os.geteuid() or others:
        logger.warning(
            "control socket directory %s is shared (mode %o); leaving it as is, the socket "
            "itself is 0600. Prefer a directory of its own (RuntimeDirectory=crawler).",
            directory,
            stat.S_IMODE(info.st_mode),
        )
        return
    os.chmod(directory, 0o700)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    # Two daemons starting at once would both see a stale socket and the second would unlink
    # the first one's fresh socket; an flock on the directory makes check-unlink-bind atomic.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_stale_socket(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise DaemonError(
            f"{path} exists and is not a socket; remove it or set another control socket path"
        )
    if socket_is_live(path):
        raise DaemonAlreadyRunningError(pid=0, message=f"another crawler daemon answers on {path}")
    logger.info("removing stale control socket %s (left by a daemon that did not stop)", path)
    path.unlink(missing_ok=True)


class _ConnectionHandler(http.server.BaseHTTPRequestHandler):
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
    def peer(self) -> _PeerCredentials:
        """Who is on the other end (the server passes SO_PEERCRED as the client address)."""
        return cast(_PeerCredentials, self.client_address)

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
        self._send_problem(_Problem(code, message or phrase, close=True))

    def _send_problem(self, problem: _Problem) -> None:
        error_type = _ERROR_TYPE_BY_STATUS.get(problem.status, "HTTPError")
        body = {"error": {"type": error_type, "message": problem.message}}
        if problem.close:
            self.close_connection = True
        self._send_response(Response(problem.status, body, headers=problem.headers))

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it, instead of saying 100 Continue."""
        try:
            self._declared_length()
        except _Problem as problem:
            problem.close = True
            self._send_problem(problem)
            return False
        return super().handle_expect_100()

    # -- requests -----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        control = self.server.control
        try:
            if len(self.requestline.split()) != 3:
                raise _Problem(400, "the request line needs a method, a path and HTTP/1.x")
            raw_path, query = self._split_target()
            raw_body = self._read_body()
            segments = self._decode_segments(raw_path)
            handler, params = control._match(self.command, segments)
            body = self._decode_json(raw_body)
        except _Problem as problem:
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
            raise _Problem(400, "the request target must be ASCII; percent-encode other bytes")
        if target.startswith(("http://", "https://")):  # absolute-form, legal in HTTP/1.1
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not target.startswith("/"):
            raise _Problem(400, f"the request target must start with '/': {target[:100]!r}")
        raw_path, _, raw_query = target.partition("?")
        query: dict[str, str] = {}
        try:
            pairs = parse_qsl(
                raw_query, keep_blank_values=True, errors="strict", max_num_fields=_MAX_QUERY_FIELDS
            )
        except ValueError as exc:  # UnicodeDecodeError included, and too many fields
            raise _Problem(400, f"bad query string: {exc}") from None
        for key, value in pairs:
            query.setdefault(key, value)
        return raw_path, query

    @staticmethod
    def _decode_segments(raw_path: str) -> list[str]:
        # Split before decoding, so "BRK%2FB:US" stays one segment.
        try:
            return [unquote(segment, errors="strict") for segment in raw_path.split("/")[1:]]
        except UnicodeDecodeError:
            raise _Problem(400, "the path is not valid UTF-8 once percent-decoded") from None

    def _declared_length(self) -> int | None:
        """The Content-Length, validated; None when the body is chunked or absent."""
        limit = self.server.control.max_body_bytes
        encodings = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if encodings:
            if lengths:  # both at once is how requests get smuggled
                raise _Problem(400, "Transfer-Encoding and Content-Length together", close=True)
            codings = [c.strip().lower() for value in encodings for c in value.split(",")]
            if codings != ["chunked"]:
                raise _Problem(501, "only the chunked transfer coding is supported", close=True)
            return None
        if not lengths:
            return None
        values = {value.strip() for value in lengths}
        if len(values) != 1:
            raise _Problem(400, "conflicting Content-Length headers", close=True)
        (value,) = values
        if not (value.isascii() and value.isdigit()):
            problem = f"Content-Length must be a non-negative integer, not {value[:40]!r}"
            raise _Problem(400, problem, close=True)
        # Compare the digit count first: int() of a 10,000-digit string is itself an error.
        if len(value.lstrip("0")) > 18 or int(value) > limit:
            raise _Problem(413, f"the body is over the {limit}-byte limit", close=True)
        return int(value)

    def _read_body(self) -> bytes:
        length = self._declared_length()
        if length is not None:
            data = self.rfile.read(length)
            if len(data) < length:
                raise _Problem(400, "the body ended before Content-Length bytes", close=True)
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
                raise _Problem(400, "bad chunk-size line", close=True)
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or size_text.strip(b"0123456789abcdefABCDEF"):
                raise _Problem(400, "bad chunk size", close=True)
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise _Problem(413, f"the body is over the {limit}-byte limit", close=True)
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.read(2) != b"\r\n":
                raise _Problem(400, "a chunk is shorter than its size", close=True)
            parts.append(data)
        for _ in range(_MAX_TRAILER_LINES):
            line = self.rfile.readline(_MAX_CHUNK_LINE_BYTES + 1)
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)
            if not line or len(line) > _MAX_CHUNK_LINE_BYTES:
                raise _Problem(400, "bad chunked trailer", close=True)
        raise _Problem(400, "too many trailer lines", close=True)

    @staticmethod
    def _decode_json(raw_body: bytes) -> Any:
        if not raw_body:
            return None
        try:
            text = raw_body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Problem(400, "the body is not valid UTF-8") from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise _Problem(400, f"the body is not valid JSON: {exc}") from None

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
            return _INTERNAL_ERROR

    # -- responses ----------------------------------------------------------------------------

    def _send_response(self, response: Response) -> None:
        try:
            payload, content_type = self._encode(response)
        except (TypeError, ValueError):
            # Encode before the status line is written, so a body json cannot take is still a
            # clean 500 rather than a half-sent 200.
            logger.exception("control response for %s %s is not JSON-able", self.command, self.path)
            response = _INTERNAL_ERROR
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
        return _encode_json(response.body), response.content_type or "application/json"

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


class _UnixServer(socketserver.UnixStreamServer):
    """Accepts connections, checks peer credentials and runs each on a bounded thread."""

    request_queue_size = 64

    def __init__(self, control: ControlServer) -> None:
        super().__init__(
            os.fspath(control.socket_path), _ConnectionHandler, bind_and_activate=False
        )
        self.control = control
        self.client_timeout_s = control.client_timeout_s
        self.stopping = False
        self._slots = threading.BoundedSemaphore(control.max_connections)
        self._refusal_slots = threading.BoundedSemaphore(_MAX_REFUSAL_THREADS)
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}

    def process_request(self, request: Any, client_address: Any) -> None:
        conn: socket.socket = request
        try:
            creds = _peer_credentials(conn)
        except OSError:
            conn.close()
            return
        if creds.uid not in self.control.allowed_uids:
            logger.warning("refused control connection: uid %d (pid %d)", creds.uid, creds.pid)
            self._refuse(conn, 403, f"uid {creds.uid} may not use the control socket")
            return
        if self.stopping or not self._slots.acquire(blocking=False):
            logger.warning("control socket busy (%d connections)", self.control.max_connections)
            self._refuse(conn, 503, "too many connections to the control socket; try again")
            return
        thread = threading.Thread(
            target=self._serve, args=(conn, creds), name="crawler-control-conn", daemon=True
        )
        with self._lock:
            self._connections[thread] = conn
        thread.start()

    def _serve(self, conn: socket.socket, creds: _PeerCredentials) -> None:
        try:
            self.finish_request(conn, creds)
        except Exception:
            self.handle_error(conn, creds)
        finally:
            with self._lock:
                self._connections.pop(threading.current_thread(), None)
            self.shutdown_request(conn)
            self._slots.release()

    def _refuse(self, conn: socket.socket, status: int, message: str) -> None:
        answer = _raw_error_response(status, message)
        if not self._refusal_slots.acquire(blocking=False):
            # Under a flood, answer without lingering (one send into an empty buffer never blocks).
            with contextlib.suppress(OSError):
                conn.setblocking(False)
                conn.send(answer)
            conn.close()
            return

        def refuse() -> None:
            try:
                conn.settimeout(_LINGER_S)
                with contextlib.suppress(OSError):
                    conn.sendall(answer)
                _lingering_close(conn)
            finally:
                self._refusal_slots.release()

        threading.Thread(target=refuse, name="crawler-control-refuse", daemon=True).start()

    def shutdown_request(self, request: Any) -> None:
        _lingering_close(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is routine; anything else is our bug.
        error = sys.exc_info()[1]
        log = logger.debug if isinstance(error, OSError) else logger.error
        log("control connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self, timeout_s: float) -> None:
        """Let in-flight requests finish (up to `timeout_s`), then cut what is left."""
        self.stopping = True
        with self._lock:
            for conn in self._connections.values():
                # Idle keep-alive connections see EOF and end; busy ones finish their answer.
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RD)
            threads = list(self._connections)
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for conn in self._connections.values():
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            threads = list(self._connections)
        for thread in threads:
            thread.join(_LINGER_S)


class ControlServer:
    """The control socket: register routes, `start()`, `stop()`. See the module docstring."""

    def __init__(
        self,
        socket_path: Path,
        *,
        allowed_uids: set[int] | None = None,
        max_body_bytes: int = 64 * 1024,
        client_timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        if max_body_bytes < 0 or client_timeout_s <= 0 or max_connections < 1:
            raise ValueError("max_body_bytes >= 0, client_timeout_s > 0, max_connections >= 1")
        if len(os.fsencode(socket_path)) >= 108:  # sizeof(sockaddr_un.sun_path)
            raise ConfigError(f"control socket path is over 107 bytes: {socket_path}")
        self._socket_path = Path(socket_path)
        # SO_PEERCRED reports the peer's effective uid, so compare with ours.
        self.allowed_uids = frozenset({os.geteuid(), 0} if allowed_uids is None else allowed_uids)
        self.max_body_bytes = max_body_bytes
        self.client_timeout_s = client_timeout_s
        self.max_connections = max_connections
        self._routes: list[_Route] = []
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None
        self._socket_identity: tuple[int, int] | None = None

    @property
    def socket_path(self) -> Path:
        """Where the socket lives (it exists only between `start()` and `stop()`)."""
        return self._socket_path

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer `method` on `path` with `handler`; `{name}` segments become path_params.

        Register routes before `start()`. A literal segment wins over a parameter, so
        "/symbols/count" and "/symbols/{symbol}" can coexist.
        """
        method = method.upper()
        if not method.isalpha():
            raise ValueError(f"bad HTTP method: {method!r}")
        segments = _compile_path(path)
        if any(r.method == method and r.segments == segments for r in self._routes):
            raise ValueError(f"route {method} {path} is already registered")
        self._routes.append(_Route(method, segments, handler))

    def _match(self, method: str, segments: list[str]) -> tuple[Handler, dict[str, str]]:
        """The handler for `method` on the decoded `segments`, or a 404/405 problem."""
        matches = [
            (route, params)
            for route in self._routes
            if (params := route.match(segments)) is not None
        ]
        if not matches:
            raise _Problem(404, "no such path: /" + "/".join(segments))
        for_method = [(r, p) for r, p in matches if r.method == method]
        if not for_method:
            allowed = ", ".join(sorted({r.method for r, _ in matches}))
            raise _Problem(
                405, f"{method} is not allowed here; use {allowed}", headers={"Allow": allowed}
            )
        route, params = min(for_method, key=lambda pair: pair[0].param_count)
        return route.handler, params

    def start(self) -> None:
        """Bind the socket (0600, in a 0700 directory) and serve on a background thread.

        Returns once connections are accepted. Raises DaemonAlreadyRunningError if another
        daemon answers on the socket, DaemonError if it cannot listen; a stale socket left by a
        crash is replaced.
        """
        if self._server is not None:
            raise RuntimeError("the control server is already started")
        path = self._socket_path
        _secure_directory(path.parent, path.name)
        server = _UnixServer(self)
        try:
            with _directory_lock(path.parent):
                _remove_stale_socket(path)
                with _UMASK_LOCK:
                    previous_umask = os.umask(_SOCKET_UMASK)
                    try:
                        server.server_bind()
                    finally:
                        os.umask(previous_umask)
                info = os.lstat(path)
                self._socket_identity = (info.st_dev, info.st_ino)
                server.server_activate()
        except OSError as exc:
            server.server_close()
            raise DaemonError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
        except BaseException:
            server.server_close()
            raise
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how soon stop() is noticed
            name="crawler-control",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        logger.info("control socket listening on %s", path)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, finish in-flight requests (up to `timeout_s`), unlink the socket."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.stopping = True
        server.shutdown()  # returns once serve_forever has left its loop
        server.server_close()
        thread.join(timeout_s)
        self._unlink_socket()
        server.close_connections(timeout_s)
        logger.info("control socket on %s closed", self._socket_path)

    def _unlink_socket(self) -> None:
        # Only our own socket: a daemon started after us may already have replaced it.
        try:
            info = os.lstat(self._socket_path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._socket_identity:
            self._socket_path.unlink(missing_ok=True)

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
