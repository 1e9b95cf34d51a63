"""Coalescing: concurrent requests for one symbol share one upstream call, so twenty threads
asking for AAPL:US at once cost one Bright Data request.

The first caller of a symbol becomes its leader (a future the others wait on); a per-symbol
generation, bumped when a leader finishes, tells a caller whose cache miss came before that
finish to look in the cache again instead of fetching.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

from crawler.normalizer.schemas import Quote

__all__ = ["Coalescer"]


class Coalescer:
    """The in-flight fetches of one hybrid, by canonical symbol (thread-safe)."""

    def __init__(self, on_settled: Callable[[str, Quote | BaseException], None]) -> None:
        #: Called after a batch leadership ended (the cluster lease follows it).
        self._on_settled = on_settled
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[Quote]] = {}
        # Per symbol, how many leaders have finished (see `run`).
        self._finished: dict[str, int] = {}
        # Batch leaders not settled yet (see `claim`), so cleanup can release their waiters.
        self._batch_leaders: dict[Future[Quote], str] = {}
        #: Requests that waited for another caller's fetch instead of making their own.
        self.coalesced = 0

    def generation(self, key: str) -> int:
        """Read before a cache lookup; `run` and `claim` compare it to see a finish since."""
        return self._finished.get(key, 0)

    def run(self, key: str, generation: int, fetch: Callable[[bool], Quote]) -> Quote:
        """The quote of the fetch in flight for `key`, or `fetch(moved)` as its leader, where
        `moved` says a leader finished since `generation` (the caller's miss may be out of
        date: look in the cache again)."""
        with self._lock:
            future = self._inflight.get(key)
            leader = future is None
            if future is None:
                future = Future()
                self._inflight[key] = future
            else:
                self.coalesced += 1
        if not leader:
            return future.result()
        try:
            quote = fetch(self._finished.get(key, 0) != generation)
            future.set_result(quote)
            return quote
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
                # After the fetch's cache.put, so a reader that sees the old generation is
                # sure to see the new quote in the cache.
                self._finished[key] = self._finished.get(key, 0) + 1

    def claim(self, key: str, ready: Quote | None) -> tuple[Future[Quote], bool]:
        """(future, leader?) for a batch: `ready` (a quote at hand) as a done future, the
        in-flight fetch of another caller to wait for, or a new leader future that must be
        settled (`settle`)."""
        if ready is not None:
            done: Future[Quote] = Future()
            done.set_result(ready)
            return done, False
        with self._lock:
            existing = self._inflight.get(key)
            if existing is not None:
                self.coalesced += 1
                return existing, False
            future: Future[Quote] = Future()
            self._inflight[key] = future
            self._batch_leaders[future] = key
        return future, True

    def settle(self, key: str, future: Future[Quote], outcome: Quote | BaseException) -> None:
        """End a batch leadership: the waiters get `outcome`, the symbol is free again."""
        try:
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        except InvalidStateError:  # settled already (the cache answered right after the claim)
            pass
        finally:
            with self._lock:
                self._batch_leaders.pop(future, None)
                if self._inflight.get(key) is future:
                    del self._inflight[key]
                    self._finished[key] = self._finished.get(key, 0) + 1
            self._on_settled(key, outcome)

    def orphans(self) -> list[tuple[Future[Quote], str]]:
        """Batch leaderships not settled (their task was cancelled): for cleanup."""
        with self._lock:
            return list(self._batch_leaders.items())
