"""The control socket's file and who is on the other end of it.

Three layers keep other users out: the socket's directory is ours, reached through nothing another
user can change, and 0700 when we create it (`secure_directory`), the
socket itself is 0600 (bound under `socket_umask`), and each connection's peer uid
(`peer_credentials`, SO_PEERCRED) is checked by the server. `remove_stale_socket` replaces a
socket left by a crash, but never one a live daemon answers on (`socket_is_live`); run it under
`directory_lock` so two daemons starting at once cannot unlink each other's fresh socket.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from crawler.logging import get_logger
from crawler.utils.exceptions import ConfigError, DaemonAlreadyRunningError, DaemonError
from crawler.utils.locks import flock_within
from crawler.utils.private_dir import make_private_dir, stat_dir
from crawler.utils.trusted_path import UntrustedPathError, trusted_path, writable_by_others

__all__ = [
    "DIRECTORY_LOCK_TIMEOUT_S",
    "PeerCredentials",
    "directory_lock",
    "peer_credentials",
    "remove_stale_socket",
    "secure_directory",
    "socket_is_live",
    "socket_umask",
]

logger = get_logger("crawler.control")

#: How long a start waits for the socket directory's lock (another daemon's start is quick).
DIRECTORY_LOCK_TIMEOUT_S = 5.0

# os.umask is process-wide: hold this lock while it is changed so that two servers starting in
# the same process do not restore each other's value. Threads that create files without taking
# it (other libraries) may still, for the microseconds of a bind, get files created 0600 and
# directories 0600 instead of their usual modes; start() runs once at daemon start-up, before
# the worker threads, so in practice nothing else creates files then.
_UMASK_LOCK = threading.Lock()
_SOCKET_UMASK = 0o177  # the socket comes out 0600: the owner may connect, nobody else


class PeerCredentials(NamedTuple):
    """Who is on the other end of a Unix socket connection (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


def peer_credentials(conn: socket.socket) -> PeerCredentials:
    """The peer's pid, effective uid and gid, as the kernel reports them (OSError if not)."""
    size = struct.calcsize("3i")
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid, uid, gid)


def socket_is_live(path: Path, timeout_s: float = 1.0) -> bool:
    """Whether something accepts connections on the Unix socket at `path`.

    False when the file is missing or nobody listens (ECONNREFUSED: a stale socket left by a
    crash). Raises DaemonError when the answer is unknowable (no permission, not a socket).
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout_s)
    try:
        probe.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except (TimeoutError, BlockingIOError):
        return True  # a listener with a full backlog is still a listener
    except OSError as exc:
        raise DaemonError(f"cannot probe control socket {path}: {exc.strerror or exc}") from exc
    finally:
        probe.close()
    return True


def secure_directory(directory: Path, socket_name: str) -> None:
    """Create `directory` 0700, or check that an existing one is ours and safe to bind in.

    A directory another user owns, could redirect, or may write is a ConfigError (exit 2).

    No other user may be able to redirect it (`trusted_path`: no link or directory of theirs
    on the way). Only a directory created here is chmod-ed: an existing one, reached perhaps
    through a link, is never changed. One writable by others (like /tmp) is refused; one
    readable by others that holds other files (like /run) is used with a warning: the
    socket's own mode 0600 still keeps other users out.
    """
    _check_trusted(directory)
    try:
        created = make_private_dir(directory)
    except OSError as exc:
        raise DaemonError(f"cannot create control socket directory {directory}: {exc}") from exc
    try:
        info = stat_dir(_check_trusted(directory), chmod_to=0o700 if created else None)
    except OSError as exc:
        raise DaemonError(
            f"{directory} is not a directory; cannot put the control socket in it"
            if exc.errno in (errno.ENOTDIR, errno.ELOOP)
            else f"cannot open control socket directory {directory}: {exc.strerror or exc}"
        ) from exc
    if info.st_uid != os.geteuid():
        # Its owner could swap our socket for theirs, or plant a symlink where it goes.
        raise ConfigError(
            f"control socket directory {directory} belongs to uid {info.st_uid}, not to "
            f"this daemon's user (uid {os.geteuid()}); set CRAWLER_SOCKET in a directory "
            "you own"
        )
    if created:
        return
    if info.st_mode & 0o077 == 0:
        return
    if writable_by_others(info):
        # Shared and writable by others (like /tmp): another user could take the socket's
        # name first, or hold the directory's lock. Refused rather than left as is.
        raise ConfigError(
            f"control socket directory {directory} is writable by others (mode "
            f"{stat.S_IMODE(info.st_mode):o}); set CRAWLER_SOCKET in a directory of its own, "
            "e.g. $XDG_RUNTIME_DIR/crawler or RuntimeDirectory=crawler"
        )
    with os.scandir(directory) as entries:
        others = any(entry.name != socket_name for entry in entries)
    if others:
        logger.warning(
            "control socket directory is readable by others; leaving it as is, the socket "
            "itself is 0600. Prefer a directory of its own (RuntimeDirectory=crawler).",
            directory=str(directory),
            mode=oct(stat.S_IMODE(info.st_mode)),
        )


def _check_trusted(directory: Path) -> Path:
    """`trusted_path(directory)`, its refusal as a one-line ConfigError (exit 2: fixed by
    CRAWLER_SOCKET)."""
    try:
        return trusted_path(directory)
    except UntrustedPathError as exc:
        raise ConfigError(
            f"control socket directory {directory} is refused: {exc.culprit} {exc.reason}, "
            "who could redirect it; set CRAWLER_SOCKET in a directory you own"
        ) from None
    except OSError as exc:
        raise DaemonError(
            f"cannot use control socket directory {directory}: {exc.strerror or exc}"
        ) from exc


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive flock on `directory` (released when the block ends)."""
    # Two daemons starting at once would both see a stale socket and the second would unlink
    # the first one's fresh socket; an flock on the directory makes check-unlink-bind atomic.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        # Not a blocking flock: anyone who can open the directory can hold its lock forever.
        if not flock_within(fd, DIRECTORY_LOCK_TIMEOUT_S, poll_s=0.05):
            raise DaemonError(
                f"control socket directory {directory} stayed locked by another "
                f"process for {DIRECTORY_LOCK_TIMEOUT_S:g} s; if no other crawler is "
                "starting, another user holds it: use a directory of your own for "
                "CRAWLER_SOCKET"
            )
        yield
    finally:
        os.close(fd)


def remove_stale_socket(path: Path) -> None:
    """Unlink the socket at `path` if nobody answers on it (a crash left it behind).

    Raises DaemonAlreadyRunningError if a daemon answers, DaemonError if `path` is no socket.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise DaemonError(
            f"{path} exists and is not a socket; remove it or set another control socket path"
        )
    if socket_is_live(path):
        raise DaemonAlreadyRunningError(pid=0, message=f"another crawler daemon answers on {path}")
    logger.info(
        "removing a stale control socket left by a daemon that did not stop", socket=str(path)
    )
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def socket_umask() -> Iterator[None]:
    """Bind under this, so the socket comes out 0600 whatever the process's umask is."""
    with _UMASK_LOCK:
        previous_umask = os.umask(_SOCKET_UMASK)
        try:
            yield
        finally:
            os.umask(previous_umask)
