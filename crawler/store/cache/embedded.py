"""The quote cache in the data dir: fresh quotes for `ttl_s`, the last-known quote forever.

Entries are JSON only (diskcache with `JSONOnlyDisk`): nothing read from disk is ever
unpickled. Two keys per symbol:

    quote:SYMBOL  {"stored_at": epoch_s, "quote": {...}}   fresh while clock() - stored_at < ttl_s
    last:SYMBOL   {"stored_at": epoch_s, "quote": {...}}   never expires; for stale-on-error

Once `last_known_many` has loaded every last-known quote into memory (the daemon does at
start, for status), `get` and `get_last_known` answer from memory too: a fresh entry and the
last-known copy are the same entry, and this process's writes keep the memory in step. Another
process's writes after the load are not seen: the daemon is the one writer while it runs.

While fetches hold the cache (`hold`/`unhold`: the hybrid's source chain, around each fetch),
puts are queued and the last fetch out writes them in one transaction (at most `_QUEUE_MAX`
of them or `_QUEUE_S` seconds' worth wait); readers in this process see queued puts at once.

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

import math
import threading
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
    RepeatingDisk,
    open_store,
    storage_error,
    storage_errors,
)
from crawler.utils.clock import Clock, MonotonicClock
from crawler.utils.exceptions import ParseError

__all__ = ["QuoteCache"]

_QUOTE_PREFIX: Final = "quote:"
_LAST_PREFIX: Final = "last:"


class QuoteCache(CacheTerms):
    """Fresh and last-known quotes under `directory`, shared by threads and processes.

    Hit and miss counts, and what the last cleanup found expired, are per process (in
    memory); everything else is read from disk.
    """

    def __init__(
        self,
        directory: Path,
        ttl_s: float,
        clock: Clock = time.time,
        monotonic: MonotonicClock = time.monotonic,
    ) -> None:
        super().__init__(ttl_s, clock)
        self._monotonic = monotonic
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
        # When each of those was stored (epoch s): with them, the fresh check reads memory too.
        self._stored_at: dict[str, float] = {}
        # While the map is being loaded: the puts made meanwhile (the load may miss them).
        self._loading: dict[str, tuple[Quote, float]] | None = None
        # Puts queued while fetches hold the cache (`hold`): symbol -> (quote, entry), since
        # when (monotonic), and how many fetches hold it.
        self._queue_lock = threading.Lock()
        self._queue: dict[str, tuple[Quote, dict[str, Any]]] = {}
        self._queued_at_s = math.inf
        self._holders = 0
        # Disposable: an empty or corrupt cache is moved aside and rebuilt, never a refusal.
        self._cache: diskcache.Cache = open_store(
            self._directory, WHAT, disposable=True, disk=RepeatingDisk
        )

    def _fresh(self, symbol: str) -> Quote | None:
        queued = self._queued(symbol)
        if queued is not None:
            stored_at, quote = queued
            expired = self._expired(stored_at)
            return None if expired else quote.with_flags(from_cache=True, stale=False)
        with self._counts_lock:
            known, at = self._last_known, self._stored_at.get(symbol)
        if known is not None:  # loaded: from memory, as `get_last_known`
            last = known.get(symbol)
            if last is None or at is None or self._expired(at):
                return None
            return last.with_flags(from_cache=True, stale=False)
        entry = self._read(_QUOTE_PREFIX + symbol, from_cache=True, stale=False)
        if entry is not None and not self._expired(entry[0]):
            return entry[1]
        return None

    def put(self, quote: Quote) -> None:
        """Store `quote` as fresh and as the symbol's last-known quote (one transaction), or,
        while fetches `hold` the cache, queue it for the last of them to write."""
        stored, entry = entry_of(quote, self._clock())
        with self._queue_lock:
            deferred = self._holders > 0
            if deferred:
                self._queue[quote.symbol] = (stored, entry)
                now_s = self._monotonic()
                self._queued_at_s = min(self._queued_at_s, now_s)
                due = len(self._queue) >= _QUEUE_MAX or now_s - self._queued_at_s >= _QUEUE_S
        if not deferred:
            self._write([(stored, entry)])
            return
        self._remember([(stored, entry)])  # readers here see it now; written once, below
        if due:
            self._write_queue()

    def hold(self) -> None:
        with self._queue_lock:
            self._holders += 1

    def unhold(self) -> None:
        with self._queue_lock:
            self._holders -= 1
            last = not self._holders
        if last:
            self._write_queue()

    def _write_queue(self) -> None:
        """Write every queued put in one transaction (dropped, and the error raised, if it
        fails: a cache loses only copies)."""
        with self._queue_lock:
            queued, self._queue = list(self._queue.values()), {}
            self._queued_at_s = math.inf
        if queued:
            self._write(queued, remembered=True)

    def put_many(self, quotes: list[Quote]) -> None:
        """`put` for a batch in one transaction (the live stream's flush: one commit, not N)."""
        if not quotes:
            return
        stored_at = self._clock()
        self._write([entry_of(quote, stored_at) for quote in quotes])

    def _write(
        self, entries: list[tuple[Quote, dict[str, Any]]], *, remembered: bool = False
    ) -> None:
        """One transaction for `entries`; `remembered`: memory has them already (queued)."""
        with storage_errors(WHAT, self._directory), self._cache.transact():
            for stored, entry in entries:
                self._cache.set(_QUOTE_PREFIX + stored.symbol, entry)
                self._cache.set(_LAST_PREFIX + stored.symbol, entry)
        if not remembered:
            self._remember(entries)

    def _remember(self, entries: list[tuple[Quote, dict[str, Any]]]) -> None:
        """Keep the in-memory keys and last-known quotes in step with what was just written."""
        with self._counts_lock:
            if self._fresh_keys is not None and self._last_keys is not None:
                for quote, _ in entries:
                    self._fresh_keys.add(quote.symbol)
                    self._last_keys.add(quote.symbol)
            # The map once loaded, else the puts a load in progress must not miss.
            known, loading = self._last_known, self._loading
            if known is None and loading is None:
                return
            for quote, entry in entries:
                last = quote.with_flags(from_cache=True, stale=True)
                if known is not None:
                    known[quote.symbol] = last
                    self._stored_at[quote.symbol] = float(entry["stored_at"])
                elif loading is not None:
                    loading[quote.symbol] = (last, float(entry["stored_at"]))

    def get_last_known(self, symbol: str) -> Quote | None:
        """The last quote stored for `symbol`, however old (from_cache=True, stale=True).

        From memory once `last_known_many` has loaded them (the daemon does at start), as
        `last_known_many` itself: what this process wrote since is there, another process's
        writes are not (the daemon is the one writer while it runs)."""
        queued = self._queued(symbol)
        if queued is not None:
            return queued[1].with_flags(from_cache=True, stale=True)
        with self._counts_lock:
            known = self._last_known
        if known is not None:
            return known.get(symbol)
        entry = self._read(_LAST_PREFIX + symbol, from_cache=True, stale=True)
        return None if entry is None else entry[1]

    def last_known_many(self, symbols: Iterable[str]) -> dict[str, Quote]:
        """The last-known quote of each of `symbols` that has one (as `get_last_known`), from
        memory: the first call reads them all from disk, later ones read nothing."""
        with self._counts_lock:
            known = self._last_known
            if known is None and self._loading is None:
                self._loading = {}  # from now on, puts are noted for this load
        if known is None:
            known, stored_at = {}, {}
            for key in self._keys(_LAST_PREFIX):
                entry = self._read(key, from_cache=True, stale=True)
                if entry is not None:
                    known[key[len(_LAST_PREFIX) :]] = entry[1]
                    stored_at[key[len(_LAST_PREFIX) :]] = entry[0]
            with self._queue_lock:  # queued puts are not on disk yet
                for symbol, (stored, queued) in self._queue.items():
                    known[symbol] = stored.with_flags(from_cache=True, stale=True)
                    stored_at[symbol] = float(queued["stored_at"])
            with self._counts_lock:
                # A put made during the load may or may not be in what it read: the ones
                # noted meanwhile are the newest.
                if self._last_known is None:
                    for symbol, (last, at) in (self._loading or {}).items():
                        known[symbol], stored_at[symbol] = last, at
                    self._last_known, self._stored_at = known, stored_at
                    self._loading = None
                known = self._last_known
        return {symbol: known[symbol] for symbol in symbols if symbol in known}

    def cleanup(self) -> int:
        """Delete expired fresh entries (last-known copies stay); returns how many went."""
        self._write_queue()
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
        with self._queue_lock:
            self._queue, self._queued_at_s = {}, math.inf
        with storage_errors(WHAT, self._directory):
            removed = int(self._cache.clear())
        with self._counts_lock:
            # Reloaded (empty) at next use.
            self._fresh_keys = self._last_keys = None
            self._last_known, self._stored_at = None, {}
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
            with self._queue_lock:  # queued puts are not on disk yet
                fresh.update(self._queue)
                last.update(self._queue)
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
        """Write the queued puts, then close this thread's database connection."""
        try:
            self._write_queue()
        finally:
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
                        self._stored_at.pop(key[len(_LAST_PREFIX) :], None)
                    if self._last_keys is not None:
                        self._last_keys.discard(key[len(_LAST_PREFIX) :])
            return None

    def _queued(self, symbol: str) -> tuple[float, Quote] | None:
        """(stored_at, quote as stored) of a put still queued for `symbol`, else None."""
        if not self._queue:  # the common case, without the lock
            return None
        with self._queue_lock:
            queued = self._queue.get(symbol)
        return None if queued is None else (float(queued[1]["stored_at"]), queued[0])

    def _forget_fresh(self, key: str) -> None:
        with self._counts_lock:
            if self._fresh_keys is not None:
                self._fresh_keys.discard(key[len(_QUOTE_PREFIX) :])


_CORRUPT: Final = object()
#: Queued puts are written once this many wait, or the oldest has waited this long (monotonic
#: seconds), even while fetches still hold the cache: what a kill -9 can lose is bounded (the
#: history has those quotes; the cache loses only copies).
_QUEUE_MAX: Final = 64
_QUEUE_S: Final = 0.5
#: Decoded quotes kept for reuse, one per key: two keys per symbol of the largest watchlist
#: (10,000 symbols), with room to spare.
_DECODED_MAX: Final = 24_576
