"""Issue 23 item 8: a slowloris attack on the control socket.

64 connections (the daemon's own uid, or root) each sending one header byte every 6 s made
`status`, `reload` and `stop` answer 503 for the whole 30–40 s: every one of the 64 connection
threads was taken, the 10 s timeout applied per read, and `crawler stop` exited 1 with the
daemon still running. Now waiting for a head takes no thread, the whole request has its
deadline, and stop has workers of its own: all three are answered during the attack, and the
daemon stops. Through the real CLI against a real daemon.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

ATTACKERS = 64
DRIP_INTERVAL_S = 6.0
_HEAD = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 4096


class Slowloris:
    """`ATTACKERS` connections, each sending the next byte of a head every DRIP_INTERVAL_S,
    reconnecting as soon as one is dropped; `connected` counts the connections it opened."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.connected = 0
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Slowloris:
        self._thread.start()
        assert self.ready.wait(30), "the attack never got its connections open"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _connect(self) -> tuple[socket.socket, int] | None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(os.fspath(self.socket_path))
            conn.sendall(_HEAD[:1])
        except OSError:
            conn.close()
            return None
        self.connected += 1
        return conn, 1

    def _run(self) -> None:
        conns = [c for c in (self._connect() for _ in range(ATTACKERS)) if c is not None]
        self.ready.set()
        try:
            while not self._stop.wait(DRIP_INTERVAL_S):
                for index, (conn, sent) in enumerate(conns):
                    try:
                        conn.sendall(_HEAD[sent : sent + 1])
                        conns[index] = (conn, sent + 1)
                    except OSError:  # dropped: come back at once
                        conn.close()
                        again = self._connect()
                        if again is not None:
                            conns[index] = again
        finally:
            for conn, _ in conns:
                conn.close()


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def test_status_reload_and_stop_are_answered_during_a_slowloris_attack(
    market: FakeMarket, tmp_path: Path
) -> None:
    daemon = DaemonHarness(market, tmp_path, STREAM_ENABLED="false")
    daemon.start()
    try:
        with Slowloris(daemon.socket_path) as attack:
            assert attack.connected == ATTACKERS
            for args in (("status",), ("status", "--json"), ("reload",)):
                result = daemon.cli(*args)
                assert result.returncode == 0, (args, result.stdout, result.stderr)
            assert daemon.proc is not None
            # Reap the daemon as it exits: `crawler stop` waits for its pid to be gone, and
            # an unreaped child of ours would stay a zombie.
            reaper = threading.Thread(target=daemon.proc.wait, daemon=True)
            reaper.start()
            result = daemon.cli("stop")
            assert result.returncode == 0, (result.stdout, result.stderr)
            reaper.join(30)
            assert daemon.proc.returncode == 0  # it did stop, during the attack
    finally:
        daemon.stop()
