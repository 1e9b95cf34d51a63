"""The hybrid's worker threads: one bounded pool, started on first use, refused once closed,
and the stop flag (`abort`) that running batches watch."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from crawler.utils.exceptions import APIError

__all__ = ["FetchPool"]


class FetchPool:
    """`get()` the executor (APIError once closed); `aborted` is set by `abort()`."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        #: Set when the daemon is stopping: batches stop waiting and cancel the rest.
        self.aborted = threading.Event()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.closed = False

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self.closed:
                raise APIError("the hybrid data source was cleaned up; build a new one")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix="crawler-fetch"
                )
            return self._executor

    def abort(self) -> None:
        """Irreversible: running batches return now, what has not started is cancelled."""
        self.aborted.set()

    def close(self) -> None:
        """Refuse new work, cancel what has not started, wait for what runs."""
        self.closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
