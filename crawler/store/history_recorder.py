"""Quotes written to the history as they land, in batches, from one writer thread.

A collection used to write its history when it ended, so a crash (kill -9, power loss) in the
middle threw away every quote that collection had paid for. A `HistoryRecorder` takes quotes
as each fetch finishes (`add`, from any thread) and commits them in batches: as soon as
`batch_size` are waiting, or `max_delay_s` after the oldest waiting one arrived, whichever is
first. So at most `max_delay_s` worth of quotes is ever only in memory. `close()` writes what
is left and stops the thread; it returns how many rows were new.

A paid quote is different: money was spent on it, and a second is too long to hold it in
memory (a kill -9 less than a second after the first paid quotes landed once kept none of
them). `add(quote, durable=True)` returns only once the quote's commit is done (or has failed),
so the fetch worker that got it, and the collection's progress, move on only after it is on
disk. Quotes waiting beside it go into the same commit; a few hundred paid quotes a day cost
next to nothing to commit one by one. SQLite's WAL with `synchronous=NORMAL` makes a commit
survive the process being killed (not a power cut: that needs a checkpoint).

A write that fails (a full disk, a locked or corrupt file) does not stop the collection: the
quotes of that batch are counted as not stored, the first error is kept, and `close()` raises
it (StorageError) naming how many quotes were not stored, so the scheduler reports the job as
failed without blaming the sources.

    recorder = HistoryRecorder(history)
    recorder.add(quote)                   # from the fetch workers: committed within a second
    recorder.add(paid_quote, durable=True)   # returns once committed
    new_rows = recorder.close()           # the rest, then StorageError if any batch failed
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Final

from crawler.logging import get_logger
from crawler.utils.clock import MonotonicClock
from crawler.utils.exceptions import StorageError

if TYPE_CHECKING:
    from crawler.normalizer.schemas import Quote
    from crawler.store.history import HistoryStore

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_MAX_DELAY_S", "HistoryRecorder"]

log = get_logger("crawler.history")

#: Quotes per commit: one fsync'd transaction per 50 quotes keeps SQLite's cost per quote small.
DEFAULT_BATCH_SIZE: Final = 50
#: The longest a landed quote waits in memory before its commit.
DEFAULT_MAX_DELAY_S: Final = 1.0


class HistoryRecorder:
    """One collection's history writer; see the module docstring."""

    def __init__(
        self,
        history: HistoryStore,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        clock: MonotonicClock = time.monotonic,
    ) -> None:
        self._history = history
        self._batch_size = max(1, batch_size)
        self._max_delay_s = max_delay_s
        self._clock = clock
        # One lock, two conditions: the writer waits on `_cond` for work, durable adders on
        # `_committed` for their commit. A landing quote wakes only the writer, a commit only
        # the adders (one condition woke every waiting worker at each quote and each commit).
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._committed = threading.Condition(lock)
        self._waiting: list[Quote] = []
        self._oldest_at_s: float | None = None
        # Quotes handed in so far, and how many of them have had their commit (or failed):
        # batches are written in order, so one counter says whether a given quote is done.
        self._added = 0
        self._done = 0
        self._urgent = False  # a durable quote waits: commit now, not at the batch's due time
        self._closing = False
        self._recorded = 0
        self._not_stored = 0
        self._error: StorageError | None = None
        self._thread = threading.Thread(target=self._run, name="crawler-history", daemon=True)
        self._thread.start()

    def add(self, quote: Quote, *, durable: bool = False) -> None:
        """Queue one quote for the history (thread-safe). Without `durable` it never blocks on
        the disk; with it (a paid quote) it returns once the commit holding the quote is done
        or has failed. A quote that lands after `close()` (its fetch outlived the collection's
        deadline) is not recorded: the history may already be closing."""
        with self._cond:
            if self._closing:
                log.debug("history: a quote landed after its collection ended", symbol=quote.symbol)
                return
            self._waiting.append(quote)
            self._added += 1
            mine = self._added
            if self._oldest_at_s is None:
                self._oldest_at_s = self._clock()
            if durable:
                self._urgent = True
                self._cond.notify()
                while self._done < mine:
                    self._committed.wait()
                return
            if len(self._waiting) >= self._batch_size or len(self._waiting) == 1:
                self._cond.notify()

    def close(self) -> int:
        """Write what is waiting, stop the writer; the count of new rows. Raises StorageError
        (after writing everything it could) when a batch could not be stored."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise StorageError(
                f"{self._not_stored} quote(s) were fetched but not stored in the history "
                f"({self._error.message})"
            ) from self._error
        return self._recorded

    @property
    def not_stored(self) -> int:
        """Quotes whose batch failed to commit so far."""
        with self._cond:
            return self._not_stored

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
            self._write(batch)

    def _next_batch(self) -> list[Quote] | None:
        """Wait (holding the condition) until a batch is due; None once closed and drained."""
        while True:
            if self._waiting and (
                self._closing
                or self._urgent
                or len(self._waiting) >= self._batch_size
                or self._due_in_s() <= 0
            ):
                batch, self._waiting = self._waiting, []
                self._oldest_at_s = None
                self._urgent = False
                return batch
            if self._closing:
                return None
            self._cond.wait(timeout=self._due_in_s() if self._waiting else None)

    def _due_in_s(self) -> float:
        if self._oldest_at_s is None:
            return self._max_delay_s
        return self._oldest_at_s + self._max_delay_s - self._clock()

    def _write(self, batch: list[Quote]) -> None:
        try:
            self._commit(batch)
        finally:
            with self._cond:
                self._done += len(batch)
                self._committed.notify_all()  # durable adders waiting for this batch

    def _commit(self, batch: list[Quote]) -> None:
        try:
            new = self._history.record(batch)
        except Exception as exc:  # StorageError, or a bug: the batch is lost either way
            error = (
                exc if isinstance(exc, StorageError)
                else StorageError(f"history write failed: {type(exc).__name__}: {exc}")
            )  # fmt: skip
            log.error("history: quotes not stored", quotes=len(batch), error=error.message)
            with self._cond:
                self._not_stored += len(batch)
                if self._error is None:
                    self._error = error
            return
        with self._cond:
            self._recorded += new
