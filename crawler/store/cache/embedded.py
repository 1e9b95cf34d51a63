"""The quote cache in the data dir: fresh quotes for `ttl_s`, the last-known quote forever.

Entries are JSON only (diskcache with `JSONOnlyDisk`): nothing read from disk is ever
unpickled. Two keys per symbol:

    quote:SYMBOL  {"stored_at": epoch_s, "quote": {...}}   fresh while clock() - stored_at < ttl_s
    last:SYMBOL   {"stored_at": epoch_s, "quote": {...}}   never expires; for stale-on-error

Freshness uses the injected `clock` (epoch seconds, so several processes sharing the directory
agree), not diskcache's own expiry. A corrupt entry is a miss and is deleted. The entry, the
TTL and the hit/miss counts are `crawler.store.cache.terms`'.

    >>> import tempfile
    >>> from decimal import Decimal
    >>> cache = QuoteCache(Path(tempfile.mkdtemp()), ttl_s=60, clock=lambda: 1000.0)
    >>> cache.put(Quote(symbol="AAPL:US", price=Decimal("262.36"), source="bright_data"))
    >>> cache.get("AAPL:US").price, cache.get("AAPL:US").from_cache
    (Decimal('262.36'), True)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import diskcache

from crawler.normalizer.schemas import Quote
from crawler.store.cache.terms import WHAT, CacheTerms, decode_entry, entry_of
from crawler.store.datadir import (
    STORE_ERRORS,
    CorruptRecordError,
    open_store,
    storage_error,
    storage_errors,
)
from crawler.utils.clock import Clock
from crawler.utils.exceptions import ParseError

__all__ = ["QuoteCache"]

_QUOTE_PREFIX: Final = "quote:"
_LAST_PREFIX: Final = "last:"


class QuoteCache(CacheTerms):
    """Fresh and last-known quotes under `directory`, shared by threads and processes.

    Hit and miss counts, and what the last cleanup found expired, are per process (in
    memory); everything else is read from disk.
    """

    def __init__(self, directory: Path, ttl_s: float, clock: Clock = time.time) -> None:
        super().__init__(ttl_s, clock)
        self._directory = Path(directory)
        self._decoded: dict[str, tuple[tuple[Any, ...], Quote]] = {}
        # What the last cleanup() found expired, and when (statistics() reads no entries).
        self._expired_at_cleanup = 0
        self._cleanup_at: float | None = None
        # The keys there are, and every last-known quote, kept in memory and updated on each
        # write, so `statistics()` and `last_known_many()` (what every status request reads)
        # touch no entry. Loaded from disk at first use; writes by other processes sharing
        # the directory after that are not seen (the daemon is the one writer while it runs).
        self._fresh_keys: set[str] | None = None
        self._last_keys: set[str] | None = None
        self._last_known: dict[str, Quote] | None = None
        # Disposable: an empty or corrupt cache is moved aside and rebuilt, never a refusal.
        self._cache: diskcache.Cache = open_store(self._directory, WHAT, disposable=True)

    def _fresh(self, symbol: str) -> Quote | None:
        entry = self._read(_QUOTE_PREFIX + symbol, from_cache=True, stale=False)
        if entry is not None and not self._expired(entry[0]):
            return entry[1]
        return None

    def put(self, quote: Quote) -> None:
        """Store `quote` as fresh and as the symbol's last-known quote (one transaction)."""
        stored, entry = entry_of(quote, self._clock())
        with storage_errors(WHAT, self._directory), self._cache.transact():
            self._cache.set(_QUOTE_PREFIX + quote.symbol, entry)
            self._cache.set(_LAST_PREFIX + quote.symbol, entry)
        self._remember([stored])

    def put_many(self, quotes: list[Quote]) -> None:
        """`put` for a batch in one transaction (the live stream's flush: one commit, not N)."""
        if not quotes:
            return
        stored_at = self._clock()
        entries = [entry_of(quote, stored_at) for quote in quotes]
        with storage_errors(WHAT, self._directory), self._cache.transact():
            for stored, entry in entries:
                self._cache.set(_QUOTE_PREFIX + stored.symbol, entry)
                self._cache.set(_LAST_PREFIX + stored.symbol, entry)
        self._remember([stored for stored, _ in entries])

    def _remember(self, stored: list[Quote]) -> None:
        """Keep the in-memory keys and last-known quotes in step with what was just written."""
        with self._counts_lock:
            if self._fresh_keys is not None and self._last_keys is not None:
                for quote in stored:
                    self._fresh_keys.add(quote.symbol)
                    self._last_keys.add(quote.symbol)
            if self._last_known is not None:
                for quote in stored:
                    self._last_known[quote.symbol] = quote.with_flags(from_cache=True, stale=True)

    def get_last_known(self, symbol: str) -> Quote | None:
        """The last quote stored for `symbol`, however old (from_cache=True, stale=True)."""
        entry = self._read(_LAST_PREFIX + symbol, from_cache=True, stale=True)
        return None if entry is None else entry[1]

    def last_known_many(self, symbols: Iterable[str]) -> dict[str, Quote]:
        """The last-known quote of each of `symbols` that has one (as `get_last_known`), from
        memory: the first call reads them all from disk, later ones read nothing."""
        with self._counts_lock:
            known = self._last_known
        if known is None:
            known = {}
            for key in self._keys(_LAST_PREFIX):
                entry = self._read(key, from_cache=True, stale=True)
                if entry is not None:
                    known[key[len(_LAST_PREFIX) :]] = entry[1]
            with self._counts_lock:
                # A put that raced the load is on disk and in `known` or newer than it:
                # keep whichever the map already has.
                if self._last_known is None:
                    self._last_known = known
                known = self._last_known
        return {symbol: known[symbol] for symbol in symbols if symbol in known}

    def cleanup(self) -> int:
        """Delete expired fresh entries (last-known copies stay); returns how many went."""
        removed = 0
        for key in self._keys(_QUOTE_PREFIX):
            with storage_errors(WHAT, self._directory), self._cache.transact():
                # Re-read inside the transaction: another process may have just refreshed it.
                entry = self._read(key)
                if entry is not None and self._expired(entry[0]) and self._cache.delete(key):
                    removed += 1
                    self._forget_fresh(key)
        with self._counts_lock:
            self._expired_at_cleanup, self._cleanup_at = removed, self._clock()
        return removed

    def clear(self) -> int:
        """Delete every entry, last-known copies included; returns how many went."""
        with storage_errors(WHAT, self._directory):
            removed = int(self._cache.clear())
        with self._counts_lock:
            # Reloaded (empty) at next use.
            self._fresh_keys = self._last_keys = None
            self._last_known = None
        return removed

    def statistics(self) -> dict[str, Any]:
        """hits, misses (this process), hit_rate_pct, size (fresh entries, expired or not),
        expired, last_known (symbols with a last-known quote), entries, volume_bytes, ttl_s.

        Cheap enough for every status request: no entry is read. `size` and `last_known` are
        kept in memory, updated on every write in this process (loaded from disk at first
        use; `entries`, every row, is the store's own count). `expired` is not measured here,
        as it would mean reading every entry: it is how many expired fresh entries the last
        `cleanup()` in this process found (and removed), 0 before the first;
        `expired_checked_at` says when (epoch s, or None).
        """
        with self._counts_lock:
            loaded = self._fresh_keys is not None and self._last_keys is not None
        if not loaded:  # one pass over the keys, the first time only
            keys = self._keys("")
            fresh = {key[len(_QUOTE_PREFIX) :] for key in keys if key.startswith(_QUOTE_PREFIX)}
            last = {key[len(_LAST_PREFIX) :] for key in keys if key.startswith(_LAST_PREFIX)}
            with self._counts_lock:
                if self._fresh_keys is None or self._last_keys is None:
                    self._fresh_keys, self._last_keys = fresh, last
        with self._counts_lock:
            expired, checked_at = self._expired_at_cleanup, self._cleanup_at
            size = len(self._fresh_keys or ())
            last_known = len(self._last_keys or ())
        with storage_errors(WHAT, self._directory):
            entries = len(self._cache)
            volume_bytes = int(self._cache.volume())
        return {
            **self._lookups(),
            "size": size,
            "expired": expired,
            "expired_checked_at": checked_at,
            "last_known": last_known,
            "entries": entries,
            "volume_bytes": volume_bytes,
            "ttl_s": self._ttl_s,
        }

    def close(self) -> None:
        """Close this thread's database connection."""
        self._cache.close()

    # -- internals ------------------------------------------------------------------------

    def _keys(self, prefix: str) -> list[str]:
        # Keys we cannot decode come back as UNREADABLE_KEY (not a str) and are skipped.
        with storage_errors(WHAT, self._directory):
            keys = list(self._cache.iterkeys())
        return [key for key in keys if isinstance(key, str) and key.startswith(prefix)]

    def _read(self, key: str, **flags: bool) -> tuple[float, Quote] | None:
        """(stored_at, quote) of `key`, or None if absent; a corrupt entry is deleted."""
        # The hot path of every cache hit: a plain try, not the `storage_errors` manager.
        try:
            raw = self._cache.get(key)
        except CorruptRecordError:
            raw = _CORRUPT
        except STORE_ERRORS as exc:
            raise storage_error(WHAT, self._directory, exc) from exc
        if raw is None:
            return None
        try:
            stored_at, payload = decode_entry(None if raw is _CORRUPT else raw)
            # Quotes are immutable: reuse the one decoded from this very entry last time (its
            # version is when and what was stored), instead of parsing Decimals and dates again.
            version = (stored_at, payload.get("fetched_at"), payload.get("price"), *flags.items())
            memo = self._decoded.get(key)
            if memo is not None and memo[0] == version:
                return float(stored_at), memo[1]
            quote = Quote.from_json_dict(payload, **flags)
            if len(self._decoded) >= _DECODED_MAX and key not in self._decoded:
                # Evict the oldest one, not all: clearing everything made a watchlist larger
                # than the memo decode every quote again on every pass.
                self._decoded.pop(next(iter(self._decoded)), None)
            self._decoded[key] = (version, quote)
            return float(stored_at), quote
        except (ParseError, KeyError):
            # Serving a miss beats failing the request; the next put rewrites the entry.
            with storage_errors(WHAT, self._directory):
                self._cache.delete(key)
            if key.startswith(_QUOTE_PREFIX):
                self._forget_fresh(key)
            else:
                with self._counts_lock:
                    if self._last_known is not None:
                        self._last_known.pop(key[len(_LAST_PREFIX) :], None)
                    if self._last_keys is not None:
                        self._last_keys.discard(key[len(_LAST_PREFIX) :])
            return None

    def _forget_fresh(self, key: str) -> None:
        with self._counts_lock:
            if self._fresh_keys is not None:
                self._fresh_keys.discard(key[len(_QUOTE_PREFIX) :])


_CORRUPT: Final = object()
#: Decoded quotes kept for reuse, one per key: two keys per symbol of the largest watchlist
#: (10,000 symbols), with room to spare.
_DECODED_MAX: Final = 24_576
