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


# -- issue 23 item 3: links and directories another user can change ------------------------------


def _target_1777(tmp_path: Path) -> Path:
    """A shared directory of root's (mode 1777), as a link planted by another user points at."""
    target = tmp_path / "shared-1777"
    target.mkdir()
    os.chmod(target, 0o1777)
    return target


def _plant_link(link: Path, target: Path) -> None:
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)


@pytest.mark.parametrize("planted", ["parent", "link"], ids=["nobody-parent", "nobody-link"])
@pytest.mark.parametrize(
    "command",
    [("start", "--foreground"), ("start",), ("fetch", "AAPL:US")],
    ids=["foreground", "detached", "offline-fetch"],
)
def test_a_data_dir_another_user_can_redirect_is_refused_and_its_target_untouched(
    market: FakeMarket, tmp_path: Path, planted: str, command: tuple[str, ...]
) -> None:
    """`data -> /some/1777-dir` in a `nobody`-owned parent (or a link of nobody's own): root
    chmod-ed the target 0700 and filled it with its stores. Now one line, exit 2, and the
    target keeps its mode and stays empty."""
    target = _target_1777(tmp_path)
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    if planted == "parent":
        os.chown(parent, NOBODY, NOBODY)
    daemon = _harness(market, tmp_path)
    daemon.data_dir = parent / "data"
    daemon.env["DATA_DIR"] = str(daemon.data_dir)
    _plant_link(daemon.data_dir, target)
    result = daemon.cli(*command)
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_clean_line(result.stderr)
    culprit = parent if planted == "parent" else daemon.data_dir
    assert f"data dir {daemon.data_dir}" in line and f"uid {NOBODY}" in line, line
    assert str(culprit) in line, line
    assert target.stat().st_mode & 0o7777 == 0o1777
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("store", ["ledger", "history"])
@pytest.mark.parametrize("data_mode", [0o1777, 0o700], ids=["world-writable", "private"])
def test_a_store_link_planted_in_the_data_dir_is_refused_and_its_target_untouched(
    market: FakeMarket, tmp_path: Path, store: str, data_mode: int
) -> None:
    """`ledger -> …` / `history -> …` planted by `nobody` inside a world-writable data dir
    (refused as a whole: root no longer chmod-s it 0700 and goes on), or inside a private one
    (the link itself is refused)."""
    target = _target_1777(tmp_path)
    daemon = _harness(market, tmp_path)
    daemon.data_dir.mkdir()
    os.chmod(daemon.data_dir, data_mode)
    _plant_link(daemon.data_dir / store, target)
    for command in (("start", "--foreground"), ("fetch", "AAPL:US")):
        result = daemon.cli(*command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        line = one_clean_line(result.stderr)
        if data_mode == 0o1777:
            assert "is writable by other users (mode 1777)" in line, line
        else:
            assert f"{daemon.data_dir / store} is a symbolic link owned by uid {NOBODY}" in line
    assert target.stat().st_mode & 0o7777 == 0o1777
    assert list(target.iterdir()) == []
    assert daemon.data_dir.stat().st_mode & 0o7777 == data_mode


@pytest.mark.parametrize("command", [("start", "--foreground"), ("start",)])
@pytest.mark.parametrize("planted", ["parent", "link"], ids=["nobody-parent", "nobody-link"])
def test_a_socket_dir_another_user_can_redirect_is_refused_and_not_chmod_ed(
    market: FakeMarket, tmp_path: Path, planted: str, command: tuple[str, ...]
) -> None:
    """A socket-dir link to a dir of root's (0755) was chmod-ed 0700 before the start failed."""
    target = tmp_path / "root-0755"
    target.mkdir()
    os.chmod(target, 0o755)
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    if planted == "parent":
        os.chown(parent, NOBODY, NOBODY)
    _plant_link(parent / "run", target)
    daemon = _harness(market, tmp_path, parent / "run" / "crawler.sock")
    result = daemon.cli(*command)
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_clean_line(result.stderr)
    assert "control socket directory" in line and f"uid {NOBODY}" in line, line
    assert target.stat().st_mode & 0o7777 == 0o755
    assert list(target.iterdir()) == []


# -- issue 23 item 4: the detached daemon's log ----------------------------------------------------


@pytest.mark.parametrize("command", [("start",), ("logs",), ("logs", "-n", "0")])
def test_a_fifo_at_the_log_hangs_nothing(
    market: FakeMarket, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A FIFO at `<data_dir>/crawler.log` hung `crawler start` (opening it to append) and
    `crawler logs` (opening it to read): both now say what is wrong, at once."""
    daemon = _harness(market, tmp_path)
    daemon.data_dir.mkdir(mode=0o700)
    os.mkfifo(daemon.data_dir / "crawler.log", 0o600)
    result = daemon.cli(*command, timeout_s=30)  # a hang is a TimeoutExpired
    assert result.returncode == 1, (result.stdout, result.stderr)
    line = one_clean_line(result.stderr)
    assert "crawler.log" in line and ("FIFO" in line or "not a regular file" in line), line
    assert not daemon.socket_path.exists()


def test_a_log_file_of_another_user_is_refused_and_left_alone(
    market: FakeMarket, tmp_path: Path, victim: Path
) -> None:
    """A regular file of nobody's at `<data_dir>/crawler.log` (a hard link to their file, say):
    root appended its log to it. Now refused, unchanged; `crawler logs` refuses to read it."""
    daemon = _harness(market, tmp_path)
    daemon.data_dir.mkdir(mode=0o700)
    log = daemon.data_dir / "crawler.log"
    log.write_text(VICTIM_TEXT)
    os.chown(log, NOBODY, NOBODY)
    for command in (("start",), ("logs",)):
        result = daemon.cli(*command, timeout_s=30)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        line = one_clean_line(result.stderr)
        assert "crawler.log" in line and f"belongs to uid {NOBODY}" in line, line
    assert log.read_text() == VICTIM_TEXT
    assert not daemon.socket_path.exists()
