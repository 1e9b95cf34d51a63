"""The watchlist on Redis: one list for the whole cluster, with a local copy for reads.

Same contract as `crawler.store.watchlist.Watchlist` (the store contract suite runs both). One
hash, symbol -> "SEQ:asset_class", where SEQ (from a counter) keeps insertion order:

    crawler:watchlist       hash   AAPL:US -> "1:stocks"
    crawler:watchlist:seq   counter

An add on one node is seen by every node at its next collection (each collection reads the
hash: one round trip). Adds check for duplicates and the size limit inside one Lua script.

When Redis is unreachable, reads answer from `local` (the node's embedded watchlist, rewritten
whenever a read sees the shared list change), so collections go on; adds and removes fail with
StoreUnavailableError rather than diverge. A cluster whose hash does not exist yet is seeded
from the first node's local watchlist, so moving from one node to Redis keeps the symbols.
"""

from __future__ import annotations

from typing import Final

from crawler.logging import get_logger
from crawler.normalizer.schemas import AssetClass
from crawler.store.redis_client import RedisConnection, text_map
from crawler.store.watchlist import MAX_SYMBOLS, HasCanonical, Watchlist, canonical_symbol
from crawler.utils.exceptions import StorageError, WatchlistFullError

__all__ = ["RedisWatchlist"]

log = get_logger("crawler.watchlist")

_WHAT: Final = "watchlist"

# KEYS: hash, seq. ARGV: symbol, asset, max. Returns 1 added, 0 present, -1 full.
_ADD_LUA: Final = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], seq .. ':' .. ARGV[2])
return 1
"""

# KEYS: hash, seq. ARGV: symbol, asset pairs. Seeds only a cluster that has no watchlist yet.
_SEED_LUA: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 1, #ARGV, 2 do
  local seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], ARGV[i], seq .. ':' .. ARGV[i + 1])
end
return 1
"""


class RedisWatchlist:
    """The cluster's tracked symbols; reads fall back to `local` when Redis is away."""

    def __init__(
        self, redis: RedisConnection, local: Watchlist, max_symbols: int = MAX_SYMBOLS
    ) -> None:
        self._redis = redis
        self.local = local
        self._max_symbols = max_symbols
        self._hash = redis.key("watchlist")
        self._seq = redis.key("watchlist", "seq")
        self._add = redis.script("watchlist_add", _ADD_LUA)
        self._seed = redis.script("watchlist_seed", _SEED_LUA)
        self._mirrored: list[tuple[str, AssetClass]] | None = None
        self._seeded = False

    def add(self, symbol: HasCanonical | str, asset_class: AssetClass) -> bool:
        """Append `symbol` for the whole cluster; False if already present.

        Raises WatchlistFullError when the list is full, StoreUnavailableError when Redis is
        away.
        """
        name = canonical_symbol(symbol)
        asset = AssetClass(asset_class)
        self._seed_once()
        with self._redis.errors(_WHAT):
            added = int(
                self._add(
                    keys=[self._hash, self._seq], args=[name, asset.value, self._max_symbols]
                )
            )
        if added < 0:
            raise WatchlistFullError(
                f"watchlist is full ({self._max_symbols:,} symbols); remove some before adding "
                f"{name}"
            )
        return added == 1

    def remove(self, symbol: HasCanonical | str) -> bool:
        """Drop `symbol` for the whole cluster; False if it was not there."""
        name = canonical_symbol(symbol)
        self._seed_once()
        with self._redis.errors(_WHAT):
            return bool(self._redis.client.hdel(self._hash, name))

    def items(self) -> list[tuple[str, AssetClass]]:
        """(symbol, asset class) pairs in insertion order: Redis', or the local copy's."""
        try:
            self._seed_once()
            with self._redis.errors(_WHAT):
                raw = text_map(self._redis.client.hgetall(self._hash))
        except StorageError as exc:
            log.warning("watchlist: using the local copy", error=exc.message)
            return self.local.items()
        items = _decode(raw, self._hash)
        if items != self._mirrored:
            self._mirror(items)
        return items

    def symbols(self) -> list[str]:
        """The symbols in insertion order."""
        return [name for name, _ in self.items()]

    def __contains__(self, symbol: object) -> bool:
        if not isinstance(symbol, str):
            symbol = getattr(symbol, "canonical", None)
            if not isinstance(symbol, str):
                return False
        return symbol.strip() in self.symbols()

    def __len__(self) -> int:
        return len(self.items())

    def close(self) -> None:
        """Close the local copy's connection (the Redis connection belongs to the caller)."""
        self.local.close()

    # -- internals ------------------------------------------------------------------------

    def _seed_once(self) -> None:
        if self._seeded:
            return
        pairs: list[str] = []
        for name, asset in self.local.items():
            pairs += [name, asset.value]
        with self._redis.errors(_WHAT):
            if pairs and int(self._seed(keys=[self._hash, self._seq], args=pairs)):
                log.info("watchlist: seeded the shared list", symbols=len(pairs) // 2)
        self._seeded = True

    def _mirror(self, items: list[tuple[str, AssetClass]]) -> None:
        """Make the local copy equal to `items` (only when they differ: a few writes)."""
        try:
            current = self.local.items()
            wanted = {name for name, _ in items}
            for name, _ in current:
                if name not in wanted:
                    self.local.remove(name)
            have = {name for name, _ in current}
            for name, asset in items:
                if name not in have:
                    self.local.add(name, asset)
            self._mirrored = items
        except StorageError as exc:  # the copy is a convenience; the shared list is the truth
            log.warning("watchlist: could not update the local copy", error=exc.message)


def _decode(raw: dict[str, str], key: str) -> list[tuple[str, AssetClass]]:
    entries: list[tuple[int, str, AssetClass]] = []
    try:
        for name, value in raw.items():
            seq, _, asset = value.partition(":")
            entries.append((int(seq), name, AssetClass(asset)))
    except ValueError as exc:
        # Unlike the cache, silently dropping entries would lose the user's data.
        raise StorageError(
            f"watchlist: Redis key {key} holds an entry that is not SEQ:asset_class ({exc}); "
            "fix or delete that field"
        ) from exc
    entries.sort()
    return [(name, asset) for _, name, asset in entries]
