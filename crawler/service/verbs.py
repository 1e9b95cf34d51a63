"""What crawler can be asked to do, in one place: the daemon's routes and the CLI's offline
mode both call `Operations`, so the two paths cannot drift apart.

    ops = Operations.offline(load_settings())        # the CLI without a daemon
    ops.fetch(["AAPL:US"])        # {"quotes": [{...}], "errors": {}}
    ops.add_symbol("TSLA:US")     # {"symbol": "TSLA:US", "asset_class": "stocks", "added": True}
    ops.close()

Every answer is a JSON-safe dict (Decimals as exact strings, datetimes ISO 8601), ready for the
control socket or for `--json`. Bad input raises SymbolError / ConfigError (exit 2, HTTP 400).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crawler import __version__
from crawler.logging import get_logger
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol, parse_symbol
from crawler.normalizer.units import to_major
from crawler.normalizer.user_symbols import UserSymbol, read_symbol
from crawler.utils.exceptions import (
    ConfigError,
    CrawlerError,
    DaemonError,
    StorageError,
    SymbolError,
    UsageError,
    WatchlistFullError,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from crawler.config import Settings
    from crawler.markets.hours import MarketHours
    from crawler.node import Node
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.orchestrator.scheduler import DataScheduler
    from crawler.service.metrics import MetricsRecorder
    from crawler.store.backend import WatchlistStore
    from crawler.store.history import HistoryStore, Kind, TimeBy
    from crawler.store.history_recorder import HistoryRecorder

__all__ = [
    "EXPORT_FORMATS",
    "HISTORY_DEFAULT_ROWS",
    "HISTORY_MAX_JSON_ROWS",
    "Operations",
    "check_history_limit",
    "jsonable",
    "parse_asset_class",
]

log = get_logger("crawler.operations")

#: Formats `export` writes.
EXPORT_FORMATS = ("csv", "jsonl", "parquet")
_STREAM_CHUNK_BYTES = 64 * 1024
#: Rows `history` shows when no limit is given: the newest, a few screens' worth.
HISTORY_DEFAULT_ROWS = 100
#: Rows a JSON history answer may hold (it is built in memory); CSV streams any number.
HISTORY_MAX_JSON_ROWS = 10_000


def jsonable(value: Any) -> Any:
    """`value` made JSON-safe: Decimal → str, datetime → ISO, Enum → value, Path → str."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if isinstance(value, Decimal | Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def parse_asset_class(text: str | AssetClass | None) -> AssetClass | None:
    """An asset class from user text (None stays None); SymbolError naming the allowed ones."""
    if text is None or isinstance(text, AssetClass):
        return text
    try:
        return AssetClass.parse(text)
    except ValueError as exc:
        raise SymbolError(str(exc)) from None


def _parse_time(name: str, text: str | None, now: datetime) -> datetime | None:
    if text is None or text == "":
        return None
    from crawler.store.history import parse_time_spec

    try:
        return parse_time_spec(text, now)
    except ValueError as exc:
        raise ConfigError(f"--{name}: {exc}") from None


def _key_problems() -> dict[str, str]:
    """An empty Bright Data key credential, as a config error of `bright_data` (so status
    shows it in red, not as a quiet "(not set)")."""
    from crawler.config.files import empty_key_credential

    problem = empty_key_credential()
    return {"bright_data": problem} if problem else {}


def _error_dict(error: CrawlerError) -> dict[str, str]:
    return {"type": type(error).__name__, "message": error.message}


class Operations:
    """The verbs of crawler over one set of stores and one hybrid fetcher.

    `scheduler` is the daemon's (None offline); `market_hours` adds open/closed to `status`;
    `started_at` and `socket_path` describe the daemon in `status`.
    """

    #: The node `offline` built (closed by `close`); None when the parts were passed in.
    _node: Node | None = None

    def __init__(
        self,
        settings: Settings,
        *,
        hybrid: HybridDataSource,
        watchlist: WatchlistStore,
        history: HistoryStore | None = None,
        scheduler: DataScheduler | None = None,
        market_hours: MarketHours | None = None,
        started_at: datetime | None = None,
        socket_path: Path | None = None,
        metrics: MetricsRecorder | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.hybrid = hybrid
        self.watchlist = watchlist
        self.history_store = history
        self.scheduler = scheduler
        self.market_hours = market_hours
        self.started_at = started_at
        self.socket_path = socket_path
        self.metrics = metrics
        self._now = now
        self._started_monotonic_s = time.monotonic()
        # Concurrent status requests share one build (see `status`).
        self._status_lock = threading.Lock()
        self._status_building: dict[int | None, Future[dict[str, Any]]] = {}
        self._metrics_registry: CollectorRegistry | None = None
        self._session_hours: MarketHours | None = None
        # One backfill at a time: a second would only queue on the same Yahoo bucket.
        self._backfill_lock = threading.Lock()
        self._bar_source: Any = None

    @classmethod
    def offline(cls, settings: Settings) -> Operations:
        """Operations straight on the data dir, without a daemon (the CLI's fallback).

        Its node comes from the daemon's own wiring (`crawler.node.build_node`: the same
        backend, a cluster's shared budget included); `close()` closes that node."""
        from crawler.node import build_node

        node = build_node(settings)
        operations = cls(
            settings,
            hybrid=node.hybrid,
            watchlist=node.watchlist,
            history=node.history,
            market_hours=node.market_hours,
        )
        operations._node = node
        return operations

    def close(self) -> None:
        """Release the fetcher's threads and the stores' connections (offline use): the
        node's whole build when `offline` made it, else what was passed in."""
        if self._bar_source is not None:
            self._bar_source.close()
        if self._node is not None:
            self._node.close()
            return
        self.hybrid.cleanup()
        self.watchlist.close()
        if self.history_store is not None:
            self.history_store.close()

    # -- quotes ----------------------------------------------------------------------------

    def fetch(
        self,
        symbols: Sequence[str],
        fresh: bool = False,
        asset_class: str | AssetClass | None = None,
        on_done: Callable[[str, Quote | CrawlerError], None] | None = None,
        paid: bool = False,
    ) -> dict[str, Any]:
        """Quotes for `symbols` (cache first unless `fresh`), in input order.

        Money: `paid` buys a Bright Data quote on purpose (past the cache and the stream;
        reason "asked"). Otherwise, under the "needed" policy the free path comes first and
        only a symbol it cannot serve pays (its need is the reason); under "paced" and "seed"
        the seed's order (Bright Data first; "asked" / "seed").

        Every symbol is parsed before anything is fetched: a malformed one is not fetched and
        lands in `errors` (SymbolError) while the good ones are; only when none is good does the
        call raise SymbolError. Per-symbol failures land in `errors`: {symbol: {"type",
        "message"}}.
        Quotes that came from a source (not the cache) are added to the history. Yahoo-form
        input is translated (`notices` says so, one line each).
        """
        parsed, errors, notices = self.parse_symbols(symbols, asset_class)
        unpaid, reasons = self._fetch_money(parsed, paid)
        reported: set[str] = set()

        def done_once(key: str, outcome: Quote | CrawlerError) -> None:
            # A symbol whose free try failed is fetched again (paid): counted once, at the end.
            retried = key in unpaid and "bright_data" in self.hybrid.sources
            if (
                on_done is not None
                and key not in reported
                and (not retried or _fresh_quote(outcome))
            ):
                reported.add(key)
                on_done(key, outcome)

        def done_last(key: str, outcome: Quote | CrawlerError) -> None:
            if on_done is not None and key not in reported:
                reported.add(key)
                on_done(key, outcome)

        recorder = self._recorder()
        keep = recorder.keep if recorder is not None else None
        try:
            results = self.hybrid.fetch_many(
                parsed,
                force_fresh=fresh or paid,
                on_done=done_once,
                unpaid=unpaid,
                paid_reasons=reasons,
                past_live=paid,
                on_quote=keep,
            )
            # "needed": what the free path could not serve now may pay (it is failing for it).
            retry = [
                sym
                for sym in parsed
                if sym.canonical in unpaid and not _fresh_quote(results.get(sym.canonical))
            ]
            if retry and "bright_data" in self.hybrid.sources:
                results.update(
                    self.hybrid.fetch_many(
                        retry,
                        force_fresh=fresh,
                        on_done=done_last,
                        paid_reasons={
                            sym.canonical: self.hybrid.free_need(sym) or "free_failing"
                            for sym in retry
                        },
                        on_quote=keep,
                    )
                )
        finally:
            if recorder is not None:
                recorder.close()
        quotes: list[Quote] = []
        for key, outcome in results.items():
            if isinstance(outcome, Quote):
                quotes.append(outcome)
            else:
                errors[key] = _error_dict(outcome)
        now = self._now()
        answer: dict[str, Any] = {
            "quotes": [self._quote_dict(q, now) for q in quotes],
            "errors": errors,
        }
        if notices:
            answer["notices"] = notices
        # A source switched off by its configuration (a rejected key) is said with the
        # answer, even when another source served every quote: a wrong Bright Data key used
        # to fall back to yfinance in silence, exit 0.
        problems = {**dict(getattr(self.hybrid, "config_errors", {}) or {}), **_key_problems()}
        if problems:
            answer["warnings"] = [
                f"{name} is off: {message}" for name, message in sorted(problems.items())
            ]
        return answer

    def _fetch_money(self, parsed: Sequence[Symbol], paid: bool) -> tuple[set[str], dict[str, str]]:
        """(symbols that may not pay, why the others may) for `fetch` (see its docstring)."""
        policy = self.settings.budget_policy
        if paid:
            return set(), {sym.canonical: "asked" for sym in parsed}
        if policy == "seed":
            return set(), {}
        if policy == "paced":
            return set(), {sym.canonical: "asked" for sym in parsed}
        needs = {sym.canonical: self.hybrid.free_need(sym) for sym in parsed}
        unpaid = {name for name, need in needs.items() if need is None}
        return unpaid, {name: need for name, need in needs.items() if need is not None}

    @staticmethod
    def parse_symbols(
        symbols: Sequence[str], asset_class: str | AssetClass | None = None
    ) -> tuple[list[Symbol], dict[str, dict[str, str]], list[str]]:
        """The well-formed symbols, an error per malformed one, and a notice per Yahoo-form
        one translated; SymbolError when none is well-formed (the request itself is bad: exit
        2, HTTP 400), naming each."""
        if not symbols:
            raise SymbolError("no symbols given; name at least one, e.g. AAPL:US")
        asset = parse_asset_class(asset_class)
        parsed: list[Symbol] = []
        notices: list[str] = []
        errors: dict[str, dict[str, str]] = {}
        for text in symbols:
            try:
                read = read_symbol(text, asset)
            except SymbolError as exc:
                errors[text] = _error_dict(exc)
                continue
            parsed.append(read.symbol)
            if read.notice:
                notices.append(read.notice)
        if not parsed:
            # Nothing to fetch: the request itself is bad (exit 2, HTTP 400), naming each one.
            raise SymbolError("; ".join(error["message"] for error in errors.values()))
        return parsed, errors, notices

    def _quote_dict(self, quote: Quote, now: datetime) -> dict[str, Any]:
        """A quote for the caller, with `source_stale`: its own time is older than its
        market's last session (suspended, delisted, or a feed stuck at the source)."""
        data = quote.to_json_dict()
        data["source_stale"] = self._source_stale(quote, now)
        return data

    def _source_stale(self, quote: Quote, now: datetime) -> bool:
        from crawler.markets.source_age import GRACE, predates_last_session

        if quote.as_of is None or now - quote.as_of <= GRACE:
            return False  # the common case decides without loading a calendar
        hours = self.market_hours
        if hours is None:  # offline, or market hours off: calendars only for old quotes
            from crawler.markets.hours import MarketHours

            hours = self._session_hours = self._session_hours or MarketHours()
        try:
            return predates_last_session(quote.as_of, quote.symbol, quote.asset_class, hours, now)
        except Exception:  # a calendar problem must not break a fetch or the status
            return False

    def _recorder(self) -> _FetchRecorder | None:
        """The history writer of one `fetch`: quotes recorded as they land, a paid one
        committed before its worker moves on (a kill -9 keeps what was paid for)."""
        if self.history_store is None:
            return None
        from crawler.store.history_recorder import HistoryRecorder

        return _FetchRecorder(HistoryRecorder(self.history_store))

    # -- the watchlist ---------------------------------------------------------------------

    def list_symbols(self) -> dict[str, Any]:
        """{"symbols": [{"symbol", "asset_class"}...]} in the order they were added."""
        return {
            "symbols": [
                {"symbol": name, "asset_class": asset.value}
                for name, asset in self.watchlist.items()
            ]
        }

    def add_symbol(
        self, symbol: str, asset_class: str | AssetClass | None = None
    ) -> dict[str, Any]:
        """Track `symbol`; `added` is False when it was already tracked (under any spelling:
        VOD.L and VOD:LN are one entry). `notice` says what a Yahoo-form input became."""
        answer = self._add_read(read_symbol(symbol, parse_asset_class(asset_class)))
        self._refresh_stream()
        return answer

    def add_symbols(
        self, symbols: Sequence[str], asset_class: str | AssetClass | None = None
    ) -> dict[str, Any]:
        """Track many symbols in one call: every one is read first (a bad one adds none), then
        added in order until the watchlist is full. `symbols` holds one answer per symbol
        added or already tracked (as `add_symbol`'s), `full` the refusal when it filled up."""
        asset = parse_asset_class(asset_class)
        reads = [read_symbol(symbol, asset) for symbol in symbols]
        answers: list[dict[str, Any]] = []
        body: dict[str, Any] = {"symbols": answers}
        try:
            for read in reads:
                answers.append(self._add_read(read))
        except WatchlistFullError as exc:
            body["full"] = exc.message
        finally:
            self._refresh_stream()  # once for the whole list, not once a symbol
        return body

    def _add_read(self, read: UserSymbol) -> dict[str, Any]:
        sym = read.symbol
        added = self.watchlist.add(sym, sym.asset_class)
        if self.scheduler is not None:
            # The scheduler re-reads the watchlist, but keeps its own mirror in step too.
            self.scheduler.add_symbol(sym.canonical, sym.asset_class)
        answer = {"symbol": sym.canonical, "asset_class": sym.asset_class.value, "added": added}
        if read.notice:
            answer["notice"] = read.notice
        return answer

    def remove_symbol(self, symbol: str) -> dict[str, Any]:
        """Stop tracking `symbol`; `removed` is False when it was not tracked."""
        canonical = read_symbol(symbol).symbol.canonical
        if self.scheduler is not None:
            removed = self.scheduler.remove_symbol(canonical)
        else:
            removed = self.watchlist.remove(canonical)
        self._refresh_stream()
        return {"symbol": canonical, "removed": removed}

    def _refresh_stream(self) -> None:
        # The live stream re-reads the watchlist every few seconds anyway; this makes it now.
        live = getattr(self.hybrid, "live", None)
        if live is not None:
            live.stream.refresh()

    # -- collections -----------------------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        """One collection of the watchlist now; returns its report (see CollectionReport)."""
        if self.scheduler is not None:
            return dict(jsonable(self.scheduler.force_collection()))
        from crawler.orchestrator.collection import Collector

        report = Collector().collect(self.hybrid, self.watchlist.items(), self.history_store)
        return dict(jsonable(report.as_dict()))

    # -- status and configuration ----------------------------------------------------------

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
        stats = jsonable(self.hybrid.get_statistics())
        scheduler = jsonable(self.scheduler.get_statistics()) if self.scheduler else None
        uptime_s = round(time.monotonic() - self._started_monotonic_s, 1)
        symbols, summary = self._symbols_status(now, rows)
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "started_at": self.started_at.isoformat() if self.started_at else None,
                "uptime_s": uptime_s if self.started_at else None,
                "socket": str(self.socket_path) if self.socket_path else None,
                "data_dir": str(self.settings.data_dir),
                "auto_update_enabled": self.settings.auto_update_enabled,
            },
            "scheduler": scheduler,
            "budget": stats.get("cost_tracking", {}),
            "sources": stats.get("source_usage", {}),
            "cache": stats.get("cache_statistics", {}),
            "breakers": stats.get("breakers", {}),
            "config_errors": {**stats.get("config_errors", {}), **_key_problems()},
            "stale_served": stats.get("stale_served", 0),
            "stream": stats.get("stream"),
            "events": self._events_statistics(),
            "yahoo": stats.get("yahoo"),
            "store": self._store_status(stats.get("leases", {})),
            "metrics": self.metrics.snapshot() if self.metrics else None,
            "spending": self._spending_summary(stats),
            "symbols": symbols,
            "symbols_summary": summary,
        }

    def _symbols_status(
        self, now: datetime, rows: int | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        items = self.watchlist.items()
        cache = self.hybrid.cache
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
        if self.market_hours is not None:
            for entry in entries:
                entry["market"] = self._market_status(
                    entry["symbol"], AssetClass(entry["asset_class"]), now
                )
        return entries, summary

    def _events_statistics(self) -> dict[str, Any] | None:
        events = getattr(self.hybrid, "events", None)
        return None if events is None else dict(events.statistics())

    def _spending_summary(self, stats: dict[str, Any]) -> dict[str, Any]:
        """`budget` without its breakdown, plus the one line `crawler status` prints."""
        from crawler.orchestrator.budget_report import summary_line

        try:
            report = self.budget(with_breakdown=False, stats=stats)
        except Exception as exc:  # the money line must never break status
            return {"error": f"{type(exc).__name__}: {exc}"}
        report.pop("paid_by_hour", None)
        report.pop("top_symbols", None)
        report["line"] = summary_line(report)
        return report

    def _store_status(self, leases: dict[str, Any]) -> dict[str, Any]:
        """The store backend, whether Redis answers, and the cluster's live nodes."""
        stores = self.hybrid.stores
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
        ttl_s = self.settings.cache_ttl_seconds
        not_moving_s = ttl_s + self.settings.update_interval_seconds
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
        hours = self.market_hours if self.settings.market_hours_enabled else None
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
        report = self.scheduler.last_report if self.scheduler is not None else None
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
        asset = dict(self.watchlist.items()).get(canonical)
        if asset is None:
            raise SymbolError(
                f"{canonical} is not tracked; `crawler symbols list` shows those that are"
            )
        now = self._now()
        quote = self.hybrid.cache.get_last_known(canonical)
        entry = self._symbol_status(canonical, asset, quote, now, self._closes(now))
        report = self.scheduler.last_report if self.scheduler is not None else None
        entry["last_error"] = report.errors.get(canonical) if report is not None else None
        entry["reason"] = (
            self._waiting_reasons()(canonical) if entry["pending"] or entry["stale"] else None
        )
        if self.market_hours is not None:
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
            entry["source_stale"] = self._source_stale(quote, now)
            entry["pending"] = False
        else:
            entry["age_s"] = entry["fetched_age_s"] = None
            entry["stale"] = False
            entry["source_stale"] = False
            entry["pending"] = True
        return entry

    # -- the money -------------------------------------------------------------------------

    def budget(
        self, *, with_breakdown: bool = True, stats: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Today's spend, the allowance per collection now, when the budget runs out at this
        pace, paid requests per hour, the top paid symbols and the seed's three targets (see
        `crawler.orchestrator.budget_report`). Without the breakdown (for `status`) the
        ledger's per-hour and per-symbol counts are not read."""
        from crawler.orchestrator.budget_report import budget_report
        from crawler.orchestrator.pacing import budget_day_end, requests_left

        now = self._now()
        stats = stats if stats is not None else self.hybrid.get_statistics()
        ledger = stats.get("cost_tracking", {})
        # Read for status too: the spend by reason (one small read) is on its money line and
        # in the metrics; the per-hour and per-symbol parts are dropped there.
        breakdown = self.hybrid.ledger.breakdown()
        remaining = requests_left(ledger)
        report = dict(
            jsonable(
                budget_report(
                    ledger,
                    breakdown,
                    stats.get("source_usage", {}),
                    stats.get("cache_statistics", {}),
                    allowance=self._allowance_now(remaining, now),
                    now=now,
                    day_end=budget_day_end(now, self.settings.budget_timezone),
                    pacing=self.settings.budget_pacing,
                    live_served=int(stats.get("live_served") or 0),
                    policy=self.settings.budget_policy,
                    seed_order=(
                        self.scheduler.spending.day_counts(now)
                        if self.scheduler is not None
                        else None
                    ),
                )
            )
        )
        # Without a key nothing is ever spent: say so rather than "lasts the day".
        report["bright_data_configured"] = "bright_data" in self.hybrid.sources
        return report

    def _allowance_now(self, remaining: int, now: datetime) -> int | None:
        """What a collection starting now could spend (None: unpaced, or no Bright Data): the
        scheduler's own reckoning when there is one, so `status` and `budget` agree with what
        the next collection gets."""
        if "bright_data" not in self.hybrid.sources:
            return None
        if self.scheduler is not None and self.scheduler.hybrid is self.hybrid:
            return self.scheduler.paid_allowance_now()
        from crawler.orchestrator.spending import SpendingPolicy

        policy = self.scheduler.spending if self.scheduler is not None else None
        if policy is None:
            policy = SpendingPolicy(
                pacing=self.settings.budget_pacing,
                policy=self.settings.budget_policy,
                max_quote_age_s=float(self.settings.budget_max_quote_age_seconds),
                interval_s=float(self.settings.update_interval_seconds),
                timezone=self.settings.budget_timezone,
                market_hours=self.market_hours if self.settings.market_hours_enabled else None,
            )
        tracked = []
        for name, asset in self.watchlist.items():
            try:
                tracked.append(parse_symbol(name, asset))
            except SymbolError:
                continue
        hours = self.market_hours if self.settings.market_hours_enabled else None
        due = len(tracked) if hours is None else sum(1 for s in tracked if _open(hours, s, now))
        return policy.preview(due, tracked, remaining, now)

    def _market_status(self, name: str, asset: AssetClass, now: datetime) -> dict[str, Any]:
        assert self.market_hours is not None
        try:
            session = self.market_hours.session_status(name, asset, at=now)
            return {key: session.get(key) for key in ("market", "open", "next_open", "next_close")}
        except Exception as exc:  # a calendar problem must not break status
            return {"error": f"{type(exc).__name__}: {exc}"}

    def config(self) -> dict[str, Any]:
        """The effective configuration, secrets masked."""
        return dict(jsonable(self.settings.public_dict()))

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The Prometheus registry: status families, the recorder's metrics, process_*."""
        if self._metrics_registry is None:
            from crawler.service.metrics import build_registry  # prometheus_client: daemon-only

            self._metrics_registry = build_registry(self.status, self.metrics, process=True)
        return self._metrics_registry

    def metrics_text(self) -> str:
        """The Prometheus text exposition of `metrics_registry` (GET /v1/metrics)."""
        from crawler.service.metrics import exposition

        return exposition(self.metrics_registry)

    # -- backfill --------------------------------------------------------------------------

    def backfill(
        self,
        symbols: Sequence[str] = (),
        all_tracked: bool = False,
        since: str | None = None,
        until: str | None = None,
        interval: str = "1d",
        on_plan: Callable[[int], None] | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
    ) -> dict[str, Any]:
        """Past bars of `symbols` (or every tracked one) from Yahoo's chart into the history,
        only what is missing (`crawler.orchestrator.backfill`). `on_plan(requests)` is told
        how many requests the run will make before the first; `on_progress(done, total,
        symbol)` after each. The answer is the run's report plus `errors` per bad symbol."""
        from crawler.orchestrator.backfill import DEFAULT_SINCE, Backfiller

        if not all_tracked and not symbols:
            raise UsageError("name symbols to backfill, or --all for every tracked one")
        if all_tracked and symbols:
            raise UsageError("give symbols or --all, not both")
        errors: dict[str, dict[str, str]] = {}
        notices: list[str] = []
        if all_tracked:
            parsed = [parse_symbol(name, asset) for name, asset in self.watchlist.items()]
            if not parsed:
                raise UsageError("no symbols tracked: add some, or name symbols to backfill")
        else:
            parsed, errors, notices = self.parse_symbols(symbols)
        now = self._now()
        start = _parse_time("since", since or DEFAULT_SINCE, now)
        end = _parse_time("until", until, now)
        if not self._backfill_lock.acquire(blocking=False):
            raise UsageError("a backfill is already running; wait for it to finish")
        try:
            backfiller = Backfiller(self._bars(), self._history(), now=self._now)
            plan = backfiller.plan(parsed, interval, start, end)
            if on_plan is not None:
                on_plan(len(plan.windows))
            report = backfiller.run(plan, on_progress).to_dict()
        finally:
            self._backfill_lock.release()
        report["errors"] = {**errors, **report["errors"]}
        report["notices"] = notices + report["notices"]
        return report

    def _bars(self) -> Any:
        """The yfinance source a backfill asks: the hybrid's (its session, crumb and bucket),
        or one of our own when the sources' order leaves yfinance out."""
        source = self.hybrid.sources.get("yfinance")
        if source is not None:
            return source
        if self._bar_source is None:
            from crawler.sources.yahoo_throttle import shared_throttle
            from crawler.sources.yfinance_source import YFinanceSource
            from crawler.store.datadir import ensure_data_dir

            settings = self.settings
            self._bar_source = YFinanceSource(
                endpoint=settings.yfinance_endpoint,
                cache_dir=ensure_data_dir(Path(settings.data_dir) / "yfinance"),
                timeout_s=float(settings.request_timeout_seconds),
                deadline_s=float(settings.quote_deadline_seconds),
                max_workers=1,
                throttle=shared_throttle(settings.yfinance_max_rps),
            )
        return self._bar_source

    # -- history ---------------------------------------------------------------------------

    def _history(self) -> HistoryStore:
        if self.history_store is None:
            raise StorageError("this crawler has no history store")
        return self.history_store

    def history(
        self,
        symbol: str,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        oldest_first: bool = False,
        major_units: bool = False,
        kind: str = "all",
    ) -> dict[str, Any]:
        """The newest `limit` quotes of `symbol` (default `HISTORY_DEFAULT_ROWS`), newest first,
        or the oldest ones oldest first; `since`/`until` as "2h" or ISO dates; `major_units`:
        GBp, ZAc and ILA quotes in GBP, ZAR and ILS; `kind`: "quotes" (collected), "bars"
        (backfilled) or "all".

        {"symbol", "quotes", "order": "newest_first"|"oldest_first", "limit", "total",
        "truncated"}: `total` counts every matching row, so a cut answer says so.
        """
        canonical = read_symbol(symbol).symbol.canonical
        now = self._now()
        start, end = _parse_time("since", since, now), _parse_time("until", until, now)
        rows_wanted = _history_limit(limit, HISTORY_MAX_JSON_ROWS)
        assert rows_wanted is not None  # a JSON answer always has a bound
        store = self._history()
        # One row more than asked tells whether there are more without counting them all.
        checked = _kind(kind)
        rows = list(
            store.query(
                canonical, start, end, rows_wanted + 1, newest_first=not oldest_first, kind=checked
            )
        )
        truncated = len(rows) > rows_wanted
        total = store.count(canonical, start, end, checked) if truncated else len(rows)
        return {
            "symbol": canonical,
            "quotes": [
                (to_major(q) if major_units else q).to_json_dict() for q in rows[:rows_wanted]
            ],
            "order": "oldest_first" if oldest_first else "newest_first",
            "limit": rows_wanted,
            "total": total,
            "truncated": truncated,
            "kind": checked,
        }

    def history_export(
        self,
        fmt: str,
        symbol: str,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        oldest_first: bool = False,
        major_units: bool = False,
        kind: str = "all",
    ) -> tuple[int, int, Iterator[bytes]]:
        """`history` as CSV or JSONL: (rows sent, rows matching, the bytes in chunks).

        `limit` 0 sends every matching row; None sends `HISTORY_DEFAULT_ROWS`.
        """
        canonical = read_symbol(symbol).symbol.canonical
        now = self._now()
        start, end = _parse_time("since", since, now), _parse_time("until", until, now)
        rows_wanted = _history_limit(limit, None)
        checked = _kind(kind)
        total = self._history().count(canonical, start, end, checked)
        sent, stream = self._spool(
            fmt,
            start,
            end,
            [canonical],
            limit=rows_wanted,
            newest_first=not oldest_first,
            major_units=major_units,
            kind=checked,
        )
        return sent, total, stream

    def export(
        self,
        fmt: str,
        since: str | None = None,
        until: str | None = None,
        symbols: Iterable[str] | None = None,
        major_units: bool = False,
        kind: str = "all",
        time_by: str = "fetched",
    ) -> tuple[int, Iterator[bytes]]:
        """(rows, the history as CSV, JSONL or Parquet bytes in chunks, oldest first).

        `since`/`until` apply to when crawler fetched each quote (`time_by` "fetched", the
        default: "the last hour's quotes" are those collected in it, whatever their source's
        own time) or to the quote's own time ("quote").

        The export is written to a temporary file first, so a bad argument or a storage error
        is raised here, before the first byte is sent, and the row count is known up front;
        memory stays constant either way.
        """
        now = self._now()
        start, end = _parse_time("since", since, now), _parse_time("until", until, now)
        wanted = None if symbols is None else [parse_symbol(s).canonical for s in symbols]
        if time_by not in ("fetched", "quote"):
            raise ConfigError(f"--by {time_by!r} is not known; use fetched or quote")
        by: TimeBy = "fetched" if time_by == "fetched" else "quote"
        return self._spool(
            fmt, start, end, wanted, major_units=major_units, kind=_kind(kind), time_by=by
        )

    def _spool(
        self,
        fmt: str,
        start: datetime | None,
        end: datetime | None,
        symbols: list[str] | None,
        limit: int | None = None,
        newest_first: bool = False,
        major_units: bool = False,
        kind: Kind = "all",
        time_by: TimeBy = "quote",
    ) -> tuple[int, Iterator[bytes]]:
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"--format {fmt!r} is not known; use one of: csv, jsonl, parquet")
        checked: Literal["csv", "jsonl", "parquet"] = (
            "csv" if fmt == "csv" else "parquet" if fmt == "parquet" else "jsonl"
        )
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the generator below
        try:
            rows = self._history().export(
                checked, spool, start, end, symbols, limit, newest_first, major_units, kind,
                time_by,
            )  # fmt: skip
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return rows, _chunks(spool)

    def export_to(
        self,
        fmt: str,
        out: Any,
        since: str | None = None,
        until: str | None = None,
        symbols: Iterable[str] | None = None,
    ) -> tuple[int, int]:
        """Like `export`, written straight to the binary file `out`; returns (rows, bytes)."""
        written = 0
        rows, chunks = self.export(fmt, since, until, symbols)
        for chunk in chunks:
            out.write(chunk)
            written += len(chunk)
        return rows, written


def _quote_json(quote: Quote, stale: bool) -> dict[str, Any]:
    """`quote.with_flags(stale=stale).to_json_dict()`, without copying the quote first."""
    data = quote.to_json_dict()
    data["stale"] = stale
    return data


def _kind(text: str) -> Kind:
    """A history kind from user text; ConfigError (exit 2, HTTP 400) naming the allowed ones."""
    if text == "quotes":
        return "quotes"
    if text == "bars":
        return "bars"
    if text in ("all", "both"):
        return "all"
    raise ConfigError(f"--kind {text!r} is not known; use all, quotes or bars")


def check_history_limit(limit: int | None, streamed: bool) -> None:
    """ConfigError (exit 2) for a `history --limit` out of range, as `history` would raise it
    (the CLI checks first, so the answer is the same with no data dir to read)."""
    _history_limit(limit, None if streamed else HISTORY_MAX_JSON_ROWS)


def _history_limit(limit: int | None, most: int | None) -> int | None:
    """The rows a history answer holds: `limit`, the default for None, everything (None) for 0
    where `most` is None; ConfigError (exit 2) for a value out of range."""
    if limit is None:
        return HISTORY_DEFAULT_ROWS
    if limit == 0 and most is None:
        return None
    if limit < 1 or (most is not None and limit > most):
        allowed = f"1 to {most:,}" if most is not None else "0 (all) or more"
        raise ConfigError(
            f"--limit {limit} is out of range; use {allowed}"
            + (" (--csv or `crawler export` stream more)" if most is not None else "")
        )
    return limit


def _fresh_quote(outcome: Quote | CrawlerError | None) -> bool:
    return isinstance(outcome, Quote) and not outcome.stale


def _open(hours: MarketHours, sym: Symbol, at: datetime) -> bool:
    try:
        return hours.is_open(sym.canonical, sym.asset_class, at=at)
    except Exception:  # a calendar problem: counted open, as the collector would fetch it
        return True


def _chunks(spool: Any) -> Iterator[bytes]:
    try:
        while chunk := spool.read(_STREAM_CHUNK_BYTES):
            yield chunk
    finally:
        spool.close()


def _fresh_copy(exc: BaseException) -> BaseException:
    """The same error without the original's traceback, cause or context: safe to raise in
    another thread (its own traceback starts empty). __init__ is not re-run, so subclasses
    with their own signatures (BudgetExhaustedError) copy as they are."""
    fresh = type(exc).__new__(type(exc))
    fresh.args = exc.args
    fresh.__dict__.update(exc.__dict__)
    return fresh


class _FetchRecorder:
    """`fetch`'s side of a HistoryRecorder: which quotes it keeps, and failures logged, not
    raised (the quotes were fetched and are answered; losing their row is not a failed
    fetch)."""

    def __init__(self, recorder: HistoryRecorder) -> None:
        self._recorder = recorder

    def keep(self, quote: Quote) -> None:
        if quote.from_cache:
            return  # recorded when it was fetched
        self._recorder.add(quote, durable=quote.source == "bright_data")

    def close(self) -> None:
        try:
            self._recorder.close()
        except StorageError as exc:
            log.warning("could not record quotes in the history", error=exc.message)
