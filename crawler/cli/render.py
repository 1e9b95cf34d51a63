"""How the CLI shows things: rich tables for quotes, symbols, status; JSON for `--json`.

Everything here takes the JSON-safe dicts the daemon (or `Operations`) returns, so output is the
same whichever path answered. Imports only rich and the standard library.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "console",
    "format_age",
    "plural",
    "print_json",
    "quotes_table",
    "render_status",
    "symbols_table",
]


def console() -> Console:
    """A Console on stdout; off a terminal it is wide, so tables are not squeezed."""
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def print_json(data: Any) -> None:
    """`data` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """ "1 collection", "2 collections", "1,000 symbols" (`plural_noun` for irregular ones)."""
    word = noun if count == 1 else (plural_noun or noun + "s")
    return f"{count:,} {word}"


def format_age(age_s: float | None) -> str:
    """12s, 5m, 3h, 2d (rounded down), or "-" when unknown."""
    if age_s is None:
        return "-"
    seconds = max(0, int(age_s))
    for unit_s, unit in ((86_400, "d"), (3600, "h"), (60, "m")):
        if seconds >= unit_s:
            return f"{seconds // unit_s}{unit}"
    return f"{seconds}s"


def _age_of(quote: Mapping[str, Any], now: datetime) -> float | None:
    stamp = quote.get("as_of") or quote.get("fetched_at")
    if not isinstance(stamp, str):
        return None
    try:
        return (now - datetime.fromisoformat(stamp)).total_seconds()
    except ValueError:
        return None


def _short_time(stamp: Any) -> str:
    if not isinstance(stamp, str):
        return "-"
    try:
        return datetime.fromisoformat(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp


def _pct(value: Any) -> str:
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:+.2f}%"


def quotes_table(quotes: Iterable[Mapping[str, Any]], title: str | None = None) -> Table:
    """symbol, price, currency, change %, as of, source, age, stale."""
    now = datetime.now(UTC)
    table = Table(title=title)
    for name in ("symbol", "price", "currency", "change %", "as of (UTC)", "source", "age"):
        table.add_column(name, justify="right" if name in ("price", "change %", "age") else "left")
    table.add_column("stale")
    for quote in quotes:
        source = str(quote.get("source", "-"))
        if quote.get("from_cache"):
            source += " (cache)"
        table.add_row(
            str(quote.get("symbol", "-")),
            str(quote.get("price", "-")),
            str(quote.get("currency") or "-"),
            _pct(quote.get("change_pct")),
            _short_time(quote.get("as_of")),
            source,
            format_age(_age_of(quote, now)),
            _stale_text(quote.get("stale"), quote.get("source_stale")),
        )
    return table


def _stale_text(stale: Any, source_stale: Any) -> str:
    """ "no", "yes", or "suspended?" when the source's own time predates the last session."""
    if source_stale:
        return "suspended?"
    return "yes" if stale else "no"


def yahoo_line(yahoo: Mapping[str, Any] | None) -> str | None:
    """One line on how Yahoo treats us: the rate, batches, and a 429 pause if there is one."""
    if not yahoo:
        return None
    throttle = yahoo.get("throttle") or {}
    text = "yahoo: "
    rate = throttle.get("max_requests_per_second")
    if isinstance(rate, int | float):
        text += f"at most {rate:g} requests/s, "
    text += (
        f"{yahoo.get('batch_requests', 0)} batch requests "
        f"({yahoo.get('batch_quotes', 0)} quotes, {yahoo.get('batch_fallbacks', 0)} sent to "
        f"the chart), {yahoo.get('fetches', 0)} chart requests"
    )
    if throttle.get("throttled"):
        text += (
            f"; THROTTLED by Yahoo (HTTP 429): paused {format_age(throttle.get('paused_for_s'))}"
            f" more, {throttle.get('rate_limited_total', 0)} rate-limited answers so far"
        )
    elif throttle.get("rate_limited_total"):
        text += (
            f"; {throttle.get('rate_limited_total')} rate-limited answers, last at "
            f"{_short_time(throttle.get('last_rate_limited_at'))}"
        )
    return text


def _stream_line(stream: Any) -> str | None:
    """"live stream connected: 262 subscribed, 1,234 ticks, last 0s ago" (None when off)."""
    if not isinstance(stream, Mapping):
        return None
    text = (
        f"live stream {stream.get('state')}: {stream.get('subscribed', 0)} subscribed, "
        f"{stream.get('ticks', 0):,} ticks"
    )
    last = _age_of({"as_of": stream.get("last_tick_at")}, datetime.now(UTC))
    if last is not None:
        text += f", last {format_age(last)} ago"
    if stream.get("bad_frames"):
        text += f", {stream.get('bad_frames')} bad frames skipped"
    if stream.get("last_error") and stream.get("state") != "connected":
        text += f" ({stream.get('last_error')})"
    return text


def symbols_table(symbols: Iterable[Mapping[str, Any]]) -> Table:
    """The watchlist: symbol and asset class."""
    table = Table()
    table.add_column("symbol")
    table.add_column("asset class")
    for entry in symbols:
        table.add_row(str(entry.get("symbol")), str(entry.get("asset_class")))
    return table


#: Symbol rows `crawler status` draws at most.
STATUS_MAX_ROWS = 50


def render_status(status: Mapping[str, Any], out: Console) -> None:
    """The daemon, its budget and sources, and one row per tracked symbol."""
    daemon = status.get("daemon") or {}
    scheduler = status.get("scheduler") or {}
    state = scheduler.get("scheduler_state") or {}
    metrics = scheduler.get("collection_metrics") or {}
    budget = status.get("budget") or {}
    out.print(
        f"crawler {daemon.get('version', '?')} running (pid {daemon.get('pid')}, "
        f"up {format_age(daemon.get('uptime_s'))}), socket {daemon.get('socket')}"
    )
    out.print(f"data dir {daemon.get('data_dir')}")
    jobs = scheduler.get("scheduled_jobs") or []
    next_run = next((j.get("next_run") for j in jobs if j.get("id") == "collection"), None)
    out.print(
        f"scheduler {'running' if state.get('is_running') else 'stopped'}: "
        f"every {format_age(state.get('update_interval_seconds'))}, "
        f"{metrics.get('total_collections', 0)} collections "
        f"({metrics.get('failed_collections', 0)} failed), next {_short_time(next_run)}"
    )
    running = state.get("collection_in_progress")
    if running:
        now = datetime.now(UTC)
        out.print(
            f"collecting now: {running.get('done', 0):,}/{running.get('total', 0):,} symbols, "
            f"started {format_age(_age_of({'as_of': running.get('started_at')}, now))} ago"
        )
    out.print(
        f"budget ${budget.get('budget_remaining', '?')} left of ${budget.get('budget_total', '?')}"
        f" today ({budget.get('requests_used', 0)}/{budget.get('requests_allowed', '?')} "
        f"requests, {budget.get('budget_used_pct', 0)}% used)"
    )
    spending = status.get("spending") or {}
    if spending.get("line"):
        out.print(str(spending["line"]), markup=False)
    stream_line = _stream_line(status.get("stream"))
    if stream_line:
        out.print(stream_line)
    sources = Table(title="sources")
    for name in ("source", "breaker", "requests", "ok", "failed", "skipped", "last error"):
        sources.add_column(name)
    breakers = status.get("breakers") or {}
    for name, usage in (status.get("sources") or {}).items():
        breaker = breakers.get(name) or {}
        sources.add_row(
            name,
            str(breaker.get("state", "not configured")),
            str(usage.get("total_requests", 0)),
            str(usage.get("successes", 0)),
            str(usage.get("failures", 0)),
            str(usage.get("skipped", 0)),
            str(usage.get("last_error") or "-"),
        )
    out.print(sources)
    line = yahoo_line(status.get("yahoo"))
    if line is not None:
        out.print(line, markup=False)
    for name, message in (status.get("config_errors") or {}).items():
        out.print(f"[bold red]config error[/] {name}: {message}", markup=True)
    entries = list(status.get("symbols") or [])
    stale = sum(1 for entry in entries if entry.get("stale"))
    # A terminal table of a thousand rows helps nobody (and takes seconds to draw): show the
    # stale ones first, then the rest, up to a screenful; --json has them all.
    shown = sorted(entries, key=lambda entry: not entry.get("stale"))[:STATUS_MAX_ROWS]
    symbols = Table(title=f"symbols ({len(entries)} tracked, {stale} stale)")
    for name in ("symbol", "price", "currency", "change %", "as of (UTC)", "source", "age"):
        symbols.add_column(name)
    symbols.add_column("stale")
    symbols.add_column("market")
    for entry in shown:
        quote = entry.get("last_quote") or {}
        market = entry.get("market") or {}
        if "open" in market:
            where = f"{market.get('market')} {'open' if market.get('open') else 'closed'}"
            if not market.get("open") and market.get("next_open"):
                where += f", opens {_short_time(market.get('next_open'))}"
        else:
            where = "-"
        symbols.add_row(
            str(entry.get("symbol")),
            str(quote.get("price", "-")),
            str(quote.get("currency") or "-"),
            _pct(quote.get("change_pct")),
            _short_time(quote.get("as_of")),
            str(quote.get("source", "-")),
            format_age(entry.get("age_s")),
            _stale_text(entry.get("stale"), entry.get("source_stale")),
            where,
        )
    out.print(symbols)
    if len(entries) > len(shown):
        out.print(f"… and {len(entries) - len(shown)} more: `crawler status --json` lists all")
