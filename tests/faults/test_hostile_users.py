"""Issue 13 item 7: another local user.

Run as root with a data dir owned by someone else (0777), the daemon followed planted
symlinks: crawler.pid overwrote a victim file, the detached log appended to another, a
symlinked ledger/ dir was chmod-ed. The CLI trusted a socket served by another user (printed
its JSON, exit 0). An unprivileged flock on a shared socket dir blocked `start` forever.
Each is now refused with one line, and no victim file changes. Needs root (to be "another
user" with `nobody`): skipped with the reason otherwise.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.daemon.socket_file import DIRECTORY_LOCK_TIMEOUT_S
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness, one_clean_line

NOBODY = 65534
VICTIM_TEXT = "the victim's own data\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    os.chmod(path, 0o644)
    return path


def _harness(market: FakeMarket, tmp_path: Path, socket_path: Path | None = None) -> DaemonHarness:
    harness = DaemonHarness(market, tmp_path)
    if socket_path is not None:
        harness.socket_path = socket_path
        harness.env["CRAWLER_SOCKET"] = str(socket_path)
    return harness


def test_a_data_dir_owned_by_another_user_is_refused(
    market: FakeMarket, tmp_path: Path, victim: Path
) -> None:
    daemon = _harness(market, tmp_path)
    daemon.data_dir.mkdir()
    os.chown(daemon.data_dir, NOBODY, NOBODY)
    os.chmod(daemon.data_dir, 0o777)
    (daemon.data_dir / "ledger").symlink_to(victim.parent)  # planted by the other user
    mode_before = victim.parent.stat().st_mode
    result = daemon.cli("start", "--foreground")
    assert result.returncode == 2, result.stdout
    line = one_clean_line(result.stderr)
    assert f"data dir {daemon.data_dir} belongs to uid {NOBODY}" in line, line
    assert victim.read_text() == VICTIM_TEXT
    assert victim.parent.stat().st_mode == mode_before  # nothing chmod-ed through the link
    assert sorted(p.name for p in daemon.data_dir.iterdir()) == ["ledger"]


def test_a_planted_pidfile_symlink_is_not_followed(
    market: FakeMarket, tmp_path: Path, victim: Path
) -> None:
    daemon = _harness(market, tmp_path)
    daemon.data_dir.mkdir(mode=0o700)
    (daemon.data_dir / "crawler.pid").symlink_to(victim)
    result = daemon.cli("start", "--foreground")
    assert result.returncode != 0
    line = one_clean_line(result.stderr)
    assert "crawler.pid" in line and "symbolic link" in line, line
    assert victim.read_text() == VICTIM_TEXT


def test_a_planted_log_symlink_is_not_followed(
    market: FakeMarket, tmp_path: Path, victim: Path
) -> None:
    daemon = _harness(market, tmp_path)
    daemon.data_dir.mkdir(mode=0o700)
    (daemon.data_dir / "crawler.log").symlink_to(victim)
    result = daemon.cli("start")  # detached: the log is where its output goes
    assert result.returncode != 0
    line = one_clean_line(result.stderr)
    assert "crawler.log" in line and "symbolic link" in line, line
    assert victim.read_text() == VICTIM_TEXT


def test_a_socket_dir_writable_by_others_is_refused(market: FakeMarket, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "someone-elses-file").write_text("x")
    os.chmod(shared, 0o1777)
    daemon = _harness(market, tmp_path, shared / "crawler.sock")
    result = daemon.cli("start", "--foreground")
    assert result.returncode != 0
    line = one_clean_line(result.stderr)
    assert "writable by others" in line and str(shared) in line, line


def test_the_cli_does_not_trust_a_socket_served_by_another_user(
    market: FakeMarket, tmp_path: Path
) -> None:
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("needs a system python another uid can run")
    theirs = Path("/tmp") / f"crawler-hostile-{os.getpid()}"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    sock = theirs / "crawler.sock"
    server = subprocess.Popen(
        [python, "-I", "-c", _FAKE_DAEMON, str(sock)],
        user=NOBODY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        daemon = _harness(market, tmp_path, sock)
        for args in (("status",), ("status", "--json"), ("symbols", "list")):
            result = daemon.cli(*args)
            assert result.returncode == 1, (args, result.stdout)
            assert "running" not in result.stdout  # its JSON was not printed
            line = one_clean_line(result.stderr)
            assert f"served by uid {NOBODY}" in line, line
    finally:
        server.kill()
        server.communicate(timeout=30)  # reaps it and closes its pipes
        shutil.rmtree(theirs, ignore_errors=True)


_FAKE_DAEMON = r"""
import os, socket, sys
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o666)
srv.listen(8)
print("ready", flush=True)
body = b'{"daemon": {"pid": 1, "state": "running"}, "symbols": []}'
while True:
    conn, _ = srv.accept()
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n" + body)
    except OSError:
        pass  # a client that hung up (as ours does, once it sees our uid)
    conn.close()
"""


def test_a_held_socket_dir_lock_times_out_with_a_clear_error(
    market: FakeMarket, tmp_path: Path
) -> None:
    daemon = _harness(market, tmp_path)
    run = daemon.socket_path.parent
    run.mkdir(mode=0o700)
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as an unprivileged user could on a shared directory
    try:
        started = time.monotonic()
        result = daemon.cli("start", "--foreground", timeout_s=DIRECTORY_LOCK_TIMEOUT_S + 60)
        took_s = time.monotonic() - started
    finally:
        os.close(fd)
    assert result.returncode != 0
    line = one_clean_line(result.stderr)
    assert "stayed locked" in line and str(run) in line, line
    assert took_s < DIRECTORY_LOCK_TIMEOUT_S + 30
