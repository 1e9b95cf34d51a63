"""`crawler socket`: the control socket's path, for curl and scripts.

    curl -N --unix-socket "$(crawler socket)" 'http://localhost/v1/events?types=quote'

Prints the socket the other commands would talk to (`crawler.cli.locate`); exit 3, with a
line on stderr, when no daemon answers there (the path is printed all the same).
"""

from __future__ import annotations

import typer

from crawler.cli.common import daemon_location, load, warn
from crawler.daemon.registry import socket_answers

__all__ = ["register", "socket"]

EXIT_NOT_RUNNING = 3


def socket(ctx: typer.Context) -> None:
    """Print the control socket's path (for curl --unix-socket); exit 3 if nothing answers."""
    found = daemon_location(load(ctx))
    typer.echo(str(found.socket))
    if not socket_answers(found.socket):
        warn(f"crawler is not running (no answer on {found.socket})")
        raise typer.Exit(EXIT_NOT_RUNNING)


def register(app: typer.Typer) -> None:
    """Add `socket` to `app`."""
    app.command()(socket)
