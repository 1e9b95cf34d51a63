"""What crawler can be asked to do, in one place: the daemon's routes and the CLI's offline
mode both call `Operations`, so the two paths cannot drift apart.

    ops = Operations.offline(load_settings())        # the CLI without a daemon
    ops.fetch(["AAPL:US"])        # {"quotes": [{...}], "errors": {}}
    ops.add_symbol("TSLA:US")     # {"symbol": "TSLA:US", "asset_class": "stocks", "added": True}
    ops.close()

Every answer is a JSON-safe dict (Decimals as exact strings, datetimes ISO 8601), ready for the
control socket or for `--json`. Bad input raises SymbolError / ConfigError (exit 2, HTTP 400).
The status document is `crawler.service.status`'s, the money `crawler.service.budget`'s, the
history verbs `crawler.service.exports`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol, parse_symbol
from crawler.normalizer.user_symbols import UserSymbol, read_symbol
from crawler.service.answers import (
    error_dict,
    jsonable,
    key_problems,
    parse_asset_class,
    parse_symbols,
)
from crawler.service.backfill import BackfillRuns
from crawler.service.budget import budget_answer
from crawler.service.exports import HistoryVerbs
from crawler.service.fetching import FetchRecorder, ToldOnce, fresh_quote
from crawler.service.status import StatusDocument
from crawler.utils.exceptions import CrawlerError, UsageError, WatchlistFullError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from crawler.config import Settings
    from crawler.markets.hours import MarketHours
    from crawler.node import Node
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.orchestrator.scheduler import DataScheduler
    from crawler.service.metrics import MetricsRecorder
    from crawler.store.backend import WatchlistStore
    from crawler.store.history import HistoryStore

__all__ = ["Operations"]


class Operations(HistoryVerbs):
    """The verbs of crawler over one set of stores and one hybrid fetcher.

    `scheduler` is the daemon's (None offline); `market_hours` adds open/closed to `status`;
    `started_at` and `socket_path` describe the daemon in `status`. The history verbs come
    from `HistoryVerbs`, the status document is a `StatusDocument` over this object's parts.
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
        self._status = StatusDocument(self, now)
        self._metrics_registry: CollectorRegistry | None = None
        self._backfills = BackfillRuns(self)

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
        self._backfills.close()
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
        told = ToldOnce(on_done, unpaid, self.hybrid)
        recorder = self._recorder()
        keep = recorder.keep if recorder is not None else None
        try:
            results = self.hybrid.fetch_many(
                parsed,
                force_fresh=fresh or paid,
                on_done=told.first,
                unpaid=unpaid,
                paid_reasons=reasons,
                past_live=paid,
                on_quote=keep,
            )
            # "needed": what the free path could not serve now may pay (it is failing for it).
            retry = [
                sym
                for sym in parsed
                if sym.canonical in unpaid and not fresh_quote(results.get(sym.canonical))
            ]
            if retry and self.hybrid.paid_sources:
                results.update(
                    self.hybrid.fetch_many(
                        retry,
                        force_fresh=fresh,
                        on_done=told.last,
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
        return self._fetch_answer(results, errors, notices)

    def _fetch_answer(
        self,
        results: dict[str, Quote | CrawlerError],
        errors: dict[str, dict[str, str]],
        notices: list[str],
    ) -> dict[str, Any]:
        """`fetch`'s answer: the quotes in input order, the errors, notices and warnings."""
        quotes: list[Quote] = []
        for key, outcome in results.items():
            if isinstance(outcome, Quote):
                quotes.append(outcome)
            else:
                errors[key] = error_dict(outcome)
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
        problems = {**dict(getattr(self.hybrid, "config_errors", {}) or {}), **key_problems()}
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

    # The routes read a request's symbols before answering (a 400 comes first).
    parse_symbols = staticmethod(parse_symbols)

    def _quote_dict(self, quote: Quote, now: datetime) -> dict[str, Any]:
        """A quote for the caller, with `source_stale`: its own time is older than its
        market's last session (suspended, delisted, or a feed stuck at the source)."""
        data = quote.to_json_dict()
        data["source_stale"] = self._status.source_stale(quote, now)
        return data

    def _recorder(self) -> FetchRecorder | None:
        """The history writer of one `fetch`: quotes recorded as they land, a paid one
        committed before its worker moves on (a kill -9 keeps what was paid for)."""
        if self.history_store is None:
            return None
        from crawler.store.history_recorder import HistoryRecorder

        return FetchRecorder(HistoryRecorder(self.history_store), self.hybrid.paid_sources)

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

    # -- status, the money and configuration ----------------------------------------------

    def status(self, rows: int | None = None) -> dict[str, Any]:
        """Everything `crawler status` shows (see `StatusDocument.status`); `rows` keeps that
        many symbols, stale and pending first."""
        return self._status.status(rows)

    def symbol_status(self, name: str) -> dict[str, Any]:
        """One tracked symbol's entry as in `status`, with why it waits and its market;
        SymbolError if it is not tracked."""
        return self._status.symbol_status(name)

    def budget(self) -> dict[str, Any]:
        """Today's spend, the allowance per collection now, the pace, paid requests per hour,
        the top paid symbols and the seed's three targets (`crawler.service.budget`)."""
        return budget_answer(self, self._now())

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
        from crawler.orchestrator.backfill import DEFAULT_SINCE

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
        start, end = self._window(since or DEFAULT_SINCE, until)
        report = self._backfills.run(
            parsed, interval, start, end, history=self._history, now=self._now,
            on_plan=on_plan, on_progress=on_progress,
        )  # fmt: skip
        report["errors"] = {**errors, **report["errors"]}
        report["notices"] = notices + report["notices"]
        return report
