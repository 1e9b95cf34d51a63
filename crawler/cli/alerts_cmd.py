"""`crawler alerts add|list|remove|test`: through the daemon when one answers, directly on the
data dir (or the cluster's Redis) otherwise, through the same `crawler.alerts.service`.

    crawler alerts add AAPL:US --above 200 --notify ntfy://ntfy.sh/my-topic
    crawler alerts add VOD:LN --move 3 --from last-alert
    crawler alerts add EURUSD:CUR --stale 15m
    crawler alerts add --budget 80 --notify 'mailto://me:PASSWORD@example.com'
    crawler alerts list [--json]        # notify URLs masked
    crawler alerts remove 3
    crawler alerts test [--notify URL]  # a test notice now (to every URL in use without one)

Bad input is one line and exit 2; `remove` of an unknown id and a `test` that a target refused
exit 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from crawler.cli.common import client_for, fail, load, note, via_daemon_or_offline, warn
from crawler.cli.render import console, print_json
from crawler.utils.exceptions import UsageError

if TYPE_CHECKING:
    from crawler.alerts.service import AlertService
    from crawler.config import Settings

__all__ = ["alerts_app", "register"]

alerts_app = typer.Typer(
    help="Alerts: a price above/below a line, a move, a stale quote, the budget.",
    no_args_is_help=True,
)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Notify = Annotated[
    list[str] | None,
    typer.Option(
        "--notify",
        metavar="URL",
        help="An Apprise URL to send the alert to (repeatable): ntfy://, mailto://, "
        "slack://, tgram://, json://host/ ... Secrets in it are never printed.",
    ),
]


def _service(settings: Settings) -> AlertService:
    """The alerts on the data dir or the cluster's Redis, for when no daemon answers."""
    from crawler.alerts.service import AlertService

    return AlertService.offline(settings)


def _ask(
    settings: Settings,
    request: tuple[str, str, Any] | Callable[[], dict[str, Any]],
    local: Callable[[AlertService], dict[str, Any]],
    creates: bool = True,
) -> dict[str, Any]:
    """`request` (method, path, body; or a function that asks) to the daemon when one answers,
    else `local(service)` on the data dir or the cluster's Redis; one that only reads or
    removes (`creates` False) makes no data dir (`crawler.cli.common.via_daemon_or_offline`)."""
    if callable(request):
        remote = request
    else:
        method, path, body = request

        def remote() -> dict[str, Any]:
            return dict(client_for(settings).call(method, path, body))

    return via_daemon_or_offline(
        settings,
        remote,
        local,
        _service,
        creates=creates,
        redis_holds_data=True,
    )


def _one_rule(
    symbol: str | None,
    above: str | None,
    below: str | None,
    move: str | None,
    stale: str | None,
    budget: str | None,
) -> tuple[str, str | None, str | None]:
    """(kind, threshold, duration) from the options; UsageError unless exactly one is given."""
    given = {
        name: value
        for name, value in (
            ("above", above), ("below", below), ("move", move), ("stale", stale),
            ("budget", budget),
        )
        if value is not None
    }  # fmt: skip
    if len(given) != 1:
        raise UsageError(
            "give exactly one of --above PRICE, --below PRICE, --move PCT, --stale DURATION "
            f"or --budget PCT{' (got ' + ', '.join('--' + n for n in given) + ')' if given else ''}"
        )
    kind, value = next(iter(given.items()))
    if kind == "stale":
        return kind, None, value
    return kind, value, None


@alerts_app.command("add")
def alerts_add(
    ctx: typer.Context,
    symbol: Annotated[
        str | None, typer.Argument(help="The symbol (none with --budget), e.g. AAPL:US.")
    ] = None,
    above: Annotated[
        str | None,
        typer.Option("--above", metavar="PRICE", help="Fire when the price reaches PRICE or more."),
    ] = None,
    below: Annotated[
        str | None,
        typer.Option(
            "--below", metavar="PRICE", help="Fire when the price falls to PRICE or less."
        ),
    ] = None,
    move: Annotated[
        str | None,
        typer.Option("--move", metavar="PCT", help="Fire on a move of PCT percent either way."),
    ] = None,
    basis: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="BASIS",
            help="What --move is measured from: close (default) or last-alert.",
        ),
    ] = None,
    stale: Annotated[
        str | None,
        typer.Option(
            "--stale",
            metavar="DURATION",
            help="Fire when no new quote lands for DURATION (15m, 2h) while open.",
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget", metavar="PCT", help="Fire when today's Bright Data spend reaches PCT %."
        ),
    ] = None,
    notify: Notify = None,
    as_json: AsJson = False,
) -> None:
    """Add an alert; it fires once per crossing and re-arms once back past its line."""
    kind, threshold, duration = _one_rule(symbol, above, below, move, stale, budget)
    body: dict[str, Any] = {
        "kind": kind,
        "symbol": symbol,
        "threshold": threshold,
        "duration": duration,
        "basis": basis,
        "notify": list(notify or []),
    }
    settings = load(ctx)
    _check_rule(kind, symbol, threshold, duration, basis)
    result = _ask(settings, ("POST", "/alerts", body), lambda service: service.add(**body))
    for line in result.get("notices") or []:
        note(str(line))
    if as_json:
        print_json(result)
        return
    alert = result.get("alert") or {}
    targets = alert.get("notify") or []
    where = f" -> {', '.join(targets)}" if targets else " (event stream and log only)"
    typer.echo(f"added alert {alert.get('id')}: {alert.get('rule')}{where}")


def _check_rule(
    kind: str, symbol: str | None, threshold: str | None, duration: str | None, basis: str | None
) -> None:
    """Checked here first: a bad rule is the same one line (exit 2) with or without a daemon."""
    from crawler.alerts.rules import AlertRule

    if kind != "budget" and symbol is not None:
        from crawler.normalizer.user_symbols import read_symbol

        read_symbol(symbol)
    AlertRule.build(
        kind=kind,
        symbol=symbol,
        threshold=threshold,
        duration=duration,
        basis=basis,
    )


@alerts_app.command("list")
def alerts_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """The alerts, their state (armed or fired) and where they are sent (secrets masked)."""
    settings = load(ctx)
    result = _ask(settings, ("GET", "/alerts", None), lambda service: service.list(), creates=False)
    if as_json:
        print_json(result)
        return
    alerts = result.get("alerts") or []
    if not alerts:
        typer.echo("no alerts; add one with `crawler alerts add AAPL:US --above 200`")
        return
    from rich.table import Table

    table = Table()
    for column in ("id", "rule", "state", "fired", "last fired", "notify"):
        table.add_column(column)
    for alert in alerts:
        last = alert.get("fired_at")
        last_text = "-"
        if last:
            last_text = f"{str(last)[:19].replace('T', ' ')} UTC ({alert.get('fired_value')})"
        table.add_row(
            str(alert.get("id")),
            str(alert.get("rule")),
            str(alert.get("state")),
            str(alert.get("fires")),
            last_text,
            ", ".join(alert.get("notify") or []) or "-",
        )
    console().print(table)


@alerts_app.command("remove")
def alerts_remove(
    ctx: typer.Context,
    alert_id: Annotated[str, typer.Argument(metavar="ID", help="The alert's id (alerts list).")],
    as_json: AsJson = False,
) -> None:
    """Remove an alert; exit 1 when there is no such alert."""
    from crawler.alerts.service import parse_alert_id

    number = parse_alert_id(alert_id)
    settings = load(ctx)

    def remote() -> dict[str, Any]:
        status, body = client_for(settings).delete(f"/alerts/{number}")
        if status == 404:
            return {"id": number, "removed": False}
        if status >= 400:
            from crawler.daemon.client import error_from_response

            raise error_from_response(status, body)
        return dict(body)

    result = _ask(settings, remote, lambda service: service.remove(number), creates=False)
    if as_json:
        print_json(result)
    elif result.get("removed"):
        typer.echo(f"removed alert {number}")
    if not result.get("removed"):
        fail(f"there is no alert {number}; see `crawler alerts list`")


@alerts_app.command("test")
def alerts_test(ctx: typer.Context, notify: Notify = None, as_json: AsJson = False) -> None:
    """Send a test notice now, to --notify URLs or else to every URL the alerts use."""
    urls = list(notify or [])
    settings = load(ctx)
    if urls:
        from crawler.alerts.notify import check_url

        for url in urls:
            check_url(url)
    request = ("POST", "/alerts/test", {"notify": urls})
    result = _ask(settings, request, lambda service: service.test(urls))
    if as_json:
        print_json(result)
    targets = result.get("targets") or []
    if not as_json:
        if not targets:
            where = "the daemon's event stream and log" if result.get("event") else "nowhere"
            typer.echo(
                f"no notify URL given and none used by an alert: the test went to {where}; "
                "give one with --notify URL"
            )
        for target in targets:
            if target.get("ok"):
                typer.echo(f"sent to {target.get('target')}")
    failed = [target for target in targets if not target.get("ok")]
    for target in failed:
        warn(f"{target.get('target')}: {target.get('error')}")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `alerts` to `app`."""
    app.add_typer(alerts_app, name="alerts")
