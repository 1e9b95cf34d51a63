"""Commands about quotes and symbols: fetch and symbols (history and export:
`crawler.cli.history_cmds`).

Each goes through the daemon when one answers (shared breakers, budget and cache) and works
directly on the data dir otherwise, through the same `crawler.service.verbs.Operations`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote as url_quote

import typer

from crawler.cli.common import (
    client_for,
    fail,
    load,
    note,
    offline_operations,
    via_daemon_or_offline,
    warn,
)
from crawler.cli.progress import Bar, json_lines, progress_bar
from crawler.cli.render import console, plural, print_json, quotes_table, symbols_table
from crawler.utils.exceptions import (
    DaemonError,
    WatchlistFullError,
)
from crawler.utils.text import clean_text

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.service.verbs import Operations

__all__ = ["MajorUnitsOpt", "canonical", "register", "symbols_app"]

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
#: More symbols than this get a progress bar (on a terminal).
_PROGRESS_MIN_SYMBOLS = 3
#: Symbols per POST /fetch: the control API's limit (`crawler.daemon.routes`).
_FETCH_BATCH = 1000


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
    asked: dict[str, Any] = {"fresh": fresh, "asset_class": asset_class}
    if paid:
        asked["paid"] = True

    def remote() -> dict[str, Any]:
        # The control API takes at most _FETCH_BATCH symbols a request: more are sent in turn
        # (a 1,001-symbol fetch used to fail whole with the API's own field message).
        merged: dict[str, Any] = {"quotes": [], "errors": {}}
        with _progress(len(symbols)) as bar:
            for start in range(0, len(symbols), _FETCH_BATCH):
                body = {"symbols": symbols[start : start + _FETCH_BATCH], **asked}
                part = _fetch_remote(settings, body, bar, start, len(symbols))
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

    result = via_daemon_or_offline(settings, remote, local, offline_operations, clean=True)
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


def _fetch_remote(
    settings: Settings, body: dict[str, Any], bar: Bar | None, done_before: int, total: int
) -> dict[str, Any]:
    """POST /fetch of one batch; with a bar, the daemon streams a line as each symbol is
    served, then the result."""
    if bar is None:
        return dict(client_for(settings).call("POST", "/fetch", body))
    chunks = client_for(settings).stream("POST", "/fetch", body={**body, "progress": True})
    for line in json_lines(chunks):
        if line.get("type") == "progress":
            bar.update(done=done_before + int(line["done"]), total=total)
        elif line.get("type") == "result":
            return {key: value for key, value in line.items() if key != "type"}
        elif line.get("type") == "error":
            from crawler.daemon.client import error_from_response

            raise error_from_response(500, line)
    raise DaemonError("the daemon's fetch answer ended early; run it again")


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
    canonical(symbols, asset_class)
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

    results, full = via_daemon_or_offline(settings, remote, local, offline_operations, clean=True)
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
    symbols = canonical(symbols)
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

    results = via_daemon_or_offline(
        settings, remote, local, offline_operations, creates=False, clean=True
    )
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
    result = via_daemon_or_offline(
        settings,
        lambda: dict(client_for(settings).call("GET", "/symbols")),
        lambda ops: ops.list_symbols(),
        offline_operations,
        creates=False,
        clean=True,
    )
    if as_json:
        print_json(result)
    elif result.get("symbols"):
        console().print(symbols_table(result["symbols"]))
    else:
        typer.echo("no symbols tracked; add one with `crawler symbols add AAPL:US`")


def canonical(symbols: list[str], asset_class: str | None = None) -> list[str]:
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


def register(app: typer.Typer) -> None:
    """Add these commands to `app` (`crawler.cli.history_cmds` adds history and export)."""
    app.command()(fetch)
    app.add_typer(symbols_app, name="symbols")
