"""yfinance as a quote source: one chart request per quote, every failure translated.

    source = YFinanceSource(cache_dir=data_dir / "yfinance", endpoint=os.environ.get(
        "YFINANCE_ENDPOINT", ""))
    quote = source.fetch(parse_symbol("VOD:LN"))     # Quote(price=..., currency="GBp", ...)

How a fetch works:

- `to_yahoo(symbol)` first; `UnmappableSymbolError` propagates (the hybrid skips yfinance).
- `Ticker.history(period="1d")` makes one chart request whose metadata carries the price,
  currency, previous close and `regularMarketTime`; the row gives open/high/low/volume.
  `fast_info` (a year of data) and `.info` (3-4 requests) are never touched.
- The call runs on a small dedicated thread pool and is abandoned after `deadline_s`
  (`TransientSourceError`); curl's own timeout (`timeout_s`, also capping yfinance's 30 s cookie
  calls) bounds how long the abandoned worker stays busy.
- yfinance runs with `hide_exceptions = False` and its errors are mapped: rate limits →
  `RateLimitedError`, network errors and 5xx → `TransientSourceError`, 404 / "possibly delisted"
  / no rows → `UnknownSymbolError`, anything else → `APIError`. Nothing from yfinance, curl_cffi
  or pandas escapes.

yfinance keeps process-wide state (one session and crumb in its `YfData` singleton, its cache
location, its config), so one `YFinanceSource` per process is the intended use; the first one
to fetch decides yfinance's cache directory. Importing this module imports neither yfinance nor
pandas: both load on the first fetch.
"""

from __future__ import annotations

import math
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol, to_yahoo
from crawler.utils.exceptions import (
    APIError,
    ConfigError,
    CrawlerError,
    RateLimitedError,
    SourceConfigError,
    TransientSourceError,
    UnknownSymbolError,
)

if TYPE_CHECKING:
    from crawler.sources.yahoo_redirect import RedirectingSession

__all__ = ["YFinanceSource"]

_PCT_STEP = Decimal("0.0001")
_MESSAGE_CHARS = 240
# history(period="1d") never converts dates with the ticker's timezone, yet yfinance fetches it
# first (an extra chart request per new symbol, and `.info`'s 3-4 requests when that fails).
# Pre-setting it keeps a fetch at exactly one chart request; the rows still get the exchange's
# timezone from the chart metadata.
_PLACEHOLDER_TZ = "UTC"
# pandas deprecation/future warnings attributed to yfinance's code are its business, not ours;
# anything else still surfaces.
_YFINANCE_MODULES = r"yfinance(\.|$)"

_setup_lock = threading.Lock()
_yfinance_cache_dir: str | None = None


class YFinanceSource:
    """Quotes from Yahoo Finance through yfinance; `endpoint` ("" = Yahoo) redirects it."""

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
        self.endpoint = endpoint
        self.cache_dir = Path(cache_dir)
        self.timeout_s = float(timeout_s)
        self.deadline_s = float(deadline_s)
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="yfinance")
        self._lock = threading.Lock()
        self._session: RedirectingSession | None = None
        self._closed = False
        self._outcomes: Counter[str] = Counter()
        self._latency_total_s = 0.0
        self._last_error: str | None = None

    # -- the QuoteSource protocol ------------------------------------------------------------
    def fetch(self, symbol: Symbol) -> Quote:
        """The current quote for `symbol`; raises `APIError` subclasses (and
        `UnmappableSymbolError` when Yahoo has no form of the symbol)."""
        yahoo_symbol = to_yahoo(symbol)
        if self._closed:
            raise APIError("yfinance source is closed")
        started_s = self._clock()
        try:
            future = self._executor.submit(self._fetch_blocking, symbol, yahoo_symbol)
        except RuntimeError as exc:  # the pool was shut down by a concurrent close()
            raise APIError("yfinance source is closed") from exc
        remaining_s = max(self.deadline_s - (self._clock() - started_s), 0.0)
        try:
            quote = future.result(timeout=remaining_s)
        except TimeoutError:
            # The worker cannot be interrupted; it frees itself when curl's timeout fires.
            future.cancel()
            error = TransientSourceError(
                f"yfinance: no answer for {yahoo_symbol} ({symbol.canonical}) "
                f"within the {self.deadline_s:g} s deadline"
            )
            self._record("timeout", started_s, error)
            raise error from None
        except CrawlerError as exc:
            self._record(type(exc).__name__, started_s, exc)
            raise
        self._record("ok", started_s, None)
        return quote

    def close(self) -> None:
        """Stop the worker pool (without waiting for abandoned calls) and the session."""
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
        self._executor.shutdown(wait=False, cancel_futures=True)
        if session is not None:
            session.close()

    def statistics(self) -> dict[str, Any]:
        """Counters: fetches, successes, timeouts, errors by class, mean latency, last error."""
        with self._lock:
            fetches = sum(self._outcomes.values())
            errors = {k: v for k, v in self._outcomes.items() if k not in ("ok", "timeout")}
            return {
                "name": self.name,
                "endpoint": self.endpoint or "yahoo",
                "fetches": fetches,
                "successes": self._outcomes["ok"],
                "timeouts": self._outcomes["timeout"],
                "errors": errors,
                "avg_latency_s": round(self._latency_total_s / fetches, 4) if fetches else None,
                "last_error": self._last_error,
            }

    # -- the worker side -------------------------------------------------------------------
    def _fetch_blocking(self, symbol: Symbol, yahoo_symbol: str) -> Quote:
        """Runs on a pool thread: one yfinance call, its errors translated."""
        session: RedirectingSession | None = None
        try:
            yf = _load_yfinance(self.cache_dir)
            # After the import: importing yfinance puts its own "default" filter in front.
            _quiet_yfinance_warnings()
            session = self._session_for(yf)
            session.reset_chart_status()
            ticker = yf.Ticker(yahoo_symbol, session=session)
            ticker._tz = _PLACEHOLDER_TZ
            frame = ticker.history(
                period="1d",
                interval="1d",
                auto_adjust=False,  # a live quote, not dividend-adjusted history
                actions=False,
                timeout=self.timeout_s,
            )
            metadata = ticker.get_history_metadata()
            values = _chart_values(metadata)
            row = _last_row(frame)
        except CrawlerError:
            raise
        except Exception as exc:
            status = session.last_chart_status() if session is not None else None
            raise _translate(exc, status, yahoo_symbol, symbol.canonical) from exc
        return _build_quote(symbol, yahoo_symbol, values, row)

    def _session_for(self, yf: ModuleType) -> RedirectingSession:
        """This source's session, made on first use and handed to yfinance's singleton."""
        with self._lock:
            if self._closed:
                raise APIError("yfinance source is closed")
            if self._session is not None:
                return self._session
            from crawler.sources.yahoo_redirect import RedirectingSession

            try:
                session = RedirectingSession(self.endpoint, max_timeout_s=self.timeout_s)
            except ValueError as exc:  # the endpoint's host does not resolve
                raise SourceConfigError(str(exc)) from exc
            # yfinance keeps one cookie+crumb per process. Our new session's jar starts empty,
            # so a crumb remembered from an earlier session is not valid with it: forget it and
            # let yfinance redo its (cached-cookie aware) warm-up on this session.
            data = yf.data.YfData(session=session)
            lock = getattr(data, "_cookie_lock", None)
            if lock is not None:
                with lock:
                    data._cookie = None
                    data._crumb = None
            self._session = session
            return session

    def _record(self, outcome: str, started_s: float, error: CrawlerError | None) -> None:
        with self._lock:
            self._outcomes[outcome] += 1
            self._latency_total_s += max(self._clock() - started_s, 0.0)
            if error is not None:
                self._last_error = error.message


def _load_yfinance(cache_dir: Path) -> ModuleType:
    """Import yfinance on first use and configure its process-wide state once."""
    global _yfinance_cache_dir
    import yfinance
    import yfinance.cache
    import yfinance.data

    module: ModuleType = yfinance
    with _setup_lock:
        if _yfinance_cache_dir is None:
            # Process-global, and effectively fixed once yfinance has opened its databases.
            yfinance.cache.set_cache_location(str(cache_dir))
            _yfinance_cache_dir = str(cache_dir)
        # Raise instead of logging and returning an empty frame, so failures can be mapped.
        yfinance.config.debug.hide_exceptions = False
    return module


def _quiet_yfinance_warnings() -> None:
    """Ignore deprecation/future warnings raised from yfinance's own modules.

    Re-applied on every fetch because callers (pytest, `warnings.catch_warnings`) may reset
    the filter list; `filterwarnings` moves an existing identical entry to the front.
    """
    with _setup_lock:
        for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=_YFINANCE_MODULES)


def _chart_values(metadata: Any) -> dict[str, Any]:
    """The metadata fields a quote needs, read key by key.

    (yfinance's metadata object fetches a second, intraday chart when a missing
    `tradingPeriods` key is read, so it is never converted wholesale.)
    """
    keys = (
        "regularMarketPrice",
        "currency",
        "previousClose",
        "chartPreviousClose",
        "regularMarketTime",
        "regularMarketDayHigh",
        "regularMarketDayLow",
        "regularMarketVolume",
        "longName",
        "shortName",
    )
    return {key: metadata[key] for key in keys if key in metadata}


def _last_row(frame: Any) -> dict[str, float]:
    """Open/High/Low/Close/Volume of the last row, finite values only ({} without rows)."""
    if frame is None or len(frame) == 0:
        return {}
    last = frame.iloc[-1]
    row: dict[str, float] = {}
    for column in ("Open", "High", "Low", "Close", "Volume"):
        if column in last.index:
            value = float(last[column])
            if math.isfinite(value):
                row[column] = value
    return row


def _build_quote(
    symbol: Symbol, yahoo_symbol: str, values: dict[str, Any], row: dict[str, float]
) -> Quote:
    """A Quote from the chart metadata (price, currency, previous close, time) and the row."""
    try:
        price = _decimal(values.get("regularMarketPrice"))
        if price is None:
            price = _decimal(row.get("Close"))
        if price is None:
            raise APIError(
                f"yfinance: Yahoo's chart for {yahoo_symbol} ({symbol.canonical}) has no price"
            )
        previous = _decimal(values.get("previousClose"))
        if previous is None:
            previous = _decimal(values.get("chartPreviousClose"))
        change = change_pct = None
        if previous is not None:
            change = price - previous
            if previous != 0:
                change_pct = (change / previous * 100).quantize(_PCT_STEP, ROUND_HALF_EVEN)
        high = _first(row.get("High"), values.get("regularMarketDayHigh"))
        low = _first(row.get("Low"), values.get("regularMarketDayLow"))
        volume: Any = row.get("Volume", values.get("regularMarketVolume"))
        currency = values.get("currency")
        name = values.get("longName") or values.get("shortName")
        return Quote(
            symbol=symbol.canonical,
            price=price,
            source="yfinance",
            currency=str(currency) if currency else None,
            change=change,
            change_pct=change_pct,
            open=_decimal(row.get("Open")),
            high=high,
            low=low,
            previous_close=previous,
            volume=int(float(volume)) if _is_finite_number(volume) else None,
            as_of=_utc(values.get("regularMarketTime")),
            asset_class=symbol.asset_class,
            name=str(name) if name else None,
        )
    except CrawlerError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise APIError(
            f"yfinance: unusable chart data for {yahoo_symbol} ({symbol.canonical}): "
            f"{_one_line(exc)}"
        ) from exc


def _first(*values: Any) -> Decimal | None:
    """The first value that is a finite number, as a Decimal."""
    for value in values:
        number = _decimal(value)
        if number is not None:
            return number
    return None


def _decimal(value: Any) -> Decimal | None:
    """A float as the Decimal of its shortest repr (262.36 → Decimal("262.36"))."""
    if not _is_finite_number(value):
        return None
    try:
        return Decimal(str(float(value)))
    except InvalidOperation:
        return None


def _is_finite_number(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _utc(value: Any) -> datetime | None:
    """regularMarketTime (epoch seconds, or the pandas Timestamp yfinance made of it) in UTC."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    to_epoch = getattr(value, "timestamp", None)
    if callable(to_epoch):
        return datetime.fromtimestamp(float(to_epoch()), UTC)
    return None


def _translate(
    exc: Exception, chart_status: int | None, yahoo_symbol: str, canonical: str
) -> APIError:
    """Our error for whatever yfinance/curl_cffi/pandas raised (`chart_status`: the last chart
    answer's HTTP status on this thread, when there was one)."""
    what = f"{yahoo_symbol} ({canonical})"
    detail = _one_line(exc)
    # An HTTPError names the answer that failed; prefer its status to the last chart's.
    response_status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(response_status, int) and response_status >= 400:
        chart_status = response_status
        if response_status == 404:
            return UnknownSymbolError(f"yfinance: Yahoo does not know {what} (HTTP 404)")
    try:
        from curl_cffi.requests.exceptions import InvalidJSONError, RequestException
        from yfinance import exceptions as yf_errors
    except ImportError:  # yfinance itself failed to load: nothing finer to say
        return APIError(f"yfinance: failed for {what}: {type(exc).__name__}: {detail}")
    if isinstance(exc, yf_errors.YFRateLimitError) or chart_status == 429:
        return RateLimitedError(f"yfinance: Yahoo rate-limited the request for {what}")
    if chart_status is not None and chart_status >= 500:
        return TransientSourceError(f"yfinance: Yahoo answered {chart_status} for {what}")
    if isinstance(exc, InvalidJSONError | UnicodeDecodeError) or (
        isinstance(exc, ValueError) and "JSON" in type(exc).__name__
    ):
        return APIError(f"yfinance: Yahoo's chart answer for {what} is not JSON")
    if chart_status is not None and 400 <= chart_status < 500 and chart_status != 404:
        return APIError(f"yfinance: Yahoo answered {chart_status} for {what}")
    if isinstance(exc, RequestException | OSError):
        unreachable = _unreachable(detail)
        if unreachable is not None:
            return TransientSourceError(
                f"yfinance: cannot reach Yahoo for {what}: {unreachable} (no network?)"
            )
        return TransientSourceError(f"yfinance: request for {what} failed: {detail}")
    if isinstance(exc, yf_errors.YFTickerMissingError):
        if chart_status in (None, 200, 404):
            reason = _one_line(getattr(exc, "rationale", "") or detail)
            return UnknownSymbolError(f"yfinance: Yahoo does not know {what}: {reason}")
        return APIError(f"yfinance: Yahoo answered {chart_status} for {what}: {detail}")
    if isinstance(exc, yf_errors.YFDataException) and "DOWN" in str(exc).upper():
        return TransientSourceError(f"yfinance: Yahoo Finance is down ({what})")
    return APIError(f"yfinance: failed for {what}: {type(exc).__name__}: {detail}")


# curl's numbers for "could not get there at all": resolve (proxy or host), connect.
_CURL_UNREACHABLE = re.compile(r"curl: \((?:5|6|7)\) (?P<why>.*?)(?:\.? See https://\S+.*)?$")


def _unreachable(detail: str) -> str | None:
    """curl's own reason when a request never reached the server (DNS, refused), without the
    "Failed to perform" wrapper and the link to curl's error list; None for other failures."""
    match = _CURL_UNREACHABLE.search(detail)
    return match.group("why").rstrip(". ") if match else None


def _one_line(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"
