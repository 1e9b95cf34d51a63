"""Many symbols at once (`HybridDataSource.fetch_many`): each symbol a task on a bounded pool,
or a place in a batch when a batch-capable source would be asked first; a deadline for the
whole; `abort()` seen within a tenth of a second. One bad symbol or source never stops the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from crawler.logging import get_logger
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol, parse_symbol, to_yahoo
from crawler.orchestrator.hybrid.pool import FetchPool
from crawler.sources.base import BatchQuoteSource
from crawler.utils.exceptions import APIError, CrawlerError, SymbolError, TransientSourceError

__all__ = ["FanOut", "canonical_names"]

log = get_logger("crawler.hybrid")

#: How often a waiting batch looks for `abort()`.
ABORT_POLL_S = 0.1

T = TypeVar("T")
Claimed = tuple[Symbol, Future[Quote]]
OnDone = Callable[[str, Quote | CrawlerError], None]


class Leases(Protocol):
    """The cluster's fetch leases (`cluster.ClusterLeases` is one)."""

    @property
    def leases(self) -> object | None: ...
    def spread(self, items: list[T]) -> list[T]: ...
    def for_batch(self, key: str) -> bool: ...


@dataclass(frozen=True)
class Request:
    """One `fetch_many` call's options (see `HybridDataSource.fetch_many`)."""

    asset_class: AssetClass | None = None
    force_fresh: bool = False
    on_done: OnDone | None = None
    deadline_s: float | None = None
    unpaid: Collection[str] = ()
    on_quote: Callable[[Quote], None] | None = None
    once_per_interval: bool = False


@dataclass
class _Plan:
    """Where each symbol of a `fetch_many` went."""

    pending: dict[str, Future[Quote]] = field(default_factory=dict)
    results: dict[str, Quote | CrawlerError] = field(default_factory=dict)
    rank: dict[str, int] = field(default_factory=dict)
    leaders: dict[bool, list[Claimed]] = field(default_factory=lambda: {True: [], False: []})
    leased_elsewhere: list[tuple[Symbol, Future[Quote], bool]] = field(default_factory=list)
    batched: set[str] = field(default_factory=set)
    inline: set[str] = field(default_factory=set)  # per-symbol tasks that call `on_quote`


class _AbortedError(Exception):
    """`abort()` was called while a batch waited."""


class FanOut:
    """`fetch_many`'s work: plan, submit, wait, in input order (see the module docstring)."""

    def __init__(
        self,
        cluster: Leases,
        *,
        batch_source: Callable[[bool], BatchQuoteSource | None],
        run_batch: Callable[[BatchQuoteSource, list[Claimed], float | None, bool], None],
        claim: Callable[[Symbol, bool], tuple[Future[Quote], bool]],
        get_quote: Callable[..., Quote],
        finish_leased: Callable[[Symbol, Future[Quote], bool, bool, bool], None],
        skips: Callable[[Symbol], bool],
        pool: FetchPool,
    ) -> None:
        self.cluster = cluster
        self._batch_source = batch_source
        self._run_batch = run_batch
        self._claim = claim
        self._get_quote = get_quote
        self._finish_leased = finish_leased
        self._skips = skips
        self._pool = pool

    def fetch(self, given: list[str | Symbol], req: Request) -> dict[str, Quote | CrawlerError]:
        pool = self._pool.get()
        deadline_at_s = None if req.deadline_s is None else time.monotonic() + req.deadline_s
        batches = {True: self._batch_source(True), False: self._batch_source(False)}
        plan = self._plan(given, req, batches, pool)
        for paid, batch_source in batches.items():
            if batch_source is None or not plan.leaders[paid]:
                continue
            size = max(1, int(batch_source.batch_size))
            chunks = plan.leaders[paid]
            for start in range(0, len(chunks), size):
                chunk = chunks[start : start + size]
                pool.submit(self._run_batch, batch_source, chunk, deadline_at_s, paid)
        # After our own batches: waiting on the pool for other nodes' quotes must never hold
        # up the batches they in turn wait for.
        for sym, future, paid in plan.leased_elsewhere:
            pool.submit(
                self._finish_leased, sym, future, req.force_fresh, paid, req.once_per_interval
            )
        if req.on_quote is not None:
            for key, future in plan.pending.items():
                if key not in plan.inline:
                    future.add_done_callback(_quote_callback(req.on_quote))
        results = self._gather(plan, req, deadline_at_s)
        leaders = len(plan.leaders[True]) + len(plan.leaders[False])
        if leaders:
            _report_missed_deadline(batches[True] or batches[False], results, leaders)
        if self.cluster.leases is not None:
            results = dict(sorted(results.items(), key=lambda kv: plan.rank.get(kv[0], -1)))
        return results

    def _plan(
        self,
        given: list[str | Symbol],
        req: Request,
        batches: Mapping[bool, BatchQuoteSource | None],
        pool: ThreadPoolExecutor,
    ) -> _Plan:
        """Each symbol claimed for a batch, or submitted as its own task; malformed ones
        answered at once. Nodes sharing a cache start at different places (`spread`)."""
        plan = _Plan()
        for index, item in self.cluster.spread(list(enumerate(given))):
            try:
                sym = item if isinstance(item, Symbol) else parse_symbol(item, req.asset_class)
            except SymbolError as exc:
                plan.results[str(item)] = exc
                if req.on_done:
                    req.on_done(str(item), exc)
                continue
            key = sym.canonical
            plan.rank.setdefault(key, index)
            if key in plan.pending:
                continue
            paid = key not in req.unpaid
            if batches[paid] is not None and _has_yahoo_form(sym) and not self._skips(sym):
                future, leader = self._claim(sym, req.force_fresh)
                plan.pending[key] = future
                plan.batched.add(key)
                if leader and self.cluster.for_batch(key):
                    plan.leaders[paid].append((sym, future))
                elif leader:  # another node is fetching it: wait for its quote, as get_quote does
                    plan.leased_elsewhere.append((sym, future, paid))
                continue
            # `on_quote` runs inside the task, before its future completes: the worker (and
            # whoever waits for the symbol) moves on only after the hook (a paid quote's
            # history commit) is done.
            plan.pending[key] = pool.submit(
                _kept,
                req.on_quote,
                self._get_quote,
                sym,
                None,
                req.force_fresh,
                paid,
                once_per_interval=req.once_per_interval,
            )
            plan.inline.add(key)
        return plan

    def _gather(
        self, plan: _Plan, req: Request, deadline_at_s: float | None
    ) -> dict[str, Quote | CrawlerError]:
        results = plan.results
        for key, future in plan.pending.items():
            outcome = self._outcome_of(
                key, future, deadline_at_s, req.deadline_s, cancel=key not in plan.batched
            )
            results[key] = outcome
            if req.on_done:
                req.on_done(key, outcome)
        return results

    def _outcome_of(
        self,
        key: str,
        future: Future[Quote],
        deadline_at_s: float | None,
        deadline_s: float | None,
        *,
        cancel: bool = True,
    ) -> Quote | CrawlerError:
        try:
            return self._wait_for(future, deadline_at_s)
        except _AbortedError:
            if cancel:
                future.cancel()
            return TransientSourceError(f"{key}: not fetched, crawler is stopping")
        except FutureTimeout:
            # A batch leader's future is not a pool task: its worker sees the deadline itself
            # (and a cancelled leader future would break the requests coalesced onto it).
            if cancel:
                future.cancel()
            return TransientSourceError(
                f"{key}: the batch deadline of {deadline_s:g}s passed before it was fetched"
            )
        except CancelledError:
            return TransientSourceError(f"{key}: cancelled at the batch deadline")
        except CrawlerError as exc:
            # Debug only: a collection logs its failures once per cause (`collection.py`);
            # one line per symbol buried the collections' own lines (157 of the first 163).
            log.debug("fetch failed", symbol=key, error=exc.message)
            return exc
        except Exception as exc:  # a bug must not take the whole collection down
            log.exception("unexpected error fetching", symbol=key)
            return APIError(f"internal error fetching {key}: {type(exc).__name__}")

    def _wait_for(self, future: Future[Quote], deadline_at_s: float | None) -> Quote:
        """`future.result()` until the deadline, in short slices so `abort()` is seen."""
        while True:
            if self._pool.aborted.is_set() and not future.done():
                raise _AbortedError
            slice_s = ABORT_POLL_S
            if deadline_at_s is not None:
                slice_s = min(slice_s, max(0.0, deadline_at_s - time.monotonic()))
            try:
                return future.result(timeout=slice_s)
            except FutureTimeout:
                if deadline_at_s is not None and time.monotonic() >= deadline_at_s:
                    raise


def canonical_names(given: list[str | Symbol], asset_class: AssetClass | None) -> set[str]:
    """The canonical names of `given` (malformed ones left out)."""
    names: set[str] = set()
    for item in given:
        try:
            names.add(
                item.canonical
                if isinstance(item, Symbol)
                else parse_symbol(item, asset_class).canonical
            )
        except SymbolError:
            continue
    return names


def _has_yahoo_form(sym: Symbol) -> bool:
    try:
        to_yahoo(sym)
    except SymbolError:
        return False
    return True


def _kept(
    on_quote: Callable[[Quote], None] | None,
    fetch: Callable[..., Quote],
    *args: Any,
    **kwargs: Any,
) -> Quote:
    """`fetch(*args, **kwargs)`, then `on_quote` with its quote, on the same (pool) thread."""
    quote = fetch(*args, **kwargs)
    if on_quote is not None:
        try:
            on_quote(quote)
        except Exception:  # the caller's hook must not turn a quote into an error
            log.exception("on_quote hook failed")
    return quote


def _quote_callback(on_quote: Callable[[Quote], None]) -> Callable[[Future[Quote]], None]:
    def done(future: Future[Quote]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        try:
            on_quote(future.result())
        except Exception:  # the caller's hook must not break the worker that ran the fetch
            log.exception("on_quote hook failed")

    return done


def _report_missed_deadline(
    source: BatchQuoteSource | None,
    results: Mapping[str, Quote | CrawlerError],
    batched: int,
) -> None:
    """Say it loudly when the per-symbol fallbacks did not fit before the deadline."""
    missed_count = sum(
        1
        for r in results.values()
        if isinstance(r, TransientSourceError) and "deadline" in r.message
    )
    if not missed_count:
        return
    throttle = getattr(source, "throttle", None)
    rate = f"{throttle.rate_per_s:g} requests/s" if throttle is not None else "no limit"
    log.warning(
        "yfinance batched symbols missed the deadline waiting for per-symbol chart "
        "fallbacks; raise YFINANCE_MAX_RPS or the interval",
        missed=missed_count,
        batched=batched,
        yahoo_rate_limit=rate,
    )
