"""Issue 13 item 8: the metrics port must not let another local user exhaust the daemon.

Reproduced at the size that broke: 1,012 idle connections to METRICS_PORT took every file
descriptor the daemon had (status timed out, the ledger could not open, stop failed). This is
the contract any metrics server behind METRICS_PORT keeps (engineer "eco" swaps the server for
prometheus_client's): connections are capped, idle ones are closed, the daemon stays usable.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakemarket import FakeMarket
from fakemarket.core import free_port
from tests.faults.daemon_harness import DaemonHarness

FLOOD = 1_012
#: What the daemon's descriptors may grow by under the flood: the cap plus slack. Before the
#: fix each idle connection kept one.
FD_GROWTH_LIMIT = 100
IDLE_BOUND_S = 30.0  # the idle timeout is 5 s; a loaded machine may take a while to reap


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _scrape(port: int, timeout_s: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_flood_of_idle_connections_leaves_the_daemon_usable(
    market: FakeMarket, tmp_path: Path
) -> None:
    port = free_port()
    daemon = DaemonHarness(market, tmp_path, METRICS_PORT=str(port))
    proc = daemon.start()
    held: list[socket.socket] = []
    try:
        assert _scrape(port).split(b"\r\n", 1)[0].endswith(b" 200 OK")
        before = _fds(proc.pid)
        for _ in range(FLOOD):
            # A full listener backlog refuses some for a moment: still a flood.
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
        assert len(held) > FLOOD // 2

        # The daemon keeps its descriptors, so its control socket and stores keep working.
        assert _fds(proc.pid) - before < FD_GROWTH_LIMIT
        status = daemon.cli("status", "--json", timeout_s=60)
        assert status.returncode == 0, status.stderr
        added = daemon.cli("symbols", "add", "AAPL:US", timeout_s=60)
        assert added.returncode == 0, added.stderr

        # Every idle connection is closed by the server: at once over the cap, after the
        # idle timeout under it.
        end = time.monotonic() + IDLE_BOUND_S
        open_ = list(held)
        while open_ and time.monotonic() < end:
            still = []
            for conn in open_:
                conn.settimeout(max(0.01, min(1.0, end - time.monotonic())))
                try:
                    if conn.recv(1) == b"":
                        continue
                except (ConnectionResetError, BrokenPipeError):
                    continue
                except TimeoutError:
                    pass
                still.append(conn)
            open_ = still
        assert not open_, f"{len(open_)} idle connections still open after {IDLE_BOUND_S}s"

        # With the flood gone, scrapes are served again.
        assert _scrape(port).split(b"\r\n", 1)[0].endswith(b" 200 OK")
    finally:
        for conn in held:
            conn.close()
        code = daemon.stop()
    assert code == 0, daemon.log_tail()
