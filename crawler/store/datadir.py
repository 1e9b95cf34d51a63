"""The data directory, and how every store under it opens its diskcache safely.

Layout (each store owns one subdirectory; pass that subdirectory to the store):

    <data_dir>/ledger      BudgetLedger   (LEDGER_SUBDIR)
    <data_dir>/cache       QuoteCache     (CACHE_SUBDIR)
    <data_dir>/watchlist   Watchlist      (WATCHLIST_SUBDIR)

Every store opens diskcache through `open_store()`, which uses `JSONOnlyDisk`: diskcache's own
`JSONDisk` still unpickles any row whose mode column says "pickle" (CVE-2025-69872), so a file
planted in the data dir could run code. `JSONOnlyDisk` refuses such rows instead.

    >>> import tempfile
    >>> ensure_data_dir(Path(tempfile.mkdtemp()) / "a" / "b").stat().st_mode & 0o777 == 0o700
    True
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sqlite3
import stat
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW, UNKNOWN

from crawler.store.thread_cache import ThreadCache
from crawler.utils.exceptions import DataDirError, StorageError
from crawler.utils.locks import flock_within
from crawler.utils.private_dir import make_private_dir, stat_dir
from crawler.utils.trusted_path import UntrustedPathError, trusted_path, writable_by_others

__all__ = [
    "CACHE_SUBDIR",
    "LEDGER_SUBDIR",
    "STORE_DB_NAME",
    "STORE_ERRORS",
    "UNREADABLE_KEY",
    "WATCHLIST_SUBDIR",
    "CorruptRecordError",
    "JSONOnlyDisk",
    "ensure_data_dir",
    "open_store",
    "refuse_empty_file",
    "storage_error",
    "storage_errors",
    "store_open_lock",
]

#: SQLite busy timeout: how long a writer waits for another process's transaction.
_SQLITE_TIMEOUT_S: Final = 30.0
_DIR_MODE: Final = 0o700
#: The stores' directories inside the data dir (the quote times': QUOTE_TIMES_SUBDIR).
LEDGER_SUBDIR: Final = "ledger"
CACHE_SUBDIR: Final = "cache"
WATCHLIST_SUBDIR: Final = "watchlist"


class CorruptRecordError(ValueError):
    """A stored value is not zlib-compressed JSON written by us (corrupt, or planted)."""


class _UnreadableKey:
    """Stands in for a key we refuse to decode, so iterating a store never stops on it."""

    def __repr__(self) -> str:
        return "UNREADABLE_KEY"


#: What `JSONOnlyDisk` yields, while iterating keys, for a key that is not our JSON.
UNREADABLE_KEY: Final = _UnreadableKey()


class JSONOnlyDisk(diskcache.JSONDisk):  # type: ignore[misc]
    """diskcache's JSONDisk minus every path that reaches `pickle.load`.

    Reading: only raw/binary rows holding zlib JSON are decoded; anything else (pickle mode,
    pickled keys, garbage) raises `CorruptRecordError` for values and yields `UNREADABLE_KEY`
    for keys. Writing is JSONDisk's: JSON only, so `put`/`store` never pickle either.
    """

    def put(self, key: Any) -> tuple[Any, bool]:
        """Encode a key for the Cache table as JSONDisk does (zlib'd JSON), remembering the
        last few thousand string keys: deflate's set-up dominates for short keys, and every
        get and set encodes its key (a paid quote encodes about twenty)."""
        if type(key) is not str:
            encoded: tuple[Any, bool] = super().put(key)
            return encoded
        return _encoded_key(key, self.compress_level)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
        """Encode a value as JSONDisk does (zlib'd JSON), with a 4 KiB deflate window: zlib's
        default set-up (a 32 KiB window, 128 KiB of hash) cost ~150 us per value, for values
        of a few hundred bytes; any zlib reader decodes either (the window is in the header)."""
        if read:
            return super().store(value, read, key=key)
        packer = zlib.compressobj(self.compress_level, zlib.DEFLATED, _WINDOW_BITS, _MEM_LEVEL)
        data = packer.compress(json.dumps(value).encode("utf-8")) + packer.flush()
        return diskcache.Disk.store(self, data, read, key=key)

    def get(self, key: Any, raw: bool) -> Any:
        """Decode a key from the Cache table; never unpickles (raw=False means pickled)."""
        if not raw:
            return UNREADABLE_KEY
        try:
            return super().get(key, raw)
        except (zlib.error, ValueError, TypeError):
            return UNREADABLE_KEY

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        """Decode a value; raises CorruptRecordError for anything but our zlib JSON."""
        if read or mode not in (MODE_RAW, MODE_BINARY):
            raise CorruptRecordError(f"refusing to decode a stored value of mode {mode}")
        try:
            return super().fetch(mode, filename, value, read)
        except (zlib.error, ValueError, TypeError) as exc:
            # ValueError covers JSONDecodeError and UnicodeDecodeError.
            raise CorruptRecordError(f"stored value is not JSON: {exc}") from exc


#: Values' deflate window (2**12 bytes) and hash memory level: see `JSONOnlyDisk.store`.
_WINDOW_BITS: Final = 12
_MEM_LEVEL: Final = 4


@functools.lru_cache(maxsize=4096)
def _encoded_key(key: str, level: int) -> tuple[Any, bool]:
    """(database key, raw) of a string key: JSONDisk's encoding at zlib level `level`."""
    data = zlib.compress(json.dumps(key).encode("utf-8"), level)
    return sqlite3.Binary(data), True


def _describe(path: Path, exc: OSError) -> str:
    """One line naming the path, the reason and the fix."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return f"data dir {path} is full ({reason}); free some space or set DATA_DIR elsewhere"
    if exc.errno == errno.ENOTDIR:
        return (
            f"data dir {path} is not a directory ({reason}); set DATA_DIR to a writable directory"
        )
    return f"data dir {path} is not writable ({reason}); set DATA_DIR to a writable directory"


def ensure_data_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700, prove it is writable, return it absolute.

    No other user may be able to redirect it (`trusted_path`: no link or directory of theirs
    on the way, no directory they may write), and it must be ours and writable by nobody else.
    Only a directory created here is chmod-ed (0700, past the umask); an existing one is never
    chmod-ed, since through a link it may be anything (a world-writable 1777 dir, /var/lib),
    and one writable by others is refused. The probe writes, fsyncs and unlinks a file, so a
    read-only file system or a full disk is found here, at start, rather than at the first
    quote. Raises DataDirError with a one-line fix.
    """
    path = path.expanduser().absolute()
    try:
        _trusted(path)
        # A non-directory in the way is named by stat_dir's ENOTDIR.
        created = make_private_dir(path, _DIR_MODE)
        info = stat_dir(_trusted(path), chmod_to=_DIR_MODE if created else None)
        if info.st_uid != os.geteuid():
            raise DataDirError(
                f"data dir {path} belongs to uid {info.st_uid}, not to this process's "
                f"user (uid {os.geteuid()}); set DATA_DIR to a directory you own"
            )
        if not created and info.st_mode & 0o022 and writable_by_others(info):
            raise DataDirError(
                f"data dir {path} is writable by other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}), who could plant links for its files; "
                f"chmod 700 {path}, or set DATA_DIR to a directory of your own"
            )
        _probe_write(path)
    except OSError as exc:
        raise DataDirError(_describe(path, exc)) from exc
    return path


def _trusted(path: Path) -> Path:
    """`trusted_path(path)`, its refusal as a DataDirError naming the component."""
    try:
        return trusted_path(path)
    except UntrustedPathError as exc:
        if exc.culprit == path and exc.reason.startswith("belongs"):
            raise DataDirError(
                f"data dir {path} belongs to uid {exc.uid}, not to this process's user "
                f"(uid {os.geteuid()}); set DATA_DIR to a directory you own"
            ) from None
        if exc.culprit == path:
            raise DataDirError(
                f"data dir {path} {exc.reason}, who could re-point it; refusing to follow "
                "it: set DATA_DIR to a directory you own"
            ) from None
        raise DataDirError(
            f"data dir {path} is refused: {exc.culprit} {exc.reason}, who could redirect "
            "it; set DATA_DIR to a directory you own"
        ) from None


def _probe_write(directory: Path) -> None:
    probe = directory / f".write-probe-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        # The unlink must not mask the write error, and must run even after it.
        with suppress(FileNotFoundError):
            probe.unlink()


@contextmanager
def storage_errors(what: str, directory: Path) -> Iterator[None]:
    """Translate diskcache / sqlite3 / OS errors raised inside into StorageError.

    `what` names the store ("budget ledger"), so the message says which one failed and where.
    """
    try:
        yield
    except STORE_ERRORS as exc:
        raise storage_error(what, directory, exc) from exc


#: What diskcache and sqlite raise that `storage_error` translates.
STORE_ERRORS = (diskcache.Timeout, sqlite3.Error, OSError)


def storage_error(what: str, directory: Path, exc: BaseException) -> StorageError:
    """The StorageError for one of STORE_ERRORS (for hot paths that skip `storage_errors`)."""
    if isinstance(exc, diskcache.Timeout):
        return StorageError(
            f"{what} at {directory} is locked by another process for over "
            f"{_SQLITE_TIMEOUT_S:g} s; retry, or stop the other crawler process"
        )
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        if "full" in text:
            return StorageError(
                f"{what} at {directory} is on a full disk ({text}); free some space"
            )
        if "malformed" in text or "not a database" in text:
            return StorageError(
                f"{what} at {directory} is corrupt ({text}); restore it from a backup, or "
                "move it aside to start a new one"
            )
        # Not corruption (too many open files, permissions, locks): moving it aside would
        # only throw its state away (for the ledger: reset the budget used).
        return StorageError(f"{what} at {directory} failed ({text}); nothing was changed")
    assert isinstance(exc, OSError)
    return StorageError(_describe(directory, exc))


#: diskcache's database file inside a store's directory.
STORE_DB_NAME: Final = "cache.db"


def refuse_empty_file(path: Path, what: str) -> None:
    """StorageError when `path` exists but is empty (0 bytes).

    SQLite takes an empty file for a new database, so a truncated ledger, watchlist or history
    would silently start from nothing (the budget used back to 0). Nothing is written to it.
    """
    try:
        size = os.lstat(path).st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise storage_error(what, path.parent, exc) from exc
    if size == 0:
        raise StorageError(
            f"{what} file {path} is empty (0 bytes); using it would silently start the {what} "
            f"from nothing. Restore {path} from a backup, or move it aside to start a new "
            f"{what} on purpose"
        )


#: How long opening a store waits for another process that is creating the same store.
_OPEN_LOCK_TIMEOUT_S: Final = 30.0


@contextmanager
def store_open_lock(directory: Path, what: str) -> Iterator[None]:
    """Held while a store's file is checked and created, across threads and processes.

    SQLite creates a database file empty and writes its header a moment later: without this
    lock, a second process opening the same new store in that moment would take the file for a
    truncated one (and refuse it, or move a disposable store aside under its creator). The lock
    file sits beside the store's directory, so it outlives a move aside.
    """
    lock_path = directory.parent / f".{directory.name}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise storage_error(what, directory, exc) from exc
    try:
        if not flock_within(fd, _OPEN_LOCK_TIMEOUT_S, poll_s=0.01):
            raise StorageError(
                f"{what} at {directory} has been held by another process opening it "
                f"for over {_OPEN_LOCK_TIMEOUT_S:.0f} s ({lock_path}); stop that "
                "process and try again"
            )
        yield
    finally:
        os.close(fd)


class RepeatingDisk(JSONOnlyDisk):
    """`JSONOnlyDisk` that encodes a value once when the same object is stored again next, on
    the same thread: the quote cache writes each entry under two keys (fresh and last-known),
    and the JSON and deflate of a quote were a fifth of a batched write. Only for values that
    are never changed once stored (a new dict per put) and small enough to live in the row."""

    def __init__(self, directory: str, **settings: Any) -> None:
        super().__init__(directory, **settings)
        self._last = threading.local()

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
        last = getattr(self._last, "stored", None)
        if last is not None and last[0] is value:
            return last[1]
        stored = super().store(value, read, key=key)
        # (size, mode, filename, value): a value written to a file of its own is not shared.
        self._last.stored = (value, stored) if stored[2] is None else None
        return stored


def open_store(
    directory: Path,
    what: str,
    *,
    disposable: bool = False,
    expiring: bool = False,
    disk: type[JSONOnlyDisk] | None = None,
) -> diskcache.Cache:
    """Ensure `directory` (0700, writable) and open a JSON-only diskcache there.

    Eviction is off: the ledger and the last-known quotes must never be culled behind our back;
    the stores prune themselves. Only an `expiring` store (one that sets keys with `expire=`)
    has diskcache look for expired keys to delete on each write. The returned Cache is safe to
    share between threads (diskcache keeps one SQLite connection per thread) and between
    processes (SQLite locking). `disk`: a `JSONOnlyDisk` subclass (`RepeatingDisk`).

    An empty database file is refused (StorageError naming it). A `disposable` store (the
    quote cache) that is empty or not a database is instead moved aside (logged) and rebuilt.
    """
    ensure_data_dir(directory)
    options = {"cull_limit": 10 if expiring else 0, "disk": disk or JSONOnlyDisk}
    with store_open_lock(directory, what):
        try:
            refuse_empty_file(directory / STORE_DB_NAME, what)
            return _open_diskcache(directory, what, **options)
        except StorageError:
            if not disposable:
                raise
            aside = _move_aside(directory, what)
            ensure_data_dir(directory)
            store = _open_diskcache(directory, what, **options)
        from crawler.logging import get_logger  # only here: datadir is on quick paths

        get_logger("crawler.store").warning(
            "store was empty or corrupt: moved aside and rebuilt",
            store=what,
            directory=str(directory),
            moved_to=str(aside),
        )
        return store


def _move_aside(directory: Path, what: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = directory.with_name(f"{directory.name}.corrupt-{stamp}-{os.getpid()}")
    try:
        directory.rename(aside)
    except OSError as exc:
        raise storage_error(what, directory, exc) from exc
    return aside


def _open_diskcache(directory: Path, what: str, **options: Any) -> diskcache.Cache:
    with storage_errors(what, directory):
        # ThreadCache: the connection of a thread that ended (one per control request) is
        # closed at once, not at the next full garbage collection.
        return ThreadCache(
            str(directory),
            timeout=_SQLITE_TIMEOUT_S,
            eviction_policy="none",
            statistics=False,
            # diskcache keeps one SQLite connection per thread; its defaults (an 8,192-page
            # cache and a 64 MiB mmap each) let a long-running daemon's RSS creep up with
            # every thread. Our stores are small and hot: a 1 MiB cache each is plenty.
            sqlite_cache_size=256,
            sqlite_mmap_size=0,
            **options,
        )
