"""ServerThread: the metrics port's and the dashboard's one way to serve a bound socketserver on
its own thread and stop it (real sockets, nothing mocked)."""

from __future__ import annotations

import socket
import socketserver

from crawler.utils.server_thread import ServerThread


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


def _bound() -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    return server


def test_the_port_is_the_requested_one_until_served_then_the_bound_one() -> None:
    served = ServerThread(requested_port=0)
    assert served.port == 0
    server = _bound()
    served.serve(server, "test-echo", poll_interval_s=0.05)
    try:
        assert served.port == server.server_address[1] != 0
        assert served.thread is not None and served.thread.name == "test-echo"
        assert served.thread.daemon
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as client:
            client.sendall(b"ping\n")
            assert client.makefile("rb").readline() == b"ping\n"
    finally:
        served.stop(timeout_s=5)


def test_stop_closes_the_socket_joins_the_thread_and_is_idempotent() -> None:
    served = ServerThread(requested_port=0)
    served.stop(timeout_s=1)  # never started: nothing to do
    server = _bound()
    served.serve(server, "test-echo", poll_interval_s=0.05)
    thread = served.thread
    served.stop(timeout_s=5)
    assert thread is not None and not thread.is_alive()
    assert server.socket.fileno() == -1  # closed
    assert served.server is None and served.thread is None and served.port == 0
    served.stop(timeout_s=1)
