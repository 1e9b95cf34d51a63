"""An exclusive flock taken within a deadline: never blocking for good on a lock another
process (or another user) may hold forever.

The data dir's store-open lock and the control socket directory's lock both wait this way and
say, in their own words, who to look for when the deadline passes.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable

__all__ = ["flock_within"]


def flock_within(
    fd: int,
    timeout_s: float,
    *,
    poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Take an exclusive flock on `fd`, trying every `poll_s` for `timeout_s` seconds (by
    `clock`): True once held, False if someone else still holds it at the deadline. Other
    errors (a bad descriptor) raise OSError."""
    deadline = clock() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if clock() >= deadline:
                return False
            sleep(poll_s)
