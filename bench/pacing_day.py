"""A simulated budget day: the real collector, spending policy, ledger, cache, quote-times store
and market hours, the real Bright Data source over the fake market (real HTTP), and an
injected wall clock that jumps one collection interval at a time.

    result = simulate_day(market, data_dir, watchlist_200(), pacing="even")
    result["exhausted_at"], result["spent_pct"], result["max_open_gap_h"]

The fakes run on the simulated clock (Yahoo's quotes lag by their exchange's delay, Bloomberg's
by `BLOOMBERG_LAG_MIN`). The free path: `free="yahoo"` adds `FakeYahooQuotes`, a few-line
client of the fake Yahoo's chart endpoint named "yfinance" (real HTTP, no pandas), so a day
of ~5,000 free quotes takes seconds rather than the minutes the yfinance library needs;
`free=None` has no free source (the test's setting: who gets paid requests does not depend on
how free quotes are fetched).
Used by tests/test_pacing_day.py and bench/bench_pacing.py.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from statistics import median, quantiles
from typing import Any
from urllib.parse import quote as url_quote

import requests

from crawler.markets.hours import MarketHours
from crawler.normalizer.schemas import AssetClass, Quote, utc_now
from crawler.normalizer.symbols import Symbol, parse_symbol, to_yahoo
from crawler.orchestrator.budget_report import targets
from crawler.orchestrator.collection import Collector
from crawler.orchestrator.hybrid import HybridDataSource
from crawler.orchestrator.spending import SpendingPolicy
from crawler.sources.base import QuoteSource
from crawler.sources.bright_data import BrightDataSource
from crawler.store.cache import QuoteCache
from crawler.store.ledger import BudgetLedger
from crawler.store.quote_times import QuoteTimes
from crawler.utils.exceptions import TransientSourceError, UnknownSymbolError
from fakemarket import FakeMarket

__all__ = ["DAY", "FakeYahooQuotes", "simulate_day", "watchlist_200"]

#: A Tuesday in March 2026 (New York on summer time, London not yet): a UTC budget day.
DAY = datetime(2026, 3, 10, tzinfo=UTC)
BUDGET_USD = Decimal("5.50")
COST_USD = Decimal("0.0015")
INTERVAL_S = 900
_FX = ["EUR", "USD", "GBP", "JPY", "CHF", "AUD", "CAD", "NZD", "SEK", "NOK"]
_CRYPTO = ["XBT", "XET", "XRP", "LTC", "BCH", "ADA", "SOL", "DOT", "XLM", "DOGE"]


def watchlist_200() -> list[tuple[str, AssetClass]]:
    """200 symbols: 80 US, 40 London, 30 Tokyo stocks, 30 FX pairs, 20 crypto pairs."""
    names = [f"US{i:03d}:US" for i in range(80)]
    names += [f"LN{i:03d}:LN" for i in range(40)]
    names += [f"{1300 + i}:JP" for i in range(30)]
    pairs = [a + b for a in _FX for b in _FX if a != b]
    names += [f"{pair}:CUR" for pair in pairs[:30]]
    names += [f"{base}{quote}:CUR" for base in _CRYPTO for quote in ("USD", "EUR")]
    return [(name, parse_symbol(name).asset_class) for name in names]


class FakeYahooQuotes:
    """A free source reading the fake Yahoo's chart JSON over HTTP (the simulation's stand-in
    for the yfinance library, which costs ~16 ms of CPU a quote)."""

    name = "yfinance"

    def __init__(self, base_url: str, now: Callable[[], datetime] = utc_now) -> None:
        self._base = base_url.rstrip("/") + "/v8/finance/chart/"
        self._session = requests.Session()
        self._now = now

    def fetch(self, symbol: Symbol) -> Quote:
        """The quote, or TransientSourceError / UnknownSymbolError."""
        try:
            answer = self._session.get(self._base + url_quote(to_yahoo(symbol), safe=""), timeout=5)
        except requests.RequestException as exc:
            raise TransientSourceError(f"fake Yahoo: {type(exc).__name__}") from exc
        if answer.status_code == 404:
            raise UnknownSymbolError(f"fake Yahoo has no {symbol.canonical}")
        if answer.status_code != 200:
            raise TransientSourceError(f"fake Yahoo answered {answer.status_code}")
        meta = json.loads(answer.content)["chart"]["result"][0]["meta"]
        return Quote(
            symbol=symbol.canonical,
            price=Decimal(str(meta["regularMarketPrice"])),
            currency=meta.get("currency"),
            source=self.name,
            asset_class=symbol.asset_class,
            as_of=datetime.fromtimestamp(int(meta["regularMarketTime"]), UTC),
            fetched_at=self._now(),
        )

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()


class _Now:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def simulate_day(
    market: FakeMarket,
    data_dir: Path,
    watchlist: list[tuple[str, AssetClass]],
    *,
    pacing: str = "even",
    free: str | None = "yahoo",
    day: datetime = DAY,
    budget_usd: Decimal = BUDGET_USD,
    max_workers: int = 16,
    policy: str = "paced",
    stream: bool = False,
    yahoo_down: tuple[float, float] | None = None,
    bloomberg_lag_min: dict[str, int] | None = None,
    max_quote_age_s: float = 1200.0,
) -> dict[str, Any]:
    """Run one budget day of collections every INTERVAL_S from `day` 00:00 and measure it.

    Returns JSON-ready figures: requests allowed/used, `exhausted_at` (first collection after
    which nothing could be reserved) against `last_close` (the last close of the watchlist's
    markets that day), `starved_collections` (collections after that with a market open),
    `spent_pct`, `max_open_gap_h` (the longest open-market time any symbol
    went without a Bloomberg quote), `never_paid` (open at some point, never paid), per-hour
    paid-quote coverage, the Bright Data share of requests, `over_budget` (the ledger ever
    above the budget) and CPU seconds per collection; `spent_usd`, the seed's `targets` (and
    `targets_met`), quote age p50/p95 per market while open (`age_min_by_market`) and
    `paid_by_reason`.

    `policy` is `[budget] policy` (needed, paced, seed); `stream` simulates Yahoo's stream
    (each trading symbol's tick in the cache before a collection, as late as Yahoo's delay for
    its exchange); `yahoo_down` = (from, to) hours of the day when Yahoo refuses connections;
    `bloomberg_lag_min` the Bloomberg pages' lag per suffix (BLOOMBERG_LAG_MIN by default).
    """
    now = _Now(day)
    hours = MarketHours(now=now)
    # The fakes on the simulated clock; Bloomberg's pages as late as Yahoo's quotes where
    # Yahoo is delayed (London 15 min, Tokyo 20), real time elsewhere.
    market.yahoo.set_clock(now)
    market.bright_data.set_clock(now)
    for suffix, lag_min in (BLOOMBERG_LAG_MIN if bloomberg_lag_min is None
                            else bloomberg_lag_min).items():  # fmt: skip
        market.bright_data.set_lag(suffix, lag_min)
    ledger = BudgetLedger(data_dir / "ledger", budget_usd, COST_USD, now=now)
    cache = QuoteCache(data_dir / "cache", ttl_s=INTERVAL_S, clock=lambda: now().timestamp())
    sources: list[QuoteSource] = [
        BrightDataSource(market.bright_data.url, market.api_key, market.zone, ledger, now=now)
    ]
    if free == "yahoo":
        sources.append(FakeYahooQuotes(market.yahoo.url, now=now))
    hybrid = HybridDataSource(
        sources=sources,
        cache=cache,
        ledger=ledger,
        max_workers=max_workers,
        clock=lambda: now().timestamp(),
    )
    times = QuoteTimes(data_dir / "quote_times")
    spending = SpendingPolicy(
        pacing=pacing,
        interval_s=INTERVAL_S,
        market_hours=hours,
        policy=policy,
        max_quote_age_s=max_quote_age_s,
    )
    collector = Collector(market_hours=hours, now=now, quote_times=times, spending=spending)
    symbols = [parse_symbol(name, asset) for name, asset in watchlist]
    allowed = ledger.requests_allowed
    open_gap_s: dict[str, float] = defaultdict(float)
    max_gap_s: dict[str, float] = defaultdict(float)
    ever_open: set[str] = set()
    ever_paid: set[str] = set()
    paid_by_hour: dict[int, set[str]] = defaultdict(set)
    open_by_hour: dict[int, set[str]] = defaultdict(set)
    exhausted_at: datetime | None = None
    starved = 0
    over_budget = False
    cpu_s: list[float] = []
    served = {"cache": 0, "bright_data": 0, "yfinance": 0, "stale": 0, "errors": 0}
    ages_s: dict[str, list[float]] = defaultdict(list)
    streamed = 0
    try:
        for k in range(24 * 3600 // INTERVAL_S):
            # A collection a little after each quarter hour, as a real one starts.
            now.at = day + timedelta(seconds=k * INTERVAL_S + START_LATE_S)
            down = yahoo_down is not None and yahoo_down[0] <= k * INTERVAL_S / 3600 < yahoo_down[1]
            market.yahoo.set_outage("refuse" if down else None)
            if stream and not down:
                streamed += _stream_ticks(market, cache, symbols, now.at)
            started = time.process_time()
            report = collector.collect(hybrid, watchlist)
            cpu_s.append(time.process_time() - started)
            served["errors"] += len(report.errors)
            served["stale"] += report.stale
            for name, count in report.sources.items():
                served[name] = served.get(name, 0) + count
            paid_now = {
                name
                for name, t in times.snapshot().items()
                if t.last_paid_at is not None and t.last_paid_at == now.at
            }
            if exhausted_at is not None and any(
                hours.is_open(s.canonical, s.asset_class, at=now.at) for s in symbols
            ):
                starved += 1  # open markets due, and no money left for any of them
            for sym in symbols:
                name = sym.canonical
                if name in paid_now:
                    ever_paid.add(name)
                    paid_by_hour[now.at.hour].add(name)
                if hours.is_open(name, sym.asset_class, at=now.at):
                    last = cache.get_last_known(name)
                    if last is not None and last.as_of is not None:
                        ages_s[_market_name(sym)].append((now.at - last.as_of).total_seconds())
                    ever_open.add(name)
                    open_by_hour[now.at.hour].add(name)
                    open_gap_s[name] = 0.0 if name in paid_now else open_gap_s[name] + INTERVAL_S
                    max_gap_s[name] = max(max_gap_s[name], open_gap_s[name])
            stats = ledger.statistics()
            over_budget = over_budget or stats["total_cost"] > budget_usd
            if exhausted_at is None and not ledger.can_reserve():
                exhausted_at = now.at
        stats_now = hybrid.get_statistics()
        seed_targets = targets(
            stats_now["source_usage"], stats_now["cache_statistics"], live_served=streamed
        )
    finally:
        market.yahoo.set_outage(None)
        market.yahoo.set_clock(utc_now)
        market.bright_data.set_clock(utc_now)
        hybrid.cleanup()
        breakdown = ledger.breakdown()
        for store in (ledger, cache, times):
            store.close()
    used = int(stats["requests_used"])
    ledger_breakdown = breakdown
    coverage = {
        f"{h:02d}": round(100 * len(paid_by_hour[h] & open_by_hour[h]) / len(open_by_hour[h]), 1)
        for h in sorted(open_by_hour)
        if open_by_hour[h]
    }
    requests_total = served["cache"] + served["bright_data"] + served["yfinance"]
    last_close = _last_close(hours, symbols, day)
    return {
        "policy": policy,
        "spent_usd": str(stats["total_cost"]),
        "targets": {name: t["value"] for name, t in seed_targets.items()},
        "targets_met": all(t["met"] for t in seed_targets.values()),
        "age_min_by_market": {
            name: {"p50": round(median(v) / 60, 1), "p95": round(_p95(v) / 60, 1)}
            for name, v in sorted(ages_s.items())
        },
        "paid_by_reason": _by_reason(ledger_breakdown),
        "pacing": pacing,
        "symbols": len(symbols),
        "collections": len(cpu_s),
        "requests_allowed": allowed,
        "requests_used": used,
        "spent_pct": round(100 * used / allowed, 1) if allowed else 0.0,
        "exhausted_at": None if exhausted_at is None else exhausted_at.isoformat(),
        "last_close": None if last_close is None else last_close.isoformat(),
        "exhausted_before_last_close": exhausted_at is not None
        and (last_close is None or exhausted_at < last_close),
        "starved_collections": starved,
        "max_open_gap_h": round(max(max_gap_s.values(), default=0.0) / 3600, 2),
        "never_paid": sorted(ever_open - ever_paid),
        "coverage_pct_by_hour": coverage,
        "bright_data_share_pct": round(100 * served["bright_data"] / requests_total, 1)
        if requests_total
        else 0.0,
        "served": served,
        "over_budget": over_budget,
        "cpu_s_per_collection": cpu_s,
    }


def _last_close(hours: MarketHours, symbols: list[Symbol], day: datetime) -> datetime | None:
    """The last close of the day among the watchlist's markets; None if one never closes."""
    end = day + timedelta(days=1)
    latest: datetime | None = None
    for sym in symbols:
        if hours.is_open(sym.canonical, sym.asset_class, at=end - timedelta(seconds=1)):
            return None  # crypto, FX on a weekday, ...: it trades until the day's end
        close = hours.last_close(sym.canonical, sym.asset_class, at=end)
        if close is None:
            return None
        if close >= day:
            latest = close if latest is None else max(latest, close)
    return latest


#: Bloomberg's lag per Bloomberg suffix in the simulated day (minutes; others real time): as
#: late as Yahoo where Yahoo is delayed, so paying buys no freshness there.
BLOOMBERG_LAG_MIN = {"LN": 15, "JP": 20}
#: Seconds after each quarter hour the simulated collections start.
START_LATE_S = 30


def _market_name(sym: Symbol) -> str:
    if sym.suffix == "CUR":
        return "crypto" if sym.ticker[:3] in _CRYPTO or sym.ticker.startswith("DOGE") else "FX"
    return {"US": "US", "LN": "London", "JP": "Tokyo"}.get(sym.suffix, sym.suffix)


def _stream_ticks(
    market: FakeMarket, cache: QuoteCache, symbols: list[Symbol], at: datetime
) -> int:
    """Yahoo's stream, simulated: each symbol whose exchange trades ticked 20 s before `at`,
    its tick as late as the exchange's Yahoo delay; the tick lands in the cache (as the live
    feed puts it there), so the collection finds it fresh. Returns the ticks."""
    ticks = 0
    tick_at = at - timedelta(seconds=20)
    for sym in symbols:
        yahoo = market.yahoo.quote_for(to_yahoo(sym))
        if yahoo.market_state != "REGULAR":
            continue
        cache.put(
            Quote(
                symbol=sym.canonical,
                price=Decimal(str(yahoo.price)),
                currency=yahoo.currency,
                source="yahoo_stream",
                asset_class=sym.asset_class,
                as_of=tick_at - timedelta(minutes=yahoo.delay_min),
                fetched_at=tick_at,
            )
        )
        ticks += 1
    return ticks


def _p95(values: list[float]) -> float:
    return quantiles(values, n=20)[-1] if len(values) >= 2 else (values[0] if values else 0.0)


def _by_reason(breakdown: dict[str, dict[str, int]]) -> dict[str, int]:
    from crawler.orchestrator.budget_report import split_labels

    return split_labels(breakdown.get("by_label", {}))[1]
