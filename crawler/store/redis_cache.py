"""The quote cache on Redis, shared by every node, with a local copy for when Redis is away.

Same contract as `crawler.store.cache.QuoteCache` (the store contract suite runs both). Keys:

    crawler:quote:SYMBOL  {"stored_at": epoch_s, "quote": {...}}   PX ttl: Redis drops it
    crawler:last:SYMBOL   the same, no expiry: the last-known quote, for stale-on-error

Freshness is still judged by the injected `clock` against `stored_at` (nodes' clocks agree to
NTP accuracy, far below any TTL); Redis' own expiry only frees the memory.

Every `put` also goes to `local`, the node's embedded cache: when Redis is unreachable, reads
fall back to it, so the node keeps serving its own fresh and last-known quotes. A corrupt entry
is a miss and is deleted, as in the embedded cache.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Final

from crawler.normalizer.schemas import Quote
from crawler.store.cache import QuoteCache
from crawler.store.redis_client import RedisConnection
from crawler.utils.clock import Clock
from crawler.utils.exceptions import ConfigError, ParseError, StorageError

__all__ = ["RedisQuoteCache"]

_WHAT: Final = "quote cache"


class RedisQuoteCache:
    """Fresh and last-known quotes in Redis; `local` is written too and read when Redis is away."""

    def __init__(
        self,
        redis: RedisConnection,
        ttl_s: float,
        local: QuoteCache,
        clock: Clock = time.time,
    ) -> None:
        if not ttl_s > 0:
            raise ConfigError(f"CACHE_TTL {ttl_s!r} must be above 0 seconds")
        self._redis = redis
        self._ttl_s = float(ttl_s)
        self._ttl_ms = max(1, int(self._ttl_s * 1000))
        self._clock = clock
        self.local = local
        self._counts_lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._fallbacks = 0

    @property
    def ttl_s(self) -> float:
        """Seconds a stored quote is served as fresh."""
        return self._ttl_s

    def get(self, symbol: str) -> Quote | None:
        """The fresh quote for `symbol` (from_cache=True), or None. Counts hit/miss."""
        try:
            entry = self._read(self._redis.key("quote", symbol), from_cache=True, stale=False)
            quote = None
            if entry is not None and self._clock() - entry[0] < self._ttl_s:
                quote = entry[1]
        except StorageError:
            self._count_fallback()
            quote = self.local.get(symbol)
        with self._counts_lock:
            if quote is None:
                self._misses += 1
            else:
                self._hits += 1
        return quote

    def put(self, quote: Quote) -> None:
        """Store `quote` as fresh and last-known, in Redis (one round trip) and locally."""
        stored = quote.with_flags(from_cache=False, stale=False)
        text = json.dumps({"stored_at": self._clock(), "quote": stored.to_json_dict()})
        self.local.put(quote)
        try:
            with self._redis.errors(_WHAT):
                pipe = self._redis.client.pipeline(transaction=False)
                pipe.set(self._redis.key("quote", quote.symbol), text, px=self._ttl_ms)
                pipe.set(self._redis.key("last", quote.symbol), text)
                pipe.execute()
        except StorageError:
            # Kept locally; the other nodes fetch it themselves once their leases allow.
            self._count_fallback()

    def get_last_known(self, symbol: str) -> Quote | None:
        """The last quote stored for `symbol` by any node (or locally, when Redis is away)."""
        try:
            entry = self._read(self._redis.key("last", symbol), from_cache=True, stale=True)
        except StorageError:
            self._count_fallback()
            return self.local.get_last_known(symbol)
        if entry is None:
            return self.local.get_last_known(symbol)
        return entry[1]

    def cleanup(self) -> int:
        """Redis expires fresh entries itself; this cleans the local copy."""
        return self.local.cleanup()

    def clear(self) -> int:
        """Delete every shared entry (last-known included) and the local copy."""
        removed = 0
        with self._redis.errors(_WHAT):
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
        with self._counts_lock:
            hits, misses, fallbacks = self._hits, self._misses, self._fallbacks
        lookups = hits + misses
        reachable = True
        try:
            with self._redis.errors(_WHAT):
                size = _count(self._redis, "quote")
                last_known = _count(self._redis, "last")
        except StorageError:
            reachable, size, last_known = False, int(local["size"]), int(local["last_known"])
        return {
            "hits": hits,
            "misses": misses,
            "hit_rate_pct": round(hits * 100 / lookups, 2) if lookups else 0.0,
            "size": size,
            "expired": local["expired"],
            "expired_checked_at": local["expired_checked_at"],
            "last_known": last_known,
            "entries": size + last_known,
            "volume_bytes": local["volume_bytes"],
            "ttl_s": self._ttl_s,
            "store": "redis",
            "store_reachable": reachable,
            "local_fallbacks": fallbacks,
        }

    def close(self) -> None:
        """Close the local copy's connection (the Redis connection belongs to the caller)."""
        self.local.close()

    # -- internals ------------------------------------------------------------------------

    def _count_fallback(self) -> None:
        with self._counts_lock:
            self._fallbacks += 1

    def _read(self, key: str, **flags: bool) -> tuple[float, Quote] | None:
        with self._redis.errors(_WHAT):
            raw = self._redis.client.get(key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ParseError("cache entry is not a JSON object")
            stored_at = data["stored_at"]
            if not isinstance(stored_at, int | float) or isinstance(stored_at, bool):
                raise ParseError("cache entry has no numeric stored_at")
            payload = data["quote"]
            if not isinstance(payload, dict):
                raise ParseError("cache entry has no quote object")
            return float(stored_at), Quote.from_json_dict(payload, **flags)
        except (ParseError, KeyError, ValueError):
            # Serving a miss beats failing the request; the next put rewrites the entry.
            with self._redis.errors(_WHAT):
                self._redis.client.delete(key)
            return None


def _count(redis: RedisConnection, prefix: str) -> int:
    return sum(1 for _ in redis.client.scan_iter(redis.key(prefix, "*"), count=1000))
