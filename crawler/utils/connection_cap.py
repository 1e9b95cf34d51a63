"""A connection cap for socketserver's threading servers (the metrics port, the dashboard).

    class CappedServer(ConnectionCap, ThreadingHTTPServer):
        def refuse(self, request): request.sendall(b"HTTP/1.1 503 ...")   # optional

    server = CappedServer(address, handler)
    server.set_cap(16)

At most `cap` connections are served at once: the next one is refused (`refuse`, then closed)
instead of getting a thread, so a flood of connections costs neither threads nor memory.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["ConnectionCap"]


class ConnectionCap:
    """Mix in before a `socketserver.ThreadingMixIn` server; call `set_cap` before serving."""

    max_connections: int = 0
    _slots: threading.BoundedSemaphore

    def set_cap(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)

    def refuse(self, request: Any) -> None:
        """What a connection past the cap is told before it is closed (nothing by default)."""

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refuse(request)
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._slots.release()
