"""Cluster leases: nodes sharing a cache fetch each symbol once per interval. A node takes the
symbol's fetch lease before asking upstream; a node that finds the lease taken waits briefly
for the holder's quote in the shared cache instead of paying for it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from crawler.logging import get_logger
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol
from crawler.store.backend import CacheStore
from crawler.store.leases import FetchLeases
from crawler.utils.exceptions import StorageError, TransientSourceError

__all__ = ["LEASE_POLL_S", "LEASE_WAIT_S", "ClusterLeases"]

log = get_logger("crawler.hybrid")

#: How long a node waits for a quote whose fetch lease another node holds, and how often it
#: looks in the shared cache meanwhile.
LEASE_WAIT_S = 3.0
LEASE_POLL_S = 0.05

T = TypeVar("T")


class ClusterLeases:
    """One hybrid's use of the cluster's fetch leases (`leases` None: a single node, where
    coalescing in memory is enough and every call goes straight upstream)."""

    def __init__(
        self,
        leases: FetchLeases | None,
        cache: CacheStore,
        *,
        ttl_s: float,
        wait_s: float = LEASE_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        count_stale: Callable[[], None] = lambda: None,
    ) -> None:
        self.leases = leases
        self.cache = cache
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self._sleep = sleep
        self._count_stale = count_stale
        self._lock = threading.Lock()
        # Symbols of this node's batches whose lease it holds until they settle.
        self._batch_leases: set[str] = set()
        self._waited = 0
        self._lost = 0

    def spread(self, items: list[T]) -> list[T]:
        """Nodes sharing a watchlist start their collections at different places in it (by
        node name), so they fetch different symbols at first instead of queueing on one
        lease after another; each then finds the others' quotes in the shared cache."""
        if self.leases is None or len(items) < 2:
            return items
        digest = hashlib.sha256(self.leases.node.encode()).digest()
        start = int.from_bytes(digest[:4], "big") % len(items)
        return items[start:] + items[:start]

    def for_batch(self, key: str) -> bool:
        """Whether this node may put `key` in a batch: no cluster, Redis away (as in `fetch`:
        only free sources run then), or its fetch lease taken here (until `settled`)."""
        if self.leases is None:
            return True
        try:
            mine = self.leases.acquire(key, self.ttl_s)
        except StorageError as exc:
            log.debug("lease not checked", symbol=key, error=exc.message)
            return True
        if mine:
            with self._lock:
                self._batch_leases.add(key)
        return mine

    def settled(self, key: str, outcome: Quote | BaseException) -> None:
        """A batch symbol is settled: its lease (if this node holds it) is marked done with a
        fresh quote, given back otherwise."""
        with self._lock:
            leased = key in self._batch_leases
            self._batch_leases.discard(key)
        if leased:
            self._lease_over(key, fetched=isinstance(outcome, Quote) and not outcome.stale)

    def fetch(
        self, sym: Symbol, upstream: Callable[[], Quote], force_fresh: bool, once: bool = False
    ) -> Quote:
        """`upstream()`, unless another node holds the symbol's lease: then wait briefly for
        its quote in the shared cache (one paid fetch per symbol per interval)."""
        if self.leases is None:
            return upstream()
        key = sym.canonical
        asked_at = time.time()
        try:
            mine = self.leases.acquire(key, self.ttl_s)
        except StorageError as exc:
            # Redis is away: the budget cannot be checked either, so only free sources run.
            log.debug("lease not checked", symbol=key, error=exc.message)
            return upstream()
        if not mine:
            waited = self._wait_for_other_node(sym, asked_at, force_fresh, once)
            if waited is not None:
                return waited
            # Forced, and nobody is fetching it now (the lease only marks this interval's
            # fetch as done): fetch it ourselves. The ledger still guards the money.
        try:
            quote = upstream()
        except BaseException:
            self._lease_over(key, fetched=False)
            raise
        self._lease_over(key, fetched=not quote.stale)
        return quote

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            waited, lost = self._waited, self._lost
        return {
            "enabled": self.leases is not None,
            "ttl_s": self.ttl_s,
            "waited_for_other_node": waited,
            "not_ready_in_time": lost,
        }

    def _lease_over(self, key: str, *, fetched: bool) -> None:
        """Mark our lease done (the quote is in the cache), or give it back when we got no
        fresh quote, so another node (or our next collection) may try before it expires."""
        assert self.leases is not None
        with contextlib.suppress(StorageError):  # it expires by itself
            if fetched:
                self.leases.mark_done(key)
            else:
                self.leases.release(key)

    def _wait_for_other_node(
        self, sym: Symbol, asked_at: float, force_fresh: bool, once: bool = False
    ) -> Quote | None:
        """Poll the shared cache for the lease holder's quote while its fetch is in flight.

        `once` (a collection): the cluster fetches each symbol once per interval, forced or
        not, so a lease marked done means this interval's quote is already in the cache.
        Without it, a forced fetch (`crawler fetch --fresh`) only joins a fetch in flight.

        None means: fetch it yourself (forced and nothing in flight, or a collection whose
        holder gave up). Otherwise the holder's quote, or the last-known one marked stale, or
        TransientSourceError.
        """
        key = sym.canonical
        with self._lock:
            self._waited += 1
        # A forced fetch wants the holder's new quote: one fetched at most `wait_s` before we
        # asked (the holder may have sent its request just before); otherwise any fresh one.
        since = asked_at - (self.wait_s if force_fresh else self.cache.ttl_s)
        waited_s = 0.0
        in_flight = self._in_flight(key, True)
        if force_fresh and not once and not in_flight:
            return None
        while True:
            found = self._last_known(key)
            if found is not None and found.fetched_at.timestamp() >= since:
                return found.with_flags(from_cache=True, stale=False)
            if not in_flight:
                if once:
                    if self._holder(key) is None:
                        return None  # the holder gave the lease back: no quote this interval
                    if found is not None:
                        # Done this interval by the holder: its quote is the interval's quote.
                        return found.with_flags(from_cache=True, stale=False)
                break
            if waited_s >= self.wait_s:
                break
            self._sleep(LEASE_POLL_S)
            waited_s += LEASE_POLL_S
            in_flight = self._in_flight(key, in_flight)
        if force_fresh and not once and not in_flight:
            return None
        return self._not_in_time(key, found)

    def _not_in_time(self, key: str, found: Quote | None) -> Quote:
        """The holder's quote did not come: the last-known one marked stale, else an error."""
        with self._lock:
            self._lost += 1
        if found is not None:
            self._count_stale()
            return found.with_flags(from_cache=True, stale=True)
        raise TransientSourceError(
            f"{key} is being fetched by node {self._holder(key) or 'another node'}; its quote "
            f"was not in the shared cache within {self.wait_s:g}s"
        )

    def _in_flight(self, key: str, unknown: bool) -> bool:
        """Whether the holder's fetch of `key` is in flight (`unknown` when Redis is away)."""
        assert self.leases is not None
        with contextlib.suppress(StorageError):
            return self.leases.in_flight(key)
        return unknown

    def _holder(self, key: str) -> str | None:
        assert self.leases is not None
        with contextlib.suppress(StorageError):
            return self.leases.holder(key)
        return None

    def _last_known(self, key: str) -> Quote | None:
        try:
            return self.cache.get_last_known(key)
        except StorageError:
            return None
