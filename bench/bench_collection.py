"""Benchmark 2, one collection: N symbols (1,000; --quick 50) through the daemon's collection code
(`Collector` with market hours, history, the metrics recorder and the event bus, on a hybrid
built from the settings as the daemon builds it) against the fake market at 50 ms latency, one
source at a time, each on a cold cache.

Each is compared with, in the same run, interleaved, repeated (--rounds, min and median), and
at the same concurrency (the hybrid's max_workers):
  (a) a plain `requests` thread pool doing the same work per quote (one keep-alive Session per
      thread): Bright Data's POST and `parse_bloomberg_page`; Yahoo's chart GET and
      `parse_chart`;
  (b) the ideal N x latency / concurrency,
and the yfinance one also with `yf.download(symbols, period="1d", threads=<same workers>)`
through the redirecting session, its timezone cache warmed by an untimed first call.
yfinance runs at the default settings (batches of 50, at most 2 requests/s: the bucket is the
limit by design) and with the bucket opened (1,000 requests/s), which is the like-for-like
comparison with the pool. CPU time per quote is `time.process_time()` over the run / N, for
the product and the pool alike; the fake market runs in its own process.
Targets: Bright Data at most 1.1x its pool in wall time and 1.5x in CPU per quote (medians);
yfinance (bucket opened) at most 0.3x its pool; yfinance at least as fast as yf.download. Last,
the real 450 KB Bloomberg capture (when the shared fixtures are beside the checkout): CPU per
`parse_bloomberg_page` beside a bare libxml2 read and JSON decode of the same page; target at
most 1.5x. --profile N adds N instrumented runs of each saying where the CPU per quote goes.

    python bench/bench_collection.py [--quick] [--symbols 1000] [--workers 16] [--rounds 3]
"""

from __future__ import annotations

import functools
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
    median,
    parser,
    ratio,
)
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol, bloomberg_url, parse_symbol, to_yahoo

__all__ = ["main"]

TARGET_VS_POOL = 1.1
TARGET_CPU_VS_POOL = 1.5
TARGET_YF_BATCHED = 0.3
_DOWNLOAD_WARMED: list[bool] = []


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


class CpuSplit:
    """Thread CPU seconds (`time.thread_time`) spent inside chosen functions, each second
    counted once: a chosen function's own time leaves out the chosen functions it calls (a
    ledger reservation inside the breaker's call counts as ledger, not breaker). Process CPU
    that no chosen function holds is "the rest". Measuring only (`--profile`): the functions
    are wrapped while `instrumented()` is open and restored after it."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._targets: list[tuple[Any, str, str]] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    def add(self, owner: Any, name: str, label: str) -> None:
        """Count the CPU of `owner.name` (a class's method or a module's function) as `label`;
        a name that does not exist (the code moved) is left out."""
        if getattr(owner, name, None) is not None:
            self._targets.append((owner, name, label))

    @contextmanager
    def instrumented(self) -> Iterator[None]:
        saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in self._targets]
        for owner, name, label in self._targets:
            setattr(owner, name, self._timed(getattr(owner, name), label))
        try:
            yield
        finally:
            for owner, name, original in reversed(saved):
                if original is None:
                    delattr(owner, name)  # it was inherited: the base class's comes back
                else:
                    setattr(owner, name, original)

    def _timed(self, function: Callable[..., Any], label: str) -> Callable[..., Any]:
        split = self

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack: list[float] = split._local.__dict__.setdefault("stack", [])
            stack.append(0.0)  # CPU of the chosen functions this call makes
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - start
                inner = stack.pop()
                if stack:
                    stack[-1] += spent
                with split._lock:
                    split.seconds[label] += spent - inner

        return timed


def _split_bright_data(split: CpuSplit) -> None:
    """What `--profile` counts on the Bright Data path, the pool's share (HTTP, parse) first."""
    import crawler.normalizer.bloomberg as bloomberg

    split.add(requests.Session, "request", "HTTP (requests, body read)")
    split.add(bloomberg, "parse_bloomberg_page", "parse the page")


def _split_hybrid(split: CpuSplit, hybrid: Any, history: Any, hours: Any) -> None:
    """The collection's own work per quote, beside `_split_bright_data`'s."""
    import crawler.sources.bright_data as bright_data
    from crawler.events import EventBus
    from crawler.orchestrator.collection import Collector
    from crawler.service.metrics import MetricsRecorder
    from crawler.sources.circuit_breaker import CircuitBreaker
    from crawler.store.history_recorder import HistoryRecorder

    _split_bright_data(split)
    split.add(bright_data.BrightDataSource, "_read_body", "HTTP (requests, body read)")
    split.add(bright_data, "parse_bloomberg_page", "parse the page")
    ledger = type(hybrid.ledger)
    for name in ("reserve", "settle", "release"):
        split.add(ledger, name, "ledger: reserve and settle")
    split.add(ledger, "can_reserve", "ledger: can_reserve (skip check)")
    split.add(ledger, "statistics", "ledger: statistics")
    # hold/unhold: the queued puts are written when the last fetch lets go of the cache.
    for name in ("put", "get", "get_last_known", "hold", "unhold"):
        split.add(type(hybrid.cache), name, "quote cache (put, last-known)")
    split.add(type(hybrid.plausibility), "check", "plausibility gate")
    for name in ("add", "_run"):
        split.add(HistoryRecorder, name, "history (recorder, commits)")
    split.add(type(history), "record", "history (recorder, commits)")
    split.add(CircuitBreaker, "call", "circuit breaker")
    split.add(bright_data.BrightDataSource, "fetch_paid", "Bright Data source (retries, billing)")
    split.add(MetricsRecorder, "record_fetch", "metrics")
    for name in ("publish", "publish_quote"):
        split.add(EventBus, name, "events")
    for name in ("is_open", "last_close"):
        split.add(type(hours), name, "market hours")
    split.add(Collector, "collect", "collection thread (due, submit, progress, report)")


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
    from crawler.normalizer.bloomberg import parse_bloomberg_page

    url = market.bright_data_url + "/request"
    headers = {"Authorization": f"Bearer {market.api_key}"}

    def job(symbol: Symbol) -> Callable[[requests.Session], bool]:
        payload = {"zone": market.zone, "url": bloomberg_url(symbol), "format": "raw"}

        def run(session: requests.Session) -> bool:
            response = session.post(url, json=payload, headers=headers, timeout=30)
            if response.status_code != 200:
                return False
            return isinstance(parse_bloomberg_page(response.content, symbol), Quote)

        return run

    return [job(parse_symbol(s)) for s in symbols]


def _yahoo_jobs(
    market: FakeMarketProcess, symbols: Sequence[str]
) -> list[Callable[[requests.Session], bool]]:
    from crawler.normalizer.yahoo import parse_chart

    def job(symbol: Symbol) -> Callable[[requests.Session], bool]:
        url = f"{market.yahoo_url}/v8/finance/chart/{to_yahoo(symbol)}"
        params = {"range": "1d", "interval": "1d", "includePrePost": "false"}

        def run(session: requests.Session) -> bool:
            response = session.get(url, params=params, timeout=30)
            if response.status_code != 200:
                return False
            return isinstance(parse_chart(response.content, symbol), Quote)

        return run

    return [job(parse_symbol(s)) for s in symbols]


def _hybrid_run(
    root: Path,
    market: FakeMarketProcess,
    source: str,
    symbols: Sequence[str],
    workers: int,
    split: CpuSplit | None = None,
    **overrides: Any,
) -> tuple[Timed, dict[str, Any]]:
    """A cold-cache collection as the daemon runs one: a hybrid whose only source is `source`,
    built from the settings with the daemon's metrics recorder and event bus, and `Collector`
    with market hours and the history store. With `split`, its CPU is counted by function."""
    from crawler.events import EventBus
    from crawler.markets.hours import MarketHours
    from crawler.normalizer.schemas import AssetClass
    from crawler.orchestrator.collection import Collector
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.service.metrics import MetricsRecorder
    from crawler.store.history import HistoryStore

    data_dir = Path(tempfile.mkdtemp(prefix=f"hybrid-{source}-", dir=root))
    settings = bench_settings(
        data_dir, market, sources_order=(source,), max_workers=workers, **overrides
    )
    metrics, events = MetricsRecorder(), EventBus()
    on_fetch = metrics.record_fetch
    if split is not None:  # looked up at each call, so the wrapped method is the one called
        on_fetch = lambda *args: metrics.record_fetch(*args)  # noqa: E731
    hybrid = HybridDataSource(settings, on_fetch=on_fetch, events=events)
    history = HistoryStore(data_dir / "history", settings.history_retention_days)
    hours = MarketHours()
    collector = Collector(market_hours=hours, events=events)
    tracked = [(s, AssetClass.STOCKS) for s in symbols]
    errors: dict[str, str] = {}
    try:
        # Outside the timing: imports (yfinance, pandas), yfinance's cookie and crumb and the
        # exchange calendar are paid once per process, not once per collection.
        hybrid.get_quote("WARMUP:US")
        hours.preload(["XNYS"])
        # As the daemon does at start (`daemon/app.py`): the last-known quotes into memory.
        getattr(hybrid.cache, "last_known_many", lambda _: None)(())

        def run() -> int:
            report = collector.collect(hybrid, tracked, history, deadline_s=900)
            errors.update(report.errors)
            return int(report.sources.get(source, 0))

        if split is None:
            timed = _timed(run)
        else:
            _split_hybrid(split, hybrid, history, hours)
            with split.instrumented():
                timed = _timed(run)
        stats = hybrid.get_statistics()["source_usage"][source]
    finally:
        hybrid.cleanup()
        history.close()
    if errors:
        first = next(iter(errors.items()))
        print(f"  ! {len(errors)} {source} fetches failed, e.g. {first[0]}: {first[1]}")
    return timed, stats


def _yf_download_run(
    market: FakeMarketProcess, root: Path, symbols: Sequence[str], workers: int
) -> Timed:
    """`yf.download(..., period="1d", threads=workers)` on the same symbols, via the fake."""
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

    def download() -> int:
        frame = yf.download(
            yahoo_symbols,
            period="1d",
            threads=workers,
            session=session,
            progress=False,
            auto_adjust=False,
        )
        if frame is None or frame.empty:
            return 0
        close = frame["Close"]
        return int(close.notna().any().sum())

    try:
        if not _DOWNLOAD_WARMED:
            # Untimed, once: fills yfinance's timezone cache, as any later run finds it.
            download()
            _DOWNLOAD_WARMED.append(True)
        return _timed(download)
    finally:
        session.close()


def _line(label: str, timed: Timed, n: int, extra: str = "") -> None:
    print(
        f"  {label:<32} {timed.wall_s:7.2f} s  {timed.ok:>5}/{n} ok  "
        f"cpu {timed.cpu_s * 1000 / n:6.2f} ms/quote{extra}"
    )


def _profile(
    market: FakeMarketProcess, root: Path, symbols: Sequence[str], workers: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Where the CPU per quote goes (ms), the Bright Data hybrid beside its pool: `rounds`
    instrumented runs of each, interleaved, the median of each part. Not the timed runs: the
    wrappers cost a few microseconds per call."""
    n = len(symbols)
    parts: dict[str, dict[str, list[float]]] = {"hybrid": {}, "pool": {}}

    def note(side: str, split: CpuSplit, timed: Timed) -> None:
        shares = {label: seconds * 1000 / n for label, seconds in split.seconds.items()}
        total = timed.cpu_s * 1000 / n
        shares["the rest (threads, the hybrid's own code)"] = total - sum(shares.values())
        shares["total (process CPU)"] = total
        for label, value in shares.items():
            parts[side].setdefault(label, []).append(value)

    for _ in range(rounds):
        split = CpuSplit()
        _split_bright_data(split)
        with split.instrumented():
            jobs = _bright_data_jobs(market, symbols)  # binds the wrapped parser
            timed = _timed(functools.partial(_plain_pool, workers, jobs))
        note("pool", split, timed)
        split = CpuSplit()
        timed = _hybrid_run(root, market, "bright_data", symbols, workers, split=split)[0]
        note("hybrid", split, timed)
    table = {
        side: {label: round(median(values), 3) for label, values in found.items()}
        for side, found in parts.items()
    }
    labels = [label for label in table["hybrid"] if not label.startswith(("the rest", "total"))]
    labels.sort(key=lambda label: -table["hybrid"][label])
    labels += ["the rest (threads, the hybrid's own code)", "total (process CPU)"]
    print(f"where the CPU goes, ms per quote (median of {rounds} instrumented runs each):")
    print(f"  {'part':<52} {'hybrid':>7} {'pool':>7}")
    for label in labels:
        pool = table["pool"].get(label)
        pool_text = f"{pool:7.3f}" if pool is not None else f"{'-':>7}"
        print(f"  {label:<52} {table['hybrid'][label]:7.3f} {pool_text}")
    return table


#: The real 450 KB Bloomberg capture (the shared fixtures beside the checkout), if present.
REAL_PAGE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "fixtures"
    / "bloomberg"
    / "AAPL-US-2026-01-06.html"
)
#: One parse of a real page at most this many times the work no parser can skip (libxml2
#: reading the page, then the quote's JSON decoded), CPU, medians.
TARGET_PAGE_PARSE_VS_BARE = 1.5


def _real_page_parse(rounds: int) -> dict[str, float] | None:
    """CPU per parse of the real capture (ms): `parse_bloomberg_page` beside a bare libxml2
    read and JSON decode of the same page, interleaved, `rounds` x 20 parses each, medians.
    The figure the parser's tests no longer time (tests/test_bloomberg_parser.py checks the
    page is read once per parse). None when the capture is absent."""
    import json
    from decimal import Decimal

    from lxml import etree

    from crawler.normalizer.bloomberg import parse_bloomberg_page

    if not REAL_PAGE.exists():
        return None
    page, symbol = REAL_PAGE.read_bytes(), parse_symbol("AAPL:US")

    def bare() -> object:
        html = etree.HTMLParser(
            encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True
        )
        root = etree.fromstring(page, html)
        script = next(e for e in root.iter("script") if e.get("id") == "__NEXT_DATA__")
        return json.loads(script.text or "", parse_float=Decimal, parse_int=Decimal)

    contenders: dict[str, Callable[[], object]] = {
        "parse": lambda: parse_bloomberg_page(page, symbol),
        "bare": bare,
    }
    cpu_ms: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(max(rounds, 3)):
        for name, run in contenders.items():
            started = time.process_time()
            for _ in range(20):
                run()
            cpu_ms[name].append((time.process_time() - started) * 1000 / 20)
    parse_ms, bare_ms = median(cpu_ms["parse"]), median(cpu_ms["bare"])
    print(
        f"real page ({len(page) // 1024} KB): parse {parse_ms:.2f} ms CPU, "
        f"bare libxml2 + JSON {bare_ms:.2f} ms = {ratio(parse_ms, bare_ms):.2f}x"
    )
    return {
        "real_page_parse_cpu_ms": round(parse_ms, 3),
        "real_page_bare_cpu_ms": round(bare_ms, 3),
        "real_page_parse_vs_bare": ratio(parse_ms, bare_ms),
    }


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--symbols", type=int, default=1000)
    args_parser.add_argument("--workers", type=int, default=16, help="the hybrid's max_workers")
    args_parser.add_argument("--latency-ms", type=float, default=50.0)
    args_parser.add_argument("--rounds", type=int, default=3)
    args_parser.add_argument(
        "--sources", default="bright_data,yfinance", help="comma-separated; which hybrids to run"
    )
    args_parser.add_argument("--no-download", action="store_true", help="skip yf.download")
    args_parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="then ROUNDS instrumented Bright Data runs of each: where the CPU per quote goes",
    )
    args = args_parser.parse_args(argv)
    n = 50 if args.quick else args.symbols
    rounds = 1 if args.quick else args.rounds
    workers, latency_s = args.workers, args.latency_ms / 1000
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    symbols = generated_symbols(n)
    ideal_s = n * latency_s / workers
    figures: dict[str, Any] = {
        "symbols": n,
        "workers": workers,
        "latency_ms": args.latency_ms,
        "rounds": rounds,
        "ideal_s": round(ideal_s, 3),
    }
    met = True
    print(
        f"one collection of {n} symbols, {workers} workers, {args.latency_ms:g} ms latency, "
        f"{rounds} rounds interleaved; ideal {ideal_s:.2f} s"
    )
    with (
        fake_market(latency_s) as market,
        tempfile.TemporaryDirectory(prefix="bench-collection-") as tmp,
    ):
        root = Path(tmp)
        for source in sources:
            prefix = "bd" if source == "bright_data" else "yf"
            jobs = (
                _bright_data_jobs(market, symbols)
                if source == "bright_data"
                else _yahoo_jobs(market, symbols)
            )
            contenders: dict[str, Callable[[], Timed]] = {
                "pool": lambda jobs=jobs: _timed(  # type: ignore[misc]
                    lambda: _plain_pool(workers, jobs)
                ),
                "hybrid": lambda source=source: _hybrid_run(  # type: ignore[misc]
                    root, market, source, symbols, workers
                )[0],
            }
            if source == "yfinance":
                contenders["hybrid_open"] = lambda: _hybrid_run(
                    root, market, "yfinance", symbols, workers, yfinance_max_rps=1000.0
                )[0]
                if not args.no_download:
                    contenders["download"] = lambda: _yf_download_run(
                        market, root, symbols, workers
                    )
            runs: dict[str, list[Timed]] = {name: [] for name in contenders}
            names = list(contenders)
            print(f"{source}:")
            for index in range(rounds):
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:  # who goes first rotates
                    timed = contenders[name]()
                    runs[name].append(timed)
                    _line(f"round {index + 1} {name}", timed, n)
            walls = {name: [t.wall_s for t in timed] for name, timed in runs.items()}
            cpus = {name: [t.cpu_s * 1000 / n for t in timed] for name, timed in runs.items()}
            pool_median = median(walls["pool"])
            for name in names:
                key = f"{prefix}_{name}"
                figures[f"{key}_s"] = round(median(walls[name]), 3)
                figures[f"{key}_s_min"] = round(min(walls[name]), 3)
                figures[f"{key}_cpu_ms_per_quote"] = round(median(cpus[name]), 3)
                figures[f"{key}_cpu_ms_per_quote_min"] = round(min(cpus[name]), 3)
                figures[f"{key}_ok"] = min(t.ok for t in runs[name])
                if name != "pool":
                    figures[f"{key}_vs_pool"] = ratio(median(walls[name]), pool_median)
                    figures[f"{key}_vs_pool_min"] = ratio(min(walls[name]), min(walls["pool"]))
                    figures[f"{key}_cpu_vs_pool"] = ratio(median(cpus[name]), median(cpus["pool"]))
                    figures[f"{key}_cpu_vs_pool_min"] = ratio(min(cpus[name]), min(cpus["pool"]))
            figures[f"{prefix}_pool_vs_ideal"] = ratio(pool_median, ideal_s)
            summary = (
                f"  median: pool {pool_median:.2f} s ({median(cpus['pool']):.2f} ms cpu/quote), "
                f"hybrid {median(walls['hybrid']):.2f} s ({median(cpus['hybrid']):.2f} ms cpu/"
                f"quote) = {figures[f'{prefix}_hybrid_vs_pool']:.2f}x pool, "
                f"{figures[f'{prefix}_hybrid_cpu_vs_pool']:.2f}x its CPU"
            )
            if source == "bright_data":
                met = met and figures["bd_hybrid_vs_pool"] <= TARGET_VS_POOL
                met = met and figures["bd_hybrid_cpu_vs_pool"] <= TARGET_CPU_VS_POOL
                met = met and figures["bd_hybrid_ok"] == n
            else:
                summary += (
                    f"; bucket opened {median(walls['hybrid_open']):.2f} s = "
                    f"{figures['yf_hybrid_open_vs_pool']:.2f}x pool"
                )
                met = met and figures["yf_hybrid_open_vs_pool"] <= TARGET_YF_BATCHED
                met = met and figures["yf_hybrid_ok"] == n
                if "download" in runs:
                    vs_download = ratio(median(walls["hybrid"]), median(walls["download"]))
                    figures["yf_hybrid_vs_download"] = vs_download
                    summary += (
                        f"; yf.download {median(walls['download']):.2f} s "
                        f"(hybrid = {vs_download:.2f}x)"
                    )
                    met = met and vs_download <= 1.0
            print(summary)
        if args.profile and "bright_data" in sources:
            figures["bd_cpu_split_ms_per_quote"] = _profile(
                market, root, symbols, workers, args.profile
            )
    page_parse = _real_page_parse(rounds)
    if page_parse is not None:
        figures.update(page_parse)
        met = met and page_parse["real_page_parse_vs_bare"] <= TARGET_PAGE_PARSE_VS_BARE
    return finish(
        "collection",
        figures,
        target=(
            f"bd_hybrid_vs_pool <= {TARGET_VS_POOL}, bd_hybrid_cpu_vs_pool <= "
            f"{TARGET_CPU_VS_POOL}, yf_hybrid_open_vs_pool <= "
            f"{TARGET_YF_BATCHED}, all quotes served, yf_hybrid_vs_download <= 1.0, "
            f"real_page_parse_vs_bare <= {TARGET_PAGE_PARSE_VS_BARE} (medians)"
        ),
        met=met,
    )


if __name__ == "__main__":
    sys.exit(main())
