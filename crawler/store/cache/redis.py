"""The quote cache on Redis, shared by every node, with a local copy for when Redis is away.

Same contract and terms as `crawler.store.cache.QuoteCache` (`crawler.store.cache.terms`; the
store contract suite runs both). Keys:

    crawler:quote:SYMBOL  {"stored_at": epoch_s, "quote": {...}}   PX ttl: Redis drops it
    crawler:last:SYMBOL   the same, no expiry: the last-known quote, for stale-on-error

Freshness is still judged by the injected `clock` against `stored_at` (nodes' clocks agree to
NTP accuracy, far below any TTL); Redis' own expiry only frees the memory.

Every `put` also goes to `local`, the node's embedded cache (`crawler.store.local_copy`): when
Redis is unreachable, reads fall back to it, so the node keeps serving its own fresh and
last-known quotes. A corrupt entry is a miss and is deleted, as in the embedded cache.
"""

from __future__ import annotations

import json
import time
from typing import Any

from crawler.normalizer.schemas import Quote
from crawler.store.cache.embedded import QuoteCache
from crawler.store.cache.terms import WHAT, CacheTerms, decode_entry, entry_of
from crawler.store.local_copy import LocalCopy
from crawler.store.redis_client import RedisConnection
from crawler.utils.clock import Clock
from crawler.utils.exceptions import ParseError, StorageError

__all__ = ["RedisQuoteCache"]


class RedisQuoteCache(CacheTerms):
    """Fresh and last-known quotes in Redis; `local` is written too and read when Redis is away."""

    def __init__(
        self,
        redis: RedisConnection,
        ttl_s: float,
        local: QuoteCache,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(ttl_s, clock)
        self._redis = redis
        self._ttl_ms = max(1, int(self._ttl_s * 1000))
        self._copy = LocalCopy(redis, local, WHAT)
        self.local = local

    def _fresh(self, symbol: str) -> Quote | None:
        return self._copy.read(lambda: self._fresh_shared(symbol), lambda local: local.get(symbol))

    def _fresh_shared(self, symbol: str) -> Quote | None:
        entry = self._read(self._redis.key("quote", symbol), from_cache=True, stale=False)
        if entry is not None and not self._expired(entry[0]):
            return entry[1]
        return None

    def put(self, quote: Quote) -> None:
        """Store `quote` as fresh and last-known, in Redis (one round trip) and locally."""
        _, entry = entry_of(quote, self._clock())
        text = json.dumps(entry)

        def shared() -> None:
            pipe = self._redis.client.pipeline(transaction=False)
            pipe.set(self._redis.key("quote", quote.symbol), text, px=self._ttl_ms)
            pipe.set(self._redis.key("last", quote.symbol), text)
            pipe.execute()

        self._copy.write(lambda local: local.put(quote), shared)

    def get_last_known(self, symbol: str) -> Quote | None:
        """The last quote stored for `symbol` by any node (or locally, when Redis is away)."""

        def shared() -> Quote | None:
            entry = self._read(self._redis.key("last", symbol), from_cache=True, stale=True)
            return None if entry is None else entry[1]

        quote = self._copy.read(shared, lambda local: local.get_last_known(symbol))
        # None from Redis: this node's own copy may still know one.
        return quote if quote is not None else self.local.get_last_known(symbol)

    def cleanup(self) -> int:
        """Redis expires fresh entries itself; this cleans the local copy."""
        return self.local.cleanup()

    def clear(self) -> int:
        """Delete every shared entry (last-known included) and the local copy."""
        removed = 0
        with self._redis.errors(WHAT):
            for prefix in ("quote", "last"):
                keys = list(self._redis.client.scan_iter(self._redis.key(prefix, "*"), count=1000))
                for start in range(0, len(keys), 500):
                    removed += int(self._redis.client.delete(*keys[start : start + 500]))
        self.local.clear()
        return removed

    def statistics(self) -> dict[str, Any]:
        """`QuoteCache.statistics()`'s keys for the shared cache, plus `store`,
        `store_reachable` and `local_fallbacks` (reads and writes Redis could not serve)."""
        local = self.local.statistics()
        reachable = True
        try:
            with self._redis.errors(WHAT):
                size = _count(self._redis, "quote")
                last_known = _count(self._redis, "last")
        except StorageError:
            reachable, size, last_known = False, int(local["size"]), int(local["last_known"])
        return {
            **self._lookups(),
            "size": size,
            "expired": local["expired"],
            "expired_checked_at": local["expired_checked_at"],
            "last_known": last_known,
            "entries": size + last_known,
            "volume_bytes": local["volume_bytes"],
            "ttl_s": self._ttl_s,
            "store": "redis",
            "store_reachable": reachable,
            "local_fallbacks": self._copy.fallbacks,
        }

    def close(self) -> None:
        """Close the local copy's connection (the Redis connection belongs to the caller)."""
        self._copy.close()

    # -- internals ------------------------------------------------------------------------

    def _read(self, key: str, **flags: bool) -> tuple[float, Quote] | None:
        with self._redis.errors(WHAT):
            raw = self._redis.client.get(key)
        if raw is None:
            return None
        try:
            stored_at, payload = decode_entry(json.loads(raw))
            return float(stored_at), Quote.from_json_dict(payload, **flags)
        except (ParseError, KeyError, ValueError):
            # Serving a miss beats failing the request; the next put rewrites the entry.
            with self._redis.errors(WHAT):
                self._redis.client.delete(key)
            return None


def _count(redis: RedisConnection, prefix: str) -> int:
    return sum(1 for _ in redis.client.scan_iter(redis.key(prefix, "*"), count=1000))
