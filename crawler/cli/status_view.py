"""`crawler status`: ask the daemon, render the answer, exit 0 or 3.

The command people run most, so it also has a quick path around Typer: Typer 0.29 imports
pydantic to coerce arguments, and building `Settings` costs as much again, together well over
the rest of the command. `crawler status` and `crawler status --json` need neither: the socket
path comes from `crawler.config.files` (a test holds it equal to `Settings.socket_path`).
Anything else, or a config file the quick path cannot read, goes through the full CLI, which
reports problems properly.
"""

from __future__ import annotations

import sys
from pathlib import Path

from crawler.daemon.client import ControlClient
from crawler.utils.exceptions import CrawlerError, DaemonNotRunningError

__all__ = ["EXIT_NOT_RUNNING", "STATUS_MAX_ROWS", "quick_status", "show_status"]

EXIT_NOT_RUNNING = 3
#: Symbol rows `crawler status` draws at most, stale and pending first; --json has them all.
STATUS_MAX_ROWS = 50
_QUICK_FORMS = (["status"], ["status", "--json"])
#: A status answer for a large watchlist takes the daemon a moment to build.
_STATUS_TIMEOUT_S = 30.0


def show_status(socket_path: Path, as_json: bool) -> int:
    """Print the daemon's status (a table, or JSON); the exit code: 0, or 3 if not running."""
    # rich loads only when there is a table to draw: "not running" should be instant.
    from crawler.cli.render import console, print_json, render_status

    try:
        # A screen draws STATUS_MAX_ROWS symbols: ask for no more (--json gets them all).
        query = None if as_json else {"rows": str(STATUS_MAX_ROWS)}
        client = ControlClient(socket_path, timeout_s=_STATUS_TIMEOUT_S)
        answer = client.call("GET", "/status", query=query)
    except DaemonNotRunningError:
        if as_json:
            print_json({"running": False, "socket": str(socket_path)})
        else:
            sys.stdout.write(f"crawler is not running (no answer on {socket_path})\n")
        return EXIT_NOT_RUNNING
    if as_json:
        print_json({"running": True, **answer})
    else:
        render_status(answer, console())
    return 0


def quick_status(args: list[str]) -> int | None:
    """The exit code if `args` is a plain `status [--json]` this path can answer, else None."""
    if args not in _QUICK_FORMS:
        return None
    from crawler.config.files import socket_path_from_files

    try:
        socket_path = socket_path_from_files()
        return show_status(socket_path, as_json="--json" in args)
    except CrawlerError:
        return None  # the full CLI says what is wrong, in its own words and exit code
