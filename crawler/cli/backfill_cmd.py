"""`crawler backfill SYMBOL... | --all [--since 1y] [--until ...] [--interval 1d|1h|5m|1m]`.

Past bars from Yahoo's chart endpoint into the history, only what is missing
(`crawler.orchestrator.backfill`): through the daemon when one runs (its Yahoo token bucket,
shared with its collections), directly on the data dir otherwise. A progress bar on stderr
(on a terminal) counts the requests; the summary is one line per outcome, or `--json`.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import typer

from crawler.cli.common import client_for, note, warn
from crawler.cli.progress import Bar, json_lines, progress_bar
from crawler.cli.render import plural, print_json
from crawler.utils.exceptions import DaemonError, DaemonNotRunningError

__all__ = ["backfill", "register"]


def backfill(
    ctx: typer.Context,
    symbols: Annotated[
        list[str] | None, typer.Argument(help="Symbols, e.g. AAPL:US VOD:LN (or --all).")
    ] = None,
    all_tracked: Annotated[
        bool, typer.Option("--all", help="Every tracked symbol (the watchlist).")
    ] = False,
    since: Annotated[
        str, typer.Option("--since", help="From: 1y (default), 30d, 2024-01-01...")
    ] = "1y",
    until: Annotated[
        str | None, typer.Option("--until", help="Up to (default: now); same forms.")
    ] = None,
    interval: Annotated[
        str,
        typer.Option(
            "--interval",
            help="1d (default, as far back as Yahoo has), 1h (730 days), 5m (60 days) "
            "or 1m (30 days).",
        ),
    ] = "1d",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fill the history with past bars from Yahoo's chart (free); only what is missing.

    Rows are bars of their interval (`crawler history --kind bars`), each with the bar's own
    time as as_of and its close as the price. Exit 1 if a symbol failed or the run stopped.
    """
    from crawler.cli.common import load, offline_operations
    from crawler.cli.data_cmds import canonical

    wanted = canonical(list(symbols or []))
    settings = load(ctx)
    arguments: dict[str, Any] = {
        "symbols": wanted,
        "all": all_tracked,
        "since": since,
        "until": until,
        "interval": interval,
    }
    with progress_bar("backfilling", None) as bar:
        try:
            result = _remote(client_for(settings), arguments, bar)
        except DaemonNotRunningError:
            with contextlib.closing(offline_operations(settings)) as ops:
                result = ops.backfill(
                    wanted,
                    all_tracked,
                    since,
                    until,
                    interval,
                    on_plan=(lambda n: bar.update(done=0, total=n)) if bar else None,
                    on_progress=(lambda done, total, _s: bar.update(done=done, total=total))
                    if bar
                    else None,
                )
    _report(result, as_json)


def _remote(client: Any, arguments: dict[str, Any], bar: Bar | None) -> dict[str, Any]:
    """POST /backfill with progress lines; the result line's report."""
    chunks = client.stream("POST", "/backfill", body={**arguments, "progress": True})
    for line in json_lines(chunks):
        kind = line.get("type")
        if kind == "plan" and bar is not None:
            bar.update(done=0, total=int(line["requests"]))
        elif kind == "progress" and bar is not None:
            bar.update(done=int(line["done"]), total=int(line["total"]))
        elif kind == "result":
            return {key: value for key, value in line.items() if key != "type"}
        elif kind == "error":
            from crawler.daemon.client import error_from_response

            raise error_from_response(500, line)
    raise DaemonError("the daemon's backfill answer ended early; run it again")


def _report(result: dict[str, Any], as_json: bool) -> None:
    for notice in result.get("notices") or []:
        note(str(notice))
    errors: dict[str, Any] = result.get("errors") or {}
    if as_json:
        print_json(result)
    else:
        symbols = int(result.get("symbols") or 0)
        done = (
            f"{symbols - len(errors)} of {plural(symbols, 'symbol')}"
            if errors
            else (plural(symbols, "symbol"))
        )
        typer.echo(
            f"backfilled {done} at {result.get('interval')}: "
            f"{plural(int(result.get('bars_added') or 0), 'new bar')} from "
            f"{plural(int(result.get('requests') or 0), 'chart request')}"
            + (
                f" ({result.get('rate_limited')} rate-limited, asked again)"
                if result.get("rate_limited")
                else ""
            )
            + f", {str(result.get('since', ''))[:10]} to {str(result.get('until', ''))[:10]}"
        )
    for symbol, error in errors.items():
        warn(f"{symbol}: {error.get('message', error) if isinstance(error, dict) else error}")
    if result.get("stopped"):
        warn(f"stopped: {result['stopped']}")
    raise typer.Exit(1 if errors or result.get("stopped") else 0)


def register(app: typer.Typer) -> None:
    """Add `backfill` to `app`."""
    app.command()(backfill)
