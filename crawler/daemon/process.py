"""The daemon as an operating-system process: its pidfile, detaching, waiting for it.

    with PidFile(data_dir / "crawler.pid") as pidfile:    # DaemonAlreadyRunningError if held
        ...run...
    pid = spawn_detached(["start", "--foreground"], log_path)   # `crawler start`
    wait_until_serving(socket_path, child, deadline_s=15)

The pidfile is held with an exclusive `flock` for the daemon's whole life. The kernel drops the
lock when the process dies, however it dies, so a pidfile left by `kill -9` is recognised as
stale and taken over, while a daemon that is still starting (no socket yet) is not mistaken
for a crash. Imports only the standard library: `crawler start` and `stop` must start fast.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from crawler.utils.exceptions import DaemonAlreadyRunningError, DaemonError

__all__ = [
    "PIDFILE_NAME",
    "PidFile",
    "last_log_line",
    "open_log",
    "pid_alive",
    "read_pid",
    "reopen_log_file",
    "spawn_detached",
    "wait_for_exit",
]

#: The pidfile's name inside the data dir.
PIDFILE_NAME = "crawler.pid"
#: Set for a detached daemon: the log file its stdout and stderr go to (reopened on SIGHUP).
LOG_FILE_ENV = "CRAWLER_LOG_FILE"
_POLL_S = 0.05


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (zombies included; EPERM means it exists)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int | None:
    """The pid written in `path`, or None if absent, unreadable or not a regular file."""
    try:
        # O_NONBLOCK: a FIFO planted at the pidfile's name must not hang us.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, 64).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def open_log(path: Path, *, append: bool) -> int:
    """A descriptor on the log at `path`, for appending (created 0600) or for reading.

    Refused with an OSError whose strerror says why: a symbolic link (O_NOFOLLOW), anything but
    a regular file (O_NONBLOCK: a FIFO there neither hangs the open nor a read), or a file owned
    by another user (appending: not ours; reading: neither ours nor its directory's owner, who
    is the daemon's user). The descriptor is blocking again when returned.
    """
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    flags |= os.O_WRONLY | os.O_CREAT | os.O_APPEND if append else os.O_RDONLY
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, "is a symbolic link", str(path)) from exc
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise OSError(exc.errno, "is a FIFO, not a regular file", str(path)) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "is not a regular file", str(path))
        owners = {os.geteuid()}
        if not append:
            with contextlib.suppress(OSError):
                owners.add(os.stat(path.parent).st_uid)
        if info.st_uid not in owners:
            raise OSError(errno.EPERM, f"belongs to uid {info.st_uid}", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class PidFile:
    """An flock-held pidfile. `acquire()` raises DaemonAlreadyRunningError(pid) if held."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the pidfile and write our pid into it."""
        try:
            # O_NOFOLLOW: a symlink planted here (a shared data dir) must not make us truncate
            # and write whatever file it points at. O_NONBLOCK: nor a FIFO hang us.
            fd = os.open(
                self.path,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                0o600,
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DaemonError(
                    f"pidfile {self.path} is a symbolic link; refusing to follow it (someone "
                    "else may have planted it): remove it and check who can write the data dir"
                ) from exc
            raise DaemonError(f"cannot open pidfile {self.path}: {exc.strerror or exc}") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(fd)
            regular = stat.S_ISREG(info.st_mode)
            what = f"belongs to uid {info.st_uid}" if regular else "is not a regular file"
            raise DaemonError(
                f"pidfile {self.path} {what}; refusing to write it: remove it and check who "
                "can write the data dir"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                pid = read_pid(self.path) or 0
                raise DaemonAlreadyRunningError(pid) from None
            raise DaemonError(f"cannot lock pidfile {self.path}: {exc.strerror or exc}") from exc
        # Truncate only once we hold the lock: the previous holder is gone.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def lost(self) -> str | None:
        """Why the pidfile we hold is no longer at its path (removed, or replaced by another
        file), or None while it is. A pidfile that is gone no longer keeps a second daemon
        out, so a running daemon checks this at every heartbeat."""
        fd = self._fd
        if fd is None:
            return None
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return f"pidfile {self.path} was removed"
        except OSError as exc:
            return f"pidfile {self.path} cannot be read ({exc.strerror or exc})"
        held = os.fstat(fd)
        if (here.st_dev, here.st_ino) != (held.st_dev, held.st_ino):
            return f"pidfile {self.path} was replaced by another file"
        return None

    def release(self) -> None:
        """Remove the pidfile and drop the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # Unlink while still holding the lock, so a new daemon never sees our half-removed file
        # (and only our own file: one that replaced it belongs to someone else).
        with contextlib.suppress(OSError):
            here, held = os.stat(self.path), os.fstat(fd)
            if (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino):
                self.path.unlink()
        os.close(fd)

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def spawn_detached(args: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `python -m crawler *args` in its own session, output appended to `log_path`
    (whose directory the caller has checked: `ensure_data_dir`)."""
    try:
        # A symlink, FIFO or someone else's file planted at the log's name is refused.
        fd = open_log(log_path, append=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DaemonError(
            f"cannot open the daemon log {log_path} ({reason}); remove it and check who can "
            "write the data dir"
        ) from exc
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "crawler", *args],
            env={**os.environ, LOG_FILE_ENV: str(log_path.absolute())},
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,  # not killed by the terminal's SIGHUP / Ctrl-C
            # The child keeps our working directory: a relative CRAWLER_CONFIG or ./config.toml
            # must mean the same file to it as to us.
            close_fds=True,
        )
    finally:
        os.close(fd)


def reopen_log_file() -> Path | None:
    """Point stdout and stderr at `$CRAWLER_LOG_FILE` again (logrotate moved or truncated
    it); the path, or None when this process has no log file of its own (journald, a
    terminal)."""
    path_text = os.environ.get(LOG_FILE_ENV)
    if not path_text:
        return None
    path = Path(path_text)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    fd = open_log(path, append=True)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    return path


def last_log_line(log_path: Path, max_bytes: int = 8192) -> str:
    """The last non-empty line of `log_path` (its JSON `event`, if it is a JSON log line)."""
    try:
        with os.fdopen(open_log(log_path, append=False), "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    if line.startswith("{"):
        import json

        with contextlib.suppress(ValueError):
            record = json.loads(line)
            event = record.get("event") if isinstance(record, dict) else None
            if isinstance(event, str):
                return event
    return line


def wait_for_exit(pid: int, deadline_s: float) -> bool:
    """Poll until `pid` is gone (True) or `deadline_s` passes (False)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        # Our own child would stay a zombie: reap it if it is one.
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        time.sleep(_POLL_S)
    return not pid_alive(pid)
