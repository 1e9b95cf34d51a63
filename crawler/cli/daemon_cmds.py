"""Commands about the daemon itself: start, stop, status, collect, config show."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from crawler.cli.common import client_for, daemon_location, fail, load, state_of
from crawler.cli.locate import location_is_explicit
from crawler.cli.render import console, plural, print_json
from crawler.cli.status_view import show_status
from crawler.utils.exceptions import DaemonNotRunningError

__all__ = ["config_app", "register"]

#: How long `crawler start` waits for the detached daemon to answer on its socket.
START_DEADLINE_S = 15.0
#: How long `crawler stop` waits for the daemon to exit.
STOP_DEADLINE_S = 15.0
_POLL_S = 0.05

config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)

LogFormat = Annotated[
    str | None,
    typer.Option("--log-format", help="auto (console on a terminal, else json), console, json."),
]


def start(
    ctx: typer.Context,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run in this process (systemd, containers).")
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="Run each job once, print the report, exit.")
    ] = False,
    config: Annotated[Path | None, typer.Option("--config", help="config.toml to load.")] = None,
    log_format: LogFormat = None,
    interval: Annotated[
        int | None, typer.Option("--interval", help="Seconds between collections (>= 60).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (detached start).")] = False,
) -> None:
    """Start the daemon (detached unless --foreground or --once); exit 0 if it already runs."""
    overrides: dict[str, Any] = {"update_interval_seconds": interval, "log_format": log_format}
    settings = load(ctx, overrides, config)
    if once or foreground:
        from crawler.daemon.app import Daemon
        from crawler.logging import configure_logging

        configure_logging(
            settings.log_format,
            "debug" if state_of(ctx).debug else settings.log_level,
            secrets=settings.secret_values(),
        )
        config_file = settings.config_file

        def reread() -> Any:
            # The same file and the same command-line flags: they still win over the file.
            from crawler.config import load_settings

            return load_settings(overrides, config_file=config_file)

        daemon = Daemon(settings, reload_settings=reread)
        if once:
            report = daemon.run_once()
            print_json(report)
            collection = report.get("collection") or {}
            ok = "error" not in collection and collection.get("succeeded", True)
            raise typer.Exit(0 if ok else 1)
        raise typer.Exit(daemon.run_foreground())
    _start_detached(ctx, settings, config, log_format, interval, as_json)


def _already_running(settings: Any, pid: int, as_json: bool, data_dir: str = "") -> NoReturn:
    """Like `systemctl start` of an active unit: nothing to do is success (exit 0)."""
    socket_path = settings.socket_path
    data_dir = data_dir or str(settings.data_dir)
    if as_json:
        print_json({"running": True, "started": False, "pid": pid, "socket": str(socket_path),
                    "data_dir": data_dir})  # fmt: skip
    else:
        typer.echo(
            f"crawler is already running (pid {pid}, socket {socket_path}, data dir {data_dir})"
        )
    raise typer.Exit(0)


def _start_detached(
    ctx: typer.Context,
    settings: Any,
    config: Path | None,
    log_format: str | None,
    interval: int | None,
    as_json: bool,
) -> None:
    from crawler.daemon.process import PIDFILE_NAME, last_log_line, read_pid, spawn_detached

    client = client_for(settings, timeout_s=2.0, locate=False)
    try:
        _, health = client.get("/health")
    except DaemonNotRunningError:
        pass
    else:
        pid = health.get("pid", 0) if isinstance(health, dict) else 0
        running_dir = str(health.get("data_dir") or "") if isinstance(health, dict) else ""
        _already_running(settings, int(pid), as_json, running_dir)
    data_dir = Path(settings.data_dir)
    args: list[str] = ["--debug"] if state_of(ctx).debug else []
    args += ["start", "--foreground"]
    # The file this process loaded, absolute, so the child cannot pick another one.
    config_file = config or state_of(ctx).config or settings.config_file
    if config_file is not None:
        args += ["--config", str(Path(config_file).absolute())]
    if log_format is not None:
        args += ["--log-format", log_format]
    if interval is not None:
        args += ["--interval", str(interval)]
    from crawler.daemon.socket_file import secure_directory
    from crawler.store.datadir import ensure_data_dir

    # Checked here, before the log is opened in it: a data dir or socket dir another user
    # could redirect is refused with exit 2 (the daemon would refuse it too, but only after
    # our log went there, and its exit would be "did not start", 1).
    log_path = ensure_data_dir(data_dir) / "crawler.log"
    secure_directory(settings.socket_path.parent, settings.socket_path.name)
    child = spawn_detached(args, log_path)
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            line = last_log_line(log_path) or f"the daemon exited with status {code}"
            if code == 1 and "already running" in line:
                # Another `start` won the race: the daemon we wanted runs.
                _already_running(settings, read_pid(data_dir / PIDFILE_NAME) or 0, as_json)
            fail(f"the daemon did not start: {line} (log: {log_path})")
        try:
            status, health = client.get("/health")
        except DaemonNotRunningError:
            time.sleep(_POLL_S)
            continue
        pid = health.get("pid") if isinstance(health, dict) else None
        if status == 200 and pid == child.pid:
            if as_json:
                print_json(
                    {"running": True, "started": True, "pid": pid,
                     "socket": str(settings.socket_path), "log": str(log_path)}
                )  # fmt: skip
            else:
                typer.echo(f"crawler started (pid {pid}, socket {settings.socket_path})")
                typer.echo(f"log: {log_path}")
            return
        time.sleep(_POLL_S)
    fail(f"the daemon did not answer within {START_DEADLINE_S:g} s (log: {log_path})")


def stop(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Stop the running daemon and wait for it to exit; exit 0 if it was not running."""
    from crawler.daemon.process import wait_for_exit

    settings = load(ctx)
    client = client_for(settings, timeout_s=10.0)
    socket_path = client.socket_path
    try:
        answer = client.call("POST", "/stop")
    except DaemonNotRunningError:
        # Like `systemctl stop` of an inactive unit: the wanted state holds, so exit 0.
        if as_json:
            print_json({"running": False, "stopped": False, "socket": str(socket_path)})
        else:
            typer.echo(f"crawler is not running (no answer on {socket_path})")
        return
    pid = int(answer.get("pid", 0)) if isinstance(answer, dict) else 0
    if pid and not wait_for_exit(pid, STOP_DEADLINE_S):
        fail(f"the daemon (pid {pid}) has not exited after {STOP_DEADLINE_S:g} s")
    # The socket goes before the process exits; wait for it too, so `start` can follow at once.
    deadline = time.monotonic() + STOP_DEADLINE_S
    while socket_path.exists() and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    if as_json:
        print_json({"running": False, "stopped": True, "pid": pid})
    else:
        typer.echo(f"crawler stopped (pid {pid})")


def reload(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-read the configuration in the running daemon (SIGHUP does the same)."""
    settings = load(ctx)
    plan = client_for(settings, timeout_s=30.0).call("POST", "/reload")
    if as_json:
        print_json(plan)
        return
    changed = plan.get("changed") or {}
    applied = [
        f"{name} {changed[name]['old']} -> {changed[name]['new']}"
        for name in plan.get("applied") or []
        if name in changed
    ]
    typer.echo("reloaded: " + ("; ".join(applied) if applied else "nothing to change live"))
    if plan.get("message"):
        typer.echo(f"note: {plan['message']}", err=True)


def status(
    ctx: typer.Context,
    symbol: Annotated[
        str | None,
        typer.Argument(help="One symbol: its last quote, market, and why it waits (in full)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    major_units: Annotated[
        bool, typer.Option("--major-units", help="GBp, ZAc, ILA prices in GBP, ZAR, ILS.")
    ] = False,
) -> None:
    """Show the daemon's state (or one SYMBOL's); exit 3 if it is not running."""
    settings = load(ctx)
    if symbol is not None:
        from crawler.cli.status_screen import render_symbol
        from crawler.utils.text import clean_data

        entry = clean_data(
            client_for(settings, timeout_s=30.0).call("GET", "/status", query={"symbol": symbol})
        )
        if as_json:
            print_json(entry)
        else:
            render_symbol(entry, console())
        return
    explicit = location_is_explicit(state_of(ctx).config is not None)
    code = show_status(settings.socket_path, as_json, major_units or settings.major_units, explicit)
    if code:
        raise typer.Exit(code)


def collect(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run a collection of the watchlist now, in the daemon."""
    from crawler.cli.progress import CollectionWatch

    settings = load(ctx)
    client = client_for(settings)
    watch = CollectionWatch(client)
    try:
        with watch:
            report = client.call("POST", "/collect")
    except KeyboardInterrupt:
        # The daemon runs the collection; closing our request does not stop it.
        where = f" ({watch.last[0]}/{watch.last[1]} symbols done)" if watch.last else ""
        typer.echo(
            f"interrupted{where}: the collection goes on in the daemon; "
            "`crawler status` shows its progress",
            err=True,
        )
        raise typer.Exit(130) from None
    errors = report.get("errors") or {}
    stale = int(report.get("stale") or 0)
    if as_json:
        print_json(report)
    else:
        from crawler.orchestrator.failures import group_failures, summary_lines

        sources = ", ".join(f"{k} {v}" for k, v in (report.get("sources") or {}).items())
        typer.echo(
            f"collected {report.get('quotes', 0)} quotes for {report.get('symbols', 0)} symbols"
            + (f" ({sources})" if sources else "")
            + f", {plural(len(errors), 'error')}"
            + (f", {stale:,} served stale" if stale else "")
            + f", {len(report.get('skipped_closed') or [])} skipped closed"
        )
        # One line per cause (count, first symbols), not one per symbol: 141 symbols that
        # failed alike were 141 lines. Every symbol: --json, or `crawler status SYMBOL`.
        for line in summary_lines(group_failures(errors)):
            typer.echo(f"error: {line}", err=True)
        if errors:
            typer.echo(
                "note: every failed symbol and its error: `crawler collect --json` or "
                "`crawler status SYMBOL`",
                err=True,
            )
    # Exit 1 when symbols were left without a fresh quote (failed, or served stale).
    raise typer.Exit(0 if report.get("succeeded", True) and not errors and not stale else 1)


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The effective configuration (the running daemon's, if any), secrets masked."""
    settings = load(ctx)
    try:
        values = client_for(settings, timeout_s=10.0).call("GET", "/config")
        origin = "running daemon"
    except DaemonNotRunningError:
        values, origin = settings.public_dict(), "this command's settings"
    if as_json:
        print_json(values)
        return
    from rich.table import Table

    table = Table(title=f"configuration ({origin})")
    table.add_column("setting")
    table.add_column("value")
    for name, value in values.items():
        table.add_row(name, "-" if value is None else str(value))
    console().print(table)


def logs(
    ctx: typer.Context,
    lines: Annotated[
        int, typer.Option("-n", "--lines", min=0, help="Show the last N lines (0: all).")
    ] = 50,
    follow_log: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines until Ctrl-C.")
    ] = False,
) -> None:
    """The detached daemon's log (<data_dir>/crawler.log, JSON lines) as text.

    Under systemd the log is in the journal instead: journalctl -u crawler.
    """
    from crawler.cli.log_view import follow, render_line, tail

    settings = load(ctx)
    # The log of the daemon the other commands talk to (found elsewhere: its own data dir).
    found = daemon_location(settings)
    path = Path(found.data_dir or settings.data_dir) / "crawler.log"
    if not os.path.lexists(path) and not follow_log:
        fail(
            f"no log at {path}: a daemon started with `crawler start` writes one there "
            "(under systemd: journalctl -u crawler; in the foreground it logs to the terminal)"
        )
    if os.path.lexists(path):
        for line in tail(path, lines):
            typer.echo(render_line(line))
    if follow_log:
        try:
            follow(path, typer.echo)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def register(app: typer.Typer) -> None:
    """Add these commands to `app`."""
    app.command()(start)
    app.command()(stop)
    app.command()(reload)
    app.command()(status)
    app.command()(collect)
    app.command()(logs)
    app.add_typer(config_app, name="config")
