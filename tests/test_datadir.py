"""ensure_data_dir: 0700, a real write probe, and one-line StorageErrors.

The tests run as root, and root ignores permission bits. So the unwritable cases use what
stops root too: a path under a regular file (ENOTDIR), a path under /proc; and, in a child
process, `setpriv` dropping CAP_DAC_OVERRIDE (EACCES), a read-only bind mount (EROFS) and a
full 16 KiB tmpfs (ENOSPC), both inside `unshare -m` so nothing leaks to the host. Those skip
where the tools or privileges are missing.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import diskcache
import pytest

from crawler.store.datadir import ensure_data_dir, open_store, storage_errors
from crawler.utils.exceptions import StorageError

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "store_worker.py"
NOBODY_UID = 65534


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creates_parents_with_mode_0700(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "data"
    assert ensure_data_dir(target) == target
    assert target.is_dir()
    assert mode_of(target) == 0o700
    assert list(target.iterdir()) == []  # the probe file is gone


def test_relative_path_comes_back_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ensure_data_dir(Path("rel")) == tmp_path / "rel"


def test_existing_dir_we_own_is_used_as_it_is(tmp_path: Path) -> None:
    """Issue 23 item 3: nothing is chmod-ed but what was just created (through a link, an
    existing dir may be anything: /var/lib, someone's 1777 dir)."""
    target = tmp_path / "loose"
    target.mkdir()
    target.chmod(0o755)
    ensure_data_dir(target)
    assert mode_of(target) == 0o755


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
def test_existing_dir_writable_by_others_is_refused_and_left_alone(
    tmp_path: Path, mode: int
) -> None:
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(mode)
    if mode == 0o770:
        os.chown(target, os.geteuid(), NOBODY_UID)  # a group that is not ours
    with pytest.raises(StorageError, match=f"is writable by other users \\(mode {mode:o}\\)"):
        ensure_data_dir(target)
    assert mode_of(target) == mode
    assert list(target.iterdir()) == []  # no probe written either


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_existing_dir_of_another_user_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Issue 13 item 7: its owner could plant symlinks for our pidfile, log and stores."""
    target = tmp_path / "theirs"
    target.mkdir(mode=0o755)
    os.chown(target, NOBODY_UID, NOBODY_UID)
    with pytest.raises(StorageError, match=f"belongs to uid {NOBODY_UID}"):
        ensure_data_dir(target)  # root could write there: refused all the same
    assert mode_of(target) == 0o755


def test_path_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError) as info:
        ensure_data_dir(blocker / "data")
    message = str(info.value)
    assert str(blocker / "data") in message
    assert "Not a directory" in message
    assert "set DATA_DIR" in message
    assert "\n" not in message
    assert isinstance(info.value.__cause__, OSError)


def test_path_that_is_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="not a directory"):
        ensure_data_dir(blocker)


def test_path_under_proc(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"data dir /proc/crawler-no-such/data .*DATA_DIR"):
        ensure_data_dir(Path("/proc/crawler-no-such/data"))


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (diskcache.Timeout(), "locked by another process"),
        (sqlite3.DatabaseError("file is not a database"), "file is not a database"),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "is full"),
        (OSError(errno.EROFS, os.strerror(errno.EROFS)), "Read-only file system"),
    ],
)
def test_storage_errors_translates_at_the_boundary(raised: Exception, expected: str) -> None:
    with (
        pytest.raises(StorageError, match=expected) as info,
        storage_errors("test store", Path("/x")),
    ):
        raise raised
    assert info.value.__cause__ is raised
    assert "/x" in str(info.value)


# -- what stops root too, in a child process ------------------------------------------------


def run_worker(prefix: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*prefix, sys.executable, str(WORKER), "datadir", str(data_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )


def in_mount_namespace(setup: str) -> list[str]:
    # `exec "$0" "$@"` replaces the shell with the worker once the mounts are in place.
    return ["unshare", "-m", "sh", "-c", f'{setup} && exec "$0" "$@"']


@pytest.fixture
def mount_namespace(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe_dir = tmp_path / "probe-mount"
    probe_dir.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {probe_dir}"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("no permission for a private mount namespace")


def test_read_only_file_system(tmp_path: Path, mount_namespace: None) -> None:
    target = tmp_path / "ro"
    target.mkdir(mode=0o700)
    setup = f"mount --bind {target} {target} && mount -o remount,ro,bind {target}"
    result = run_worker(in_mount_namespace(setup), target)
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == (
        f"StorageError: data dir {target} is not writable (Read-only file system); "
        "set DATA_DIR to a writable directory"
    )


def test_full_disk(tmp_path: Path, mount_namespace: None) -> None:
    target = tmp_path / "full"
    target.mkdir(mode=0o700)
    setup = (
        f"mount -t tmpfs -o size=16k,mode=0700 tmpfs {target} && "
        f"{{ dd if=/dev/zero of={target}/filler bs=4k count=64 2>/dev/null; true; }}"
    )
    result = run_worker(in_mount_namespace(setup), target)
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == (
        f"StorageError: data dir {target} is full (No space left on device); "
        "free some space or set DATA_DIR elsewhere"
    )


def test_workers_succeed_without_the_fault(tmp_path: Path, mount_namespace: None) -> None:
    """The control for the two above: same worker, same namespace, a plain tmpfs."""
    target = tmp_path / "fine"
    target.mkdir(mode=0o700)
    setup = f"mount -t tmpfs -o size=16k,mode=0700 tmpfs {target}"
    result = run_worker(in_mount_namespace(setup), target)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {target}"


def without_dac_override() -> list[str]:
    if os.geteuid() != 0:
        return []  # permission bits already apply to us
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


@pytest.mark.parametrize("leaf", ["", "data"], ids=["existing-dir", "new-dir-inside"])
def test_permission_denied(tmp_path: Path, leaf: str) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    if os.geteuid() == 0 and not leaf:
        os.chown(locked, NOBODY_UID, NOBODY_UID)  # not ours: so not chmod-ed, and not writable
    else:
        # Ours but read-only (a dir of another user's on the way is refused before any write).
        locked.chmod(0o555)
    target = locked / leaf if leaf else locked
    prefix = without_dac_override()
    result = run_worker(prefix, target)
    assert result.returncode == 1, result.stderr
    if os.geteuid() == 0 and not leaf:  # someone else's directory: refused before any write
        assert result.stdout.strip() == (
            f"StorageError: data dir {target} belongs to uid {NOBODY_UID}, not to this "
            f"process's user (uid 0); set DATA_DIR to a directory you own"
        )
        return
    assert result.stdout.strip() == (
        f"StorageError: data dir {target} is not writable (Permission denied); "
        "set DATA_DIR to a writable directory"
    )


def _open_fds_to(path: Path) -> int:
    """How many of this process's file descriptors point at `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:  # closed between listdir and readlink
            continue
    return count


def test_each_threads_store_connection_has_a_small_cache_and_no_mmap(tmp_path: Path) -> None:
    """diskcache opens one SQLite connection per thread, and each used to get an 8,192-page
    cache and a 64 MiB mmap: the daemon's RSS crept up with every worker and control thread."""
    store = open_store(tmp_path / "store", "test store")
    seen: dict[str, int] = {}

    def probe() -> None:
        connection = store._con  # this thread's own connection
        seen["cache_size"] = connection.execute("PRAGMA cache_size").fetchone()[0]
        seen["mmap_size"] = connection.execute("PRAGMA mmap_size").fetchone()[0]

    try:
        worker = threading.Thread(target=probe)
        worker.start()
        worker.join()
        assert seen == {"cache_size": 256, "mmap_size": 0}
    finally:
        store.close()


def test_short_lived_threads_leave_no_store_connections_open(tmp_path: Path) -> None:
    """The daemon serves each control request on a thread of its own, and every one of them
    touches the watchlist or the ledger: their connections must go when their thread does."""
    store = open_store(tmp_path / "store", "test store")
    database = tmp_path / "store" / "cache.db"
    try:
        store.set("key", {"value": 1})
        for _ in range(300):
            worker = threading.Thread(target=store.get, args=("key",))
            worker.start()
            worker.join()
        gc.collect()
        # A leak leaves one descriptor per thread. Closed ones are not all gone at once: while
        # another connection of this process holds a lock on the file, SQLite parks a closed
        # connection's descriptor for reuse (about 32 here) instead of closing it.
        assert _open_fds_to(database) < 100
    finally:
        store.close()


def test_a_store_connection_closes_when_its_thread_ends_without_a_garbage_collection(
    tmp_path: Path,
) -> None:
    """A sqlite3 connection sits in a reference cycle, so an ended thread's connection used to
    stay open until a full collection: a daemon answering `/status` on a thread per request
    grew by two descriptors and a page cache per call. Now it closes as its thread ends."""
    store = open_store(tmp_path / "store", "test store")
    database = tmp_path / "store" / "cache.db"
    gc.disable()
    try:
        store.set("key", {"value": 1})
        before = _open_fds_to(database)
        for _ in range(50):
            worker = threading.Thread(target=store.get, args=("key",))
            worker.start()
            worker.join()
        # Without the closer: one more descriptor per ended thread (50).
        assert _open_fds_to(database) <= before + 2
        assert store.get("key") == {"value": 1}  # this thread's connection is untouched
    finally:
        gc.enable()
        store.close()


def test_every_directory_a_real_fetch_makes_is_0700(tmp_path: Path) -> None:
    """An offline `crawler fetch` through the real CLI (the fake market over HTTP, both sources)
    under umask 022: every directory it makes in the data dir is 0700, the history's and
    yfinance's caches too (they were 0755)."""
    from fakemarket import FakeMarket
    from tests.faults.daemon_harness import clean_env

    data = tmp_path / "data"
    with FakeMarket() as market:
        env = clean_env(
            tmp_path,
            **market.environment(),
            DATA_DIR=str(data),
            CRAWLER_SOCKET=str(tmp_path / "run" / "crawler.sock"),
            SOURCES_ORDER="yfinance,bright_data",
            STREAM_ENABLED="false",
        )
        done = subprocess.run(
            [sys.executable, "-m", "crawler", "fetch", "AAPL:US"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, umask=0o022,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = {p.relative_to(data).as_posix(): mode_of(p) for p in data.rglob("*") if p.is_dir()}
    assert {"history", "yfinance"} <= set(made), made
    assert {name: mode for name, mode in made.items() if mode != 0o700} == {}


@pytest.mark.parametrize("disposable", [False, True], ids=["kept", "disposable"])
def test_processes_creating_one_new_store_at_once_all_open_it(
    tmp_path: Path, disposable: bool
) -> None:
    """SQLite creates a database file empty and writes its header a moment later: a second
    opener in that moment once took the new file for a truncated one (a kept store refused to
    open, a disposable one was moved aside under its creator). Seen with two processes adding
    to a new watchlist at once."""
    opener = (
        "import sys; from pathlib import Path; from crawler.store.datadir import open_store; "
        "sys.stdin.readline(); "  # imports done: every opener waits for the same go
        f"open_store(Path(sys.argv[1]), 'test store', disposable={disposable}).close()"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_index in range(6):
        directory = tmp_path / f"store-{round_index}"
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", opener, str(directory)],
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(6)
        ]
        for process in openers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in openers:
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
        assert not list(tmp_path.glob(f"store-{round_index}.corrupt-*"))
