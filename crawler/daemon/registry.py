"""Which daemons are running, for a CLI that was not told where to look.

A daemon records itself (socket, data dir, pid) in a file of its own under the user's state
directory, `$XDG_STATE_HOME/crawler/daemons/` (else `~/.local/state/crawler/daemons/`, 0700),
and removes the file when it stops. `crawler status` run from another directory than the one
the daemon was started in reads these records to find it (`crawler.cli.locate`).

    path = register(socket_path, data_dir, pid)   # None when the state dir is not writable
    ...
    unregister(path)
    for record in running_daemons():              # records whose socket answers now
        print(record.socket, record.data_dir)

Standard library only (and `crawler.daemon.process`, which is too): `crawler status` reads this
on its quick path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from crawler.daemon.process import pid_alive

__all__ = [
    "SYSTEM_SOCKET",
    "DaemonRecord",
    "register",
    "registry_dir",
    "running_daemons",
    "socket_answers",
    "unregister",
]

#: Where the systemd unit's daemon listens (RuntimeDirectory=crawler).
SYSTEM_SOCKET = Path("/run/crawler/crawler.sock")


@dataclass(frozen=True)
class DaemonRecord:
    """One running daemon as it recorded itself."""

    socket: Path
    data_dir: Path | None
    pid: int


def registry_dir() -> Path:
    """`$XDG_STATE_HOME/crawler/daemons`, else `~/.local/state/crawler/daemons`."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "crawler" / "daemons"


def _record_path(socket_path: Path) -> Path:
    digest = hashlib.sha256(os.fsencode(os.path.abspath(socket_path))).hexdigest()[:16]
    return registry_dir() / f"{digest}.json"


def register(socket_path: Path, data_dir: Path, pid: int) -> Path | None:
    """Record a daemon; the record's path, or None when it cannot be written (a service with
    a read-only home: it is found at its configured socket, or at SYSTEM_SOCKET, instead)."""
    try:
        directory = registry_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = _record_path(socket_path)
        temporary = path.with_suffix(f".{pid}.tmp")
        body = {"socket": str(socket_path), "data_dir": str(data_dir), "pid": pid}
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(body, handle)
        os.replace(temporary, path)
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        return None
    return path


def unregister(path: Path | None) -> None:
    """Remove a record written by `register` (nothing if it is gone or was never written)."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def socket_answers(path: Path, timeout_s: float = 1.0) -> bool:
    """Whether something accepts connections on the Unix socket at `path` (never raises)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout_s)
    try:
        probe.connect(os.fspath(path))
    except (TimeoutError, BlockingIOError):
        return True  # a full backlog: still a listener
    except OSError:
        return False
    finally:
        probe.close()
    return True


def running_daemons() -> list[DaemonRecord]:
    """The recorded daemons whose socket answers now; records of dead ones are removed."""
    try:
        entries = sorted(registry_dir().glob("*.json"))
    except (OSError, RuntimeError):
        return []
    found: list[DaemonRecord] = []
    for entry in entries:
        try:
            body = json.loads(entry.read_text())
            record = DaemonRecord(
                socket=Path(body["socket"]),
                data_dir=Path(body["data_dir"]) if body.get("data_dir") else None,
                pid=int(body.get("pid") or 0),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if socket_answers(record.socket):
            found.append(record)
        elif record.pid and not pid_alive(record.pid):
            with contextlib.suppress(OSError):
                entry.unlink()
    return found
