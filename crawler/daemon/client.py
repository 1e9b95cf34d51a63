"""The CLI's side of the control socket: HTTP/1.1 + JSON over a Unix socket.

    client = ControlClient(Path("/run/crawler/control.sock"))
    status, body = client.get("/status")          # (200, {...}); errors come back as statuses
    body = client.call("DELETE", "/symbols/" + quote("BRK/B:US", safe=""))  # raises on >= 400
    for chunk in client.stream("GET", "/export"):  # a chunked answer, piece by piece
        sys.stdout.buffer.write(chunk)

Imports only the standard library (and the error tree): `crawler status` must start fast.
Each request opens its own connection; the CLI makes one or two, so reuse would buy nothing.
Path segments are sent as given: percent-encode them (urllib.parse.quote(s, safe="")).
Paths are relative to the API version: "/status" is sent as "/v1/status".
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import stat
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from crawler.daemon.messages import API_PREFIX
from crawler.utils import exceptions
from crawler.utils.exceptions import (
    CrawlerError,
    DaemonError,
    DaemonNotRunningError,
    UsageError,
)

__all__ = ["ControlClient", "error_from_response"]

_STREAM_CHUNK_BYTES = 64 * 1024


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose transport is a Unix socket; the Host header says localhost."""

    def __init__(self, socket_path: Path, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(os.fspath(self._socket_path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _check_server_uid(sock: socket.socket | None, path: Path) -> None:
    """Believe only a daemon run by us or by root (or, for root, the service user's daemon in
    its RuntimeDirectory: `_root_trusts`): another local user could have put a socket of
    their own at `path` (in a shared directory) and answer whatever they like."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return  # not a Linux Unix socket: nothing to check with
    _pid, uid, _gid = struct.unpack("3i", raw)
    if uid not in (os.geteuid(), 0) and not _root_trusts(uid, path):
        raise DaemonError(
            f"the control socket {path} is served by uid {uid}, not by you (uid "
            f"{os.geteuid()}) or root, nor in a directory root gave that user; not trusting "
            "it: check CRAWLER_SOCKET"
        )


def _root_trusts(uid: int, path: Path) -> bool:
    """Root believes a service user's daemon whose socket sits in a directory root gave that
    user: the socket's directory is the server's (uid), writable by nobody else, inside a
    directory of root's that nobody else can write: systemd's RuntimeDirectory=crawler
    (/run/crawler, owned by the unit's DynamicUser). Another user cannot make such a place,
    so root's CLI cannot be pointed at a socket of theirs this way."""
    if os.geteuid() != 0:
        return False
    try:
        directory = Path(os.path.abspath(path)).parent
        own = os.stat(directory, follow_symlinks=False)
        parent = os.stat(directory.parent)
    except OSError:
        return False
    return (
        own.st_uid == uid
        and stat.S_ISDIR(own.st_mode)
        and own.st_mode & 0o022 == 0
        and parent.st_uid == 0
        and parent.st_mode & 0o022 == 0
    )


def error_from_response(status: int, body: Any) -> CrawlerError:
    """The CrawlerError an error answer stands for, so the CLI keeps its exit codes.

    `{"error": {"type": "SymbolError", ...}}` becomes a SymbolError; error types whose
    constructor needs more than a message (BudgetExhaustedError) become a plain CrawlerError with
    the daemon's message; protocol errors (NotFound, BadRequest...) become DaemonError.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error_type = str(error.get("type", ""))
        message = str(error.get("message", "")) or f"the daemon answered HTTP {status}"
    else:
        error_type = ""
        detail = body.strip()[:200] if isinstance(body, str) else ""
        message = f"the daemon answered HTTP {status}" + (f": {detail}" if detail else "")
    cls = getattr(exceptions, error_type, None) if error_type in exceptions.__all__ else None
    if isinstance(cls, type) and issubclass(cls, CrawlerError):
        if cls.__init__ is CrawlerError.__init__:  # message-only constructor
            return cls(message)
        return CrawlerError(message)
    if status == 400:  # the daemon refused our arguments: the same usage error as offline
        return UsageError(message)
    return DaemonError(f"control request failed ({status} {error_type or 'error'}): {message}")


class _Stream:
    """The chunks of a streamed answer; `close()` may be called from another thread (it shuts
    the socket down, which ends a read blocked there)."""

    def __init__(self, conn: http.client.HTTPConnection, chunks: Iterator[bytes]) -> None:
        self._conn = conn
        self._chunks = chunks

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        """End the stream now: the connection is shut down and closed."""
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()


class ControlClient:
    """Talks to the daemon's control socket.

    Raises DaemonNotRunningError when nothing answers on the socket, DaemonError on a timeout
    or a garbled answer. HTTP error statuses are returned by `request()`, raised by `call()`.
    """

    def __init__(self, socket_path: Path, timeout_s: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s

    def get(self, path: str, query: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """GET `path`; returns (status, parsed JSON or text)."""
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        """POST `body` as JSON to `path`; returns (status, parsed JSON or text)."""
        return self.request("POST", path, body)

    def delete(self, path: str) -> tuple[int, Any]:
        """DELETE `path`; returns (status, parsed JSON or text)."""
        return self.request("DELETE", path)

    def call(
        self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
    ) -> Any:
        """Like `request()`, but returns only the body; raises `error_from_response` if >= 400."""
        status, answer = self.request(method, path, body, query)
        if status >= 400:
            raise error_from_response(status, answer)
        return answer

    def request(
        self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """Send one request; returns (status, parsed JSON body, or text for other types)."""
        conn = self._open(method, path, body, query)
        try:
            response = conn.getresponse()
            data = response.read()
            content_type = response.getheader("Content-Type", "") or ""
            return response.status, self._decode(data, content_type)
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            raise self._failure(exc) from exc
        finally:
            conn.close()

    def stream(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Iterator[bytes]:
        """Send one request and iterate over the answer's body as it arrives.

        The request is made now (so DaemonNotRunningError is raised here, not on the first
        `next()`); an error status raises `error_from_response`. A stream that ends early
        raises DaemonError: the export is incomplete. `headers`, if given, receives the
        answer's headers (names lower-cased). `body` is sent as JSON.
        """
        conn = self._open(method, path, body, query)
        try:
            response = conn.getresponse()
            if response.status >= 400:
                data = response.read()
                content_type = response.getheader("Content-Type", "") or ""
                raise error_from_response(response.status, self._decode(data, content_type))
            if headers is not None:
                headers.update((name.lower(), value) for name, value in response.getheaders())
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            conn.close()
            raise self._failure(exc) from exc
        except BaseException:
            conn.close()
            raise
        return _Stream(conn, self._iterate(conn, response))

    def _iterate(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> Iterator[bytes]:
        try:
            while True:
                chunk = response.read1(_STREAM_CHUNK_BYTES)
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            raise self._failure(exc) from exc
        finally:
            conn.close()

    def _open(
        self, method: str, path: str, body: Any, query: Mapping[str, str] | None
    ) -> http.client.HTTPConnection:
        if not path.startswith("/"):
            raise ValueError(f"control paths start with '/': {path!r}")
        if not path.startswith(API_PREFIX + "/"):
            path = API_PREFIX + path
        url = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "Connection": "close"}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = _UnixHTTPConnection(self.socket_path, self.timeout_s)
        try:
            conn.connect()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            conn.close()
            raise DaemonNotRunningError(
                f"crawler daemon is not running (no answer on {self.socket_path}); "
                "start it with `crawler start`"
            ) from exc
        except OSError as exc:
            conn.close()
            raise DaemonError(
                f"cannot connect to the control socket {self.socket_path}: "
                f"{exc.strerror or exc} (run as the daemon's user or root)"
            ) from exc
        try:
            _check_server_uid(conn.sock, self.socket_path)
        except DaemonError:
            conn.close()
            raise
        try:
            conn.request(method, url, body=payload, headers=headers)
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            conn.close()
            raise self._failure(exc) from exc
        return conn

    def _failure(self, exc: BaseException) -> DaemonError:
        if isinstance(exc, TimeoutError):
            return DaemonError(
                f"the daemon did not answer on {self.socket_path} within {self.timeout_s:g} s"
            )
        if isinstance(exc, http.client.IncompleteRead):
            return DaemonError("the daemon's answer ended early; the output is incomplete")
        return DaemonError(f"talking to the daemon on {self.socket_path} failed: {exc!r}")

    @staticmethod
    def _decode(data: bytes, content_type: str) -> Any:
        if content_type.split(";", 1)[0].strip().lower() == "application/json":
            try:
                return json.loads(data) if data else None
            except ValueError as exc:
                raise DaemonError(f"the daemon sent invalid JSON: {exc}") from exc
        return data.decode("utf-8", errors="replace")
