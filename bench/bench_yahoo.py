"""Benchmark: Yahoo at scale. Two measurements against the fake market (its own process, so
its CPU is not ours), each run interleaved with its baseline, repeated, min and median:

1. CPU per chart quote, one at a time, 0 ms latency: `YFinanceSource.fetch` (executor hop,
   token bucket opened wide, crumb, chart GET, `parse_chart`) vs a bare curl_cffi GET of the
   same URL + `json.loads` of the same body. Target: <= 1.5x.
2. One collection of N symbols (1,000; --quick 50) at 50 ms latency, 16 workers, through the
   daemon's collection code (`Collector`: market hours, history) on a cold cache, yfinance the
   only source, vs the per-symbol chart pool at the same concurrency (16 threads, each with a
   keep-alive curl_cffi session: GET, `json.loads`, `parse_chart`: the same work per quote):
     - batched, default settings (50 per batch, 2 requests/s: the bucket is the limit);
     - batched, the bucket opened to 1,000 requests/s (same concurrency as the pool);
     - per-symbol charts only (batch_size 1, bucket opened): the fallback path.
   Targets: batched (bucket opened) <= 0.3x the pool; per-symbol <= 1.2x the pool. The default
   rate is reported as it is: 20 batch requests at 2/s cannot take less than ~10 s.

    python bench/bench_yahoo.py [--quick] [--symbols 1000] [--rounds 3]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    FakeMarketProcess,
    bench_settings,
    fake_market,
    finish,
    generated_symbols,
    median,
    parser,
    ratio,
)
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol, parse_symbol, to_yahoo
from crawler.normalizer.yahoo import parse_chart

__all__ = ["main"]

TARGET_CPU = 1.5
TARGET_BATCHED = 0.3
TARGET_FALLBACK = 1.2
OPEN_RPS = 1000.0
CHART_PARAMS = {"range": "1d", "interval": "1d", "includePrePost": "false"}


class Timed:
    """Wall and CPU seconds of one run, and how many quotes it got."""

    def __init__(self, wall_s: float, cpu_s: float, ok: int) -> None:
        self.wall_s, self.cpu_s, self.ok = wall_s, cpu_s, ok


def _timed(run: Callable[[], int]) -> Timed:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok = run()
    return Timed(time.perf_counter() - wall0, time.process_time() - cpu0, ok)


def _chart_url(market: FakeMarketProcess, yahoo_symbol: str) -> str:
    return f"{market.yahoo_url}/v8/finance/chart/{yahoo_symbol}"


# -- 1. CPU per chart quote ----------------------------------------------------------------


def _bare_gets(
    market: FakeMarketProcess, symbols: Sequence[Symbol], cookie: str, crumb: str
) -> Timed:
    """The same requests as the product's (same URL, the A3 cookie, the crumb), bare."""
    import json

    from curl_cffi import requests as curl_requests

    session = curl_requests.Session(impersonate="chrome", trust_env=False)
    session.cookies.set("A3", cookie, domain="127.0.0.1")
    urls = [_chart_url(market, to_yahoo(s)) for s in symbols]
    params = {**CHART_PARAMS, "crumb": crumb}
    session.get(urls[0], params=params)  # connection up, as the product's is

    def run() -> int:
        ok = 0
        for url in urls:
            body = json.loads(session.get(url, params=params).content)
            ok += bool(body["chart"]["result"])
        return ok

    try:
        return _timed(run)
    finally:
        session.close()


def _source_fetches(source: Any, symbols: Sequence[Symbol]) -> Timed:
    return _timed(lambda: sum(isinstance(source.fetch(s), Quote) for s in symbols))


def _cpu_per_quote(market: FakeMarketProcess, root: Path, n: int, rounds: int) -> dict[str, Any]:
    from crawler.sources.yahoo_throttle import YahooThrottle
    from crawler.sources.yfinance_source import YFinanceSource

    symbols = [parse_symbol(s) for s in generated_symbols(n)]
    source = YFinanceSource(
        endpoint=market.yahoo_url,
        cache_dir=root / "yf-cpu",
        throttle=YahooThrottle(OPEN_RPS * 1000),
    )
    try:
        source.fetch(symbols[0])  # imports, cookie and crumb: once per process, not measured
        session = source._session
        assert session is not None
        cookie = next((c.value for c in session.cookies.jar if c.name == "A3"), "") or ""
        crumb = source._crumb_value or ""
        bare_ms: list[float] = []
        ours_ms: list[float] = []
        ratios: list[float] = []
        for index in range(rounds):
            runs = [("bare", lambda: _bare_gets(market, symbols, cookie, crumb)),
                    ("ours", lambda: _source_fetches(source, symbols))]  # fmt: skip
            if index % 2:
                runs.reverse()  # interleaved: neither side always runs first
            timed = {name: run() for name, run in runs}
            bare_ms.append(timed["bare"].cpu_s * 1000 / n)
            ours_ms.append(timed["ours"].cpu_s * 1000 / n)
            ratios.append(ratio(ours_ms[-1], bare_ms[-1]))
            print(
                f"  round {index + 1}: bare GET+json.loads {bare_ms[-1]:.3f} ms cpu/quote "
                f"({timed['bare'].wall_s:.2f} s), YFinanceSource.fetch {ours_ms[-1]:.3f} ms "
                f"cpu/quote ({timed['ours'].wall_s:.2f} s) = {ratios[-1]:.2f}x"
            )
    finally:
        source.close()
    return {
        "chart_cpu_bare_ms_min": round(min(bare_ms), 3),
        "chart_cpu_bare_ms_median": round(median(bare_ms), 3),
        "chart_cpu_ours_ms_min": round(min(ours_ms), 3),
        "chart_cpu_ours_ms_median": round(median(ours_ms), 3),
        "chart_cpu_ratio_min": round(min(ratios), 3),
        "chart_cpu_ratio_median": round(median(ratios), 3),
    }


# -- 2. one collection -----------------------------------------------------------------------


def _chart_pool(
    market: FakeMarketProcess, symbols: Sequence[Symbol], workers: int, crumb: tuple[str, str]
) -> Timed:
    """The per-symbol chart pool: GET (with the same cookie and crumb), json.loads and
    parse_chart per quote, 16 threads."""
    from curl_cffi import requests as curl_requests

    cookie, crumb_value = crumb
    params = {**CHART_PARAMS, "crumb": crumb_value}

    local = threading.local()
    sessions: list[Any] = []
    lock = threading.Lock()

    def job(symbol: Symbol) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = curl_requests.Session(impersonate="chrome", trust_env=False)
            session.cookies.set("A3", cookie, domain="127.0.0.1")
            with lock:
                sessions.append(session)
        response = session.get(_chart_url(market, to_yahoo(symbol)), params=params)
        return int(isinstance(parse_chart(response.content, symbol), Quote))

    def run() -> int:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return sum(pool.map(job, symbols))

    try:
        return _timed(run)
    finally:
        for session in sessions:
            session.close()


def _cookie_and_crumb(market: FakeMarketProcess, root: Path) -> tuple[str, str]:
    """An A3 cookie and a crumb from the fake, as yfinance gets them (for the baselines)."""
    from crawler.sources.yahoo_throttle import YahooThrottle
    from crawler.sources.yfinance_source import YFinanceSource

    source = YFinanceSource(
        endpoint=market.yahoo_url, cache_dir=root / "yf-crumb", throttle=YahooThrottle(1e6)
    )
    try:
        source.fetch(parse_symbol("WARMUP:US"))
        session = source._session
        assert session is not None
        cookie = next((c.value for c in session.cookies.jar if c.name == "A3"), "") or ""
        return cookie, source._crumb_value or ""
    finally:
        source.close()


def _collection(
    market: FakeMarketProcess, root: Path, symbols: Sequence[str], workers: int, **overrides: Any
) -> tuple[Timed, dict[str, Any]]:
    """A cold-cache collection through the daemon's Collector (market hours, history)."""
    from crawler.markets.hours import MarketHours
    from crawler.normalizer.schemas import AssetClass
    from crawler.orchestrator.collection import Collector
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.store.history import HistoryStore

    data_dir = Path(tempfile.mkdtemp(prefix="yahoo-collection-", dir=root))
    settings = bench_settings(
        data_dir, market, sources_order=("yfinance",), max_workers=workers, **overrides
    )
    hybrid = HybridDataSource(settings)
    history = HistoryStore(data_dir / "history", 30)
    hours = MarketHours()
    tracked = [(s, AssetClass.STOCKS) for s in symbols]
    try:
        hybrid.get_quote("WARMUP:US")  # imports, cookie and crumb: paid once per process
        hours.preload(["XNYS"])
        collector = Collector(market_hours=hours)
        report: dict[str, Any] = {}

        def run() -> int:
            result = collector.collect(hybrid, tracked, history, deadline_s=900)
            report.update(result.as_dict())
            return int(result.quotes)

        timed = _timed(run)
        stats = hybrid.get_statistics().get("yahoo") or {}
    finally:
        hybrid.cleanup()
        history.close()
    return timed, {"report": report, "yahoo": stats}


def _collections(
    market: FakeMarketProcess, root: Path, n: int, workers: int, rounds: int
) -> dict[str, Any]:
    texts = generated_symbols(n)
    symbols = [parse_symbol(s) for s in texts]
    crumb = _cookie_and_crumb(market, root)
    runs: dict[str, Callable[[], tuple[Timed, dict[str, Any]]]] = {
        "pool": lambda: (_chart_pool(market, symbols, workers, crumb), {}),
        "batched_default": lambda: _collection(market, root, texts, workers),
        "batched_open": lambda: _collection(
            market, root, texts, workers, yfinance_max_rps=OPEN_RPS
        ),
        "per_symbol": lambda: _collection(
            market, root, texts, workers, yfinance_max_rps=OPEN_RPS, yfinance_batch_size=1
        ),
    }
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    requests: dict[str, int] = {}
    order = list(runs)
    for index in range(rounds):
        for name in order[index % len(order) :] + order[: index % len(order)]:
            timed, extra = runs[name]()
            walls[name].append(timed.wall_s)
            cpus[name].append(timed.cpu_s * 1000 / n)
            yahoo = extra.get("yahoo") or {}
            if yahoo:
                requests[name] = int(yahoo.get("batch_requests", 0)) + int(yahoo.get("fetches", 0))
            if timed.ok != n:
                print(f"  ! {name}: {timed.ok}/{n} quotes; {extra.get('report', {})}")
            print(
                f"  round {index + 1} {name:<16} {timed.wall_s:7.2f} s  {timed.ok:>5}/{n} ok  "
                f"cpu {timed.cpu_s * 1000 / n:6.3f} ms/quote"
                + (f"  ({requests[name]} data requests incl. warm-up)" if name in requests else "")
            )
    figures: dict[str, Any] = {}
    pool_min, pool_median = min(walls["pool"]), median(walls["pool"])
    for name in runs:
        figures[f"{name}_s_min"] = round(min(walls[name]), 3)
        figures[f"{name}_s_median"] = round(median(walls[name]), 3)
        figures[f"{name}_cpu_ms_per_quote_median"] = round(median(cpus[name]), 3)
        if name != "pool":
            figures[f"{name}_vs_pool_min"] = ratio(min(walls[name]), pool_min)
            figures[f"{name}_vs_pool_median"] = ratio(median(walls[name]), pool_median)
            figures[f"{name}_data_requests"] = requests.get(name)
    return figures


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--symbols", type=int, default=1000)
    args_parser.add_argument("--cpu-quotes", type=int, default=300)
    args_parser.add_argument("--workers", type=int, default=16)
    args_parser.add_argument("--rounds", type=int, default=3)
    args_parser.add_argument("--latency-ms", type=float, default=50.0)
    args = args_parser.parse_args(argv)
    n = 50 if args.quick else args.symbols
    cpu_n = 20 if args.quick else args.cpu_quotes
    rounds = 1 if args.quick else args.rounds
    figures: dict[str, Any] = {"symbols": n, "workers": args.workers, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="bench-yahoo-") as tmp:
        root = Path(tmp)
        print(f"CPU per chart quote, {cpu_n} quotes one at a time, 0 ms latency, {rounds} rounds")
        with fake_market(0.0) as market:
            figures.update(_cpu_per_quote(market, root, cpu_n, rounds))
        print(
            f"one collection of {n} symbols, {args.workers} workers, {args.latency_ms:g} ms "
            f"latency, {rounds} rounds (interleaved)"
        )
        with fake_market(args.latency_ms / 1000) as market:
            figures.update(_collections(market, root, n, args.workers, rounds))
    met = (
        figures["chart_cpu_ratio_median"] <= TARGET_CPU
        and figures["batched_open_vs_pool_median"] <= TARGET_BATCHED
        and figures["per_symbol_vs_pool_median"] <= TARGET_FALLBACK
    )
    return finish(
        "yahoo",
        figures,
        target=(
            f"chart_cpu_ratio <= {TARGET_CPU}, batched_open_vs_pool <= {TARGET_BATCHED}, "
            f"per_symbol_vs_pool <= {TARGET_FALLBACK} (medians)"
        ),
        met=met,
    )


if __name__ == "__main__":
    sys.exit(main())
