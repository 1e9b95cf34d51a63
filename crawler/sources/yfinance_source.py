"""yfinance as a quote source: batch quotes, and the chart read without a DataFrame.

    source = YFinanceSource(cache_dir=data_dir / "yfinance", endpoint=os.environ.get(
        "YFINANCE_ENDPOINT", ""), throttle=shared_throttle(2))
    quote = source.fetch(parse_symbol("VOD:LN"))     # one chart request: Quote(currency="GBp")
    answer = source.fetch_batch([aapl, msft, vod])   # one /v7/finance/quote request
    answer.quotes, answer.fallback                   # served; to ask the chart for, and why

How it talks to Yahoo:

- yfinance provides the session's cookie and crumb (its `YfData` singleton, on our
  `RedirectingSession`, so `YFINANCE_ENDPOINT` and the fake market keep working) and nothing
  else: no DataFrame is built. The bodies go to the pure parsers in `crawler.normalizer.yahoo`.
- `fetch_batch` asks `GET /v7/finance/quote?symbols=A,B,...` for up to `batch_size` symbols.
  Symbols Yahoo leaves out (it drops unknown ones silently) or answers without a price or a
  currency come back in `fallback`, for the caller to ask the chart for one by one.
- `fetch` asks `GET /v8/finance/chart/SYMBOL?range=1d&interval=1d` and reads `meta`.
- A 401 "Invalid Crumb" refreshes the cookie and crumb once and repeats the request.
- Each answer is read through curl's write callback with a cap (`max_body_bytes`, 4 MiB,
  counted after decompression): a bigger answer aborts that request (`APIError`, "over the
  limit"), costing the cap's worth of memory at most.
- A chart whose quote fails the plausibility rules raises `ImplausibleQuoteError` (that
  symbol only; it says nothing of Yahoo's health, so it does not count against the breaker).
- Every request, yfinance's cookie and crumb calls included, waits for the process's token
  bucket (`YahooThrottle`); a 429 pauses every worker and is raised as `RateLimitedError`,
  which the hybrid's breaker counts.
- Calls run on a small dedicated thread pool and are abandoned after `deadline_s`
  (`TransientSourceError`); curl's own timeout (`timeout_s`) bounds the abandoned worker.
- Errors are ours: rate limits → `RateLimitedError`, network errors and 5xx →
  `TransientSourceError`, 404 / no price → `UnknownSymbolError`, anything else → `APIError`.
  Nothing from yfinance or curl_cffi escapes (the table and the rest: `yahoo_errors`).

yfinance keeps process-wide state (one session and crumb in its `YfData` singleton, its cache
location, its config), so one `YFinanceSource` per process is the intended use; the first one
to fetch decides yfinance's cache directory (`yfinance_setup`). Importing this module imports
neither yfinance nor curl_cffi: both load on the first fetch.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote as url_quote
from urllib.parse import urlsplit

from crawler.normalizer.schemas import Quote, utc_now
from crawler.normalizer.symbols import Symbol, to_yahoo
from crawler.normalizer.yahoo import is_invalid_crumb, parse_chart, parse_quote_batch
from crawler.sources.base import BatchAnswer
from crawler.sources.yahoo_errors import after_colon, curl_errors, status_error, translate
from crawler.sources.yfinance_setup import (
    CappedBody,
    file_too_large,
    forget_cookie_and_crumb,
    load_yfinance,
    quiet_yfinance_warnings,
)
from crawler.utils.exceptions import (
    APIError,
    ConfigError,
    CrawlerError,
    ImplausibleQuoteError,
    ParseError,
    SourceConfigError,
    TransientSourceError,
    UnknownSymbolError,
)

if TYPE_CHECKING:
    from crawler.sources.yahoo_redirect import RedirectingSession
    from crawler.sources.yahoo_throttle import YahooThrottle

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "MAX_BODY_BYTES",
    "YFinanceSource",
    "curl_errors",
]

#: Symbols per `/v7/finance/quote` request: `[yfinance] batch_size`, env YFINANCE_BATCH_SIZE.
DEFAULT_BATCH_SIZE = 50
#: Yahoo's URL and answer sizes stay sane below this.
MAX_BATCH_SIZE = 200
#: The most of one Yahoo answer (batch or chart, decompressed) read into memory: a batch of
#: 200 full records is under 1 MB, a one-day chart a few KB. Past it the request fails alone.
MAX_BODY_BYTES = 4 * 1024 * 1024

# The hosts yfinance itself uses for these endpoints.
_QUOTE_URL = "https://query1.finance.yahoo.com/v7/finance/quote"
_CHART_URL = "https://query2.finance.yahoo.com/v8/finance/chart/"
_CHART_PARAMS = {"range": "1d", "interval": "1d", "includePrePost": "false"}

T = TypeVar("T")


class YFinanceSource:
    """Quotes from Yahoo Finance; `endpoint` ("" = Yahoo) redirects it (see the module doc)."""

    name = "yfinance"

    def __init__(
        self,
        *,
        endpoint: str = "",
        cache_dir: Path,
        timeout_s: float = 10,
        deadline_s: float = 30,
        clock: Callable[[], float] = time.monotonic,
        max_workers: int = 4,
        batch_size: int = DEFAULT_BATCH_SIZE,
        throttle: YahooThrottle | None = None,
        now: Callable[[], datetime] = utc_now,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ConfigError(
                f"YFINANCE_ENDPOINT={endpoint!r} is not an http(s) URL; "
                "use e.g. http://127.0.0.1:8802, or leave it empty for Yahoo itself"
            )
        if timeout_s <= 0 or deadline_s <= 0:
            raise ConfigError(
                f"yfinance timeout_s={timeout_s} and deadline_s={deadline_s} must be positive"
            )
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(
                f"yfinance batch_size={batch_size} is out of range; use 1 to {MAX_BATCH_SIZE}"
            )
        self.endpoint = endpoint
        self.cache_dir = Path(cache_dir)
        self.timeout_s = float(timeout_s)
        self.deadline_s = float(deadline_s)
        self.batch_size = batch_size
        self.max_body_bytes = max_body_bytes
        self.throttle = throttle
        self._clock = clock
        self._now = now
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="yfinance")
        self._lock = threading.Lock()
        self._session: RedirectingSession | None = None
        self._crumb_value: str | None = None
        self._closed = False
        self._outcomes: Counter[str] = Counter()
        self._batch: Counter[str] = Counter()
        self._latency_total_s = 0.0
        self._last_error: str | None = None

    # -- the QuoteSource protocol ------------------------------------------------------------
    def fetch(self, symbol: Symbol) -> Quote:
        """The current quote for `symbol` from its chart; raises `APIError` subclasses (and
        `UnmappableSymbolError` when Yahoo has no form of the symbol)."""
        yahoo_symbol = to_yahoo(symbol)
        started_s = self._clock()
        what = f"{yahoo_symbol} ({symbol.canonical})"
        try:
            quote = self._run(self._fetch_chart, symbol, yahoo_symbol, what=what)
        except TransientSourceError as exc:
            # Our own deadline ("no answer ... within the N s deadline") is a timeout; the
            # token bucket refusing to wait past it is not (it sent nothing).
            timed_out = "within the" in exc.message and "deadline" in exc.message
            self._record("timeout" if timed_out else type(exc).__name__, started_s, exc)
            raise
        except CrawlerError as exc:
            self._record(type(exc).__name__, started_s, exc)
            raise
        self._record("ok", started_s, None)
        return quote

    def fetch_batch(self, symbols: Sequence[Symbol]) -> BatchAnswer:
        """Quotes for up to `batch_size` symbols in one `/v7/finance/quote` request.

        Raises `APIError` subclasses when the request as a whole failed (429, 5xx, network,
        a crumb refused twice, not a quote answer); per-symbol gaps land in the answer.
        """
        if len(symbols) > self.batch_size:
            raise ValueError(f"{len(symbols)} symbols; at most {self.batch_size} per batch")
        asked: dict[str, Symbol] = {}
        errors: dict[str, CrawlerError] = {}
        for symbol in symbols:
            try:
                asked[to_yahoo(symbol)] = symbol
            except CrawlerError as exc:
                errors[symbol.canonical] = exc
        if not asked:
            return BatchAnswer(errors=errors)
        what = f"a batch of {len(asked)} symbols"
        try:
            batch = self._run(self._fetch_quotes, asked, what=what)
        except CrawlerError as exc:
            with self._lock:
                self._batch["requests"] += 1
                self._batch["failed"] += 1
                self._last_error = exc.message
            raise
        quotes = {asked[name].canonical: quote for name, quote in batch.quotes.items()}
        fallback = {asked[name].canonical: reason for name, reason in batch.partial.items()}
        omitted = frozenset(asked[name].canonical for name in batch.omitted)
        for key in omitted:
            fallback[key] = "left out of Yahoo's batch answer"
        with self._lock:
            self._batch["requests"] += 1
            self._batch["quotes"] += len(quotes)
            # Left out: what Yahoo does not know (the daemon remembers it and asks no chart);
            # partial answers are what goes on to the chart.
            self._batch["left_out"] += len(omitted)
            self._batch["fallbacks"] += len(fallback.keys() - omitted)
        return BatchAnswer(quotes=quotes, fallback=fallback, errors=errors, omitted=omitted)

    def fetch_bars(
        self, symbol: Symbol, interval: str, start: datetime, end: datetime
    ) -> list[Quote]:
        """The chart's bars of `symbol` at `interval` that start in [start, end) (one request:
        the caller keeps within Yahoo's range limits; `crawler.orchestrator.backfill`). Errors
        as for `fetch`; a range Yahoo refuses is APIError naming Yahoo's reason."""
        yahoo_symbol = to_yahoo(symbol)
        what = f"{yahoo_symbol} ({symbol.canonical})"
        return self._run(self._fetch_bars, symbol, yahoo_symbol, interval, start, end, what=what)

    def _fetch_bars(
        self,
        symbol: Symbol,
        yahoo_symbol: str,
        interval: str,
        start: datetime,
        end: datetime,
        deadline_at_s: float | None,
    ) -> list[Quote]:
        """Runs on a pool thread: one chart request for a range, its bars parsed."""
        from crawler.normalizer.yahoo_bars import parse_chart_bars

        what = f"{yahoo_symbol} ({symbol.canonical}) {interval} bars"
        params = {
            "period1": str(int(start.timestamp())),
            "period2": str(int(end.timestamp())),
            "interval": interval,
            "includePrePost": "false",
        }
        url = _CHART_URL + url_quote(yahoo_symbol, safe="")
        status, body = self._get(url, params, what, deadline_at_s)
        if status not in (200, 404, 422):
            raise status_error(status, what)
        try:
            return parse_chart_bars(body, symbol, interval, fetched_at=self._now())
        except UnknownSymbolError as exc:
            raise UnknownSymbolError(
                f"yfinance: Yahoo does not know {what}: {after_colon(exc.message)}"
            ) from None
        except ParseError as exc:
            raise APIError(f"yfinance: {exc.message}") from None

    def close(self) -> None:
        """Stop the worker pool (without waiting for abandoned calls) and the session."""
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
        self._executor.shutdown(wait=False, cancel_futures=True)
        if session is not None:
            session.close()

    def statistics(self) -> dict[str, Any]:
        """Counters: chart fetches, successes, timeouts, errors by class, mean latency, last
        error; batch requests, quotes and fallbacks; crumb refreshes; the throttle's state."""
        with self._lock:
            fetches = sum(self._outcomes.values())
            errors = {
                k: v
                for k, v in self._outcomes.items()
                if k not in ("ok", "timeout", "crumb_refresh")
            }
            fetches -= self._outcomes["crumb_refresh"]
            return {
                "name": self.name,
                "endpoint": self.endpoint or "yahoo",
                "fetches": fetches,
                "successes": self._outcomes["ok"],
                "timeouts": self._outcomes["timeout"],
                "errors": errors,
                "avg_latency_s": round(self._latency_total_s / fetches, 4) if fetches else None,
                "last_error": self._last_error,
                "batch_size": self.batch_size,
                "batch_requests": self._batch["requests"],
                "batch_failed": self._batch["failed"],
                "batch_quotes": self._batch["quotes"],
                "batch_fallbacks": self._batch["fallbacks"],
                "batch_left_out": self._batch["left_out"],
                "crumb_refreshes": self._outcomes["crumb_refresh"],
                "throttle": self.throttle.statistics() if self.throttle is not None else None,
            }

    # -- the worker side -------------------------------------------------------------------
    def _run(self, fn: Callable[..., T], *args: Any, what: str) -> T:
        """`fn(*args, deadline_at_s)` on the pool, abandoned at the deadline."""
        if self._closed:
            raise APIError("yfinance source is closed")
        if self._session is None:
            # Importing yfinance (and pandas) is not waiting for Yahoo: on a busy machine it
            # took the whole deadline and the first fetch was refused by the rate limit.
            load_yfinance(self.cache_dir)
        started_s = self._clock()
        deadline_at_s = started_s + self.deadline_s
        try:
            future: Future[T] = self._executor.submit(fn, *args, deadline_at_s)
        except RuntimeError as exc:  # the pool was shut down by a concurrent close()
            raise APIError("yfinance source is closed") from exc
        remaining_s = max(self.deadline_s - (self._clock() - started_s), 0.0)
        try:
            return future.result(timeout=remaining_s)
        except TimeoutError:
            # The worker cannot be interrupted; it frees itself when curl's timeout fires.
            future.cancel()
            raise TransientSourceError(
                f"yfinance: no answer for {what} within the {self.deadline_s:g} s deadline"
            ) from None

    def _fetch_chart(self, symbol: Symbol, yahoo_symbol: str, deadline_at_s: float | None) -> Quote:
        """Runs on a pool thread: one chart request, read from its `meta`."""
        what = f"{yahoo_symbol} ({symbol.canonical})"
        url = _CHART_URL + url_quote(yahoo_symbol, safe="")
        status, body = self._get(url, dict(_CHART_PARAMS), what, deadline_at_s)
        if status != 200 and status != 404:
            raise status_error(status, what)
        try:
            return parse_chart(body, symbol, fetched_at=self._now())
        except ImplausibleQuoteError as exc:
            # Yahoo answered, with a quote that cannot be true: this symbol's error only.
            raise ImplausibleQuoteError(f"yfinance: {exc.message}") from None
        except UnknownSymbolError as exc:
            raise UnknownSymbolError(
                f"yfinance: Yahoo does not know {what}: {after_colon(exc.message)}"
            ) from None
        except ParseError as exc:
            if status == 404:
                raise UnknownSymbolError(
                    f"yfinance: Yahoo does not know {what} (HTTP 404)"
                ) from None
            raise APIError(f"yfinance: unusable chart for {what}: {exc.message}") from None

    def _fetch_quotes(self, asked: dict[str, Symbol], deadline_at_s: float | None) -> Any:
        """Runs on a pool thread: one batch request, parsed."""
        what = f"a batch of {len(asked)} symbols"
        status, body = self._get(_QUOTE_URL, {"symbols": ",".join(asked)}, what, deadline_at_s)
        if status != 200:
            raise status_error(status, what)
        try:
            return parse_quote_batch(body, asked, fetched_at=self._now())
        except ParseError as exc:
            raise APIError(f"yfinance: unusable batch answer: {exc.message}") from None

    def _get(
        self, url: str, params: dict[str, str], what: str, deadline_at_s: float | None
    ) -> tuple[int, bytes]:
        """One GET with yfinance's crumb, refreshed and repeated once on "Invalid Crumb".
        Every third-party error is translated here."""
        session: RedirectingSession | None = None
        try:
            session = self._session or self._session_for(load_yfinance(self.cache_dir))
            left_s = None if deadline_at_s is None else max(0.0, deadline_at_s - self._clock())
            with session.time_limit(left_s):
                # The crumb is kept here: asking yfinance for it on every request costs more
                # CPU (its logging decorators, its lock) than the request itself.
                crumb = self._crumb_value or self._crumb(session, refresh=False)
                for attempt in (1, 2):
                    query = {**params, "crumb": crumb} if crumb else params
                    sink = CappedBody(self.max_body_bytes)
                    try:
                        response = session.get(
                            url, params=query, timeout=self.timeout_s, content_callback=sink.write
                        )
                    except Exception as exc:
                        if sink.over or file_too_large(exc):
                            raise self._too_large(what) from None
                        raise
                    if sink.over:
                        raise self._too_large(what)
                    status, body = int(response.status_code), sink.body()
                    if attempt == 1 and is_invalid_crumb(status, body):
                        with self._lock:
                            self._outcomes["crumb_refresh"] += 1
                        crumb = self._crumb(session, refresh=True)
                        continue
                    return status, body
        except CrawlerError:
            raise
        except Exception as exc:
            status_seen = session.last_chart_status() if session is not None else None
            raise translate(exc, status_seen, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _too_large(self, what: str) -> APIError:
        return APIError(
            f"yfinance: Yahoo's answer for {what} is over the {self.max_body_bytes:,}-byte "
            "limit; stopped reading"
        )

    def _crumb(self, session: RedirectingSession, *, refresh: bool) -> str | None:
        """yfinance's cookie and crumb for this session (`refresh` forgets the old ones)."""
        yf = load_yfinance(self.cache_dir)
        # After the import: importing yfinance puts its own "default" filter in front.
        quiet_yfinance_warnings()
        data = yf.data.YfData(session=session)
        if refresh:
            # A refused crumb may come from a stale cookie too: start the dance over, without
            # the cookie yfinance keeps on disk (another endpoint's, after YFINANCE_ENDPOINT
            # changed: every batch failed until data/yfinance went).
            forget_cookie_and_crumb(yf, data)
        crumb, _strategy = data._get_cookie_and_crumb(timeout=self.timeout_s)
        value = str(crumb) if crumb else None
        self._crumb_value = value
        return value

    def _session_for(self, yf: ModuleType) -> RedirectingSession:
        """This source's session, made on first use and handed to yfinance's singleton."""
        with self._lock:
            if self._closed:
                raise APIError("yfinance source is closed")
            if self._session is not None:
                return self._session
            from crawler.sources.yahoo_redirect import RedirectingSession

            try:
                session = RedirectingSession(
                    self.endpoint, max_timeout_s=self.timeout_s, throttle=self.throttle
                )
            except ValueError as exc:  # the endpoint's host does not resolve
                raise SourceConfigError(str(exc)) from exc
            # yfinance keeps one cookie+crumb per process. Our new session's jar starts empty,
            # so a crumb remembered from an earlier session is not valid with it: forget it and
            # let yfinance redo its (cached-cookie aware) warm-up on this session. Nor the
            # cookie yfinance kept on disk: it may be another endpoint's (YFINANCE_ENDPOINT
            # changed), and a crumb is only given for the cookie its own server set. One
            # cookie request per new session is the cost.
            forget_cookie_and_crumb(yf, yf.data.YfData(session=session))
            self._session = session
            return session

    def _record(self, outcome: str, started_s: float, error: CrawlerError | None) -> None:
        with self._lock:
            self._outcomes[outcome] += 1
            self._latency_total_s += max(self._clock() - started_s, 0.0)
            if error is not None:
                self._last_error = error.message
