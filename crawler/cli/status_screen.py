"""`crawler status` as a screen: a few summary lines, the sources, and the symbols, fitted to
the terminal's width like `docker ps` (columns are dropped or shortened, rows never wrap).

    render_status(status, Console())      # status: the daemon's /status answer

What it shows, and how:

- Money in one format everywhere: `$5.50`, `$5.4985`, `$0.0015` (2 to 4 decimals, as many as
  the amount needs).
- Times with their zone, in the viewer's local zone (`TZ`), e.g. `Mon 09:30 EST`; ages as
  `12s`, `5m`, `3h`, `2d`.
- Counts with the right plural ("1 collection", "2 collections") and thousands separators.
- A symbol never fetched is `pending`, not `stale`; stale is yellow, pending dim, a change
  green or red, a breaker open red and half-open yellow (colour only on a terminal).

Imports only rich and the standard library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "STATUS_MAX_ROWS",
    "Column",
    "fit",
    "format_age",
    "money",
    "plural",
    "render_status",
    "render_symbol",
    "yahoo_line",
]

#: Symbol rows `crawler status` draws at most, stale and pending first; --json has them all.
STATUS_MAX_ROWS = 50
_GAP = 2  # spaces between columns


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


def money(value: Any) -> str:
    """US dollars in the one format: "$5.50", "$5.4985", "$0.0015"; "-" when unknown."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return "-"
    if not amount.is_finite():
        return "-"
    text = f"{amount.quantize(Decimal('0.0001')):,.4f}"
    whole, _, cents = text.partition(".")
    cents = cents.rstrip("0").ljust(2, "0")
    return f"${whole}.{cents}"


def _when(stamp: Any, now: datetime, with_day: bool = True) -> str:
    """An ISO time in the viewer's zone with its name: "14:32 UTC", "Mon 09:30 EST"."""
    if not isinstance(stamp, str):
        return "-"
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone()
    same_day = local.date() == now.astimezone().date()
    fmt = "%H:%M %Z" if same_day or not with_day else "%a %H:%M %Z"
    if abs((local - now).total_seconds()) > 6 * 86_400:
        fmt = "%Y-%m-%d %H:%M %Z"
    return local.strftime(fmt)


def _age_since(stamp: Any, now: datetime) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return (now - datetime.fromisoformat(stamp)).total_seconds()
    except (ValueError, TypeError):
        return None


# -- fitting columns to the width -----------------------------------------------------------


@dataclass
class Column:
    """One column: its header, how to render a row (full and, optionally, short), its
    alignment, and how readily it goes when the width is short (higher goes first)."""

    header: str
    cell: Callable[[Mapping[str, Any]], Text]
    short: Callable[[Mapping[str, Any]], Text] | None = None
    justify: str = "left"
    drop_rank: int = 0  # 0: never dropped


def fit(columns: list[Column], rows: Sequence[Mapping[str, Any]], width: int) -> Table:
    """A borderless table of `rows` no wider than `width`: the widest columns' short forms
    first, then columns by `drop_rank`, until it fits (the symbol and price always stay)."""
    chosen = [(column, column.cell) for column in columns]

    def cells(render: Callable[[Mapping[str, Any]], Text]) -> list[Text]:
        return [render(row) for row in rows]

    rendered = {column.header: cells(render) for column, render in chosen}

    def total() -> int:
        widths = [
            max([len(column.header)] + [t.cell_len for t in rendered[column.header]])
            for column, _ in chosen
        ]
        return sum(widths) + _GAP * (len(widths) - 1)

    # Shorten before dropping, in the order columns would be dropped.
    order = sorted((c for c in columns if c.drop_rank), key=lambda c: -c.drop_rank)
    for column in order:
        if total() <= width:
            break
        if column.short is not None:
            index = next(i for i, (c, _) in enumerate(chosen) if c is column)
            chosen[index] = (column, column.short)
            rendered[column.header] = cells(column.short)
    for column in order:
        if total() <= width:
            break
        chosen = [(c, r) for c, r in chosen if c is not column]
    table = Table(box=None, pad_edge=False, padding=(0, _GAP, 0, 0), show_edge=False)
    for column, _ in chosen:
        table.add_column(
            column.header.upper(),
            justify=column.justify,  # type: ignore[arg-type]
            no_wrap=True,
            header_style="bold",
        )
    for index in range(len(rows)):
        table.add_row(*(rendered[column.header][index] for column, _ in chosen))
    return table


# -- the symbols ----------------------------------------------------------------------------


def _state(entry: Mapping[str, Any]) -> Text:
    if entry.get("pending") or (entry.get("last_quote") is None and "pending" not in entry):
        return Text("pending", style="dim")
    if entry.get("source_stale"):  # the source's own time predates the market's last session
        return Text("suspended?", style="magenta")
    if entry.get("stale"):
        return Text("stale", style="yellow")
    return Text("ok", style="green")


def _price(entry: Mapping[str, Any]) -> Text:
    quote = entry.get("last_quote") or {}
    price = quote.get("price")
    if price is None:
        return Text("-")
    currency = quote.get("currency")
    return Text(f"{price} {currency}" if currency else str(price))


def _change(entry: Mapping[str, Any]) -> Text:
    value = (entry.get("last_quote") or {}).get("change_pct")
    if value is None:
        return Text("-")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return Text(str(value))
    style = "green" if number > 0 else "red" if number < 0 else ""
    return Text(f"{number:+.2f}%", style=style)


def _market(now: datetime, short: bool) -> Callable[[Mapping[str, Any]], Text]:
    def cell(entry: Mapping[str, Any]) -> Text:
        market = entry.get("market") or {}
        if "open" not in market:
            return Text("-")
        name = str(market.get("market") or "")
        if market.get("open"):
            return Text(f"{name} open" if not short else "open")
        if short:
            return Text("closed", style="dim")
        text = f"{name} closed"
        if market.get("next_open"):
            text += f", opens {_when(market.get('next_open'), now)}"
        return Text(text, style="dim")

    return cell


def _symbol_columns(now: datetime) -> list[Column]:
    def quote_field(name: str) -> Callable[[Mapping[str, Any]], Text]:
        return lambda entry: Text(str((entry.get("last_quote") or {}).get(name) or "-"))

    return [
        Column("symbol", lambda e: Text(str(e.get("symbol")))),
        Column("price", _price, justify="right"),
        Column("change", _change, justify="right", drop_rank=4),
        Column("age", lambda e: Text(format_age(e.get("age_s"))), justify="right", drop_rank=3),
        Column("state", _state),
        Column("market", _market(now, short=False), short=_market(now, short=True), drop_rank=5),
        Column("source", quote_field("source"), drop_rank=6),
        Column(
            "as of",
            lambda e: Text(_when((e.get("last_quote") or {}).get("as_of"), now)),
            drop_rank=7,
        ),
    ]


# -- the screen -----------------------------------------------------------------------------


def _breaker_text(state: str) -> Text:
    style = {"open": "red", "half_open": "yellow", "closed": "green"}.get(state, "dim")
    return Text(state.replace("_", "-"), style=style)


def _sources_table(status: Mapping[str, Any], width: int) -> Table:
    breakers = status.get("breakers") or {}
    rows = [
        {"name": name, "usage": usage, "breaker": breakers.get(name) or {}}
        for name, usage in (status.get("sources") or {}).items()
    ]

    def count(key: str) -> Callable[[Mapping[str, Any]], Text]:
        return lambda row: Text(f"{int(row['usage'].get(key, 0) or 0):,}")

    fixed = [
        Column("source", lambda row: Text(str(row["name"]))),
        Column(
            "breaker",
            lambda row: _breaker_text(str(row["breaker"].get("state", "not configured"))),
        ),
        Column("requests", count("total_requests"), justify="right"),
        Column("ok", count("successes"), justify="right", drop_rank=2),
        Column("failed", count("failures"), justify="right", drop_rank=3),
        Column("skipped", count("skipped"), justify="right", drop_rank=4),
    ]
    used = sum(max([len(c.header)] + [c.cell(r).cell_len for r in rows]) + _GAP for c in fixed)
    room = max(12, width - used)

    def last_error(row: Mapping[str, Any]) -> Text:
        text = str(row["usage"].get("last_error") or "-")
        return Text(text if len(text) <= room else text[: room - 1] + "…")

    return fit([*fixed, Column("last error", last_error, drop_rank=1)], rows, width)


def _render_store(store: Mapping[str, Any], out: Console) -> None:
    """One line for the embedded store; for Redis, its state and a table of live nodes."""
    if store.get("backend", "embedded") != "redis":
        out.print("store embedded (this node only)")
        return
    reachable = store.get("reachable")
    state = "reachable" if reachable else (
        "[bold red]UNREACHABLE[/]: no paid requests; yfinance and local last-known quotes serve"
    )  # fmt: skip
    out.print(f"store redis {store.get('redis_url')} {state}; this node {store.get('node')}",
              markup=True)  # fmt: skip
    _render_redis_health(store, out)
    if store.get("nodes_error"):
        out.print(f"nodes unknown: {store.get('nodes_error')}")
        return
    nodes = Table(title=f"nodes ({len(store.get('nodes') or [])} alive)")
    for name in ("node", "host", "pid", "last collection", "quotes", "errors", "took"):
        nodes.add_column(name)
    for node in store.get("nodes") or []:
        last = node.get("last_collection") or {}
        nodes.add_row(
            str(node.get("node")),
            str(node.get("host", "-")),
            str(node.get("pid", "-")),
            _when(last.get("started_at"), datetime.now(UTC)),
            f"{last.get('quotes', '-')}/{last.get('symbols', '-')}",
            str(last.get("errors", "-")),
            f"{last['duration_s']:.1f}s" if isinstance(last.get("duration_s"), int | float)
            else "-",
        )  # fmt: skip
    out.print(nodes)


def _render_redis_health(store: Mapping[str, Any], out: Console) -> None:
    """Redis' persistence warning and the ledger's recovery after Redis lost its data."""
    warning = (store.get("persistence") or {}).get("warning")
    if warning:
        out.print(Text(f"warning: {warning}", style="yellow"))
    ledger = store.get("ledger") or {}
    if ledger.get("state") == "recovering":
        waiting = ", ".join(ledger.get("waiting_for") or []) or "-"
        line = (
            f"LEDGER RECOVERING: Redis lost the cluster's spend ({ledger.get('reason')}); "
            f"free sources only until every node has reported its own; waiting for {waiting} "
            f"({int(float(ledger.get('waited_s') or 0))} s)"
        )
        if ledger.get("timed_out"):
            line += "; " + str(ledger.get("message", "")).split("; ", 1)[-1]
        out.print(Text(line, style="bold red"))
    elif ledger.get("recovered_at"):
        when = _when(ledger.get("recovered_at"), datetime.now(UTC))
        reported = ", ".join(ledger.get("reported") or [])
        out.print(f"ledger recovered at {when} after Redis lost its data (from {reported})")
    elif ledger.get("state") == "unknown":
        out.print(Text(f"ledger state unknown: {ledger.get('error')}", style="yellow"))
    rebuilt = store.get("watchlist_rebuilt") or {}
    try:
        at = datetime.fromisoformat(str(rebuilt.get("at")))
    except ValueError:
        return
    if datetime.now(UTC) - at.astimezone(UTC) < timedelta(days=1):  # news for a day
        merged = ", ".join(str(n) for n in rebuilt.get("merged") or []) or "-"
        out.print(Text(
            f"watchlist rebuilt at {_when(rebuilt.get('at'), datetime.now(UTC))} after Redis "
            f"lost it: {rebuilt.get('symbols')} symbols from the nodes' copies ({merged}), "
            f"{rebuilt.get('removals')} removals kept",
            style="yellow",
        ))  # fmt: skip


def _reason_line(group: Mapping[str, Any]) -> str:
    """ "141 pending: <why>: A, B, C and 138 more (`crawler status SYMBOL` for one)"."""
    count = int(group.get("count") or 0)
    names = [str(name) for name in group.get("symbols") or []][:3]
    more = count - len(names)
    return f"  {count:,} pending: {group.get('cause')}: {', '.join(names)}" + (
        f" and {more:,} more" if more > 0 else ""
    )


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
        f"({yahoo.get('batch_quotes', 0)} quotes, {yahoo.get('batch_left_out', 0)} left out "
        f"as unknown, {yahoo.get('batch_fallbacks', 0)} sent to the chart), "
        f"{yahoo.get('fetches', 0)} chart requests"
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
    """ "live stream connected: 262 subscribed, 1,234 ticks, last 0s ago" (None when off)."""
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


def render_symbol(entry: Mapping[str, Any], out: Console) -> None:
    """`crawler status SYMBOL`: one symbol, its last quote, market, and why it waits."""
    quote = entry.get("last_quote") or {}
    state = _state(entry).plain
    out.print(Text(f"{entry.get('symbol')} ({entry.get('asset_class')}): {state}", style="bold"))
    if quote:
        out.print(
            f"price   {quote.get('price')} {quote.get('currency') or ''}  "
            f"({quote.get('source')}, as of {quote.get('as_of')}, fetched "
            f"{format_age(entry.get('fetched_age_s'))} ago)",
            highlight=False, markup=False, overflow="fold",
        )  # fmt: skip
    else:
        out.print("price   - (never fetched)", highlight=False)
    market = entry.get("market")
    if isinstance(market, Mapping):
        text = f"market  {market.get('market')} {'open' if market.get('open') else 'closed'}"
        out.print(text, highlight=False, markup=False)
    if entry.get("reason"):
        out.print(f"why     {entry.get('reason')}", highlight=False, markup=False, overflow="fold")
    if entry.get("last_error") and entry.get("last_error") != entry.get("reason"):
        out.print(
            f"error   {entry.get('last_error')} (last collection)",
            highlight=False, markup=False, overflow="fold",
        )  # fmt: skip


def render_status(status: Mapping[str, Any], out: Console) -> None:
    """The daemon, its budget and sources, and a row per tracked symbol (stale and pending
    first, at most STATUS_MAX_ROWS), fitted to `out`'s width."""
    now = datetime.now(UTC)
    width = out.width
    _render_daemon(status, out, now)
    _render_money(status, out)
    stream_line = _stream_line(status.get("stream"))
    if stream_line:
        out.print(stream_line, markup=False, highlight=False, overflow="fold")
    _render_store(status.get("store") or {}, out)
    for name, message in (status.get("config_errors") or {}).items():
        out.print(Text(f"config error {name}: {message}", style="bold red"), overflow="fold")

    out.print()
    out.print(_sources_table(status, width))
    line = yahoo_line(status.get("yahoo"))
    if line is not None:
        out.print(line, markup=False, highlight=False, overflow="fold")
    _render_symbols(status, out, now, width)


def _render_daemon(status: Mapping[str, Any], out: Console, now: datetime) -> None:
    """Who runs where, the scheduler, and the collection under way."""
    daemon = status.get("daemon") or {}
    scheduler = status.get("scheduler") or {}
    state = scheduler.get("scheduler_state") or {}
    metrics = scheduler.get("collection_metrics") or {}
    out.print(
        f"crawler {daemon.get('version', '?')} running (pid {daemon.get('pid')}, "
        f"up {format_age(daemon.get('uptime_s'))})",
        highlight=False,
    )
    out.print(f"socket {daemon.get('socket')}", highlight=False, overflow="fold")
    out.print(f"data   {daemon.get('data_dir')}", highlight=False, overflow="fold")
    jobs = scheduler.get("scheduled_jobs") or []
    next_run = next((j.get("next_run") for j in jobs if j.get("id") == "collection"), None)
    total = int(metrics.get("total_collections", 0) or 0)
    failed = int(metrics.get("failed_collections", 0) or 0)
    scheduler_line = Text(
        f"scheduler {'running' if state.get('is_running') else 'stopped'}: "
        f"every {format_age(state.get('update_interval_seconds'))}, "
        f"{plural(total, 'collection')} ({failed:,} failed), next {_when(next_run, now)}"
    )
    out.print(scheduler_line)
    running = state.get("collection_in_progress")
    if running:
        out.print(
            Text(
                f"collecting now: {int(running.get('done', 0)):,}/"
                f"{int(running.get('total', 0)):,} symbols, started "
                f"{format_age(_age_since(running.get('started_at'), now))} ago",
                style="cyan",
            )
        )


def _render_money(status: Mapping[str, Any], out: Console) -> None:
    """One line about the money: the spending summary, else the ledger's own figures."""
    budget = status.get("budget") or {}
    spending = status.get("spending") or {}
    if spending.get("line"):  # in the same money format as `crawler budget`
        out.print(str(spending["line"]), markup=False, highlight=False, overflow="fold")
        return
    used = int(budget.get("requests_used", 0) or 0)
    allowed = budget.get("requests_allowed")
    allowed_text = f"{int(allowed):,}" if isinstance(allowed, int | float) else "?"
    out.print(
        Text(
            f"budget {money(budget.get('budget_remaining'))} left of "
            f"{money(budget.get('budget_total'))} today, {money(budget.get('total_cost'))} "
            f"spent ({used:,}/{allowed_text} requests, {budget.get('budget_used_pct', 0)}%)"
        )
    )


def _render_symbols(status: Mapping[str, Any], out: Console, now: datetime, width: int) -> None:
    """The heading with the counts, the pending reasons, and the rows that fit."""
    entries = list(status.get("symbols") or [])
    summary = status.get("symbols_summary") or {}
    tracked = int(summary.get("tracked", len(entries)))
    stale = int(summary.get("stale", sum(1 for e in entries if e.get("stale"))))
    pending = int(summary.get("pending", sum(1 for e in entries if _state(e).plain == "pending")))
    # Prices first: stale (they need a look), then fresh, then pending (no price yet), whose
    # reasons are the lines under the heading. The daemon sorted them already when it cut the
    # list; sorting again keeps an uncut list the same.
    order = {"stale": 0, "ok": 1, "pending": 2}
    shown = sorted(entries, key=lambda e: order.get(_state(e).plain, 0))[:STATUS_MAX_ROWS]
    out.print()
    heading = f"symbols: {tracked:,} tracked, {stale:,} stale"
    if pending:
        heading += f", {pending:,} pending"
    out.print(Text(heading, style="bold"))
    for group in summary.get("pending_reasons") or []:
        out.print(_reason_line(group), highlight=False, markup=False, overflow="fold")
    if shown:
        out.print(fit(_symbol_columns(now), shown, width))
    elif not tracked:
        out.print("no symbols tracked; add one with `crawler symbols add AAPL:US`")
    if tracked > len(shown):
        out.print(
            f"… and {tracked - len(shown):,} more: `crawler status --json` lists all",
            highlight=False,
        )
