"""One store interface, two backends: what the daemon keeps, and where.

    stores = open_stores(settings)     # embedded unless redis_url / REDIS_URL is set
    stores.ledger.reserve(); stores.cache.get("AAPL:US"); stores.leases.acquire(...)
    stores.close()

| store      | embedded (default, nothing to install) | redis (`redis_url`)                  |
|------------|----------------------------------------|--------------------------------------|
| ledger     | `BudgetLedger` (diskcache)             | `RedisLedger` (Lua on a day key)     |
| cache      | `QuoteCache` (diskcache)               | `RedisQuoteCache` (+ local copy)     |
| watchlist  | `Watchlist` (diskcache)                | `RedisWatchlist` (+ local copy)      |
| leases     | `LocalLeases` (diskcache)              | `RedisLeases` (SET NX PX)            |
| nodes      | `LocalNodes` (diskcache)               | `RedisNodes` (heartbeat keys)        |
| quote times| `QuoteTimes` (closed-market memory)    | `RedisQuoteTimes` (+ local copy)     |
| breakers   | `LocalBreakerBoard` (diskcache)        | `RedisBreakerBoard` (SET PX)         |

History always stays in the node's own SQLite (`crawler.store.history`). The protocols below
are what the rest of crawler may call; `tests/test_store_contract.py` runs one suite against
both backends, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from crawler.logging import get_logger
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.store.breaker_board import BreakerBoard, LocalBreakerBoard, RedisBreakerBoard
from crawler.store.datadir import CACHE_SUBDIR, LEDGER_SUBDIR, WATCHLIST_SUBDIR, ensure_data_dir
from crawler.store.leases import FetchLeases, LocalLeases, RedisLeases
from crawler.store.ledger import Reservation
from crawler.store.nodes import LocalNodes, NodeRegistry, RedisNodes, default_node_name
from crawler.store.quote_times import QUOTE_TIMES_SUBDIR, QuoteTimes, SymbolTimes
from crawler.store.watchlist import HasCanonical
from crawler.utils.exceptions import StorageError

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.store.redis_client import RedisConnection

__all__ = [
    "EMBEDDED",
    "REDIS",
    "CacheStore",
    "LedgerStore",
    "QuoteTimesStore",
    "Stores",
    "WatchlistStore",
    "default_node_name",
    "open_stores",
]

log = get_logger("crawler.store")

EMBEDDED: Final = "embedded"
REDIS: Final = "redis"
LEASES_SUBDIR: Final = "leases"
NODES_SUBDIR: Final = "nodes"
BREAKERS_SUBDIR: Final = "breakers"
#: The Redis backend's local copies (read when Redis is away) and local ledger record.
LOCAL_SUBDIR: Final = "local"


class LedgerStore(Protocol):
    """The daily budget (`crawler.store.ledger.BudgetLedger`'s public surface)."""

    def day(self) -> str: ...
    def reserve(self, label: str | None = None) -> Reservation: ...
    def settle(self, reservation: Reservation) -> bool: ...
    def release(self, reservation: Reservation) -> bool: ...
    def can_reserve(self) -> bool: ...
    def set_limits(self, total_budget_usd: Decimal, cost_per_request_usd: Decimal) -> None: ...
    def record_rollover(self) -> None: ...
    @property
    def cost_per_request_usd(self) -> Decimal: ...
    @property
    def requests_allowed(self) -> int: ...
    def statistics(self) -> dict[str, Any]: ...
    def breakdown(self) -> dict[str, dict[str, int]]: ...
    def days(self) -> list[str]: ...
    def close(self) -> None: ...


class CacheStore(Protocol):
    """Fresh and last-known quotes (`crawler.store.cache.QuoteCache`'s public surface)."""

    @property
    def ttl_s(self) -> float: ...
    def get(self, symbol: str) -> Quote | None: ...
    def put(self, quote: Quote) -> None: ...
    def hold(self) -> None: ...
    def unhold(self) -> None: ...
    def get_last_known(self, symbol: str) -> Quote | None: ...
    def cleanup(self) -> int: ...
    def clear(self) -> int: ...
    def statistics(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class WatchlistStore(Protocol):
    """Tracked symbols (`crawler.store.watchlist.Watchlist`'s public surface)."""

    def add(self, symbol: HasCanonical | str, asset_class: AssetClass) -> bool: ...
    def remove(self, symbol: HasCanonical | str) -> bool: ...
    def items(self) -> list[tuple[str, AssetClass]]: ...
    def symbols(self) -> list[str]: ...
    def __contains__(self, symbol: object) -> bool: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class QuoteTimesStore(Protocol):
    """The closed-market memory (`crawler.store.quote_times.QuoteTimes`' public surface)."""

    def snapshot(self) -> dict[str, SymbolTimes]: ...
    def record(self, quoted: Mapping[str, datetime], paid: Iterable[str] = ()) -> None: ...
    def forget(self, symbol: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class Stores:
    """Everything one node keeps, from one backend. Close it once, when the node stops."""

    backend: str
    node: str
    ledger: LedgerStore
    cache: CacheStore
    watchlist: WatchlistStore
    leases: FetchLeases
    nodes: NodeRegistry
    quote_times: QuoteTimesStore
    breakers: BreakerBoard
    redis: RedisConnection | None = None
    _closers: list[Any] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        """Whether other nodes share these stores (leases and waits make sense)."""
        return self.backend == REDIS

    def describe(self) -> dict[str, Any]:
        """For status: backend, node, redis URL (password masked), reachable now, how Redis
        persists (with a warning when it could lose the ledger) and the ledger's recovery
        state after a loss (`RedisLedger.recovery_status()`)."""
        out: dict[str, Any] = {"backend": self.backend, "node": self.node}
        if self.redis is not None:
            out["redis_url"] = self.redis.shown_url
            out["reachable"] = self.redis.ping()
            out["persistence"] = self.redis.persistence()
            rebuilt = getattr(self.watchlist, "rebuild_status", None)
            if rebuilt is not None:
                try:
                    out["watchlist_rebuilt"] = rebuilt()
                except StorageError as exc:
                    out["watchlist_rebuilt"] = {"error": exc.message}
            recovery = getattr(self.ledger, "recovery_status", None)
            if recovery is not None:
                try:
                    out["ledger"] = recovery()
                except StorageError as exc:
                    out["ledger"] = {"state": "unknown", "error": exc.message}
        return out

    def close(self) -> None:
        """Close every store this object opened (safe to call twice)."""
        closers, self._closers = self._closers, []
        for close in closers:
            try:
                close()
            except Exception:  # one store failing to close must not keep the others open
                log.exception("closing a store failed")


def open_stores(settings: Settings) -> Stores:
    """The stores `settings` ask for: Redis when `redis_url` is set, else embedded."""
    from crawler.store.cache import QuoteCache
    from crawler.store.ledger import BudgetLedger
    from crawler.store.watchlist import Watchlist

    data_dir = ensure_data_dir(Path(settings.data_dir))
    node = settings.node_name or default_node_name(data_dir)
    budget = Decimal(str(settings.total_budget))
    cost = Decimal(str(settings.cost_per_request))
    ttl_s = float(settings.cache_ttl_seconds)
    if settings.redis_url is None:
        ledger = BudgetLedger(
            data_dir / LEDGER_SUBDIR, budget, cost, timezone=settings.budget_timezone
        )
        cache = QuoteCache(data_dir / CACHE_SUBDIR, ttl_s=ttl_s)
        watchlist = Watchlist(data_dir / WATCHLIST_SUBDIR)
        leases = LocalLeases(data_dir / LEASES_SUBDIR, node)
        nodes = LocalNodes(data_dir / NODES_SUBDIR, node)
        times = QuoteTimes(data_dir / QUOTE_TIMES_SUBDIR)
        board = LocalBreakerBoard(data_dir / BREAKERS_SUBDIR, node)
        stores = Stores(EMBEDDED, node, ledger, cache, watchlist, leases, nodes, times, board)
        stores._closers = [
            ledger.close, cache.close, watchlist.close, leases.close, nodes.close, times.close,
            board.close,
        ]  # fmt: skip
        return stores

    from crawler.store.cache.redis import RedisQuoteCache
    from crawler.store.ledger.redis import RedisLedger
    from crawler.store.quote_times.redis import RedisQuoteTimes
    from crawler.store.redis_client import RedisConnection
    from crawler.store.watchlist.redis import RedisWatchlist

    redis = RedisConnection(
        settings.redis_url.get_secret_value(), max_connections=settings.max_workers * 2 + 8
    )
    local = data_dir / LOCAL_SUBDIR
    r_nodes = RedisNodes(redis, node)
    r_ledger = RedisLedger(
        redis, local / LEDGER_SUBDIR, budget, cost, timezone=settings.budget_timezone,
        node=node, live_nodes=r_nodes.reporting,
    )  # fmt: skip
    r_cache = RedisQuoteCache(redis, ttl_s, QuoteCache(local / CACHE_SUBDIR, ttl_s=ttl_s))
    r_watchlist = RedisWatchlist(
        redis, Watchlist(data_dir / WATCHLIST_SUBDIR), meta_dir=local / "watchlist-meta",
        node=node,
    )  # fmt: skip
    r_times = RedisQuoteTimes(redis, QuoteTimes(data_dir / QUOTE_TIMES_SUBDIR))
    stores = Stores(
        REDIS,
        node,
        r_ledger,
        r_cache,
        r_watchlist,
        RedisLeases(redis, node),
        r_nodes,
        r_times,
        RedisBreakerBoard(redis, node),
        redis=redis,
    )

    def after_beat(live: list[dict[str, Any]]) -> None:
        r_ledger.observe(live)
        r_watchlist.observe()

    r_nodes.after_beat = after_beat
    stores._closers = [
        r_ledger.close, r_cache.close, r_watchlist.close, r_times.close, redis.close
    ]  # fmt: skip
    return stores
