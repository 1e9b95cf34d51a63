"""Small shared pieces of the fault suite (no fixtures: those live in the test modules)."""

from __future__ import annotations

import threading

__all__ = ["ManualClock"]


class ManualClock:
    """An injected clock: returns `now`; `advance` moves it (thread-safe). Used as a breaker's
    monotonic clock and, with `sleep`, as a source's clock whose waits are recorded, not slept."""

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        """A `sleep=` for BrightDataSource: record the wait and let time pass, instantly."""
        with self._lock:
            self.slept.append(seconds)
            self.now += seconds
