"""Node heartbeats: each daemon announces itself, `crawler status` lists who is alive.

A heartbeat is one key per node whose expiry is a few collection intervals: a node that stops
beating (stopped, killed, cut off) drops out of the list by itself. Its value says when it beat,
since when it runs and what its last collection did.

    crawler:node:NAME   {"node", "host", "pid", "started_at", "beat_at", "last_collection"}

`LocalNodes` keeps the same record in the data dir (one node; the embedded backend);
`RedisNodes` shares it (SET PX, listed by SCAN).

    >>> import tempfile
    >>> nodes = LocalNodes(Path(tempfile.mkdtemp()), "node-a", clock=lambda: 100.0)
    >>> nodes.beat({"pid": 1}, ttl_s=60)
    >>> [n["node"] for n in nodes.nodes()]
    ['node-a']
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

import diskcache

from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.store.redis_client import RedisConnection
from crawler.utils.clock import Clock

__all__ = ["LocalNodes", "NodeRegistry", "RedisNodes", "default_node_name"]

_WHAT: Final = "node heartbeats"
_PREFIX: Final = "node:"


def default_node_name(data_dir: Path) -> str:
    """host name plus a short hash of the data dir: two daemons on one host differ."""
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:6]
    return f"{socket.gethostname()}-{digest}"


class NodeRegistry(Protocol):
    """Where nodes announce themselves. `node` is this node's name."""

    node: str

    def beat(self, info: dict[str, Any], ttl_s: float) -> None:
        """Announce this node (with `info`) for the next `ttl_s` seconds."""
        ...

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes' records, by name."""
        ...

    def forget(self) -> None:
        """Withdraw this node at once (a clean stop)."""
        ...


class LocalNodes:
    """This one node's heartbeat in its data dir."""

    def __init__(self, directory: Path, node: str, clock: Clock = time.time) -> None:
        self.node = node
        self._directory = Path(directory)
        self._clock = clock
        self._cache: diskcache.Cache = open_store(self._directory, _WHAT)

    def beat(self, info: dict[str, Any], ttl_s: float) -> None:
        """Store this node's record with its own expiry time."""
        now = self._clock()
        record = {**info, "node": self.node, "beat_at": now, "until": now + ttl_s}
        with storage_errors(_WHAT, self._directory):
            self._cache.set(_PREFIX + self.node, record)

    def nodes(self) -> list[dict[str, Any]]:
        """The unexpired records."""
        now = self._clock()
        found: list[dict[str, Any]] = []
        with storage_errors(_WHAT, self._directory):
            for key in list(self._cache.iterkeys()):
                if not (isinstance(key, str) and key.startswith(_PREFIX)):
                    continue
                try:
                    raw = self._cache.get(key)
                except CorruptRecordError:
                    continue
                if isinstance(raw, dict) and float(raw.get("until", 0)) > now:
                    found.append({k: v for k, v in raw.items() if k != "until"})
        return sorted(found, key=lambda record: str(record.get("node")))

    def forget(self) -> None:
        """Delete this node's record."""
        with storage_errors(_WHAT, self._directory):
            self._cache.delete(_PREFIX + self.node)

    def close(self) -> None:
        """Close this thread's database connection."""
        self._cache.close()


class RedisNodes:
    """Heartbeats shared by the cluster (Redis expires a silent node's key).

    Each record says `reports_spend`: the node keeps its own spend record and reports it when
    Redis loses the ledger (`crawler.store.ledger.recovery`), so a recovery waits for it.
    `after_beat(live records)` runs after each beat (the ledger's and watchlist's checks).
    """

    def __init__(
        self,
        redis: RedisConnection,
        node: str,
        clock: Clock = time.time,
        after_beat: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.node = node
        self._redis = redis
        self._clock = clock
        self.after_beat = after_beat

    def beat(self, info: dict[str, Any], ttl_s: float) -> None:
        """SET crawler:node:NAME {...} PX ttl, then `after_beat` with the live nodes."""
        record = {**info, "node": self.node, "beat_at": self._clock(), "reports_spend": True}
        with self._redis.errors(_WHAT):
            self._redis.client.set(
                self._redis.key("node", self.node),
                json.dumps(record),
                px=max(1, int(ttl_s * 1000)),
            )
        if self.after_beat is not None:
            self.after_beat(self.nodes())

    def reporting(self) -> list[str]:
        """The live nodes that report their spend after a loss (what a recovery waits for)."""
        return [str(r["node"]) for r in self.nodes() if r.get("reports_spend") and r.get("node")]

    def nodes(self) -> list[dict[str, Any]]:
        """Every live node's record (one SCAN and one MGET)."""
        with self._redis.errors(_WHAT):
            keys = sorted(self._redis.client.scan_iter(self._redis.key("node", "*"), count=500))
            values = self._redis.client.mget(keys) if keys else []
        found: list[dict[str, Any]] = []
        for value in values:
            try:
                record = json.loads(value) if value is not None else None
            except ValueError:
                continue  # a heartbeat is only a hint: a broken one is no node
            if isinstance(record, dict):
                found.append(record)
        return found

    def forget(self) -> None:
        """DEL this node's key."""
        with self._redis.errors(_WHAT):
            self._redis.client.delete(self._redis.key("node", self.node))

    def close(self) -> None:
        """Nothing to close: the Redis connection belongs to the caller."""
