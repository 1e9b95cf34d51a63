"""A diskcache whose per-thread SQLite connection is closed when its thread ends.

diskcache keeps one SQLite connection per thread in a `threading.local`. When a thread ends, its
local dict goes, but on Python 3.11 and later a `sqlite3.Connection` sits in a reference cycle
(with its own statement cache), so nothing closes it until a full garbage collection. The
daemon answers each control connection on a thread of its own: every `/status` left one
connection per store open (two file descriptors each, plus its page cache), and the daemon's
RSS crept up by about half a megabyte per call. `ThreadCache` hands each thread's connection to
a small closer kept in the same thread-local: the closer has no cycle, so it is freed (and
closes the connection) in the ending thread itself, at once.

    >>> import tempfile, threading
    >>> cache = ThreadCache(tempfile.mkdtemp())
    >>> worker = threading.Thread(target=lambda: cache.set("k", 1)); worker.start(); worker.join()
    >>> cache.get("k")
    1
"""

from __future__ import annotations

import contextlib
import sqlite3

import diskcache

__all__ = ["ThreadCache"]


class _ConnectionCloser:
    """Closes one thread's connection when the thread's locals are dropped (the thread ended,
    or diskcache replaced the connection)."""

    __slots__ = ("connection",)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __del__(self) -> None:
        # Runs in the ending thread (CPython clears a thread's locals in that thread), so
        # sqlite3's same-thread check passes; a connection already closed closes again as a no-op.
        with contextlib.suppress(sqlite3.Error):
            self.connection.close()


class ThreadCache(diskcache.Cache):  # type: ignore[misc]
    """`diskcache.Cache` whose thread-local SQLite connections close when their thread ends."""

    @property
    def _con(self) -> sqlite3.Connection:
        connection: sqlite3.Connection = super()._con
        closer: _ConnectionCloser | None = getattr(self._local, "closer", None)
        if closer is None or closer.connection is not connection:
            self._local.closer = _ConnectionCloser(connection)
        return connection
