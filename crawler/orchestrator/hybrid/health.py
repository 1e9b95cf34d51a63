"""Source health: a breaker and usage counters per source, why a source is skipped now, the
breakers shared with other nodes, and what the free path knows per symbol (its last attempt
failed; Yahoo does not know it).

Sources are told apart by what they can do, not by name: a paid source (`PaidQuoteSource`)
is skipped while the budget is spent and its billed requests are its cost; the others are the
free path, whose failures put a symbol first in line for paid requests.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from crawler.logging import get_logger
from crawler.normalizer.symbols import Symbol, to_yahoo
from crawler.sources.base import PaidQuoteSource, QuoteSource
from crawler.sources.circuit_breaker import CircuitBreaker
from crawler.store.ledger import micro_from_usd, usd_from_micro
from crawler.utils.exceptions import (
    BudgetExhaustedError,
    CrawlerError,
    ImplausibleQuoteError,
    SourceConfigError,
    StorageError,
    UnknownSymbolError,
    UnmappableSymbolError,
)

if TYPE_CHECKING:
    from crawler.store.backend import LedgerStore
    from crawler.store.breaker_board import BreakerBoard
    from crawler.store.yahoo_unknowns import YahooUnknowns

__all__ = [
    "BREAKER_SETTINGS",
    "BRIGHT_DATA",
    "NEUTRAL_ERRORS",
    "SEED_ORDER",
    "YFINANCE",
    "SourceHealth",
    "SourceUsage",
    "is_paid",
]

log = get_logger("crawler.hybrid")

#: The seed's source names: `SOURCES_ORDER` lists them, statistics always show both.
BRIGHT_DATA = "bright_data"
YFINANCE = "yfinance"
#: The order of resort when no settings say otherwise.
SEED_ORDER = (BRIGHT_DATA, YFINANCE)
#: The seed's breaker settings: (failure_threshold, recovery_timeout seconds).
BREAKER_SETTINGS: Mapping[str, tuple[int, float]] = {YFINANCE: (5, 60.0), BRIGHT_DATA: (3, 120.0)}
#: Errors that say nothing about a source's health: they neither trip nor heal a breaker.
NEUTRAL_ERRORS: tuple[type[BaseException], ...] = (
    UnknownSymbolError,
    UnmappableSymbolError,
    BudgetExhaustedError,
    SourceConfigError,
    # Our disk (full, read-only, locked): a healthy source must not be blamed for it. A full
    # data dir once opened both breakers and kept them open for minutes after space returned.
    StorageError,
    # One symbol's quote refused as implausible: says nothing of the source's availability.
    ImplausibleQuoteError,
)


def is_paid(source: QuoteSource) -> bool:
    """Whether `source` bills per request (and so is skipped while the budget is spent)."""
    return isinstance(source, PaidQuoteSource)


@dataclass
class SourceUsage:
    """Per-source counters for one HybridDataSource (this process, since it was built)."""

    #: Calls that reached the source (successes + failures).
    total_requests: int = 0
    successes: int = 0
    #: Errors and refused (implausible) quotes; the breaker counts only the former.
    failures: int = 0
    #: The last failure's message.
    last_error: str | None = None
    #: Not asked: skipped (breaker, budget, config) or excluded (our disk, the ledger).
    skipped: int = 0
    #: What a paid source billed since start, in dollars.
    total_cost: Decimal = Decimal("0")

    def as_dict(self) -> dict[str, Any]:
        rate = 100.0 * self.successes / self.total_requests if self.total_requests else 0.0
        return {
            "total_requests": self.total_requests,
            "successes": self.successes,
            "failures": self.failures,
            "skipped": self.skipped,
            "success_rate_pct": round(rate, 2),
            "total_cost": self.total_cost,
            "last_error": self.last_error,
        }


class SourceHealth:
    """The breakers, counters and skip reasons of one hybrid's sources (thread-safe)."""

    def __init__(
        self,
        sources: Mapping[str, QuoteSource],
        ledger: LedgerStore,
        *,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        board: BreakerBoard | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_breaker_change: Callable[[str, str, str], None] | None = None,
        on_fetch: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.sources = sources
        self.ledger = ledger
        #: Where breakers are shared between nodes (and processes): None when not known.
        self.board = board
        #: The sources that bill per request, by name.
        self.paid = frozenset(name for name, source in sources.items() if is_paid(source))
        self.breakers: dict[str, CircuitBreaker] = dict(breakers or {})
        state_change = on_breaker_change
        if board is not None:
            state_change = self._shared_breaker_change(on_breaker_change)
        for name in sources:
            if name not in self.breakers:
                self.breakers[name] = _breaker(name, clock, state_change)
        self.usage: dict[str, SourceUsage] = {name: SourceUsage() for name in sources}
        #: Sources found misconfigured (their SourceConfigError): not asked again.
        self.config_errors: dict[str, str] = {}
        #: Symbols Yahoo does not know, not asked again until their retry (None: asked every
        #: time, the seed's way).
        self.unknowns: YahooUnknowns | None = None
        self._on_fetch = on_fetch
        # Guards the counters: sources run on many threads at once.
        self._lock = threading.Lock()
        # Symbols whose last free attempt failed: first in line for paid requests.
        self._free_failing: set[str] = set()
        self._stale_served = 0
        self._live_served = 0
        # Errors of our own disk (StorageError) met while fetching: not the sources' fault.
        self._storage_errors = 0
        self._last_storage_error: str | None = None

    # -- why a source is not asked ----------------------------------------------------------
    def skip_reason(self, name: str) -> str | None:
        """Why source `name` is not to be asked now (misconfigured, breaker open here or on
        another node, a paid source without budget), or None."""
        if name in self.config_errors:
            return f"disabled: {self.config_errors[name]}"
        breaker = self.breakers[name]
        if not breaker.is_available():
            remaining = breaker.recovery_remaining_s()
            if remaining > 0:
                return f"circuit open; retry in {math.ceil(remaining)}s"
            return f"circuit {breaker.state}; a trial call is in flight"
        elsewhere = None
        if self.board is not None:
            with contextlib.suppress(StorageError):
                elsewhere = self.board.open_elsewhere(name)
        if elsewhere is not None:
            return f"circuit open on node {elsewhere[0]}; retry in {math.ceil(elsewhere[1])}s"
        if name in self.paid:
            try:
                if not self.ledger.can_reserve():
                    return "budget exhausted"
            except StorageError as exc:
                # No paid request while the budget cannot be checked.
                return f"budget store unreachable: {exc.message}"
        return None

    def yahoo_skips(self, sym: Symbol) -> bool:
        """Whether Yahoo is not to be asked about `sym` now (it did not know it lately)."""
        return self.unknowns is not None and self.unknowns.skip(sym.canonical)

    def unknown_reason(self, sym: Symbol) -> str:
        entry = self.unknowns.entry(sym.canonical) if self.unknowns is not None else None
        when = entry.retry_at.strftime("%Y-%m-%d %H:%M UTC") if entry is not None else "later"
        return f"Yahoo does not know it; asked again after {when}"

    # -- the free path, per symbol ----------------------------------------------------------
    def free_need(self, sym: Symbol, *, throttled: bool = True) -> str | None:
        """Why the free path (stream, Yahoo batch, chart) cannot serve `sym` now: "unservable"
        (no Yahoo form, or Yahoo does not know it), "free_failing" (no free source usable: absent
        or misconfigured, its breaker open, with `throttled` Yahoo's 429 pause on; or this
        symbol's last free attempt failed), or None."""
        try:
            to_yahoo(sym)
        except UnmappableSymbolError:
            return "unservable"
        if self.yahoo_skips(sym):
            return "unservable"
        if not any(self._free_usable(name, throttled) for name in self.sources):
            return "free_failing"
        with self._lock:
            return "free_failing" if sym.canonical in self._free_failing else None

    def _free_usable(self, name: str, throttled: bool) -> bool:
        if name in self.paid or name in self.config_errors:
            return False
        if not self.breakers[name].is_available():
            return False
        paused = getattr(getattr(self.sources[name], "throttle", None), "paused_for_s", None)
        return not (throttled and callable(paused) and paused() > 0)

    def note_free(self, name: str, sym: Symbol, *, failed: bool) -> None:
        """A free source's attempt at `sym` failed (or served it)."""
        if name in self.paid:
            return
        with self._lock:
            if failed:
                self._free_failing.add(sym.canonical)
            else:
                self._free_failing.discard(sym.canonical)

    def note_unknown(self, name: str, key: str) -> None:
        """A free source does not know `key` (remembered when unknowns are kept)."""
        if name not in self.paid and self.unknowns is not None:
            self.unknowns.note_unknown(key)

    def note_served(self, name: str, key: str) -> None:
        if name not in self.paid and self.unknowns is not None:
            self.unknowns.note_served(key)

    # -- counting ---------------------------------------------------------------------------
    def count_skip(self, name: str) -> None:
        with self._lock:
            self.usage[name].skipped += 1

    def count_success(self, name: str) -> None:
        cost = self.cost_of(name)
        with self._lock:
            usage = self.usage[name]
            usage.total_requests += 1
            usage.successes += 1
            usage.total_cost = cost

    def count_failure(self, name: str, exc: CrawlerError) -> None:
        cost = self.cost_of(name)
        with self._lock:
            usage = self.usage[name]
            usage.total_requests += 1
            usage.failures += 1
            usage.last_error = exc.message
            usage.total_cost = cost

    def count_stale(self) -> None:
        with self._lock:
            self._stale_served += 1

    def count_live(self) -> None:
        with self._lock:
            self._live_served += 1

    def cost_of(self, name: str) -> Decimal:
        """What a paid source billed since start (its own count of billed requests)."""
        stats_of = getattr(self.sources[name], "statistics", None)
        if name not in self.paid or stats_of is None:
            return Decimal("0")
        billed = int(stats_of().get("billed", 0))
        # Through micro-dollars, as the ledger does, so both print alike ("0.003", not "0.0030").
        return usd_from_micro(billed * micro_from_usd(self.ledger.cost_per_request_usd))

    def report_fetch(self, name: str, outcome: str, started_s: float) -> None:
        """Tell the fetch observer (the metrics) how one call to a source went."""
        if self._on_fetch is None:
            return
        try:
            self._on_fetch(name, outcome, time.perf_counter() - started_s)
        except Exception:  # metrics must never change a fetch's result
            log.exception("fetch observer failed")

    def note_storage_error(self, exc: StorageError, what: str = "") -> None:
        """Count a storage error; log the first and every hundredth (a full disk repeats)."""
        with self._lock:
            self._storage_errors += 1
            count = self._storage_errors
            self._last_storage_error = exc.message
        if count == 1 or count % 100 == 0:
            log.error("storage error #%d%s: %s", count, f" ({what})" if what else "", exc.message)

    def storage_errors(self) -> tuple[int, str | None]:
        """Storage errors met while fetching since start, and the last one's message."""
        with self._lock:
            return self._storage_errors, self._last_storage_error

    def statistics(self) -> dict[str, Any]:
        """The counters of `get_statistics`: source_usage (the seed's two sources always),
        breakers, config_errors, stale_served, live_served, storage errors."""
        with self._lock:
            usage = {name: u.as_dict() for name, u in self.usage.items()}
            stale, live = self._stale_served, self._live_served
        for name in self.sources:
            # Read now from the source's own billed count: the copy taken after each fetch
            # can be overwritten by an older value when fetches finish out of order.
            usage[name]["total_cost"] = self.cost_of(name)
        for name in (YFINANCE, BRIGHT_DATA):
            usage.setdefault(name, SourceUsage().as_dict())
        count, last = self.storage_errors()
        return {
            "source_usage": usage,
            "breakers": {name: b.get_statistics() for name, b in self.breakers.items()},
            "config_errors": dict(self.config_errors),
            "stale_served": stale,
            "live_served": live,
            "storage_errors": count,
            "last_storage_error": last,
        }

    def source_statistics(self, name: str) -> dict[str, Any] | None:
        """Source `name`'s own statistics, if it keeps any (never raises)."""
        stats_of = getattr(self.sources.get(name), "statistics", None)
        if stats_of is None:
            return None
        try:
            stats: dict[str, Any] = stats_of()
        except Exception:  # statistics must never break status
            log.exception("source statistics failed", source=name)
            return None
        return stats

    def _shared_breaker_change(
        self, then: Callable[[str, str, str], None] | None
    ) -> Callable[[str, str, str], None]:
        """A state-change callback that posts opens and closes to the breaker board first."""

        def changed(name: str, old: str, new: str) -> None:
            board = self.board
            try:
                if board is not None and new == "open":
                    board.post_open(name, self.breakers[name].recovery_timeout)
                elif board is not None and new == "closed":
                    board.post_closed(name)
            except StorageError as exc:  # the local breaker still protects this node
                log.warning(
                    "could not share breaker", source=name, state=str(new), error=exc.message
                )
            if then is not None:
                then(name, old, new)

        return changed


def _breaker(
    name: str, clock: Callable[[], float], on_change: Callable[[str, str, str], None] | None
) -> CircuitBreaker:
    """Source `name`'s breaker with the seed's settings (5 failures, 60 s for unknown names)."""
    threshold, recovery_s = BREAKER_SETTINGS.get(name, (5, 60.0))
    return CircuitBreaker(
        name, threshold, recovery_s, clock=clock, excluded=NEUTRAL_ERRORS, on_state_change=on_change
    )
