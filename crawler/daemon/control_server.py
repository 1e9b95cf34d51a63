"""HTTP/1.1 with JSON bodies over a Unix socket: the daemon's control interface.

    curl --unix-socket /run/crawler/control.sock http://localhost/v1/status

The server is generic; the daemon registers its routes. Each is served under the API version
prefix (`/v1/status`) and, for one release, at its old unversioned path (`/status`, answered
with a `Deprecation: true` header). `GET /v1/ping` is built in: it answers `{"pong": true}`, and
every answer carries the API version in the `Crawler-Api-Version` header::

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

Connections wait for their request head in one loop, without a thread each (`_UnixServer`);
a complete head gets a worker thread: at most `max_connections` at once and
`max_connections_per_uid` for one uid (the next gets 503), with workers kept for `POST /stop`
beyond both. Each request, head and body, must arrive within `client_timeout_s` of when the
server starts waiting for it, however slowly it trickles in: a slowloris client (a header byte
every few seconds) is dropped then, and a flood of them only makes the loop close the oldest
waiting connections, never keeps `status`, `reload` or `stop` out.

This module is the server (lifecycle, connection limits); the rest of the daemon's control
interface lives next to it: `messages` (Request, Response, Handler, error statuses),
`route_table` (paths to handlers, `/v1` and the old aliases), `http11` (parsing requests and
writing answers on one connection) and `socket_file` (the socket's modes, stale sockets, the
start-up lock, peer credentials). The names below are re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from crawler.daemon.http11 import LINGER_S, ConnectionHandler, lingering_close, raw_error_response
from crawler.daemon.messages import (
    API_PREFIX,
    ERROR_STATUS,
    Handler,
    Request,
    Response,
    status_for_error,
)
from crawler.daemon.route_table import RouteTable
from crawler.daemon.socket_file import (
    PeerCredentials,
    directory_lock,
    peer_credentials,
    remove_stale_socket,
    secure_directory,
    socket_is_live,
    socket_umask,
)
from crawler.logging import get_logger
from crawler.utils.exceptions import ConfigError, DaemonError

__all__ = [
    "ERROR_STATUS",
    "ControlServer",
    "Handler",
    "Request",
    "Response",
    "socket_is_live",
    "status_for_error",
]

logger = get_logger("crawler.control")

_MAX_REFUSAL_THREADS = 8


class _Waiting(NamedTuple):
    """A connection in the loop, waiting for a request head (its deadline on its handler)."""

    conn: socket.socket
    creds: PeerCredentials
    handler: ConnectionHandler


class _UnixServer(socketserver.UnixStreamServer):
    """Accepts connections, reads request heads in one loop, answers each on a bounded thread.

    Waiting for a head takes no thread: a client sending one byte every few seconds costs a
    descriptor until its request deadline, nothing more. Past `max_waiting` connections (or
    `max_waiting_per_uid` of one uid) the oldest waiting one is closed to make room, so a flood
    of slow connections cannot keep a quick client out. A complete head gets a worker: at most
    `max_connections` at once, `max_connections_per_uid` of them for one uid, and `POST /stop`
    has workers of its own beyond both, so `crawler stop` is always answered.
    """

    request_queue_size = 64

    def __init__(self, control: ControlServer) -> None:
        # The loop builds the ConnectionHandlers; the base class's handler type is unused.
        super().__init__(
            os.fspath(control.socket_path),
            socketserver.BaseRequestHandler,
            bind_and_activate=False,
        )
        self.control = control
        self.client_timeout_s = control.client_timeout_s
        self.stopping = False
        self._refusal_slots = threading.BoundedSemaphore(_MAX_REFUSAL_THREADS)
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}  # the busy workers
        self._workers_by_uid: dict[int, int] = {}
        self._stop_workers = 0
        self._waiting: dict[int, _Waiting] = {}  # by descriptor, oldest first
        self._parked: list[_Waiting] = []  # handed back by workers (keep-alive)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._loop_ended = threading.Event()
        self._end_loop = threading.Event()
        self._evicted = 0
        self._evict_logged_at = -_FLOOD_LOG_EVERY_S

    # -- what a connection asks of its server (http11.ConnectionHost) --------------------------

    @property
    def max_body_bytes(self) -> int:
        """A request body over this is refused with 413."""
        return self.control.max_body_bytes

    def match(self, method: str, segments: list[str]) -> tuple[Handler, dict[str, str]]:
        """The route's handler and path parameters, or a Problem (404, 405)."""
        return self.control.routes.match(method, segments)

    # -- the loop ------------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        """Accept, read heads and drop late clients until `shutdown()`."""
        self._loop_ended.clear()
        self.socket.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ, _LISTENER)
        selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        try:
            while not self._end_loop.is_set():
                for key, _ in selector.select(poll_interval):
                    try:
                        if key.data is _LISTENER:
                            self._accept(selector)
                        elif key.data is _WAKE:
                            self._take_parked(selector)
                        else:
                            self._read_head(selector, key.fd)
                    except Exception:
                        # One connection's surprise must not end the loop (and with it the
                        # control socket): log it, drop that connection, go on.
                        logger.exception("control loop: a connection failed")
                        self._drop_fd(selector, key.fd)
                self._drop_late(selector, time.monotonic())
        finally:
            with self._lock:
                waiting = list(self._waiting.values()) + self._parked
                self._waiting.clear()
                self._parked.clear()
            for entry in waiting:
                entry.conn.close()
            selector.close()
            self._loop_ended.set()

    def shutdown(self) -> None:
        """End the loop (its waiting connections are closed) and wait for it."""
        self._end_loop.set()
        self._loop_ended.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            conn, _ = self.socket.accept()
        except OSError:  # BlockingIOError: another wake-up took it; or the peer is gone
            return
        try:
            creds = peer_credentials(conn)
        except OSError:
            conn.close()
            return
        if creds.uid not in self.control.allowed_uids:
            logger.warning("refused control connection", uid=creds.uid, pid=creds.pid)
            self._refuse(conn, 403, f"uid {creds.uid} may not use the control socket")
            return
        if self.stopping:
            self._refuse(conn, 503, "the daemon is stopping")
            return
        conn.setblocking(False)
        handler = ConnectionHandler(conn, creds, self)
        handler.begin_request(time.monotonic() + self.client_timeout_s)
        self._wait(selector, _Waiting(conn, creds, handler))

    def _wait(self, selector: selectors.BaseSelector, entry: _Waiting) -> None:
        """Wait for `entry`'s next head, closing the oldest waiting connections over the caps."""
        control = self.control
        same_uid = [e for e in self._waiting.values() if e.creds.uid == entry.creds.uid]
        if len(same_uid) >= control.max_waiting_per_uid:
            self._evict(selector, same_uid[0])
        if len(self._waiting) >= control.max_waiting:
            self._evict(selector, next(iter(self._waiting.values())))
        self._waiting[entry.conn.fileno()] = entry
        selector.register(entry.conn, selectors.EVENT_READ, entry.conn.fileno())

    def _evict(self, selector: selectors.BaseSelector, entry: _Waiting) -> None:
        self._evicted += 1
        now = time.monotonic()
        if now - self._evict_logged_at >= _FLOOD_LOG_EVERY_S:  # one line a while, not a flood
            self._evict_logged_at = now
            logger.warning(
                "control socket flooded: closing the oldest connections waiting for a request",
                uid=entry.creds.uid, pid=entry.creds.pid, waiting=len(self._waiting),
                closed=self._evicted,
            )  # fmt: skip
            self._evicted = 0
        self._forget(selector, entry)
        entry.conn.close()

    def _forget(self, selector: selectors.BaseSelector, entry: _Waiting) -> None:
        self._waiting.pop(entry.conn.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(entry.conn)

    def _read_head(self, selector: selectors.BaseSelector, fd: int) -> None:
        entry = self._waiting.get(fd)
        if entry is None:
            return
        try:
            data = entry.conn.recv(_RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # reset by the peer: as if it closed
        entry.handler.feed(data)
        if not entry.handler.head_ready():
            return
        self._forget(selector, entry)
        if entry.handler.closed_by_peer:
            entry.conn.close()
            return
        self._dispatch(entry)

    def _drop_fd(self, selector: selectors.BaseSelector, fd: int) -> None:
        entry = self._waiting.get(fd)
        if entry is not None:
            self._forget(selector, entry)
            entry.conn.close()

    def _drop_late(self, selector: selectors.BaseSelector, now: float) -> None:
        late = [entry for entry in self._waiting.values() if entry.handler.deadline <= now]
        for entry in late:
            # The whole request had client_timeout_s to arrive (an idle keep-alive one too).
            self._forget(selector, entry)
            entry.conn.close()

    # -- workers -------------------------------------------------------------------------------

    def _dispatch(self, entry: _Waiting) -> None:
        """Hand a complete head to a worker, or answer 503 when none may take it."""
        control = self.control
        uid = entry.creds.uid
        line = entry.handler.request_line()
        is_stop = line is not None and line[0] == "POST" and _is_stop_target(line[1])
        with self._lock:
            busy = len(self._connections)
            if busy < control.max_connections and (
                self._workers_by_uid.get(uid, 0) < control.max_connections_per_uid
            ):
                reserved = False
            elif is_stop and self._stop_workers < _STOP_WORKERS:
                reserved = True  # stop is answered even when every other worker is busy
            else:
                reserved = None
            if reserved is not None:
                thread = threading.Thread(
                    target=self._serve, args=(entry, reserved), name="crawler-control-conn",
                    daemon=True,
                )  # fmt: skip
                self._connections[thread] = entry.conn
                self._workers_by_uid[uid] = self._workers_by_uid.get(uid, 0) + 1
                self._stop_workers += reserved
        if reserved is None:
            logger.warning(
                "control socket busy", uid=uid, workers=busy,
                per_uid=control.max_connections_per_uid,
            )  # fmt: skip
            entry.conn.setblocking(True)
            self._refuse(entry.conn, 503, "too many requests to the control socket; try again")
            return
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": the process is at its limit
            with self._lock:
                self._connections.pop(thread, None)
            self._release(entry, reserved, again=False)
            entry.conn.close()
            raise

    def _serve(self, entry: _Waiting, reserved: bool) -> None:
        again = False
        try:
            entry.conn.settimeout(self.client_timeout_s)
            again = entry.handler.serve()
        except Exception:
            self.handle_error(entry.conn, entry.creds)
        finally:
            parked = self._release(entry, reserved, again)
        if not parked:
            self.shutdown_request(entry.conn)

    def _release(self, entry: _Waiting, reserved: bool, again: bool) -> bool:
        """Give the worker back; True when the connection went back to the loop (keep-alive)."""
        with self._lock:
            self._connections.pop(threading.current_thread(), None)
            left = self._workers_by_uid.get(entry.creds.uid, 1) - 1
            if left > 0:
                self._workers_by_uid[entry.creds.uid] = left
            else:
                self._workers_by_uid.pop(entry.creds.uid, None)
            self._stop_workers -= reserved
            if not again or self.stopping or self._end_loop.is_set():
                return False
            entry.conn.setblocking(False)
            self._parked.append(entry)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        return True

    def _take_parked(self, selector: selectors.BaseSelector) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        with self._lock:
            parked, self._parked = self._parked, []
        for entry in parked:
            self._wait(selector, entry)

    def _refuse(self, conn: socket.socket, status: int, message: str) -> None:
        answer = raw_error_response(status, message)
        if not self._refusal_slots.acquire(blocking=False):
            # Under a flood, answer without lingering (one send into an empty buffer never blocks).
            with contextlib.suppress(OSError):
                conn.setblocking(False)
                conn.send(answer)
            conn.close()
            return

        def refuse() -> None:
            try:
                conn.settimeout(LINGER_S)
                with contextlib.suppress(OSError):
                    conn.sendall(answer)
                lingering_close(conn)
            finally:
                self._refusal_slots.release()

        threading.Thread(target=refuse, name="crawler-control-refuse", daemon=True).start()

    def shutdown_request(self, request: Any) -> None:
        lingering_close(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is routine; anything else is our bug.
        error = sys.exc_info()[1]
        log = logger.debug if isinstance(error, OSError) else logger.error
        log("control connection ended with an error", peer=str(client_address), exc_info=True)

    def close_connections(self, timeout_s: float) -> None:
        """Let in-flight requests finish (up to `timeout_s`), then cut what is left."""
        self.stopping = True
        with self._lock:
            for conn in self._connections.values():
                # Busy ones finish their answer, then close (stopping: none goes back to wait).
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
            thread.join(LINGER_S)


#: The routes `POST` of which is a stop (versioned and the old alias).
_STOP_TARGETS = frozenset({f"{API_PREFIX}/stop", "/stop"})
#: Workers only `POST /stop` may use, beyond every cap.
_STOP_WORKERS = 2
_FLOOD_LOG_EVERY_S = 10.0
_LISTENER = object()
_WAKE = object()
_RECV_BYTES = 65536


def _is_stop_target(target: str) -> bool:
    if target.startswith(("http://", "https://")):  # absolute-form: its path is what counts
        target = "/" + target.split("/", 3)[-1] if target.count("/") >= 3 else "/"
    return target.partition("?")[0] in _STOP_TARGETS


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
        max_connections_per_uid: int | None = None,
        max_waiting: int | None = None,
    ) -> None:
        if max_body_bytes < 0 or client_timeout_s <= 0 or max_connections < 1:
            raise ValueError("max_body_bytes >= 0, client_timeout_s > 0, max_connections >= 1")
        #: Workers one uid may hold: the rest stay free for the other allowed uid (root, or
        #: the daemon's user).
        self.max_connections_per_uid = max(
            1, max_connections * 3 // 4 if max_connections_per_uid is None
            else max_connections_per_uid,
        )  # fmt: skip
        #: Connections waiting for a request head (no thread each), and how many of one uid.
        self.max_waiting = max(2, 4 * max_connections if max_waiting is None else max_waiting)
        self.max_waiting_per_uid = max(1, self.max_waiting * 3 // 4)
        if len(os.fsencode(socket_path)) >= 108:  # sizeof(sockaddr_un.sun_path)
            raise ConfigError(f"control socket path is over 107 bytes: {socket_path}")
        self._socket_path = Path(socket_path)
        # SO_PEERCRED reports the peer's effective uid, so compare with ours.
        self.allowed_uids = frozenset({os.geteuid(), 0} if allowed_uids is None else allowed_uids)
        self.max_body_bytes = max_body_bytes
        self.client_timeout_s = client_timeout_s
        self.max_connections = max_connections
        #: The routes, `GET /v1/ping` built in.
        self.routes = RouteTable()
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None
        self._socket_identity: tuple[int, int] | None = None

    @property
    def socket_path(self) -> Path:
        """Where the socket lives (it exists only between `start()` and `stop()`)."""
        return self._socket_path

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer `method` on `/v1{path}` (and `path`) with `handler` (see `RouteTable.add`).
        Register routes before `start()`."""
        self.routes.add(method, path, handler)

    def start(self) -> None:
        """Bind the socket (0600, in a 0700 directory) and serve on a background thread.

        Returns once connections are accepted. Raises DaemonAlreadyRunningError if another
        daemon answers on the socket, DaemonError if it cannot listen; a stale socket left by a
        crash is replaced.
        """
        if self._server is not None:
            raise RuntimeError("the control server is already started")
        path = self._socket_path
        secure_directory(path.parent, path.name)
        server = _UnixServer(self)
        try:
            with directory_lock(path.parent):
                remove_stale_socket(path)
                with socket_umask():
                    server.server_bind()
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
        logger.info("control socket listening", socket=str(path))

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
        logger.info("control socket closed", socket=str(self._socket_path))

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
