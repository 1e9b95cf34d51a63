"""What `crawler budget` says (crawler.orchestrator.budget_report, crawler.cli.budget_cmd) and
the ledger's per-hour and per-symbol counts it is built from (real ledger in tmp_path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from crawler.cli.budget_cmd import bar_chart, render_budget
from crawler.orchestrator.budget_report import budget_report, summary_line
from crawler.orchestrator.pacing import budget_day_end
from crawler.store.ledger import BudgetLedger

COST = Decimal("0.0015")


class Now:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def report_at(ledger: BudgetLedger, now: datetime, **usage: dict[str, int]) -> dict:
    return budget_report(
        ledger.statistics(),
        ledger.breakdown(),
        usage,
        {"hits": 70, "misses": 30},
        allowance=4,
        now=now,
        day_end=budget_day_end(now, "UTC"),
        pacing="even",
    )


def test_the_ledger_counts_billed_requests_by_hour_and_symbol(tmp_path: Path) -> None:
    now = Now(datetime(2026, 11, 30, 9, 15, tzinfo=UTC))
    ledger = BudgetLedger(tmp_path, COST * 100, COST, now=now)
    ledger.settle(ledger.reserve(label="AAPL:US"))
    ledger.release(ledger.reserve(label="AAPL:US"))  # not billed: not counted
    now.at += timedelta(hours=2)
    ledger.settle(ledger.reserve(label="VOD:LN"))
    ledger.settle(ledger.reserve(label="AAPL:US"))
    ledger.settle(ledger.reserve())  # unlabelled still counts per hour
    assert ledger.breakdown() == {
        "by_hour": {"09": 1, "11": 3},
        "by_label": {"AAPL:US": 2, "VOD:LN": 1},
    }
    assert ledger.statistics()["requests_billed"] == 4


def test_pace_targets_and_top_symbols(tmp_path: Path) -> None:
    now = Now(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
    ledger = BudgetLedger(tmp_path, COST * 100, COST, now=now)
    for _ in range(60):  # 60 requests between 10:00 and 12:30: 24 an hour
        ledger.settle(ledger.reserve(label="AAPL:US"))
    now.at = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
    report = report_at(
        ledger,
        now.at,
        yfinance={"total_requests": 20, "successes": 19},
        bright_data={"total_requests": 60, "successes": 60},
    )
    assert report["requests_remaining"] == 40
    # 40 left at 24 an hour: 1 h 40 min, before midnight.
    assert report["runs_out_at"] == "2026-11-30T14:10:00+00:00"
    assert report["lasts_the_day"] is False and report["paused_until"] is None
    assert report["paid_by_hour"]["10"] == 60 and report["paid_by_hour"]["12"] == 0
    assert report["top_symbols"] == [{"symbol": "AAPL:US", "requests": 60}]
    targets = report["targets"]
    assert targets["cache_hit_rate_pct"] == {"value": 70.0, "target": "> 60%", "met": True}
    assert targets["yfinance_success_pct"]["met"] is True  # 95 %
    # 60 of 70 hits + 20 + 60 requests = 40 %: the target is missed.
    assert targets["bright_data_share_pct"] == {"value": 40.0, "target": "< 20%", "met": False}
    text = render_budget(report)
    assert "runs out at 2026-11-30 14:10 UTC" in text  # as status writes times
    # Dollars as status writes them, whatever the ledger's strings look like ("5.5", "0").
    fresh = {**report, "spent_usd": "0", "budget_usd": "5.5", "remaining_usd": "5.5"}
    assert render_budget(fresh).startswith("budget 2026-11-30 (UTC): $0.00 of $5.50 spent, $5.50")
    assert "✗ Bright Data share of requests: 40.0% (target < 20%)" in text
    assert "✓ cache hit rate: 70.0% (target > 60%)" in text


def test_a_spent_budget_says_until_when_bright_data_is_paused(tmp_path: Path) -> None:
    now = Now(datetime(2026, 11, 30, 18, 0, tzinfo=UTC))
    ledger = BudgetLedger(tmp_path, COST * 3, COST, now=now)
    for _ in range(3):
        ledger.settle(ledger.reserve(label="AAPL:US"))
    report = report_at(ledger, now.at)
    # Not midnight: the 24-hour window holds the 18:00 spend until it is 24 hours old (issue
    # 22, item 7), to the minute the ledger's window drops it.
    assert report["paused_until"] == "2026-12-01T18:01:00+00:00"
    line = summary_line(report)
    assert line.startswith("budget: $0.0045 of $0.0045 spent today (3/3 requests)")
    assert line.endswith("Bright Data paused until 2026-12-01 18:01 UTC (budget spent)")


def test_a_quiet_day_lasts_and_the_chart_scales_to_the_busiest_hour() -> None:
    assert bar_chart({}) == ["(no paid requests yet today)"]
    chart = bar_chart({"08": 10, "09": 0, "10": 5}, width=10)
    assert chart == ["08 ██████████ 10", "09 0", "10 █████ 5"]
