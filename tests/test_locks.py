"""crawler.utils.locks.flock_within: the deadline lock of the data dir and the socket directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from crawler.utils.locks import flock_within


class FakeTime:
    """An injected clock whose sleep moves it on: no real waiting."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.sleeps_s: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps_s.append(seconds)
        self.now_s += seconds


def test_a_free_lock_is_taken_at_once(tmp_path: Path) -> None:
    fake = FakeTime()
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert flock_within(fd, 5.0, poll_s=0.5, clock=fake.clock, sleep=fake.sleep)
        assert fake.sleeps_s == []
    finally:
        os.close(fd)


def test_a_held_lock_is_tried_until_the_deadline_then_refused(tmp_path: Path) -> None:
    fake = FakeTime()
    holder = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    waiter = os.open(tmp_path / "lock", os.O_RDWR)  # its own open file: flock conflicts
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert not flock_within(waiter, 2.0, poll_s=0.5, clock=fake.clock, sleep=fake.sleep)
        assert fake.sleeps_s == [0.5, 0.5, 0.5, 0.5]
        fcntl.flock(holder, fcntl.LOCK_UN)
        assert flock_within(waiter, 2.0, poll_s=0.5, clock=fake.clock, sleep=fake.sleep)
    finally:
        os.close(waiter)
        os.close(holder)
