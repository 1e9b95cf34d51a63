"""Commands about quotes and symbols: fetch, symbols, history, export.

Each goes through the daemon when one answers (shared breakers, budget and cache) and works
directly on the data dir otherwise, through the same `crawler.service.verbs.Operations`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, TypeVar, cast
from urllib.parse import quote as url_quote

import typer

from crawler.cli.common import client_for, fail, load, no_data_dir, note, warn
from crawler.cli.progress import Bar, json_lines, progress_bar
from crawler.cli.render import console, plural, print_json, quotes_table, symbols_table
from crawler.utils.exceptions import (
    DaemonError,
    DaemonNotRunningError,
    UsageError,
    WatchlistFullError,
)
from crawler.utils.text import clean_data, clean_text

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.service.verbs import Operations

__all__ = ["register", "symbols_app"]

T = TypeVar("T")

symbols_app = typer.Typer(help="Manage the tracked symbols (the watchlist).", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AssetClassOpt = Annotated[
    str | None,
    typer.Option("--asset-class", help="stocks, forex, commodities, indices, bonds or crypto."),
]
MajorUnitsOpt = Annotated[
    bool,
    typer.Option(
        "--major-units",
        help="GBp/GBX, ZAc and ILA prices in GBP, ZAR and ILS ([display] major_units).",
    ),
]
KindOpt = Annotated[
    str,
    typer.Option(
        "--kind",
        help="all (default: collected quotes and backfilled bars), quotes or bars.",
    ),
]
#: More symbols than this get a progress bar (on a terminal).
_PROGRESS_MIN_SYMBOLS = 3
#: Symbols per POST /fetch: the control API's limit (`crawler.daemon.routes`).
_FETCH_BATCH = 1000


@contextlib.contextmanager
def _offline(settings: Settings) -> Iterator[Operations]:
    from crawler.service.verbs import Operations

    ops = Operations.offline(settings)
    try:
        yield ops
    finally:
        ops.close()


def _via_daemon_or_offline(
    settings: Settings,
    remote: Callable[[], T],
    local: Callable[[Operations], T],
    creates: bool = True,
) -> T:
    """`remote()` if a daemon answers, else `local(ops)` on the data dir.

    A command that only reads (`creates` False) never makes a data dir: with none there, it
    says no daemon answers and where it looked (exit 3), instead of an empty answer from a
    directory it has just created."""
    # Whatever it answers is shown on a terminal: its text (names, errors quoting upstream,
    # rows stored before the normalizers cleaned them) goes without escapes or control chars.
    try:
        return cast(T, clean_data(remote()))
    except DaemonNotRunningError as exc:
        if not creates and not Path(settings.data_dir).exists():
            raise no_data_dir(settings, exc) from None
    with _offline(settings) as ops:
        return cast(T, clean_data(local(ops)))


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Bar | None]:
    """A progress bar (stderr, on a terminal) for more than a few symbols, or None."""
    if total <= _PROGRESS_MIN_SYMBOLS:
        yield None
        return
    with progress_bar("fetching", total) as bar:
        yield bar


def fetch(
    ctx: typer.Context,
    symbols: Annotated[list[str], typer.Argument(help="Symbols, e.g. AAPL:US VOD:LN.")],
    fresh: Annotated[bool, typer.Option("--fresh", help="Skip the cache.")] = False,
    asset_class: AssetClassOpt = None,
    as_json: AsJson = False,
    major_units: MajorUnitsOpt = False,
    paid: Annotated[
        bool, typer.Option("--paid", help="Buy a Bright Data quote on purpose (counts as 'asked').")
    ] = False,
) -> None:
    """Fetch quotes now; exit 1 if any symbol could not be served (the others are fetched)."""
    symbols, bad = _split_valid(symbols, asset_class)
    settings = load(ctx)

    def remote_batch(batch: list[str], bar: Bar | None, done_before: int) -> dict[str, Any]:
        body: dict[str, Any] = {"symbols": batch, "fresh": fresh, "asset_class": asset_class}
        if paid:
            body["paid"] = True
        if bar is None:
            return dict(client_for(settings).call("POST", "/fetch", body))
        # The daemon streams a line as each symbol is served, then the result.
        chunks = client_for(settings).stream("POST", "/fetch", body={**body, "progress": True})
        for line in json_lines(chunks):
            if line.get("type") == "progress":
                bar.update(done=done_before + int(line["done"]), total=len(symbols))
            elif line.get("type") == "result":
                return {key: value for key, value in line.items() if key != "type"}
            elif line.get("type") == "error":
                from crawler.daemon.client import error_from_response

                raise error_from_response(500, line)
        raise DaemonError("the daemon's fetch answer ended early; run it again")

    def remote() -> dict[str, Any]:
        # The control API takes at most _FETCH_BATCH symbols a request: more are sent in turn
        # (a 1,001-symbol fetch used to fail whole with the API's own field message).
        merged: dict[str, Any] = {"quotes": [], "errors": {}}
        with _progress(len(symbols)) as bar:
            for start in range(0, len(symbols), _FETCH_BATCH):
                part = remote_batch(symbols[start : start + _FETCH_BATCH], bar, start)
                merged["quotes"] += part.get("quotes") or []
                merged["errors"].update(part.get("errors") or {})
                if part.get("notices"):
                    merged.setdefault("notices", []).extend(part["notices"])
                if part.get("warnings"):
                    merged["warnings"] = part["warnings"]  # the daemon's, the same each time
        return merged

    def local(ops: Operations) -> dict[str, Any]:
        with _progress(len(symbols)) as bar:
            on_done = (lambda _key, _outcome: bar.advance()) if bar else None
            return ops.fetch(symbols, fresh, asset_class, on_done=on_done, paid=paid)

    result = _via_daemon_or_offline(settings, remote, local)
    for notice in result.get("notices") or []:
        note(str(notice))
    for warning in result.get("warnings") or []:
        sys.stderr.write(f"warning: {clean_text(str(warning))}\n")
    quotes = result.get("quotes") or []
    if major_units or settings.major_units:
        from crawler.normalizer.units import major_dict

        quotes = result["quotes"] = [major_dict(quote) for quote in quotes]
    errors = {**bad, **(result.get("errors") or {})}
    result["errors"] = errors
    stale = [str(q.get("symbol")) for q in quotes if q.get("stale")]
    if as_json:
        print_json(result)
    elif quotes:
        screen = console()
        screen.print(quotes_table(quotes, width=screen.width))
    from crawler.orchestrator.failures import group_failures, summary_lines

    # One line per cause, not one per symbol (the full list: --json).
    for line in summary_lines(group_failures(errors)):
        warn(line)
    if stale:
        shown = ", ".join(stale[:3]) + (f" and {len(stale) - 3:,} more" if len(stale) > 3 else "")
        note(
            f"{plural(len(stale), 'quote')} served stale (the last known, no source could "
            f"serve a fresh one): {shown}"
        )
    # Exit 1 when a symbol was left without a fresh quote (failed, or served stale).
    raise typer.Exit(1 if errors or stale else 0)


@symbols_app.command("add")
def symbols_add(
    ctx: typer.Context,
    symbols: Annotated[list[str], typer.Argument(help="Symbols to track.")],
    asset_class: AssetClassOpt = None,
    as_json: AsJson = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="A line per symbol, however many.")
    ] = False,
) -> None:
    """Track symbols (persisted; the daemon picks them up at its next collection).

    Up to 5 symbols get a line each; more get a summary (how many added, by asset class, and
    which were already tracked); --verbose or --json lists every one."""
    _canonical(symbols, asset_class)
    settings = load(ctx)

    def remote() -> tuple[list[dict[str, Any]], WatchlistFullError | None]:
        # Up to 1,000 a request: one request a symbol cost 10-30 ms each (15 s for 1,000).
        client = client_for(settings)
        results: list[dict[str, Any]] = []
        for start in range(0, len(symbols), _ADD_BATCH):
            chunk = symbols[start : start + _ADD_BATCH]
            body = client.call("POST", "/symbols", {"symbols": chunk, "asset_class": asset_class})
            results.extend(body.get("symbols") or [])
            if body.get("full"):
                return results, WatchlistFullError(str(body["full"]))
        return results, None

    def local(ops: Operations) -> tuple[list[dict[str, Any]], WatchlistFullError | None]:
        body = ops.add_symbols(symbols, asset_class)
        full = WatchlistFullError(str(body["full"])) if body.get("full") else None
        return list(body["symbols"]), full

    results, full = _via_daemon_or_offline(settings, remote, local)
    notices = [str(result["notice"]) for result in results if result.get("notice")]
    each = as_json or verbose or len(results) <= _ADD_LINES_MAX
    for notice in notices if each else notices[:_ADD_LINES_MAX]:
        note(notice)
    if not each and len(notices) > _ADD_LINES_MAX:
        note(f"… and {len(notices) - _ADD_LINES_MAX:,} more Yahoo spellings translated")
    if as_json:
        print_json({"symbols": results})
    elif each:
        for result in results:
            verb = "added" if result.get("added") else "already tracked:"
            typer.echo(f"{verb} {result.get('symbol')} ({result.get('asset_class')})")
    else:
        typer.echo(_add_summary(results))
    if full is not None:
        left = symbols[len(results) :]
        fail(
            f"{full.message.partition(';')[0]}: {len(left):,} of the {len(symbols):,} symbols "
            f"given were not added, from {left[0]} on; remove symbols before adding more"
        )


#: `symbols add` of more symbols than this prints a summary instead of a line each.
_ADD_LINES_MAX = 5
#: Symbols per `POST /symbols` request (the API's limit, as for fetch).
_ADD_BATCH = 1_000


def _add_summary(results: list[dict[str, Any]]) -> str:
    """ "added 278 symbols (stocks 270, forex 8); 2 already tracked: VOD:LN, BP/:LN"."""
    added = [r for r in results if r.get("added")]
    kept = [str(r.get("symbol")) for r in results if not r.get("added")]
    classes: dict[str, int] = {}
    for result in added:
        name = str(result.get("asset_class"))
        classes[name] = classes.get(name, 0) + 1
    text = f"added {plural(len(added), 'symbol')}"
    if classes:
        text += " (" + ", ".join(f"{name} {count:,}" for name, count in classes.items()) + ")"
    if kept:
        shown = ", ".join(kept[:3]) + (f" and {len(kept) - 3:,} more" if len(kept) > 3 else "")
        text += f"; {len(kept):,} already tracked: {shown}"
    return text + "; `crawler symbols list` shows them all"


@symbols_app.command("remove")
def symbols_remove(
    ctx: typer.Context,
    symbols: Annotated[list[str], typer.Argument(help="Symbols to stop tracking.")],
    as_json: AsJson = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="A line per symbol, however many.")
    ] = False,
) -> None:
    """Stop tracking symbols; exit 1 if one was not tracked.

    Up to 5 symbols get a line each; more get a summary (how many removed, and which were not
    tracked); --verbose or --json lists every one."""
    symbols = _canonical(symbols)
    settings = load(ctx)

    def remote() -> list[dict[str, Any]]:
        client = client_for(settings)
        results = []
        for s in symbols:
            status, body = client.delete("/symbols/" + url_quote(s, safe=""))
            if status == 404 and _error_type(body) == "NotTracked":
                results.append({"symbol": s, "removed": False})
            elif status >= 400:
                from crawler.daemon.client import error_from_response

                raise error_from_response(status, body)
            else:
                results.append(body)
        return results

    def local(ops: Operations) -> list[dict[str, Any]]:
        return [ops.remove_symbol(s) for s in symbols]

    results = _via_daemon_or_offline(settings, remote, local, creates=False)
    missing = sum(1 for result in results if not result.get("removed"))
    if as_json:
        print_json({"symbols": results})
        raise typer.Exit(1 if missing else 0)
    if verbose or len(results) <= _ADD_LINES_MAX:
        for result in results:
            if result.get("removed"):
                typer.echo(f"removed {result.get('symbol')}")
            else:
                warn(f"{result.get('symbol')} is not tracked")
    else:
        removed = sum(1 for result in results if result.get("removed"))
        typer.echo(f"removed {plural(removed, 'symbol')}")
        if missing:
            names = [str(r.get("symbol")) for r in results if not r.get("removed")]
            shown = ", ".join(names[:3]) + (f" and {missing - 3:,} more" if missing > 3 else "")
            warn(f"{plural(missing, 'symbol')} not tracked: {shown}")
    raise typer.Exit(1 if missing else 0)


def _error_type(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("type")) if isinstance(error, dict) else None


@symbols_app.command("list")
def symbols_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """The tracked symbols."""
    settings = load(ctx)
    result = _via_daemon_or_offline(
        settings,
        lambda: dict(client_for(settings).call("GET", "/symbols")),
        lambda ops: ops.list_symbols(),
        creates=False,
    )
    if as_json:
        print_json(result)
    elif result.get("symbols"):
        console().print(symbols_table(result["symbols"]))
    else:
        typer.echo("no symbols tracked; add one with `crawler symbols add AAPL:US`")


def _canonical(symbols: list[str], asset_class: str | None = None) -> list[str]:
    """The symbols in canonical form (Yahoo's spellings translated); SymbolError (exit 2) for
    a bad one or a contradicting --asset-class, before anything is sent or fetched, so a typo
    costs nothing and odd bytes never reach a URL."""
    from crawler.normalizer.user_symbols import read_symbol
    from crawler.service.answers import parse_asset_class

    asset = parse_asset_class(asset_class)
    return [read_symbol(text, asset).symbol.canonical for text in symbols]


def _split_valid(
    symbols: list[str], asset_class: str | None
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The well-formed symbols (as given) and an error per malformed one, so one typo does not
    cost the others their quotes; SymbolError (exit 2) when none is well-formed."""
    from crawler.normalizer.user_symbols import read_symbol
    from crawler.service.answers import parse_asset_class
    from crawler.utils.exceptions import SymbolError

    asset = parse_asset_class(asset_class)
    good: list[str] = []
    bad: dict[str, dict[str, str]] = {}
    for text in symbols:
        try:
            read_symbol(text, asset)
        except SymbolError as exc:
            bad[text] = {"type": "SymbolError", "message": exc.message}
        else:
            good.append(text)
    if not good:
        raise SymbolError("; ".join(error["message"] for error in bad.values()))
    return good, bad


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
    (symbol,) = _canonical([symbol])
    _check_times(since, until)
    from crawler.service.exports import HistoryQuery, check_history_limit

    check_history_limit(limit, streamed=fmt in STREAM_FORMATS)
    settings = load(ctx)
    order = "oldest" if oldest_first else "newest"
    major = major_units or settings.major_units
    asked = HistoryQuery(symbol, since, until, limit, oldest_first, major, kind)
    query = _query(
        symbol=symbol,
        since=since,
        until=until,
        limit=None if limit is None else str(limit),
        order=order,
        units="major" if major else None,
        kind=kind,
    )
    if fmt in STREAM_FORMATS:

        def remote_csv() -> tuple[int, int]:
            headers: dict[str, str] = {}
            chunks = client_for(settings).stream(
                "GET", "/history", {**query, "format": fmt}, headers=headers
            )
            _write_chunks(chunks, sys.stdout.buffer)
            sent = int(headers.get("x-crawler-rows", "0") or 0)
            return sent, int(headers.get("x-crawler-rows-total", sent) or sent)

        def local_csv(ops: Operations) -> tuple[int, int]:
            sent, total, chunks = ops.history_export(fmt, asked)
            _write_chunks(chunks, sys.stdout.buffer)
            return sent, total

        sent, total = _via_daemon_or_offline(settings, remote_csv, local_csv, creates=False)
        sys.stdout.buffer.flush()
        _say_if_cut(symbol, sent, total, order)
        return
    result = _via_daemon_or_offline(
        settings,
        lambda: dict(client_for(settings).call("GET", "/history", query=query)),
        lambda ops: ops.history(asked),
        creates=False,
    )
    quotes = result.get("quotes") or []
    if fmt == "json":
        print_json(result)
    elif quotes:
        title = f"history of {result['symbol']}, {order} first"
        screen = console()
        screen.print(quotes_table(quotes, title=title, width=screen.width))
    else:
        typer.echo(f"no recorded quotes for {result.get('symbol', symbol)}")
    _say_if_cut(symbol, len(quotes), int(result.get("total") or len(quotes)), order)


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
    if by not in ("fetched", "quote"):
        fail(f"--by {by!r} is not known; use fetched or quote", 2)
    if fmt == "parquet":
        if output is None:
            fail("--format parquet writes a file: add -o FILE, e.g. -o history.parquet", 2)
        from crawler.store.parquet import parquet_schema

        parquet_schema(())  # pyarrow missing: one line naming the extra, before any work
    _check_times(since, until)
    wanted = _canonical([s for s in symbols.split(",") if s.strip()]) if symbols else None
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

            rows, written = _via_daemon_or_offline(settings, remote, local, creates=False)
        finally:
            if output is not None:
                target.close()
            else:
                target.flush()
    if output is not None:
        typer.echo(f"wrote {plural(rows, 'row')} ({_size(written)}) to {output}", err=True)


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
    """Add these commands to `app`."""
    app.command()(fetch)
    app.add_typer(symbols_app, name="symbols")
    app.command()(history)
    app.command()(export)
