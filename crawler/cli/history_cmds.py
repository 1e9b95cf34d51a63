"""Commands about the recorded quotes: history (one symbol, every format) and export (all of
them, as CSV, JSON lines or Parquet).

Each goes through the daemon when one answers and reads the data dir directly otherwise,
through the same `crawler.service.verbs.Operations`; neither ever creates a data dir.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from crawler.cli.common import client_for, fail, load, offline_operations, via_daemon_or_offline
from crawler.cli.data_cmds import MajorUnitsOpt, canonical
from crawler.cli.progress import Bar, progress_bar
from crawler.cli.render import console, plural, print_json, quotes_table
from crawler.utils.exceptions import UsageError

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.service.exports import HistoryQuery
    from crawler.service.verbs import Operations

__all__ = ["EXPORT_FORMATS", "HISTORY_FORMATS", "choose_format", "export", "history", "register"]

KindOpt = Annotated[
    str,
    typer.Option(
        "--kind",
        help="all (default: collected quotes and backfilled bars), quotes or bars.",
    ),
]

#: What `history` and `export` print; the first of each is the default.
HISTORY_FORMATS = ("table", "json", "csv", "jsonl")
STREAM_FORMATS = ("csv", "jsonl")
EXPORT_FORMATS = ("csv", "jsonl", "parquet")


def choose_format(fmt: str | None, shorthands: dict[str, bool], allowed: tuple[str, ...]) -> str:
    """The output format from `--format X` or a shorthand flag (`--json`, `--csv`...), the same
    way for every command; bad usage (exit 2) for an unknown one or two that disagree."""
    chosen = {name for name, given in shorthands.items() if given}
    if fmt is not None:
        chosen.add(fmt.lower())
    if len(chosen) > 1:
        fail(f"choose one format, not {' and '.join(sorted(chosen))}", 2)
    name = chosen.pop() if chosen else allowed[0]
    if name not in allowed:
        fail(f"--format {name!r} is not known; use {', '.join(allowed)}", 2)
    return name


def _check_times(since: str | None, until: str | None) -> None:
    """A bad --since/--until is bad usage (exit 2) before anything is asked or opened."""
    from crawler.store.history import parse_time_spec

    for name, spec in (("since", since), ("until", until)):
        if spec:
            try:
                parse_time_spec(spec)
            except ValueError as exc:
                raise UsageError(f"--{name}: {exc}") from None


def _query(**values: str | None) -> dict[str, str]:
    return {key: value for key, value in values.items() if value is not None}


def history(
    ctx: typer.Context,
    symbol: Annotated[str, typer.Argument(help="The symbol, e.g. AAPL:US.")],
    since: Annotated[
        str | None,
        typer.Option("--since", help="2h, 7d, 2026-11-01... (on the quote's own time, as of)."),
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Same forms as --since.")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            help="At most this many rows (default 100; up to 10,000, or 0 for all with --csv).",
        ),
    ] = None,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="The oldest rows, oldest first.")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="table (default), json, csv or jsonl.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Same as --format csv.")] = False,
    major_units: MajorUnitsOpt = False,
    kind: KindOpt = "all",
) -> None:
    """The recorded quotes of one symbol: the newest 100, newest first, in every format.

    A cut answer says so on stderr (and in --format json: "truncated", "total"); for every row
    use --format csv --limit 0 or `crawler export --symbols SYMBOL`.
    """
    fmt = choose_format(fmt, {"json": as_json, "csv": as_csv}, HISTORY_FORMATS)
    (symbol,) = canonical([symbol])
    _check_times(since, until)
    from crawler.service.exports import HistoryQuery, check_history_limit

    check_history_limit(limit, streamed=fmt in STREAM_FORMATS)
    settings = load(ctx)
    major = major_units or settings.major_units
    asked = HistoryQuery(symbol, since, until, limit, oldest_first, major, kind)
    if fmt in STREAM_FORMATS:
        _stream_history(settings, asked, fmt)
    else:
        _show_history(settings, asked, fmt)


def _order(asked: HistoryQuery) -> str:
    return "oldest" if asked.oldest_first else "newest"


def _history_query(asked: HistoryQuery) -> dict[str, str]:
    """`asked` as GET /history's query."""
    return _query(
        symbol=asked.symbol,
        since=asked.since,
        until=asked.until,
        limit=None if asked.limit is None else str(asked.limit),
        order=_order(asked),
        units="major" if asked.major_units else None,
        kind=asked.kind,
    )


def _stream_history(settings: Settings, asked: HistoryQuery, fmt: str) -> None:
    """CSV or JSON lines on stdout as they come, every row when --limit 0."""

    def remote() -> tuple[int, int]:
        headers: dict[str, str] = {}
        chunks = client_for(settings).stream(
            "GET", "/history", {**_history_query(asked), "format": fmt}, headers=headers
        )
        _write_chunks(chunks, sys.stdout.buffer)
        sent = int(headers.get("x-crawler-rows", "0") or 0)
        return sent, int(headers.get("x-crawler-rows-total", sent) or sent)

    def local(ops: Operations) -> tuple[int, int]:
        sent, total, chunks = ops.history_export(fmt, asked)
        _write_chunks(chunks, sys.stdout.buffer)
        return sent, total

    sent, total = via_daemon_or_offline(
        settings, remote, local, offline_operations, creates=False, clean=True
    )
    sys.stdout.buffer.flush()
    _say_if_cut(asked.symbol, sent, total, _order(asked))


def _show_history(settings: Settings, asked: HistoryQuery, fmt: str) -> None:
    """A table (or one JSON document) of the rows asked for."""
    result = via_daemon_or_offline(
        settings,
        lambda: dict(client_for(settings).call("GET", "/history", query=_history_query(asked))),
        lambda ops: ops.history(asked),
        offline_operations,
        creates=False,
        clean=True,
    )
    quotes = result.get("quotes") or []
    if fmt == "json":
        print_json(result)
    elif quotes:
        title = f"history of {result['symbol']}, {_order(asked)} first"
        screen = console()
        screen.print(quotes_table(quotes, title=title, width=screen.width))
    else:
        typer.echo(f"no recorded quotes for {result.get('symbol', asked.symbol)}")
    total = int(result.get("total") or len(quotes))
    _say_if_cut(asked.symbol, len(quotes), total, _order(asked))


def _say_if_cut(symbol: str, shown: int, total: int, order: str) -> None:
    """A note on stderr when `shown` rows of `total` were sent, and how to get the rest."""
    if shown >= total:
        return
    sys.stderr.write(
        f"note: showing the {order} {shown:,} of {total:,} quotes of {symbol}; "
        "narrow with --since/--until, raise --limit (0 with --csv: all), "
        f"or `crawler export --symbols {symbol}` for every row\n"
    )


def _write_chunks(chunks: Iterator[bytes], out: Any) -> int:
    written = 0
    for chunk in chunks:
        out.write(chunk)
        written += len(chunk)
    return written


def export(
    ctx: typer.Context,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv (default), jsonl or parquet (needs -o).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="2h, 7d, 2026-11-01... (on when it was fetched; see --by)."),
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Same forms as --since.")] = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="Comma-separated, e.g. AAPL:US,VOD:LN.")
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write.")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Same as --format csv.")] = False,
    as_jsonl: Annotated[bool, typer.Option("--jsonl", help="Same as --format jsonl.")] = False,
    major_units: MajorUnitsOpt = False,
    kind: KindOpt = "all",
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Which time --since/--until filter on: fetched (when crawler got the quote; "
            "the default) or quote (the quote's own time, as its source stamped it).",
        ),
    ] = "fetched",
) -> None:
    """Export the quote history as CSV, JSON lines (stdout unless -o) or Parquet (-o FILE).

    --since 1h means the quotes fetched in the last hour (a quote fetched five minutes ago
    whose source time is old is in it); --by quote filters on the quote's own time instead.
    """
    fmt = choose_format(fmt, {"csv": as_csv, "jsonl": as_jsonl}, EXPORT_FORMATS)
    _check_export(fmt, by, output)
    _check_times(since, until)
    wanted = canonical([s for s in symbols.split(",") if s.strip()]) if symbols else None
    if wanted is not None:
        symbols = ",".join(wanted)
    settings = load(ctx)
    major = major_units or settings.major_units
    target = _open_output(output) if output is not None else sys.stdout.buffer
    # A bar only when writing a file: on stdout the rows themselves are the output.
    with progress_bar("exporting", None) if output is not None else _no_bar() as bar:
        try:

            def remote() -> tuple[int, int]:
                query = _query(
                    format=fmt,
                    since=since,
                    until=until,
                    symbols=symbols,
                    units="major" if major else None,
                    kind=kind,
                    by=by,
                )
                headers: dict[str, str] = {}
                chunks = client_for(settings).stream("GET", "/export", query, headers=headers)
                rows = int(headers.get("x-crawler-rows", "0") or 0)
                return rows, _copy_rows(chunks, target, rows, fmt, bar)

            def local(ops: Operations) -> tuple[int, int]:
                rows, chunks = ops.export(fmt, since, until, wanted, major, kind, by)
                return rows, _copy_rows(chunks, target, rows, fmt, bar)

            rows, written = via_daemon_or_offline(
                settings, remote, local, offline_operations, creates=False, clean=True
            )
        finally:
            if output is not None:
                target.close()
            else:
                target.flush()
    if output is not None:
        typer.echo(f"wrote {plural(rows, 'row')} ({_size(written)}) to {output}", err=True)


def _check_export(fmt: str, by: str, output: Path | None) -> None:
    """Bad usage (exit 2) before anything is asked or opened."""
    if by not in ("fetched", "quote"):
        fail(f"--by {by!r} is not known; use fetched or quote", 2)
    if fmt == "parquet":
        if output is None:
            fail("--format parquet writes a file: add -o FILE, e.g. -o history.parquet", 2)
        from crawler.store.parquet import parquet_schema

        parquet_schema(())  # pyarrow missing: one line naming the extra, before any work


@contextlib.contextmanager
def _no_bar() -> Iterator[Bar | None]:
    yield None


def _copy_rows(chunks: Iterator[bytes], out: Any, rows: int, fmt: str, bar: Bar | None) -> int:
    """Write `chunks` to `out`, moving `bar` by the rows seen (lines, less CSV's header)."""
    if bar is None:
        return _write_chunks(chunks, out)
    bar.update(done=0, total=rows)
    written = lines = 0
    header = 1 if fmt == "csv" else 0
    for chunk in chunks:
        out.write(chunk)
        written += len(chunk)
        if fmt == "parquet":  # binary: the rows are all there once the last chunk is
            continue
        lines += chunk.count(b"\n")
        bar.update(done=max(0, min(rows, lines - header)))
    bar.update(done=rows)
    return written


def _size(count: int) -> str:
    """Bytes for people: 812 B, 48.2 kB, 172.2 MB, 1.3 GB."""
    size = float(count)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _open_output(path: Path) -> BinaryIO:
    """`path` opened for writing, created 0600 whatever the umask (the history is the user's
    data, like every file in the data dir); a path that cannot be written is one line naming it
    and what to do, before anything is asked of the daemon."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except FileNotFoundError as exc:
        raise UsageError(
            f"-o {path}: the directory {path.parent} does not exist; create it or write elsewhere"
        ) from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"-o {path}: cannot write it ({reason}); choose another file") from exc
    return os.fdopen(fd, "wb")


def register(app: typer.Typer) -> None:
    """Add `history` and `export` to `app`."""
    app.command()(history)
    app.command()(export)
