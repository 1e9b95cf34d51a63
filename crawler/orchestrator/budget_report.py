"""What `crawler budget` and the status line say about the money: built from figures, pure.

    report = budget_report(ledger_stats, breakdown, usage, cache_stats,
                           allowance=42, now=now, day_end=day_end, pacing="even")
    summary_line(report)
    # "budget: $1.23 of $5.50 spent today (820/3666 requests); 42 paid per collection now;
    #  lasts the day"

The seed's three targets are measured on the counters of the running process: cache hit rate
above 60 %, yfinance success above 80 %, Bright Data under 20 % of all quote requests (cache
hits, yfinance and Bright Data requests together).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from crawler.orchestrator.pacing import requests_left

__all__ = [
    "PACE_WINDOW_H",
    "TARGETS",
    "budget_report",
    "short_time",
    "split_labels",
    "summary_line",
    "targets",
    "usd",
]

#: Hours of recent spend that define "the current pace".
PACE_WINDOW_H: Final = 3
#: The seed's targets: name -> (comparison, threshold %).
TARGETS: Final[dict[str, tuple[str, float]]] = {
    "cache_hit_rate_pct": (">", 60.0),
    "yfinance_success_pct": (">", 80.0),
    "bright_data_share_pct": ("<", 20.0),
}
_TOP_SYMBOLS: Final = 10


def budget_report(
    ledger: Mapping[str, Any],
    breakdown: Mapping[str, Mapping[str, int]],
    usage: Mapping[str, Mapping[str, Any]],
    cache: Mapping[str, Any],
    *,
    allowance: int | None,
    now: datetime,
    day_end: datetime,
    pacing: str,
    live_served: int = 0,
    policy: str | None = None,
    seed_order: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The whole `crawler budget` answer (JSON-ready) from the ledger's statistics and
    breakdown, the sources' usage counters and the cache's statistics."""
    used = int(ledger.get("requests_used", 0))
    allowed = int(ledger.get("requests_allowed", 0))
    cost = Decimal(str(ledger.get("cost_per_request", "0")))
    remaining = requests_left(ledger)
    by_hour = {f"{h:02d}": int(breakdown.get("by_hour", {}).get(f"{h:02d}", 0)) for h in range(24)}
    by_symbol, by_reason = split_labels(breakdown.get("by_label", {}))
    top = sorted(by_symbol.items(), key=lambda kv: (-kv[1], kv[0]))
    paused = remaining == 0 and cost > 0
    zone = ZoneInfo(str(ledger.get("timezone") or "UTC"))
    runs_out = _runs_out(by_hour, remaining, now.astimezone(zone), day_end)
    return {
        "day": ledger.get("day"),
        "timezone": ledger.get("timezone"),
        "pacing": pacing,
        "spent_usd": str(ledger.get("total_cost", "0")),
        "budget_usd": str(ledger.get("budget_total", "0")),
        "remaining_usd": str(ledger.get("budget_remaining", "0")),
        "requests_used": used,
        "requests_allowed": allowed,
        "requests_remaining": remaining,
        "allowance_per_collection": allowance,
        # The ledger's own answer (its rolling 24-hour window holds money past midnight);
        # a ledger that does not say falls back to the budget day's end.
        "paused_until": (ledger.get("money_frees_at") or day_end.isoformat()) if paused else None,
        # A cluster whose Redis lost the ledger: nothing is paid until every node reported.
        "recovering": bool(ledger.get("recovering")),
        "runs_out_at": None if runs_out is None else runs_out.isoformat(),
        "lasts_the_day": runs_out is None and not paused,
        "paid_by_hour": by_hour,
        "top_symbols": [{"symbol": name, "requests": n} for name, n in top[:_TOP_SYMBOLS]],
        "paid_by_reason": by_reason,
        "policy": policy,
        "seed_order": _saved(seed_order, cost),
        "targets": targets(usage, cache, live_served),
    }


def _saved(counts: Mapping[str, int] | None, cost: Decimal) -> dict[str, Any] | None:
    """What the policy saved against the seed's order in today's collections (None: unknown)."""
    if not counts:
        return None
    would, paid = int(counts.get("seed_order", 0)), int(counts.get("paid", 0))
    saved = max(0, would - paid)
    return {
        "requests": would,
        "usd": str(would * cost),
        "paid": paid,
        "saved_requests": saved,
        "saved_usd": str(saved * cost),
    }


def split_labels(by_label: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """The ledger's billed requests by label ("SYMBOL#reason", or a bare symbol from before
    reasons were kept) -> (by symbol, by reason; "unrecorded" for bare labels)."""
    by_symbol: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for label, count in by_label.items():
        symbol, _, reason = str(label).partition("#")
        by_symbol[symbol] = by_symbol.get(symbol, 0) + int(count)
        key = reason or "unrecorded"
        by_reason[key] = by_reason.get(key, 0) + int(count)
    return by_symbol, dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))


def _runs_out(
    by_hour: Mapping[str, int], remaining: int, local_now: datetime, day_end: datetime
) -> datetime | None:
    """When the budget runs out at the pace of the last PACE_WINDOW_H hours (`local_now` in
    the budget's zone, where `by_hour` is kept); None if it lasts the day."""
    if remaining <= 0:
        return None
    first = max(0, local_now.hour - PACE_WINDOW_H + 1)
    spent = sum(by_hour.get(f"{h:02d}", 0) for h in range(first, local_now.hour + 1))
    if spent <= 0:
        return None
    # The current hour counts only as far as it has gone (at least a quarter, to stay sane).
    elapsed_h = max(local_now.hour - first + local_now.minute / 60, 0.25)
    out = local_now + timedelta(hours=remaining * elapsed_h / spent)
    return out if out < day_end else None


def targets(
    usage: Mapping[str, Mapping[str, Any]], cache: Mapping[str, Any], live_served: int = 0
) -> dict[str, dict[str, Any]]:
    """The seed's three targets from the sources' usage and the cache's counters. A quote the
    live stream answered is a free serve from memory: counted as a cache hit. Batch quotes
    are yfinance successes (one each)."""
    hits = int(cache.get("hits", 0)) + max(0, int(live_served))
    misses = int(cache.get("misses", 0))
    yf = usage.get("yfinance", {})
    bd = usage.get("bright_data", {})
    yf_requests = int(yf.get("total_requests", 0))
    bd_requests = int(bd.get("total_requests", 0))
    all_requests = hits + yf_requests + bd_requests
    values: dict[str, float | None] = {
        "cache_hit_rate_pct": _pct(hits, hits + misses),
        "yfinance_success_pct": _pct(int(yf.get("successes", 0)), yf_requests),
        "bright_data_share_pct": _pct(bd_requests, all_requests),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (op, threshold) in TARGETS.items():
        value = values[name]
        met = None if value is None else (value > threshold if op == ">" else value < threshold)
        out[name] = {"value": value, "target": f"{op} {threshold:g}%", "met": met}
    return out


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


#: What status and budget say when no Bright Data key is set.
NO_KEY = "Bright Data not configured (no BRIGHT_DATA_API_KEY): yfinance serves every quote, free"


def summary_line(report: Mapping[str, Any]) -> str:
    """The one line `crawler status` shows about the money."""
    spent = (
        f"budget: {usd(report.get('spent_usd'))} of {usd(report.get('budget_usd'))} spent today "
        f"({report.get('requests_used')}/{report.get('requests_allowed')} requests)"
    )
    if report.get("bright_data_configured") is False:
        return f"{spent}; {NO_KEY}"
    if report.get("recovering"):
        return f"{spent}; Bright Data paused: Redis lost the cluster's spend (see the store below)"
    if report.get("paused_until"):
        until = short_time(report["paused_until"])
        return f"{spent}; Bright Data paused until {until} (budget spent)"
    parts = [spent]
    allowance = report.get("allowance_per_collection")
    if report.get("pacing") == "off":
        parts.append("pacing off")
    elif allowance is not None and report.get("policy") == "needed":
        parts.append(f"up to {allowance} paid per collection now, only where Yahoo cannot serve")
    elif allowance is not None:
        parts.append(f"{allowance} paid per collection now")
    runs_out = report.get("runs_out_at")
    parts.append(f"runs out {short_time(runs_out)} at this pace" if runs_out else "lasts the day")
    return "; ".join(parts)


def usd(value: Any) -> str:
    """Dollars in the one format `crawler status` uses: "$5.50", "$5.4985", "$0.0015" (2 to
    4 decimals, as many as the amount needs); the text as given when it is not a number."""
    try:
        amount = Decimal(str(value)).quantize(Decimal("0.0001"))
    except ArithmeticError:
        return f"${value}"
    whole, _, cents = f"{amount:,.4f}".partition(".")
    return f"${whole}.{cents.rstrip('0').ljust(2, '0')}"


def short_time(iso: str) -> str:
    """An ISO time as the status line writes it: "2026-12-01 00:00 UTC" (the text as given
    when it is not a time)."""
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return when.strftime("%Y-%m-%d %H:%M %Z").strip()
