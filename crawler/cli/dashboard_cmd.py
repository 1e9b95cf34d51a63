"""`crawler dashboard`: the watchlist, the budget and the sources in a browser, live.

    crawler dashboard                  # prints the address (with its token), opens a browser
    crawler dashboard --port 0         # any free port
    crawler dashboard --no-browser     # only print the address

Its own small process, not a listener of the daemon: it talks to the daemon over the control
socket (same user), so a browser tab costs the daemon nothing beyond one event stream and a
status read every few seconds, however many tabs are open; the daemon's memory and its
collections are out of a browser's reach. Runs until Ctrl-C (exit 0); exit 3 when the daemon
is not running at start (it reconnects by itself if the daemon restarts later).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from crawler.cli.common import client_for, load, note
from crawler.utils.exceptions import UsageError

if TYPE_CHECKING:
    from crawler.dashboard.server import DashboardServer

__all__ = ["DEFAULT_PORT", "dashboard", "register"]

DEFAULT_PORT = 8484


def _can_open_browser() -> bool:
    if sys.platform == "darwin" or os.name == "nt":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


HostOpt = Annotated[
    str,
    typer.Option(
        "--host",
        envvar="CRAWLER_DASHBOARD_HOST",
        help="Address to listen on; loopback unless you configure another.",
    ),
]
PortOpt = Annotated[
    int,
    typer.Option(
        "--port",
        min=0,
        max=65535,
        envvar="CRAWLER_DASHBOARD_PORT",
        help="TCP port (0: any free one).",
    ),
]
IdleTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--idle-timeout",
        min=0.1,
        max=3600,
        metavar="SECONDS",
        help="Seconds a silent browser connection is kept open (15).",
    ),
]


def dashboard(
    ctx: typer.Context,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = DEFAULT_PORT,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Do not open a browser; only print the address.")
    ] = False,
    idle_timeout_s: IdleTimeoutOpt = 15.0,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"url", "pid"} as one JSON line.')
    ] = False,
) -> None:
    """A live dashboard in your browser: watchlist, budget, sources, collections."""
    from crawler.dashboard.hub import Hub
    from crawler.dashboard.security import is_loopback, load_or_create_token
    from crawler.dashboard.server import DashboardServer

    if host in ("0.0.0.0", "::", ""):
        shown = host or '""'
        raise UsageError(
            f"--host {shown}: name the one address browsers will use (the dashboard answers "
            "only requests whose Host header is its own address)"
        )
    settings = load(ctx)
    client = client_for(settings, timeout_s=30.0)
    health: dict[str, Any] = client.call("GET", "/health")  # exit 3 when not running
    token = load_or_create_token(Path(str(health.get("data_dir") or settings.data_dir)))
    if not is_loopback(host):
        note(
            f"serving on {host}, not loopback: anyone who can reach it and has the token can "
            "use the dashboard, over plain HTTP"
        )
    hub = Hub(client)
    server = DashboardServer(hub, token, host, port, idle_timeout_s=idle_timeout_s)
    server.start()
    hub.start()
    try:
        _serve(server, as_json, no_browser)
    finally:
        server.stop()
        hub.stop()


def _serve(server: DashboardServer, as_json: bool, no_browser: bool) -> None:
    """Say where it is, open a browser, and wait for Ctrl-C or SIGTERM."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if as_json:
            typer.echo(json.dumps({"url": server.url, "pid": os.getpid()}))
        else:
            typer.echo(f"dashboard: {server.url}")
            typer.echo("(the address carries the token; Ctrl-C stops the dashboard)", err=True)
        sys.stdout.flush()
        if not no_browser and _can_open_browser():
            import webbrowser

            webbrowser.open(server.one_time_url())
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(app: typer.Typer) -> None:
    """Add `crawler dashboard` to the CLI."""
    app.command("dashboard")(dashboard)
