"""The status document: everything `crawler status` shows, built from one node's parts.

    document = StatusDocument(ops, now=utc_now)
    document.status(rows=50)          # {"daemon", "scheduler", "budget", "sources", "symbols",
                                      #  "symbols_summary", ...}: JSON-safe
    document.symbol_status("AAPL:US")  # one tracked symbol, with why it waits

Concurrent `status` calls share one build. The Prometheus collector reads this document too
(`crawler.service.metrics`), so `crawler status` and `/metrics` cannot disagree.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING, Any

from crawler import __version__
from crawler.logging import get_logger
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.user_symbols import read_symbol
from crawler.service.answers import jsonable, key_problems
from crawler.service.budget import budget_answer
from crawler.utils.exceptions import CrawlerError, DaemonError, StorageError, SymbolError

if TYPE_CHECKING:
    from crawler.markets.hours import MarketHours
    from crawler.service.parts import ServiceParts

__all__ = ["StatusDocument"]

log = get_logger("crawler.operations")


class StatusDocument:
    """The status of the node `parts` describes (read at each call), at `now()`."""

    def __init__(self, parts: ServiceParts, now: Callable[[], datetime]) -> None:
        self._parts = parts
        self._now = now
        self._started_monotonic_s = time.monotonic()
        # Concurrent status requests share one build (see `status`).
        self._status_lock = threading.Lock()
        self._status_building: dict[int | None, Future[dict[str, Any]]] = {}
        self._session_hours: MarketHours | None = None

    def status(self, rows: int | None = None) -> dict[str, Any]:
        """Everything `crawler status` shows: daemon, scheduler, sources, budget, breakers,
        per-symbol last quote (age, stale or pending, market open), config errors.

        `rows` keeps that many symbols (stale and pending first, then in watchlist order),
        what a screen shows; `symbols_summary` counts them all either way.

        Requests that arrive while a status is being built wait for it and share it (as
        concurrent fetches of one symbol share one request): eight monitors polling at once
        should not multiply the work.
        """
        with self._status_lock:
            building = self._status_building.get(rows)
            if building is None:
                building = self._status_building[rows] = Future()
                leader = True
            else:
                leader = False
        if not leader:
            failure = building.exception()  # waits for the leader's build
            if failure is None:
                return building.result()
            # A fresh copy per waiter: re-raising the shared object from many threads grew its
            # traceback with every waiter (one log entry reached 477 KB).
            raise _fresh_copy(failure) from None
        try:
            document = self._build_status(rows)
            building.set_result(document)
            return document
        except CrawlerError as exc:
            building.set_exception(_fresh_copy(exc))
            raise
        except Exception as exc:
            # Logged here once, with its traceback; the leader and every waiter get one line.
            log.error("building the status failed", exc_info=True)
            failure = DaemonError(
                f"building the status failed ({type(exc).__name__}: {exc}); see the daemon log"
            )
            building.set_exception(failure)
            raise _fresh_copy(failure) from None
        except BaseException as exc:
            building.set_exception(exc)
            raise
        finally:
            with self._status_lock:
                self._status_building.pop(rows, None)

    def _build_status(self, rows: int | None) -> dict[str, Any]:
        now = self._now()
        stats = jsonable(self._parts.hybrid.get_statistics())
        scheduler = (
            jsonable(self._parts.scheduler.get_statistics()) if self._parts.scheduler else None
        )
        uptime_s = round(time.monotonic() - self._started_monotonic_s, 1)
        symbols, summary = self._symbols_status(now, rows)
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "started_at": self._parts.started_at.isoformat()
                if self._parts.started_at
                else None,
                "uptime_s": uptime_s if self._parts.started_at else None,
                "socket": str(self._parts.socket_path) if self._parts.socket_path else None,
                "data_dir": str(self._parts.settings.data_dir),
                "auto_update_enabled": self._parts.settings.auto_update_enabled,
            },
            "scheduler": scheduler,
            "budget": stats.get("cost_tracking", {}),
            "sources": stats.get("source_usage", {}),
            "cache": stats.get("cache_statistics", {}),
            "breakers": stats.get("breakers", {}),
            "config_errors": {**stats.get("config_errors", {}), **key_problems()},
            "stale_served": stats.get("stale_served", 0),
            "stream": stats.get("stream"),
            "events": self._events_statistics(),
            "yahoo": stats.get("yahoo"),
            "store": self._store_status(stats.get("leases", {})),
            "metrics": self._parts.metrics.snapshot() if self._parts.metrics else None,
            "spending": self._spending_summary(stats),
            "symbols": symbols,
            "symbols_summary": summary,
        }

    def _symbols_status(
        self, now: datetime, rows: int | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        items = self._parts.watchlist.items()
        cache = self._parts.hybrid.cache
        many = getattr(cache, "last_known_many", None)
        if callable(many):  # the embedded cache keeps them in memory
            last: dict[str, Quote] = many(name for name, _ in items)
        else:
            last = {}
            for name, _ in items:
                quote = cache.get_last_known(name)
                if quote is not None:
                    last[name] = quote
        closed_since = self._closes(now)
        if rows is None:
            entries = [
                self._symbol_status(name, asset, last.get(name), now, closed_since)
                for name, asset in items
            ]
            summary: dict[str, Any] = {
                "tracked": len(entries),
                "stale": sum(1 for entry in entries if entry["stale"]),
                "pending": sum(1 for entry in entries if entry["pending"]),
            }
        else:
            # Only the rows sent get an entry: at 10,000 symbols building them all for 50 rows
            # was most of the answer's time. What needs a look comes first (stale, pending),
            # then the rest, each in watchlist order.
            # Prices first: stale ones (they need a look, and have a price), then fresh ones,
            # then those never fetched; why those wait is in `pending_reasons`. (Pending rows
            # first filled a 50-row screen with no price at all when 150 symbols waited.)
            stale_rows: list[tuple[str, AssetClass]] = []
            fine: list[tuple[str, AssetClass]] = []
            waiting: list[tuple[str, AssetClass]] = []
            stale = pending = 0
            for name, asset in items:
                quote = last.get(name)
                if quote is None:
                    pending += 1
                    if len(waiting) < rows:
                        waiting.append((name, asset))
                elif self._stale(name, asset, quote, now, closed_since):
                    stale += 1
                    if len(stale_rows) < rows:
                        stale_rows.append((name, asset))
                elif len(fine) < rows:
                    fine.append((name, asset))
            shown = (stale_rows + fine + waiting)[:rows]
            entries = [
                self._symbol_status(name, asset, last.get(name), now, closed_since)
                for name, asset in shown
            ]
            summary = {"tracked": len(items), "stale": stale, "pending": pending}
        reasons = self._waiting_reasons()
        waiting_names = [name for name, _ in items if name not in last]
        summary_reasons = {name: reasons(name) for name in waiting_names}
        for entry in entries:
            if entry["pending"] or entry["stale"]:
                entry["reason"] = reasons(entry["symbol"])
        from crawler.orchestrator.failures import group_failures, groups_json

        summary["pending_reasons"] = groups_json(group_failures(summary_reasons), first=5)
        summary["shown"] = len(entries)
        if self._parts.market_hours is not None:
            for entry in entries:
                entry["market"] = self._market_status(
                    entry["symbol"], AssetClass(entry["asset_class"]), now
                )
        return entries, summary

    def _events_statistics(self) -> dict[str, Any] | None:
        events = getattr(self._parts.hybrid, "events", None)
        return None if events is None else dict(events.statistics())

    def _spending_summary(self, stats: dict[str, Any]) -> dict[str, Any]:
        """`budget` without its breakdown, plus the one line `crawler status` prints."""
        from crawler.orchestrator.budget_report import summary_line

        try:
            report = budget_answer(self._parts, self._now(), stats=stats)
        except Exception as exc:  # the money line must never break status
            return {"error": f"{type(exc).__name__}: {exc}"}
        report.pop("paid_by_hour", None)
        report.pop("top_symbols", None)
        report["line"] = summary_line(report)
        return report

    def _store_status(self, leases: dict[str, Any]) -> dict[str, Any]:
        """The store backend, whether Redis answers, and the cluster's live nodes."""
        stores = self._parts.hybrid.stores
        if stores is None:
            return {"backend": "embedded", "node": None, "nodes": []}
        out = stores.describe()
        try:
            out["nodes"] = jsonable(stores.nodes.nodes())
        except StorageError as exc:
            out["nodes"] = []
            out["nodes_error"] = exc.message
        out["leases"] = leases
        return out

    def _is_stale(self, source_age_s: float, fetched_age_s: float) -> bool:
        """Stale: we fetched it longer ago than the cache keeps a quote fresh, or the source's
        own timestamp has not moved for a whole collection interval plus that TTL (polling an
        unchanged quote adds no history row, and this is how status shows it)."""
        ttl_s = self._parts.settings.cache_ttl_seconds
        not_moving_s = ttl_s + self._parts.settings.update_interval_seconds
        return fetched_age_s > ttl_s or source_age_s > not_moving_s

    def _stale(
        self,
        name: str,
        asset: AssetClass,
        quote: Quote,
        now: datetime,
        closed_since: Callable[[str, AssetClass], datetime | None],
    ) -> bool:
        """`_is_stale`, except that a quote fetched after its market closed is not stale while
        the market stays closed: it is the close, and the collector rightly does not pay for it
        again (the collector's own rule, `Collector._closed_and_quoted`)."""
        if not self._is_stale(quote.age_s(now), (now - quote.fetched_at).total_seconds()):
            return False
        closed_at = closed_since(name, asset)
        return closed_at is None or not (closed_at <= quote.fetched_at <= now)

    def _closes(self, now: datetime) -> Callable[[str, AssetClass], datetime | None]:
        """`closed_since(symbol, asset_class)`: when its market last closed if it is closed now
        (None: open, never closes, or unknown). Asked once per market, not per symbol; nothing
        is closed when market hours are off (the collector then fetches closed markets too)."""
        hours = self._parts.market_hours if self._parts.settings.market_hours_enabled else None
        memo: dict[str, datetime | None] = {}

        def closed_since(name: str, asset: AssetClass) -> datetime | None:
            if hours is None:
                return None
            try:
                market = hours.market_of(name, asset)
                if market not in memo:
                    is_open = hours.is_open(name, asset, at=now)
                    memo[market] = None if is_open else hours.last_close(name, asset, at=now)
                return memo[market]
            except Exception:  # a calendar problem must not break status: judged open
                return None

        return closed_since

    def _waiting_reasons(self) -> Callable[[str], str]:
        """Why a symbol has no fresh quote: its error in the last collection, its market
        closed, or no collection since it was added."""
        report = self._parts.scheduler.last_report if self._parts.scheduler is not None else None
        errors = dict(report.errors) if report is not None else {}
        closed = set(report.skipped_closed) if report is not None else set()

        def reason(name: str) -> str:
            if name in errors:
                return errors[name]
            if name in closed:
                return "its market was closed at the last collection; fetched when it opens"
            if report is None:
                return "waiting for the first collection"
            return "not collected yet: added after the last collection"

        return reason

    def symbol_status(self, name: str) -> dict[str, Any]:
        """One tracked symbol's entry as in `status`, with why it waits (`reason`, its last
        collection error in full) and its market; SymbolError if it is not tracked."""
        canonical = read_symbol(name).symbol.canonical
        asset = dict(self._parts.watchlist.items()).get(canonical)
        if asset is None:
            raise SymbolError(
                f"{canonical} is not tracked; `crawler symbols list` shows those that are"
            )
        now = self._now()
        quote = self._parts.hybrid.cache.get_last_known(canonical)
        entry = self._symbol_status(canonical, asset, quote, now, self._closes(now))
        report = self._parts.scheduler.last_report if self._parts.scheduler is not None else None
        entry["last_error"] = report.errors.get(canonical) if report is not None else None
        entry["reason"] = (
            self._waiting_reasons()(canonical) if entry["pending"] or entry["stale"] else None
        )
        if self._parts.market_hours is not None:
            entry["market"] = self._market_status(canonical, asset, now)
        return entry

    def _symbol_status(
        self,
        name: str,
        asset: AssetClass,
        quote: Quote | None,
        now: datetime,
        closed_since: Callable[[str, AssetClass], datetime | None],
    ) -> dict[str, Any]:
        """One symbol's entry. Never fetched: `pending` (not stale: nothing has gone old).
        A quote fetched after its market closed is not stale while the market stays closed:
        it is the close, and the collector rightly does not pay for it again (a weekend
        showed every stock and index as stale)."""
        entry: dict[str, Any] = {"symbol": name, "asset_class": asset.value, "last_quote": None}
        if quote is not None:
            fetched_age_s = (now - quote.fetched_at).total_seconds()
            stale = self._stale(name, asset, quote, now, closed_since)
            entry["last_quote"] = _quote_json(quote, stale)
            # A streamed tick can be stamped a hair after `now` was read: never a negative age.
            entry["age_s"] = round(max(0.0, quote.age_s(now)), 1)
            entry["fetched_age_s"] = round(fetched_age_s, 1)
            entry["stale"] = stale
            entry["source_stale"] = self.source_stale(quote, now)
            entry["pending"] = False
        else:
            entry["age_s"] = entry["fetched_age_s"] = None
            entry["stale"] = False
            entry["source_stale"] = False
            entry["pending"] = True
        return entry

    def _market_status(self, name: str, asset: AssetClass, now: datetime) -> dict[str, Any]:
        assert self._parts.market_hours is not None
        try:
            session = self._parts.market_hours.session_status(name, asset, at=now)
            return {key: session.get(key) for key in ("market", "open", "next_open", "next_close")}
        except Exception as exc:  # a calendar problem must not break status
            return {"error": f"{type(exc).__name__}: {exc}"}

    def source_stale(self, quote: Quote, now: datetime) -> bool:
        """Its own time is older than its market's last session (suspended, delisted, or a
        feed stuck at the source)."""
        from crawler.markets.source_age import GRACE, predates_last_session

        if quote.as_of is None or now - quote.as_of <= GRACE:
            return False  # the common case decides without loading a calendar
        hours = self._parts.market_hours
        if hours is None:  # offline, or market hours off: calendars only for old quotes
            from crawler.markets.hours import MarketHours

            hours = self._session_hours = self._session_hours or MarketHours()
        try:
            return predates_last_session(quote.as_of, quote.symbol, quote.asset_class, hours, now)
        except Exception:  # a calendar problem must not break a fetch or the status
            return False


def _quote_json(quote: Quote, stale: bool) -> dict[str, Any]:
    """`quote.with_flags(stale=stale).to_json_dict()`, without copying the quote first."""
    data = quote.to_json_dict()
    data["stale"] = stale
    return data


def _fresh_copy(exc: BaseException) -> BaseException:
    """The same error without the original's traceback, cause or context: safe to raise in
    another thread (its own traceback starts empty). __init__ is not re-run, so subclasses
    with their own signatures (BudgetExhaustedError) copy as they are."""
    fresh = type(exc).__new__(type(exc))
    fresh.args = exc.args
    fresh.__dict__.update(exc.__dict__)
    return fresh
