"""A TCP port served by a socketserver on its own daemon thread (the metrics port, the dashboard).

served = ServerThread(requested_port=0)          # 0: any free port
served.serve(server, "crawler-metrics", poll_interval_s=0.1)   # a bound server, started
served.port                                      # the bound port (the requested one before)
served.stop(timeout_s=2.0)                       # shut down, close the socket, join; idempotent
"""

from __future__ import annotations

import socketserver
import threading

__all__ = ["ServerThread"]


class ServerThread:
    """One bound server and the thread serving it, or neither (not started, or stopped)."""

    def __init__(self, requested_port: int) -> None:
        self.requested_port = requested_port
        self.server: socketserver.TCPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the requested one until started)."""
        if self.server is None:
            return self.requested_port
        return int(self.server.server_address[1])

    def serve(self, server: socketserver.TCPServer, name: str, poll_interval_s: float) -> None:
        """Serve the bound `server` on a new daemon thread called `name`; it checks for a
        shutdown every `poll_interval_s`."""
        self.server = server
        self.thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": poll_interval_s},
            name=name,
            daemon=True,
        )
        self.thread.start()

    def stop(self, timeout_s: float) -> None:
        """Shut the server down, close its socket and wait up to `timeout_s` for its thread.
        Idempotent."""
        server, thread = self.server, self.thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout_s)
        self.server = self.thread = None
