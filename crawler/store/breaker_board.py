"""Shared circuit-breaker state: an open breaker on one node stops the others too.

Each node keeps its own `CircuitBreaker` (the state machine). When one opens, the node posts
it here for the breaker's recovery time; before calling a source, every node looks here, so
ten nodes do not each need their own three failures to stop hammering the same outage. When a
node's trial call succeeds and its breaker closes, it takes the post down.

    crawler:breaker:SOURCE   {"node": ..., "until": epoch_s}   (Redis: SET PX recovery time)

`LocalBreakerBoard` (the embedded backend) shares it between the processes of one data dir
(the daemon and a CLI `crawler fetch`); `RedisBreakerBoard` across the cluster.

    >>> import tempfile
    >>> board = LocalBreakerBoard(Path(tempfile.mkdtemp()), "node-a", clock=lambda: 100.0)
    >>> board.post_open("bright_data", 120.0)
    >>> board.open_elsewhere("bright_data")  # our own post is not "elsewhere"
    >>> LocalBreakerBoard(board.directory, "node-b", clock=lambda: 130.0).open_elsewhere(
    ...     "bright_data")
    ('node-a', 90.0)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Final, Protocol

import diskcache

from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.store.redis_client import RedisConnection
from crawler.utils.clock import Clock

__all__ = ["BreakerBoard", "LocalBreakerBoard", "RedisBreakerBoard"]

_WHAT: Final = "breaker board"
_PREFIX: Final = "breaker:"


class BreakerBoard(Protocol):
    """Where nodes post their open breakers. `node` is this node's name."""

    node: str

    def post_open(self, source: str, recovery_s: float) -> None:
        """Say `source`'s breaker opened here, for `recovery_s` seconds."""
        ...

    def post_closed(self, source: str) -> None:
        """Say `source` is healthy again (our trial call succeeded): take any post down."""
        ...

    def open_elsewhere(self, source: str) -> tuple[str, float] | None:
        """(node, seconds left) when another node's post for `source` is still up."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class LocalBreakerBoard:
    """Posts among the processes sharing one data dir."""

    def __init__(self, directory: Path, node: str, clock: Clock = time.time) -> None:
        self.node = node
        self.directory = Path(directory)
        self._clock = clock
        self._cache: diskcache.Cache = open_store(self.directory, _WHAT)

    def post_open(self, source: str, recovery_s: float) -> None:
        """Store the post with its end time."""
        with storage_errors(_WHAT, self.directory):
            self._cache.set(
                _PREFIX + source, {"node": self.node, "until": self._clock() + recovery_s}
            )

    def post_closed(self, source: str) -> None:
        """Delete the post."""
        with storage_errors(_WHAT, self.directory):
            self._cache.delete(_PREFIX + source)

    def open_elsewhere(self, source: str) -> tuple[str, float] | None:
        """Another node's unexpired post, or None."""
        with storage_errors(_WHAT, self.directory):
            try:
                raw = self._cache.get(_PREFIX + source)
            except CorruptRecordError:
                return None  # a post is only a hint: a broken one is no post
        return _decode(raw, self.node, self._clock())

    def close(self) -> None:
        """Close this thread's database connection."""
        self._cache.close()


class RedisBreakerBoard:
    """Posts shared by the cluster; Redis drops a post when its recovery time is over."""

    def __init__(self, redis: RedisConnection, node: str, clock: Clock = time.time) -> None:
        self.node = node
        self._redis = redis
        self._clock = clock

    def post_open(self, source: str, recovery_s: float) -> None:
        """SET crawler:breaker:SOURCE {...} PX recovery."""
        record = {"node": self.node, "until": self._clock() + recovery_s}
        with self._redis.errors(_WHAT):
            self._redis.client.set(
                self._redis.key("breaker", source),
                json.dumps(record),
                px=max(1, int(recovery_s * 1000)),
            )

    def post_closed(self, source: str) -> None:
        """DEL crawler:breaker:SOURCE."""
        with self._redis.errors(_WHAT):
            self._redis.client.delete(self._redis.key("breaker", source))

    def open_elsewhere(self, source: str) -> tuple[str, float] | None:
        """Another node's post, or None (one GET)."""
        with self._redis.errors(_WHAT):
            value = self._redis.client.get(self._redis.key("breaker", source))
        if value is None:
            return None
        try:
            raw = json.loads(value)
        except ValueError:
            return None
        return _decode(raw, self.node, self._clock())

    def close(self) -> None:
        """Nothing to close: the Redis connection belongs to the caller."""


def _decode(raw: object, node: str, now: float) -> tuple[str, float] | None:
    if not isinstance(raw, dict):
        return None
    holder, until = raw.get("node"), raw.get("until")
    if not isinstance(holder, str) or not isinstance(until, int | float) or holder == node:
        return None
    left = float(until) - now
    return (holder, left) if left > 0 else None
