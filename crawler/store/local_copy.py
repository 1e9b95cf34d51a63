"""The one Redis-down fallback: a Redis twin's embedded store, kept as a local copy.

The Redis quote cache, watchlist and quote times each keep this node's embedded store beside
Redis. Writes go to both (`write`); reads ask Redis (`read`). While Redis is away (any
StorageError: unreachable, refusing, or holding something that cannot be decoded), reads answer
from the local copy and writes are kept there only, so the node goes on collecting. Losing
this memory costs at most a fetch, never money: the ledger has its own, stricter rules
(`crawler.store.ledger`: fail closed).

    copy = LocalCopy(redis, QuoteCache(local_dir, ttl_s), "quote cache")
    quote = copy.read(lambda: from_redis(symbol), lambda local: local.get(symbol))
    copy.write(lambda local: local.put(quote), lambda: to_redis(quote))

The first fallback after Redis answered is logged (a warning), not every one: a cache read
falls back once per quote.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from crawler.logging import get_logger
from crawler.store.redis_client import RedisConnection
from crawler.utils.exceptions import StorageError

__all__ = ["LocalCopy"]

log = get_logger("crawler.store")


class _Closable(Protocol):
    def close(self) -> None: ...


Local = TypeVar("Local", bound=_Closable)
Answer = TypeVar("Answer")


class LocalCopy(Generic[Local]):
    """`local` read while Redis is away, written beside it always. `what` names the store."""

    def __init__(self, redis: RedisConnection, local: Local, what: str) -> None:
        self.redis = redis
        self.local = local
        self.what = what
        self._lock = threading.Lock()
        self._fallbacks = 0
        self._away = False

    @property
    def fallbacks(self) -> int:
        """Reads and writes Redis could not serve (this process)."""
        with self._lock:
            return self._fallbacks

    def read(self, shared: Callable[[], Answer], local: Callable[[Local], Answer]) -> Answer:
        """`shared()` (Redis' answer), or `local(copy)` when Redis cannot give it."""
        try:
            with self.redis.errors(self.what):
                answer = shared()
        except StorageError as exc:
            self._fell_back(exc, "using the local copy")
            return local(self.local)
        self._answered()
        return answer

    def write(self, local: Callable[[Local], object], shared: Callable[[], object]) -> bool:
        """Write the local copy, then Redis; False when Redis could not take it (kept
        locally: the other nodes fetch it themselves)."""
        local(self.local)
        try:
            with self.redis.errors(self.what):
                shared()
        except StorageError as exc:
            self._fell_back(exc, "kept in the local copy only")
            return False
        self._answered()
        return True

    def close(self) -> None:
        """Close the local copy (the Redis connection belongs to the caller)."""
        self.local.close()

    def _fell_back(self, exc: StorageError, doing: str) -> None:
        with self._lock:
            self._fallbacks += 1
            first, self._away = not self._away, True
        if first:
            log.warning(f"{self.what}: Redis is away, {doing}", error=exc.message)

    def _answered(self) -> None:
        with self._lock:
            self._away = False
