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
from rich.text import Text

from crawler.cli.status_screen import (
    STATUS_MAX_ROWS,
    _age_of,
    _short_time,
    format_age,
    plural,
    render_status,
    yahoo_line,
)
from crawler.utils.text import clean_text

__all__ = [
    "STATUS_MAX_ROWS",
    "console",
    "format_age",
    "plural",
    "print_json",
    "quotes_table",
    "render_status",
    "symbols_table",
    "yahoo_line",
]


def console() -> Console:
    """A Console on stdout; off a terminal it is wide, so tables are not squeezed."""
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def print_json(data: Any) -> None:
    """`data` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _pct(value: Any) -> str:
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:+.2f}%"


def quotes_table(
    quotes: Iterable[Mapping[str, Any]], title: str | None = None, width: int = 160
) -> Table:
    """symbol, price (with its currency), change %, as of, source, age, stale: one line per
    quote, no wider than `width`. At 80 columns the time loses its date, then the least
    needed columns go (age, as of, source...); the symbol and the price are never cut (at 80
    columns rich used to squeeze the price itself to `233.36…` and wrap every row)."""
    from crawler.cli.status_screen import Column, fit

    now = datetime.now(UTC)
    rows = [dict(quote) for quote in quotes]

    def source_of(quote: Mapping[str, Any]) -> str:
        source = str(quote.get("source", "-"))
        if quote.get("from_cache"):
            source += " (cache)"
        if quote.get("interval"):
            source += f" {quote['interval']} bar"
        return source

    def price(quote: Mapping[str, Any]) -> Text:
        return _cell(f"{quote.get('price', '-')} {quote.get('currency') or ''}".rstrip())

    columns = [
        Column("symbol", lambda q: _cell(q.get("symbol", "-"))),
        Column("price", price, justify="right"),
        Column("change %", lambda q: _cell(_pct(q.get("change_pct"))), justify="right",
               drop_rank=3),
        Column("as of (UTC)", lambda q: _cell(_short_time(q.get("as_of"))),
               short=lambda q: _cell(_short_time(q.get("as_of"))[11:16] or "-"), drop_rank=5),
        Column("source", lambda q: _cell(source_of(q)),
               short=lambda q: _cell("cache" if q.get("from_cache") else q.get("source", "-")),
               drop_rank=4),
        Column("age", lambda q: _cell(format_age(_age_of(q, now))), justify="right",
               drop_rank=6),
        Column("stale", lambda q: _cell(_stale_text(q.get("stale"), q.get("source_stale"))),
               drop_rank=2),
    ]  # fmt: skip
    table = fit(columns, rows, width)
    table.title = title
    return table


def _stale_text(stale: Any, source_stale: Any) -> str:
    """ "no", "yes", or "suspended?" when the source's own time predates the last session."""
    if source_stale:
        return "suspended?"
    return "yes" if stale else "no"


def symbols_table(symbols: Iterable[Mapping[str, Any]]) -> Table:
    """The watchlist: symbol and asset class."""
    table = Table()
    table.add_column("symbol")
    table.add_column("asset class")
    for entry in symbols:
        table.add_row(_cell(entry.get("symbol")), _cell(entry.get("asset_class")))
    return table


def _cell(value: Any) -> Text:
    """A table cell of data: never read as rich markup (a name "[link=...]" would become a
    terminal hyperlink), and without escape sequences or control characters."""
    return Text(clean_text(str(value)))
