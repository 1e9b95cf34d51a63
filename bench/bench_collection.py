"""Benchmark 2, one collection: N symbols (1,000; --quick 50) through `HybridDataSource.fetch_many`
against the fake market at 50 ms latency, one source at a time (a hybrid whose only source is
Bright Data, then one whose only source is yfinance), each on a cold cache.

Each is compared with, in the same run and at the same concurrency (the hybrid's max_workers):
  (a) a plain `requests` thread pool fetching the same URLs (one keep-alive Session per thread),
  (b) the ideal N x latency / concurrency,
and the yfinance one also with `yf.download(symbols, period="1d", threads=True)` through the
redirecting session. CPU time per quote is `time.process_time()` over the run / N; the fake
market runs in its own process, so its CPU is not counted.
Targets: each hybrid at most 1.2x its plain pool; the yfinance hybrid at least as fast as
yf.download.

    python bench/bench_collection.py [--quick] [--symbols 1000] [--workers 16] [--latency-ms 50]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from bench._common import (
    FakeMarketProcess,
    bench_settings,
    fake_market,
    finish,
    generated_symbols,
    parser,
    ratio,
)
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import bloomberg_url, parse_symbol, to_yahoo

__all__ = ["main"]

TARGET_VS_POOL = 1.2


class Timed:
    """Wall and CPU seconds of one run, and how many items succeeded."""

    def __init__(self, wall_s: float, cpu_s: float, ok: int) -> None:
        self.wall_s = wall_s
        self.cpu_s = cpu_s
        self.ok = ok


def _timed(run: Callable[[], int]) -> Timed:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok = run()
    return Timed(time.perf_counter() - wall0, time.process_time() - cpu0, ok)


def _plain_pool(workers: int, jobs: Sequence[Callable[[requests.Session], bool]]) -> int:
    """Run `jobs` on a plain thread pool, each thread with its own keep-alive Session."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def session() -> requests.Session:
        current: requests.Session | None = getattr(local, "session", None)
        if current is None:
            current = local.session = requests.Session()
            with lock:
                sessions.append(current)
        return current

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return sum(pool.map(lambda job: job(session()), jobs))
    finally:
        for item in sessions:
            item.close()


def _bright_data_jobs(
    market: FakeMarketProcess, symbols: Sequence[str]
) -> list[Callable[[requests.Session], bool]]:
    url = market.bright_data_url + "/request"
    headers = {"Authorization": f"Bearer {market.api_key}"}

    def job(target: str) -> Callable[[requests.Session], bool]:
        payload = {"zone": market.zone, "url": target, "format": "raw"}

        def run(session: requests.Session) -> bool:
            response = session.post(url, json=payload, headers=headers, timeout=30)
            return response.status_code == 200 and b"__NEXT_DATA__" in response.content

        return run

    return [job(bloomberg_url(parse_symbol(s))) for s in symbols]


def _yahoo_jobs(
    market: FakeMarketProcess, symbols: Sequence[str]
) -> list[Callable[[requests.Session], bool]]:
    def job(yahoo_symbol: str) -> Callable[[requests.Session], bool]:
        url = f"{market.yahoo_url}/v8/finance/chart/{yahoo_symbol}"
        params = {"range": "1d", "interval": "1d"}

        def run(session: requests.Session) -> bool:
            response = session.get(url, params=params, timeout=30)
            return response.status_code == 200 and bool(response.json()["chart"]["result"])

        return run

    return [job(to_yahoo(parse_symbol(s))) for s in symbols]


def _hybrid_run(
    root: Path,
    market: FakeMarketProcess,
    source: str,
    symbols: Sequence[str],
    workers: int,
    yf_source_workers: int | None = None,
) -> tuple[Timed, dict[str, Any]]:
    """A cold-cache collection through a hybrid whose only source is `source` (built from the
    settings, as the daemon builds it; `yf_source_workers` instead injects a YFinanceSource
    with that many pool threads)."""
    from crawler.orchestrator.hybrid_source import HybridDataSource
    from crawler.sources.yfinance_source import YFinanceSource

    data_dir = Path(tempfile.mkdtemp(prefix=f"hybrid-{source}-", dir=root))
    settings = bench_settings(data_dir, market, sources_order=(source,), max_workers=workers)
    injected = None
    if yf_source_workers is not None:
        injected = [
            YFinanceSource(
                endpoint=market.yahoo_url,
                cache_dir=data_dir / "yfinance",
                max_workers=yf_source_workers,
            )
        ]
    hybrid = HybridDataSource(settings, sources=injected)
    errors: dict[str, str] = {}
    try:
        # One fetch outside the timing: imports (yfinance, pandas) and yfinance's cookie and
        # crumb are paid once per process, not once per collection.
        hybrid.get_quote("WARMUP:US")

        def run() -> int:
            results = hybrid.fetch_many(symbols)
            for key, outcome in results.items():
                if not isinstance(outcome, Quote):
                    errors.setdefault(key, str(outcome))
            return sum(
                isinstance(q, Quote) and q.source == source and not q.from_cache
                for q in results.values()
            )

        timed = _timed(run)
        stats = hybrid.get_statistics()["source_usage"][source]
    finally:
        hybrid.cleanup()
    if errors:
        first = next(iter(errors.items()))
        print(f"  ! {len(errors)} {source} fetches failed, e.g. {first[0]}: {first[1]}")
    return timed, stats


def _yf_download_run(market: FakeMarketProcess, root: Path, symbols: Sequence[str]) -> Timed:
    """`yf.download(..., period="1d", threads=True)` on the same symbols, via the fake."""
    import yfinance as yf
    import yfinance.cache

    # pandas deprecation noise from inside yfinance is not a figure.
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"yfinance(\.|$)")

    from crawler.sources.yahoo_redirect import RedirectingSession

    # The hybrid's yfinance source has already pointed yfinance's caches into `root`; this
    # only matters when the yfinance hybrid was skipped.
    yfinance.cache.set_cache_location(str(root / "yf-download-cache"))
    yahoo_symbols = [to_yahoo(parse_symbol(s)) for s in symbols]
    session = RedirectingSession(market.yahoo_url, max_timeout_s=30)
    try:

        def run() -> int:
            frame = yf.download(
                yahoo_symbols,
                period="1d",
                threads=True,
                session=session,
                progress=False,
                auto_adjust=False,
            )
            if frame is None or frame.empty:
                return 0
            close = frame["Close"]
            return int(close.notna().any().sum())

        return _timed(run)
    finally:
        session.close()


def _line(label: str, timed: Timed, n: int, extra: str = "") -> None:
    print(
        f"  {label:<32} {timed.wall_s:7.2f} s  {timed.ok:>5}/{n} ok  "
        f"cpu {timed.cpu_s * 1000 / n:6.2f} ms/quote{extra}"
    )


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--symbols", type=int, default=1000)
    args_parser.add_argument("--workers", type=int, default=16, help="the hybrid's max_workers")
    args_parser.add_argument("--latency-ms", type=float, default=50.0)
    args_parser.add_argument(
        "--sources", default="bright_data,yfinance", help="comma-separated; which hybrids to run"
    )
    args_parser.add_argument("--no-download", action="store_true", help="skip yf.download")
    args_parser.add_argument(
        "--no-diagnosis",
        action="store_true",
        help="skip the extra yfinance run with the source's pool as wide as the hybrid's",
    )
    args = args_parser.parse_args(argv)
    n = 50 if args.quick else args.symbols
    workers, latency_s = args.workers, args.latency_ms / 1000
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    symbols = generated_symbols(n)
    ideal_s = n * latency_s / workers
    figures: dict[str, Any] = {
        "symbols": n,
        "workers": workers,
        "latency_ms": args.latency_ms,
        "ideal_s": round(ideal_s, 3),
    }
    met = True
    print(
        f"one collection of {n} symbols, {workers} workers, {args.latency_ms:g} ms latency; "
        f"ideal {ideal_s:.2f} s"
    )
    with (
        fake_market(latency_s) as market,
        tempfile.TemporaryDirectory(prefix="bench-collection-") as tmp,
    ):
        root = Path(tmp)
        for source in sources:
            jobs = (
                _bright_data_jobs(market, symbols)
                if source == "bright_data"
                else _yahoo_jobs(market, symbols)
            )
            pool = _timed(lambda jobs=jobs: _plain_pool(workers, jobs))  # type: ignore[misc]
            hybrid, usage = _hybrid_run(root, market, source, symbols, workers)
            vs_pool = ratio(hybrid.wall_s, pool.wall_s)
            vs_ideal = ratio(hybrid.wall_s, ideal_s)
            print(f"{source}:")
            _line("plain requests pool", pool, n)
            _line(
                f"hybrid ({source} only)",
                hybrid,
                n,
                f"  = {vs_pool:.2f}x pool, {vs_ideal:.2f}x ideal",
            )
            prefix = "bd" if source == "bright_data" else "yf"
            figures.update(
                {
                    f"{prefix}_pool_s": round(pool.wall_s, 3),
                    f"{prefix}_pool_ok": pool.ok,
                    f"{prefix}_pool_cpu_ms_per_quote": round(pool.cpu_s * 1000 / n, 3),
                    f"{prefix}_hybrid_s": round(hybrid.wall_s, 3),
                    f"{prefix}_hybrid_ok": hybrid.ok,
                    f"{prefix}_hybrid_cpu_ms_per_quote": round(hybrid.cpu_s * 1000 / n, 3),
                    f"{prefix}_hybrid_vs_pool": vs_pool,
                    f"{prefix}_hybrid_vs_ideal": vs_ideal,
                    f"{prefix}_pool_vs_ideal": ratio(pool.wall_s, ideal_s),
                    f"{prefix}_failures": usage.get("failures", 0),
                }
            )
            met = met and vs_pool <= TARGET_VS_POOL and hybrid.ok == n
            if source == "yfinance" and not args.no_diagnosis:
                # Diagnosis: is the YFinanceSource's own pool (4 threads by default) the cap?
                wide, _ = _hybrid_run(root, market, source, symbols, workers, workers)
                wide_vs_pool = ratio(wide.wall_s, pool.wall_s)
                _line(
                    f"hybrid, yfinance pool {workers}",
                    wide,
                    n,
                    f"  = {wide_vs_pool:.2f}x pool (diagnosis, not the target)",
                )
                figures.update(
                    {
                        "yf_wide_pool_hybrid_s": round(wide.wall_s, 3),
                        "yf_wide_pool_hybrid_vs_pool": wide_vs_pool,
                        "yf_wide_pool_cpu_ms_per_quote": round(wide.cpu_s * 1000 / n, 3),
                    }
                )
            if source == "yfinance" and not args.no_download:
                download = _yf_download_run(market, root, symbols)
                vs_download = ratio(hybrid.wall_s, download.wall_s)
                _line(
                    "yf.download(threads=True)",
                    download,
                    n,
                    f"  -> hybrid = {vs_download:.2f}x yf.download",
                )
                figures.update(
                    {
                        "yf_download_s": round(download.wall_s, 3),
                        "yf_download_ok": download.ok,
                        "yf_download_cpu_ms_per_quote": round(download.cpu_s * 1000 / n, 3),
                        "yf_hybrid_vs_download": vs_download,
                    }
                )
                met = met and vs_download <= 1.0
    return finish(
        "collection",
        figures,
        target=(
            f"hybrid_vs_pool <= {TARGET_VS_POOL} per source, all quotes served, "
            "yf_hybrid_vs_download <= 1.0"
        ),
        met=met,
    )


if __name__ == "__main__":
    sys.exit(main())
