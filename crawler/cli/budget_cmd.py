"""`crawler budget [--json]`: where today's money went and whether it lasts the day.

Asks the daemon (GET /budget) when one runs, else reads the data dir's ledger directly; the
answer is `Operations.budget()` either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from crawler.cli.common import client_for, load, offline_operations, via_daemon_or_offline
from crawler.cli.render import print_json

__all__ = ["bar_chart", "register", "render_budget"]

#: Width of the longest bar of the per-hour chart, in characters.
BAR_WIDTH = 40
_TARGET_NAMES = {
    "cache_hit_rate_pct": "cache hit rate",
    "yfinance_success_pct": "yfinance success",
    "bright_data_share_pct": "Bright Data share of requests",
}


def budget(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Today's paid requests: spend, pace, per-hour chart, top symbols, the seed's targets."""
    settings = load(ctx)
    report = via_daemon_or_offline(
        settings,
        lambda: dict(client_for(settings, timeout_s=30.0).call("GET", "/budget")),
        lambda ops: ops.budget(),
        offline_operations,
    )
    if as_json:
        print_json(report)
    else:
        typer.echo(render_budget(report))


def bar_chart(by_hour: Mapping[str, int], width: int = BAR_WIDTH) -> list[str]:
    """One line per hour that had paid requests (and the hours between them): "09 ████ 12"."""
    hours = [h for h, n in sorted(by_hour.items()) if n > 0]
    if not hours:
        return ["(no paid requests yet today)"]
    peak = max(by_hour.values())
    lines = []
    for hour in range(int(hours[0]), int(hours[-1]) + 1):
        count = int(by_hour.get(f"{hour:02d}", 0))
        bar = "█" * max(1 if count else 0, round(count * width / peak))
        lines.append(f"{hour:02d} {bar} {count}" if bar else f"{hour:02d} {count}")
    return lines


def render_budget(report: Mapping[str, Any]) -> str:
    """The report as text for a terminal."""
    from crawler.orchestrator.budget_report import short_time, usd

    lines = [
        f"budget {report.get('day')} ({report.get('timezone')}): {usd(report.get('spent_usd'))} "
        f"of {usd(report.get('budget_usd'))} spent, {usd(report.get('remaining_usd'))} left "
        f"({report.get('requests_used')}/{report.get('requests_allowed')} requests)"
    ]
    allowance = report.get("allowance_per_collection")
    if report.get("pacing") == "off":
        lines.append("pacing: off (first come, first served)")
    elif allowance is not None and report.get("policy") == "needed":
        lines.append(
            f"pacing: even; a collection now may make up to {allowance} paid requests, only "
            "for symbols the free path cannot serve (policy needed)"
        )
    elif allowance is not None:
        lines.append(f"pacing: even; a collection now may make {allowance} paid requests")
    if report.get("paused_until"):
        until = short_time(str(report["paused_until"]))
        lines.append(
            f"Bright Data paused until {until}: the budget is spent, and money frees up then "
            "(the spend of the 24 hours before has aged out)"
        )
    elif report.get("runs_out_at"):
        lines.append(
            f"at the current pace the budget runs out at {short_time(str(report['runs_out_at']))}"
        )
    else:
        lines.append("at the current pace the budget lasts the day")
    if report.get("bright_data_configured") is False:
        from crawler.orchestrator.budget_report import NO_KEY

        lines.append(NO_KEY)
    if report.get("policy"):
        lines.append(f"policy: {report['policy']}")
    reasons = report.get("paid_by_reason") or {}
    if reasons:
        lines.append(
            "paid today by reason: " + ", ".join(f"{name} {n}" for name, n in reasons.items())
        )
    saved = report.get("seed_order")
    if saved:
        lines.append(
            f"the seed's order would have paid {saved['requests']} requests "
            f"({usd(saved['usd'])}) in this daemon's collections today; they paid "
            f"{saved['paid']}: {saved['saved_requests']} saved ({usd(saved['saved_usd'])})"
        )
    lines.append("paid requests per hour:")
    lines += ["  " + line for line in bar_chart(report.get("paid_by_hour") or {})]
    top = report.get("top_symbols") or []
    if top:
        lines.append("top paid symbols today:")
        lines += [f"  {item['symbol']:<16} {item['requests']}" for item in top]
    lines.append("targets (this daemon's counters):")
    for name, target in (report.get("targets") or {}).items():
        value = target.get("value")
        mark = {True: "✓", False: "✗", None: "-"}[target.get("met")]
        shown = "no data yet" if value is None else f"{value}%"
        lines.append(
            f"  {mark} {_TARGET_NAMES.get(name, name)}: {shown} (target {target['target']})"
        )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add `budget` to `app`."""
    app.command()(budget)
