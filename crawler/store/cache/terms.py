"""The quote cache's terms, written once for both caches (`QuoteCache`, `RedisQuoteCache`).

An entry is JSON: ``{"stored_at": epoch_s, "quote": {...}}``, two per symbol (fresh while
``clock() - stored_at < ttl_s``, and the last-known copy that never expires). `entry_of` writes
one, `decode_entry` reads one (ParseError for anything else: the caller serves a miss and
deletes it). `CacheTerms` holds the TTL, the clock and the hit/miss counts, and `get()` is
written here once above each backend's `_fresh`.
"""

from __future__ import annotations

import threading
from typing import Any

from crawler.normalizer.schemas import Quote
from crawler.utils.clock import Clock
from crawler.utils.exceptions import ConfigError, ParseError

__all__ = ["WHAT", "CacheTerms", "decode_entry", "entry_of"]

WHAT = "quote cache"


def entry_of(quote: Quote, stored_at: float) -> tuple[Quote, dict[str, Any]]:
    """The quote as stored (neither from the cache nor stale) and its entry."""
    stored = quote.with_flags(from_cache=False, stale=False)
    return stored, {"stored_at": stored_at, "quote": stored.to_json_dict()}


def decode_entry(raw: object) -> tuple[float | int, dict[str, Any]]:
    """(stored_at, the quote's JSON object) of an entry; ParseError if it is not one."""
    if not isinstance(raw, dict):
        raise ParseError("cache entry is not a JSON object")
    stored_at = raw.get("stored_at")
    if not isinstance(stored_at, int | float) or isinstance(stored_at, bool):
        raise ParseError("cache entry has no numeric stored_at")
    payload = raw.get("quote")
    if not isinstance(payload, dict):
        raise ParseError("cache entry has no quote object")
    return stored_at, payload


class CacheTerms:
    """The TTL, the clock and the hit/miss counts (per process) both caches share."""

    def __init__(self, ttl_s: float, clock: Clock) -> None:
        if not ttl_s > 0:
            raise ConfigError(f"CACHE_TTL {ttl_s!r} must be above 0 seconds")
        self._ttl_s = float(ttl_s)
        self._clock = clock
        self._counts_lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def ttl_s(self) -> float:
        """Seconds a stored quote is served as fresh."""
        return self._ttl_s

    def get(self, symbol: str) -> Quote | None:
        """The fresh quote for `symbol` (marked `from_cache=True`), or None. Counts hit/miss."""
        quote = self._fresh(symbol)
        with self._counts_lock:
            if quote is None:
                self._misses += 1
            else:
                self._hits += 1
        return quote

    def _fresh(self, symbol: str) -> Quote | None:
        """The backend's fresh quote for `symbol`, or None (not counted)."""
        raise NotImplementedError

    def hold(self) -> None:
        """A fetch that may `put` has begun. Until the last such fetch calls `unhold`, a
        backend may queue its puts and write them together (the embedded cache does; readers
        in this process see them at once)."""

    def unhold(self) -> None:
        """A fetch that called `hold` has ended; the last one out writes what was queued
        (raising StorageError as `put` would)."""

    def _expired(self, stored_at: float) -> bool:
        return self._clock() - stored_at >= self._ttl_s

    def _lookups(self) -> dict[str, Any]:
        """hits, misses and hit_rate_pct of this process, for `statistics()`."""
        with self._counts_lock:
            hits, misses = self._hits, self._misses
        lookups = hits + misses
        return {
            "hits": hits,
            "misses": misses,
            "hit_rate_pct": round(hits * 100 / lookups, 2) if lookups else 0.0,
        }
