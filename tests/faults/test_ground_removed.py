"""Issue 13 item 6: an invisible, paying daemon.

`rm -rf` of the data dir under a running daemon: `status` said not running, `stop` exited 3,
`start` started a second daemon, and both spent with separate ledgers. The daemon now checks
at every heartbeat that its data dir, pidfile and control socket are still its own, and stops
with a clear error when one is gone or replaced. A refusal to start names the running daemon's
socket and data dir.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crawler.daemon.app import GROUND_CHECK_S
from crawler.daemon.process import PIDFILE_NAME
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness, one_clean_line

STOP_BOUND_S = GROUND_CHECK_S + 15  # a check, then the shutdown, on a loaded machine


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def _rm_data_dir(daemon: DaemonHarness) -> str:
    shutil.rmtree(daemon.data_dir)
    # The first check to notice may be the data dir's or the pidfile's (a store may recreate
    # the directory, even with the same inode number): both name the data dir.
    return str(daemon.data_dir)


def _rm_pidfile(daemon: DaemonHarness) -> str:
    (daemon.data_dir / PIDFILE_NAME).unlink()
    return f"pidfile {daemon.data_dir / PIDFILE_NAME} was removed"


def _replace_pidfile(daemon: DaemonHarness) -> str:
    pidfile = daemon.data_dir / PIDFILE_NAME
    pidfile.unlink()
    pidfile.write_text("1\n")
    return f"pidfile {pidfile} was replaced"


def _rm_socket(daemon: DaemonHarness) -> str:
    daemon.socket_path.unlink()
    return f"control socket {daemon.socket_path} was removed"


@pytest.mark.parametrize("remove", [_rm_data_dir, _rm_pidfile, _replace_pidfile, _rm_socket])
def test_the_daemon_stops_when_its_ground_is_removed(
    market: FakeMarket, tmp_path: Path, remove: Callable[[DaemonHarness], str]
) -> None:
    daemon = DaemonHarness(market, tmp_path)
    try:
        proc = daemon.start()
        deadline = time.monotonic() + 30  # its start-up checks done, it serves
        while '"crawler started' not in daemon.log_tail(100_000):
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.05)
        expected = remove(daemon)
        code = proc.wait(STOP_BOUND_S)
    finally:
        daemon.kill()
    log = daemon.log_tail(100_000)
    assert code == 1, log[-3000:]
    errors = [json.loads(line) for line in log.splitlines() if '"level": "error"' in line]
    assert any(
        expected in entry["event"] and "under the running daemon; stopping" in entry["event"]
        for entry in errors
    ), log[-3000:]


def test_a_second_start_is_refused_naming_the_running_daemon(
    market: FakeMarket, tmp_path: Path
) -> None:
    daemon = DaemonHarness(market, tmp_path)
    try:
        proc = daemon.start()
        second = daemon.cli("start", "--foreground", timeout_s=60)
        assert second.returncode != 0
        line = one_clean_line(second.stderr)
        assert str(proc.pid) in line, line
        assert str(daemon.socket_path) in line and str(daemon.data_dir) in line, line
        detached = daemon.cli("start", timeout_s=60)  # exit 0 like systemctl, but says where
        assert detached.returncode == 0, detached.stderr
        assert str(daemon.socket_path) in detached.stdout
        assert str(daemon.data_dir) in detached.stdout
        assert proc.poll() is None
    finally:
        daemon.stop()
    assert not (daemon.data_dir / PIDFILE_NAME).exists()


def test_the_pidfile_of_another_daemon_is_not_removed_on_stop(
    market: FakeMarket, tmp_path: Path
) -> None:
    daemon = DaemonHarness(market, tmp_path)
    try:
        proc = daemon.start()
        _replace_pidfile(daemon)
        proc.wait(STOP_BOUND_S)
    finally:
        daemon.kill()
    assert (daemon.data_dir / PIDFILE_NAME).read_text() == "1\n"  # not ours: left alone
