"""Per-symbol fetch leases: who may fetch a symbol upstream for the next interval.

A node that wants to fetch AAPL:US from a source first takes the lease; a node that finds it
held elsewhere waits briefly for the holder's quote in the shared cache instead of paying for
the same quote again. No leader: a lease is one key with an expiry, so a node killed with -9
holds its symbols only until its leases expire, and the next collection anywhere takes them.

    crawler:lease:AAPL:US   "NODE" while NODE fetches, "NODE|done" after (Redis: SET NX PX
                            interval, then SET XX KEEPTTL)

The holder marks its lease done once the quote is in the shared cache: a waiter then stops
waiting, and a forced (`--fresh`) fetch elsewhere knows nobody is fetching the symbol right now.
Taking a lease you already hold renews it (each node coalesces its own fetches in memory).

Two backends with one contract (`tests/test_store_contract.py`):
`LocalLeases` (diskcache, shared by the processes of one data dir; expiry by the injected clock)
and `RedisLeases` (one cluster).

    >>> import tempfile
    >>> leases = LocalLeases(Path(tempfile.mkdtemp()), "node-a", clock=lambda: 0.0)
    >>> leases.acquire("AAPL:US", ttl_s=60), leases.holder("AAPL:US")
    (True, 'node-a')
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final, Protocol

import diskcache

from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.store.redis_client import RedisConnection
from crawler.utils.clock import Clock

__all__ = ["FetchLeases", "LocalLeases", "RedisLeases"]

_WHAT: Final = "fetch leases"
_PREFIX: Final = "lease:"

_DONE: Final = "|done"

# KEYS: lease. ARGV: holder, ttl_ms. Takes a free lease or renews our own.
_ACQUIRE_LUA: Final = """
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] and v ~= ARGV[1] .. '|done' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease. ARGV: holder. Deletes the lease only if we still hold it.
_RELEASE_LUA: Final = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or v == ARGV[1] .. '|done' then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease. ARGV: holder. Marks our lease done, keeping its expiry.
_DONE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. '|done', 'KEEPTTL')
  return 1
end
return 0
"""


class FetchLeases(Protocol):
    """What the hybrid fetcher needs from a lease store. `node` names this holder."""

    node: str

    def acquire(self, symbol: str, ttl_s: float) -> bool:
        """Take (or renew our own) `symbol`'s lease for `ttl_s` s; False if another holds it."""
        ...

    def mark_done(self, symbol: str) -> bool:
        """Say our fetch is over (the quote is in the cache); the lease keeps its expiry."""
        ...

    def in_flight(self, symbol: str) -> bool:
        """Whether someone holds the lease and has not marked it done."""
        ...

    def release(self, symbol: str) -> bool:
        """Give the lease back early, only if we hold it; True if it was ours."""
        ...

    def holder(self, symbol: str) -> str | None:
        """Who holds `symbol`'s lease now, or None."""
        ...

    def close(self) -> None:
        """Release connections (not leases: they expire)."""
        ...


class LocalLeases:
    """Leases among the processes sharing one data dir (the embedded backend)."""

    def __init__(self, directory: Path, node: str, clock: Clock = time.time) -> None:
        self.node = node
        self._directory = Path(directory)
        self._clock = clock
        self._cache: diskcache.Cache = open_store(self._directory, _WHAT)

    def acquire(self, symbol: str, ttl_s: float) -> bool:
        """Take the lease unless an unexpired one belongs to someone else."""
        now = self._clock()
        with storage_errors(_WHAT, self._directory), self._cache.transact():
            current = self._read(symbol)
            if current is not None and current[1] > now and current[0] != self.node:
                return False
            self._cache.set(_PREFIX + symbol, {"holder": self.node, "until": now + ttl_s})
        return True

    def mark_done(self, symbol: str) -> bool:
        """Mark our unexpired lease done."""
        with storage_errors(_WHAT, self._directory), self._cache.transact():
            current = self._read(symbol)
            if current is None or current[0] != self.node or current[1] <= self._clock():
                return False
            self._cache.set(
                _PREFIX + symbol, {"holder": self.node, "until": current[1], "done": True}
            )
        return True

    def in_flight(self, symbol: str) -> bool:
        """An unexpired lease not marked done."""
        with storage_errors(_WHAT, self._directory):
            raw = self._cache.get(_PREFIX + symbol)
            current = self._read(symbol)
        done = isinstance(raw, dict) and bool(raw.get("done"))
        return current is not None and current[1] > self._clock() and not done

    def release(self, symbol: str) -> bool:
        """Delete the lease if it is ours."""
        with storage_errors(_WHAT, self._directory), self._cache.transact():
            current = self._read(symbol)
            if current is None or current[0] != self.node:
                return False
            return bool(self._cache.delete(_PREFIX + symbol))

    def holder(self, symbol: str) -> str | None:
        """The unexpired holder, or None."""
        with storage_errors(_WHAT, self._directory):
            current = self._read(symbol)
        return current[0] if current is not None and current[1] > self._clock() else None

    def close(self) -> None:
        """Close this thread's database connection."""
        self._cache.close()

    def _read(self, symbol: str) -> tuple[str, float] | None:
        try:
            raw = self._cache.get(_PREFIX + symbol)
        except CorruptRecordError:
            return None  # a lease is only ever a hint: a broken one is no lease
        if not isinstance(raw, dict):
            return None
        holder, until = raw.get("holder"), raw.get("until")
        if not isinstance(holder, str) or not isinstance(until, int | float):
            return None
        return holder, float(until)


class RedisLeases:
    """Leases across the cluster: `SET crawler:lease:SYMBOL node NX PX ttl`."""

    def __init__(self, redis: RedisConnection, node: str) -> None:
        self.node = node
        self._redis = redis
        self._acquire = redis.script("lease_acquire", _ACQUIRE_LUA)
        self._release = redis.script("lease_release", _RELEASE_LUA)
        self._done = redis.script("lease_done", _DONE_LUA)

    def acquire(self, symbol: str, ttl_s: float) -> bool:
        """SET NX PX in effect (ours may be renewed): True only for the one holder."""
        with self._redis.errors(_WHAT):
            taken = self._acquire(
                keys=[self._redis.key("lease", symbol)], args=[self.node, max(1, int(ttl_s * 1000))]
            )
        return bool(taken)

    def mark_done(self, symbol: str) -> bool:
        """SET NODE|done XX KEEPTTL, only if the lease is still ours."""
        with self._redis.errors(_WHAT):
            return bool(self._done(keys=[self._redis.key("lease", symbol)], args=[self.node]))

    def in_flight(self, symbol: str) -> bool:
        """A lease exists and is not marked done."""
        with self._redis.errors(_WHAT):
            value = self._redis.client.get(self._redis.key("lease", symbol))
        return value is not None and not str(value).endswith(_DONE)

    def release(self, symbol: str) -> bool:
        """Delete the lease only if it is still ours (one Lua script: check and delete)."""
        with self._redis.errors(_WHAT):
            return bool(self._release(keys=[self._redis.key("lease", symbol)], args=[self.node]))

    def holder(self, symbol: str) -> str | None:
        """The node holding the lease, or None."""
        with self._redis.errors(_WHAT):
            value = self._redis.client.get(self._redis.key("lease", symbol))
        return None if value is None else str(value).removesuffix(_DONE)

    def close(self) -> None:
        """Nothing to close: the Redis connection belongs to the caller."""
