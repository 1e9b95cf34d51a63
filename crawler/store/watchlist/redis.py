"""The watchlist on Redis: one list for the whole cluster, with a local copy for reads.

Same contract and terms as `crawler.store.watchlist.Watchlist` (`crawler.store.watchlist.terms`;
the store contract suite runs both). One
hash, symbol -> "SEQ:asset_class", where SEQ (from a counter) keeps insertion order and is the
symbol's version; removals leave a tombstone with a SEQ of their own:

    crawler:watchlist           hash   AAPL:US -> "1:stocks"; " epoch" -> the list's epoch id
    crawler:watchlist:seq       counter
    crawler:watchlist:removed   hash   symbol -> SEQ of its removal (tombstones)
    crawler:watchlist:rebuilt   hash   at, by, symbols, removals, merged (JSON list of nodes)

An add on one node is seen by every node at its next collection (each collection reads the
hash: one round trip). Adds check for duplicates and the size limit inside one Lua script.

When Redis is unreachable, reads answer from `local` (the node's embedded watchlist, rewritten
whenever a read sees the shared list change; `crawler.store.local_copy`), so collections go
on; adds and removes fail with StoreUnavailableError rather than diverge. Beside the local
copy, each node keeps (`meta`) the version of every symbol it holds, the tombstones it has
seen and the epoch it belongs to.

Redis loses the list (FLUSHALL, a restart without persistence, eviction): the epoch field goes
with the hash. The first node to notice (at a read, an edit or its heartbeat) rebuilds the list
from its local copy and starts a new epoch; every other node, finding an epoch it does not
know, merges its own copy and tombstones in. A symbol comes back only if no node holds a
tombstone newer than its version, so a removal made before the loss, or after it and before
the rebuild, is not undone by a node whose copy was older. The rebuild is logged and shown in
`crawler status`. A node that never was in a cluster (no epoch remembered) only seeds a
cluster that has no list yet, as before: joining a cluster adopts the cluster's list.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

import diskcache

from crawler.logging import get_logger
from crawler.normalizer.schemas import AssetClass
from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.store.local_copy import LocalCopy
from crawler.store.redis_client import RedisConnection, text_map
from crawler.store.watchlist.embedded import Watchlist
from crawler.store.watchlist.scripts import ADD_LUA, MERGE_LUA, REMOVE_LUA
from crawler.store.watchlist.terms import (
    MAX_SYMBOLS,
    WHAT,
    HasCanonical,
    WatchlistTerms,
    canonical_symbol,
)
from crawler.utils.exceptions import StorageError

__all__ = ["EPOCH_FIELD", "RedisWatchlist"]

log = get_logger("crawler.watchlist")

#: The hash field holding the list's epoch: canonical symbols never hold a space.
EPOCH_FIELD: Final = " epoch"
#: This node's records (meta): the version of each symbol it holds, and its tombstones.
_VERSION: Final = "v:"
_TOMBSTONE: Final = "t:"


class RedisWatchlist(WatchlistTerms):
    """The cluster's tracked symbols; reads fall back to `local` when Redis is away.

    `meta_dir` holds this node's versions, tombstones and epoch (default: beside `local`).
    """

    def __init__(
        self,
        redis: RedisConnection,
        local: Watchlist,
        max_symbols: int = MAX_SYMBOLS,
        meta_dir: Path | None = None,
        node: str = "",
    ) -> None:
        self._redis = redis
        self._copy = LocalCopy(redis, local, WHAT)
        self.local = local
        super().__init__(max_symbols)
        self._node = node or f"pid-{id(self):x}"
        self._hash = redis.key("watchlist")
        self._seq = redis.key("watchlist", "seq")
        self._removed = redis.key("watchlist", "removed")
        self._rebuilt = redis.key("watchlist", "rebuilt")
        self._add = redis.script("watchlist_add", ADD_LUA)
        self._remove = redis.script("watchlist_remove", REMOVE_LUA)
        self._merge = redis.script("watchlist_merge", MERGE_LUA)
        self._meta_dir = meta_dir or local.directory.with_name(local.directory.name + "-meta")
        self._meta: diskcache.Cache = open_store(self._meta_dir, "watchlist versions")
        self._lock = threading.Lock()
        self._mirrored: list[tuple[str, AssetClass]] | None = None
        self._mirrored_raw: dict[str, str] | None = None
        self._epoch: str | None = None  # the epoch this node belongs to (meta's, cached)
        # Our own edits since the last mirror: symbol -> (version, asset, or None if removed).
        self._edits: dict[str, tuple[int, AssetClass | None]] = {}

    def add(self, symbol: HasCanonical | str, asset_class: AssetClass) -> bool:
        """Append `symbol` for the whole cluster; False if already present.

        Raises WatchlistFullError when the list is full, StoreUnavailableError when Redis is
        away.
        """
        name = canonical_symbol(symbol)
        asset = AssetClass(asset_class)
        keys = [self._hash, self._seq, self._removed]
        added = -2
        for _ in range(3):
            with self._redis.errors(WHAT):
                added = int(self._add(keys=keys, args=[name, asset.value, self._max_symbols]))
            if added != -2:
                break
            self._sync()
        if added < 0:
            raise self._full(name)
        if added > 0:  # the copy keeps it at once: a loss before the next read keeps it too
            self._keep(name, added, asset)
        return added > 0

    def remove(self, symbol: HasCanonical | str) -> bool:
        """Drop `symbol` for the whole cluster (a tombstone remembers it); False if it was
        not there."""
        name = canonical_symbol(symbol)
        removed = -2
        for _ in range(3):
            with self._redis.errors(WHAT):
                removed = int(
                    self._remove(keys=[self._hash, self._seq, self._removed], args=[name])
                )
            if removed != -2:
                break
            self._sync()
        if removed > 0:  # the copy and its tombstone follow at once
            self._keep(name, removed, None)
        return removed > 0

    def items(self) -> list[tuple[str, AssetClass]]:
        """(symbol, asset class) pairs in insertion order: Redis', or the local copy's."""
        return self._copy.read(self._shared_items, lambda local: local.items())

    def _shared_items(self) -> list[tuple[str, AssetClass]]:
        """Redis' list, after joining its epoch; the local copy follows it when it changed."""
        raw = self._read()
        epoch = raw.pop(EPOCH_FIELD, None)
        if self._epoch is None:
            known = self._meta_get("epoch")
            self._epoch = known if isinstance(known, str) else ""
        if epoch is None or epoch != self._epoch:
            self._sync()
            raw = self._read()
            raw.pop(EPOCH_FIELD, None)
        items = _decode(raw, self._hash)
        if raw != self._mirrored_raw:
            self._mirror(items, raw)
        return items

    def _holds(self, name: str) -> bool:
        return name in self.symbols()

    def __len__(self) -> int:
        return len(self.items())

    def observe(self) -> None:
        """After a heartbeat: notice a lost list and rebuild it (never raises). One small
        read while the list is ours (not the whole hash every beat)."""
        try:
            with self._redis.errors(WHAT):
                epoch = self._redis.client.hget(self._hash, EPOCH_FIELD)
            if epoch is None or self._epoch is None or str(epoch) != self._epoch:
                self.items()
        except StorageError:
            pass  # Redis away: the heartbeat says so already
        except Exception:  # a heartbeat hook must never stop the beat
            log.exception("watchlist: the heartbeat's check failed")

    def rebuild_status(self) -> dict[str, Any] | None:
        """The last rebuild after Redis lost the list ({at, by, symbols, removals, merged}),
        or None. Raises StoreUnavailableError when Redis is away."""
        with self._redis.errors(WHAT):
            raw = text_map(self._redis.client.hgetall(self._rebuilt))
        if not raw:
            return None
        try:
            merged = json.loads(raw.get("merged", "[]"))
        except ValueError:
            merged = []
        return {
            "at": raw.get("at"),
            "by": raw.get("by"),
            "symbols": int(raw.get("symbols", 0) or 0),
            "removals": int(raw.get("removals", 0) or 0),
            "merged": merged if isinstance(merged, list) else [],
        }

    def close(self) -> None:
        """Close the local copy's connection (the Redis connection belongs to the caller)."""
        self._copy.close()
        self._meta.close()

    # -- internals ------------------------------------------------------------------------

    def _read(self) -> dict[str, str]:
        with self._redis.errors(WHAT):
            return text_map(self._redis.client.hgetall(self._hash))

    def _sync(self) -> None:
        """Bring this node into the list's epoch: rebuild a lost list from our copy, merge our
        copy into a list another node rebuilt, or seed/adopt as a node new to the cluster."""
        with self._lock:
            known = self._meta_get("epoch")
            versions = self._meta_prefixed(_VERSION)
            tombstones = self._meta_prefixed(_TOMBSTONE)
            held = {name: (0, asset) for name, asset in self.local.items()}
            for name, version in versions.items():
                if name in held:
                    held[name] = (version, held[name][1])
            for name, (version, edited) in self._edits.items():
                if edited is None:
                    held.pop(name, None)
                    tombstones[name] = max(version, tombstones.get(name, -1))
                else:
                    held[name] = (version, edited)
            mode = "rebuild" if known else "seed"
            entries = [[name, version, asset.value] for name, (version, asset) in held.items()]
            dead = [[name, int(version)] for name, version in tombstones.items()]
            with self._redis.errors(WHAT):
                reply = self._merge(
                    keys=[self._hash, self._seq, self._removed, self._rebuilt],
                    args=[uuid.uuid4().hex, self._node,
                          time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), mode,
                          json.dumps(entries), json.dumps(dead), self._max_symbols],
                )  # fmt: skip
            epoch, created, added, removed = str(reply[0]), *(int(x) for x in reply[1:])
            if epoch == known:
                return
            if mode == "rebuild":
                log.warning(
                    "watchlist: Redis lost the shared list; merged this node's copy into it"
                    if not created
                    else "watchlist: Redis lost the shared list; rebuilt it from this node's copy",
                    added=added,
                    removed_by_tombstones=removed,
                    tombstones=len(dead),
                    epoch=epoch,
                )
            elif created and added:
                log.info("watchlist: seeded the shared list", symbols=added)
            self._meta_set("epoch", epoch)
            self._epoch = epoch
            self._mirrored_raw = None  # mirror whatever the list is now

    def _mirror(self, items: list[tuple[str, AssetClass]], raw: dict[str, str]) -> None:
        """Make the local copy equal to `items`, and keep their versions and the cluster's
        tombstones (only when the list changed: a few writes)."""
        try:
            with self._redis.errors(WHAT):
                dead = text_map(self._redis.client.hgetall(self._removed))
            current = self.local.items()
            wanted = {name for name, _ in items}
            for name, _ in current:
                if name not in wanted:
                    self.local.remove(name)
            have = {name for name, _ in current}
            for name, asset in items:
                if name not in have:
                    self.local.add(name, asset)
            before = {
                name: value.partition(":")[0] for name, value in (self._mirrored_raw or {}).items()
            }
            with storage_errors("watchlist versions", self._meta_dir), self._meta.transact():
                if self._mirrored_raw is None:  # first look since start: rewrite them all
                    before = {}
                    for key in list(self._meta.iterkeys()):
                        if isinstance(key, str) and key.startswith(_VERSION):
                            self._meta.delete(key)
                for name, value in raw.items():
                    version = int(value.partition(":")[0])
                    if before.get(name) != str(version):
                        self._meta.set(_VERSION + name, version)
                        if int(self._meta.get(_TOMBSTONE + name, -1)) < version:
                            self._meta.delete(_TOMBSTONE + name)  # re-added since
                for name in before.keys() - raw.keys():
                    self._meta.delete(_VERSION + name)
                for name, removed_at in dead.items():
                    if int(removed_at) > int(self._meta.get(_TOMBSTONE + name, -1)):
                        self._meta.set(_TOMBSTONE + name, int(removed_at))
            self._mirrored = items
            self._mirrored_raw = dict(raw)
            with self._lock:
                self._edits.clear()  # the copy holds them now
        except (StorageError, ValueError) as exc:  # the shared list is the truth
            log.warning("watchlist: could not update the local copy", error=str(exc))

    def _meta_get(self, key: str) -> Any:
        try:
            with storage_errors("watchlist versions", self._meta_dir):
                return self._meta.get(key)
        except (CorruptRecordError, StorageError):
            return None

    def _meta_prefixed(self, prefix: str) -> dict[str, int]:
        """symbol -> version of every `prefix` record (versions or tombstones)."""
        out: dict[str, int] = {}
        try:
            with storage_errors("watchlist versions", self._meta_dir):
                for key in list(self._meta.iterkeys()):
                    if isinstance(key, str) and key.startswith(prefix):
                        value = self._meta.get(key)
                        if isinstance(value, int):
                            out[key[len(prefix) :]] = value
        except (CorruptRecordError, StorageError) as exc:
            log.warning("watchlist: could not read this node's versions", error=str(exc))
        return out

    def _keep(self, name: str, version: int, asset: AssetClass | None) -> None:
        """Our own edit, added (`asset`) or removed (None) at `version`: held in memory until
        the next read mirrors the list (a heartbeat's at the latest), so a loss before that
        read still keeps it (bulk adds stay one round trip each, no disk write)."""
        with self._lock:
            self._edits[name] = (version, asset)

    def _meta_set(self, key: str, value: Any) -> None:
        with storage_errors("watchlist versions", self._meta_dir):
            self._meta.set(key, value)


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
