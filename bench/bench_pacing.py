"""A budget day, paced against unpaced: does the money last, is it spent, who gets it.

    python bench/bench_pacing.py            # 200 symbols, the default budget, twice each
    python bench/bench_pacing.py --quick    # 40 symbols, a $1.10 budget, once each

The simulated day (bench/pacing_day.py) runs 96 collections with an injected clock against
the fake market over real HTTP; the free path is the fake Yahoo's chart endpoint. The baseline
is the same day with `pacing = "off"` (first come, first served), run in the same process,
interleaved with the paced one. Figures: share of the budget spent, when it ran out, the
collections that found markets open and no money left, the longest open-market time a symbol
went without a Bloomberg quote, paid-quote coverage per hour (min and median over the hours with
an open market), the Bright Data share of all quote requests, and CPU per collection (min and
median) beside the wall time of the day.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pacing_day import simulate_day, watchlist_200
from fakemarket import FakeMarket

TARGET = (
    "paced: no starved collection, >= 95 % spent, a Bloomberg quote every <= 6 open hours; "
    "needed (stream on): the seed's three targets met, spend <= 1/4 of paced, p95 quote age "
    "per market <= paced's + one interval"
)
POLICIES = ("needed", "paced", "seed")


def _policy_day(market: FakeMarket, policy: str, quick: bool, **options: Any) -> dict[str, Any]:
    watchlist = watchlist_200()
    budget = Decimal("5.50")
    if quick:
        watchlist, budget = watchlist[::5], Decimal("1.10")
    market.reset()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        day = simulate_day(
            market, Path(tmp), watchlist, policy=policy, stream=True, budget_usd=budget,
            **options,
        )  # fmt: skip
        day["wall_s"] = time.perf_counter() - started
    return day


def _row(name: str, day: dict[str, Any]) -> str:
    t = day["targets"]
    ages = " ".join(
        f"{market} {a['p50']}/{a['p95']}" for market, a in day["age_min_by_market"].items()
    )
    yf = "-" if t["yfinance_success_pct"] is None else f"{t['yfinance_success_pct']}%"
    return (
        f"| {name} | ${day['spent_usd']} ({day['requests_used']}) | "
        f"{t['bright_data_share_pct']}% | {t['cache_hit_rate_pct']}% | {yf} | {ages} | "
        + ", ".join(f"{k} {v}" for k, v in day["paid_by_reason"].items())
        + " |"
    )


def _policies(market: FakeMarket, quick: bool) -> dict[str, Any]:
    """`needed`, `paced` and `seed` on the same day (stream on), a day with Yahoo down 14-16 h,
    and one where Bloomberg is real time in Tokyo (paying buys 20 minutes there)."""
    days = {policy: _policy_day(market, policy, quick) for policy in POLICIES}
    days["needed, Yahoo down 14:00-16:00"] = _policy_day(
        market, "needed", quick, yahoo_down=(14.0, 16.0)
    )
    days["needed, Bloomberg real time in Tokyo"] = _policy_day(
        market, "needed", quick, bloomberg_lag_min={"LN": 15}
    )
    print("| policy | spent (requests) | Bright Data share | cache hit | yfinance success "
          "| quote age p50/p95 min while open | paid by reason |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, day in days.items():
        print(_row(name, day))
    needed, paced = days["needed"], days["paced"]
    ages_ok = all(
        a["p95"] <= paced["age_min_by_market"][m]["p95"] + 15
        for m, a in needed["age_min_by_market"].items()
    )
    met = (
        needed["targets_met"]
        and 4 * needed["requests_used"] <= paced["requests_used"]
        and ages_ok
        and days["needed, Yahoo down 14:00-16:00"]["exhausted_at"] is None
    )
    return {
        "met": met,
        "days": {
            name: {k: v for k, v in day.items() if k not in ("cpu_s_per_collection",)}
            for name, day in days.items()
        },
    }


def _one(market: FakeMarket, pacing: str, quick: bool) -> dict[str, Any]:
    watchlist = watchlist_200()
    budget = Decimal("5.50")
    if quick:
        watchlist = watchlist[::5]  # 40 symbols across the same markets
        budget = Decimal("1.10")
    market.reset()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        day = simulate_day(market, Path(tmp), watchlist, pacing=pacing, budget_usd=budget)
        day["wall_s"] = time.perf_counter() - started
    return day


def _summary(days: list[dict[str, Any]]) -> dict[str, Any]:
    last = days[-1]
    cpu = [c for day in days for c in day["cpu_s_per_collection"]]
    coverage = list(last["coverage_pct_by_hour"].values()) or [0.0]
    return {
        "spent_pct": last["spent_pct"],
        "exhausted_at": last["exhausted_at"],
        "starved_collections": last["starved_collections"],
        "max_open_gap_h": last["max_open_gap_h"],
        "never_paid": len(last["never_paid"]),
        "coverage_min_pct": min(coverage),
        "coverage_median_pct": median(coverage),
        "bright_data_share_pct": last["bright_data_share_pct"],
        "over_budget": any(day["over_budget"] for day in days),
        "cpu_ms_per_collection_min": round(1000 * min(cpu), 1),
        "cpu_ms_per_collection_median": round(1000 * median(cpu), 1),
        "wall_s_per_day_min": round(min(day["wall_s"] for day in days), 1),
        "wall_s_per_day_median": round(median(day["wall_s"] for day in days), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 symbols, once each")
    parser.add_argument("--repeat", type=int, default=2, help="days per mode (interleaved)")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else max(1, args.repeat)
    runs: dict[str, list[dict[str, Any]]] = {"even": [], "off": []}
    with FakeMarket() as market:
        for _ in range(repeat):
            for pacing in ("off", "even"):  # interleaved: both see the same machine load
                runs[pacing].append(_one(market, pacing, args.quick))
        policies = _policies(market, args.quick)
    paced, unpaced = _summary(runs["even"]), _summary(runs["off"])
    symbols = runs["even"][-1]["symbols"]
    print(f"simulated day, {symbols} symbols, {runs['even'][-1]['requests_allowed']} paid "
          f"requests allowed, 96 collections; {repeat} day(s) per mode, interleaved")  # fmt: skip
    for name, fig in (("paced (even)", paced), ("unpaced (off)", unpaced)):
        print(
            f"  {name:<14} spent {fig['spent_pct']}%, ran out {fig['exhausted_at'] or 'never'}, "
            f"{fig['starved_collections']} starved collections, longest open gap "
            f"{fig['max_open_gap_h']} h, {fig['never_paid']} never paid"
        )
        print(
            f"  {'':<14} paid coverage per hour min {fig['coverage_min_pct']}% / median "
            f"{fig['coverage_median_pct']}%, Bright Data {fig['bright_data_share_pct']}% of "
            f"requests, CPU/collection min {fig['cpu_ms_per_collection_min']} ms / median "
            f"{fig['cpu_ms_per_collection_median']} ms, wall/day median "
            f"{fig['wall_s_per_day_median']} s"
        )
    cpu_ratio = round(
        paced["cpu_ms_per_collection_median"] / max(unpaced["cpu_ms_per_collection_median"], 0.1),
        2,
    )
    print(f"  CPU per collection, paced vs unpaced (median): {cpu_ratio}x")
    met = (
        paced["starved_collections"] == 0
        and paced["spent_pct"] >= 95.0
        and paced["max_open_gap_h"] <= 6.0
        and not paced["over_budget"]
        and policies["met"]
    )
    result = {
        "bench": "pacing",
        "target": TARGET,
        "met": met,
        "symbols": symbols,
        "paced": paced,
        "unpaced": unpaced,
        "cpu_paced_vs_unpaced": cpu_ratio,
        "policies": policies["days"],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
