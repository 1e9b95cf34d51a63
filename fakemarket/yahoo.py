"""A fake Yahoo Finance, shaped the way yfinance 1.7 talks to it.

Every Yahoo host yfinance uses (fc.yahoo.com, query1/query2.finance.yahoo.com, guce.yahoo.com,
consent.yahoo.com, finance.yahoo.com, ...) is redirected to this one server, so requests are
told apart by their `Host` header and path:

- `fc.yahoo.com` (any path): 404 page plus `Set-Cookie: A3=...` — the "basic" cookie strategy.
- `guce.yahoo.com/consent` → a consent form with `csrfToken` / `sessionId` inputs;
  `consent.yahoo.com/v2/collectConsent` (POST) and `guce.yahoo.com/copyConsent` complete the
  "csrf" strategy, the latter setting the A3 cookie.
- `/v1/test/getcrumb`: the crumb as plain text (401 with Yahoo's JSON error without an A3 cookie).
- `/v8/finance/chart/{symbol}`: Yahoo's chart JSON (`chart.result[0].meta` + one OHLCV row), or
  404 with `{"chart":{"result":null,"error":{"code":"Not Found",...}}}` for unknown symbols.
  With `period1`/`period2`/`interval`: the bars in that range, within Yahoo's range limits
  (`fakemarket/yahoo_bars.py`).
- `/v7/finance/quote?symbols=A,B,...&crumb=...`: Yahoo's batch quote
  (`quoteResponse.result[]`, records shaped like the real ones in ../shared/fixtures/yahoo):
  unknown symbols are silently left out, a wrong crumb gets 401 "Invalid Crumb".
- Anything else: 404 (JSON for API hosts, HTML elsewhere).

Records carry Yahoo's freshness fields as the real ones do: `exchangeDataDelayedBy` per exchange
(US, FX, crypto 0; COMEX 10; London 15; Tokyo 20: `EXCHANGE_DELAY_MIN`), `quoteSourceName`,
`marketState` (REGULAR in the exchange's hours, else CLOSED), and a `regularMarketTime` that
lags `now` by the delay while the exchange trades and is the last close when it does not.
`set_clock(now)` runs the fake on a simulated clock.

Quotes are deterministic per symbol (hash-based) and shaped by the symbol's form: `.L` prices are
in "GBp", `EURUSD=X` is a CURRENCY quoted in USD, `GC=F` a FUTURE, `^GSPC` an INDEX, `BTC-USD`
a CRYPTOCURRENCY. Symbols starting with "UNKNOWN" or "ZZZZ" do not exist.

    fake = YahooFake().start()
    fake.set_quote("AAPL", price=262.36, previous_close=258.1)
    fake.unknown("DELISTED")                       # 404 from now on
    fake.set_empty("HALTED")                       # 200, but no price rows
    fake.faults.set("MSFT", status=429)            # per-symbol faults use the Yahoo symbol
    fake.count("chart", "AAPL")                    # chart requests seen for AAPL
    fake.omit("MSFT")                              # left out of batch answers (chart still ok)
    fake.set_partial("VOD.L", "currency")          # batch record without these keys
    fake.rotate_crumb()                            # the crumb in use becomes invalid (401)
    fake.faults.set("v7:quote", status=429, retry_after_s=2)   # batch requests only
    fake.batch_symbols()                           # the symbols each batch request asked
    fake.set_raw("AAPL", regularMarketPrice=10**400)   # raw values in batch records and chart meta
    fake.set_chart_body("AAPL", b"[" * 100_000)        # the chart answers exactly these bytes
    fake.faults.set("v7:quote", huge_body_bytes=60 << 20)   # a 60 MB (valid JSON) batch answer
    fake.set_chart_bars("AAPL", captured)          # bars of a real capture (period1=...)
    fake.rate_limit_bars(after=2, retry_after_s=1) # the 3rd bar request from now gets 429
    fake.bar_ranges("AAPL")                        # (symbol, period1, period2, interval) asked

The request log (`requests`) holds every request; `kind_of(request)` names what it was for
("cookie", "crumb", "consent", "chart", "quote", "other").
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

from fakemarket.core import GLOBAL, FakeRequest, FakeResponse, FakeService

__all__ = [
    "EXCHANGE_DELAY_MIN",
    "QUOTE_FAULT_KEY",
    "REGULAR_HOURS",
    "RawPlace",
    "RequestKind",
    "YahooFake",
    "YahooQuote",
    "generated_yahoo_quote",
    "quote_record",
]

RequestKind = Literal["cookie", "crumb", "consent", "chart", "quote", "other"]
RawPlace = Literal["quote", "chart"]

_CHART_PREFIX = "/v8/finance/chart/"
_QUOTE_PATH = "/v7/finance/quote"
#: The fault-table key of batch quote requests (they name many symbols, so no one symbol's).
QUOTE_FAULT_KEY = "v7:quote"
_INVALID_CRUMB_BODY = (
    b'{"finance":{"result":null,"error":{"code":"Unauthorized","description":"Invalid Crumb"}}}'
)
_UNKNOWN_PREFIXES = ("UNKNOWN", "ZZZZ")
# What a crypto pair may be quoted in (BTC-JPY in JPY, as Yahoo does; BRK-B is a share class).
_CRYPTO_QUOTES = ("USD", "EUR", "GBP", "USDT", "JPY", "CAD", "AUD", "CHF", "KRW")
_NOT_FOUND_BODY = (
    b'{"chart":{"result":null,"error":{"code":"Not Found",'
    b'"description":"No data found, symbol may be delisted"}}}'
)
_VALID_RANGES = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]
# One year, as Yahoo sets it. No `Secure` attribute: the redirected traffic is plain HTTP and
# curl drops Secure cookies received over HTTP, which would break the cookie dance.
_COOKIE_MAX_AGE_S = 31_557_600

# Yahoo suffix → (currency, exchangeName, exchangeTimezoneName). "" is a US listing.
_SUFFIXES: dict[str, tuple[str, str, str]] = {
    "": ("USD", "NMS", "America/New_York"),
    ".L": ("GBp", "LSE", "Europe/London"),
    ".DE": ("EUR", "GER", "Europe/Berlin"),
    ".PA": ("EUR", "PAR", "Europe/Paris"),
    ".AS": ("EUR", "AMS", "Europe/Amsterdam"),
    ".MI": ("EUR", "MIL", "Europe/Rome"),
    ".SW": ("CHF", "EBS", "Europe/Zurich"),
    ".T": ("JPY", "JPX", "Asia/Tokyo"),
    ".HK": ("HKD", "HKG", "Asia/Hong_Kong"),
    ".TO": ("CAD", "TOR", "America/Toronto"),
    ".AX": ("AUD", "ASX", "Australia/Sydney"),
}
#: `exchangeDataDelayedBy` (minutes) by exchange, from real records (../shared/fixtures/yahoo):
#: US listings, crypto and FX 0; COMEX and Jakarta 10; London, Milan, Toronto, CBOE indices 15.
#: Tokyo (JPX/OSA) is 20 on Yahoo's own pages. Anything not listed: 15.
EXCHANGE_DELAY_MIN: dict[str, int] = {
    "NMS": 0, "NGM": 0, "NYQ": 0, "SNP": 0, "DJI": 0, "NIM": 0, "CCC": 0, "CCY": 0,
    "NYM": 10, "CMX": 10, "JKT": 10,
    "LSE": 15, "MIL": 15, "TOR": 15, "WCB": 15, "FGI": 15, "GER": 15, "PAR": 15, "AMS": 15,
    "EBS": 15, "HKG": 15,
    "JPX": 20, "OSA": 20, "ASX": 20,
}  # fmt: skip
#: Regular trading hours (local time, weekdays) by exchange time zone: what `marketState` and
#: the lag of `regularMarketTime` follow. FX trades all week, crypto always (not listed here).
REGULAR_HOURS: dict[str, tuple[time, time]] = {
    "America/New_York": (time(9, 30), time(16, 0)),
    "America/Toronto": (time(9, 30), time(16, 0)),
    "Europe/London": (time(8, 0), time(16, 30)),
    "Asia/Tokyo": (time(9, 0), time(15, 30)),
}
_DEFAULT_HOURS = (time(9, 0), time(17, 30))
_INDICES: dict[str, tuple[str, str, str]] = {
    "^GSPC": ("USD", "SNP", "America/New_York"),
    "^DJI": ("USD", "DJI", "America/New_York"),
    "^IXIC": ("USD", "NIM", "America/New_York"),
    "^FTSE": ("GBP", "FGI", "Europe/London"),
    "^GDAXI": ("EUR", "GER", "Europe/Berlin"),
    "^N225": ("JPY", "OSA", "Asia/Tokyo"),
    "^HSI": ("HKD", "HKG", "Asia/Hong_Kong"),
}


@dataclass(frozen=True)
class YahooQuote:
    """What the fake's chart answer says about one symbol (all prices in `currency`)."""

    symbol: str
    price: float
    currency: str
    previous_close: float
    open: float
    high: float
    low: float
    volume: int
    regular_market_time: int  # epoch seconds
    instrument_type: str  # EQUITY, CURRENCY, FUTURE, INDEX, CRYPTOCURRENCY
    exchange_name: str
    timezone_name: str  # IANA, e.g. "America/New_York"
    long_name: str
    price_hint: int = 2  # decimals Yahoo shows: 4 for most FX pairs, 3 for yen pairs
    #: Yahoo's own change; None = price - previous close. Crypto's is a rolling 24 h figure.
    change: float | None = None
    #: `exchangeDataDelayedBy`: minutes Yahoo delays this exchange's data by (see
    #: `EXCHANGE_DELAY_MIN`); `regular_market_time` lags `now` by as much while it trades.
    delay_min: int = 0
    #: `marketState`: "REGULAR" while the exchange trades (`REGULAR_HOURS`), else "CLOSED".
    market_state: str = "REGULAR"
    #: `quoteSourceName`, as Yahoo says it (it does not always agree with the delay).
    quote_source: str = "Delayed Quote"


def generated_yahoo_quote(symbol: str, now: datetime) -> YahooQuote:
    """The deterministic quote for `symbol`: same symbol, same numbers (time aside)."""
    digest = hashlib.sha256(symbol.encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # in [0, 1)
    drift = (int.from_bytes(digest[8:12], "big") / 2**32 - 0.5) * 0.04  # ±2 % day move
    instrument, currency, exchange, tz_name, low_px, high_px, decimals = _profile(symbol)
    price = round(low_px + unit * (high_px - low_px), decimals)
    previous = round(price / (1 + drift), decimals)
    open_px = round((price + previous) / 2, decimals)
    spread = max(abs(price - previous), price * 0.002)
    high = round(max(price, open_px) + spread / 2, decimals)
    low = round(min(price, open_px) - spread / 2, decimals)
    volume = 0 if instrument in ("CURRENCY", "INDEX") else 1_000 + int.from_bytes(digest[12:16])
    delay_min = EXCHANGE_DELAY_MIN.get(exchange, 15)
    trading = _trading(instrument, tz_name, now, symbol)
    return YahooQuote(
        symbol=symbol,
        price=price,
        currency=currency,
        previous_close=previous,
        open=open_px,
        high=high,
        low=low,
        volume=volume,
        regular_market_time=_market_time(instrument, tz_name, delay_min, now, symbol),
        instrument_type=instrument,
        exchange_name=exchange,
        timezone_name=tz_name,
        long_name=f"{symbol} (fake)",
        price_hint=max(decimals, 2),
        # Crypto never closes: Yahoo's change is over the last 24 h, not since the "close".
        change=round((price - previous) * 1.5, decimals)
        if instrument == "CRYPTOCURRENCY"
        else None,
        delay_min=delay_min,
        market_state="REGULAR" if trading else "CLOSED",
        quote_source="Nasdaq Real Time Price" if exchange in ("NMS", "NGM") else "Delayed Quote",
    )


#: Treasury yields Yahoo quotes as indices: they trade on the futures' week, as futures do.
_TREASURY_YIELDS = frozenset({"^IRX", "^FVX", "^TNX", "^TYX"})


def _on_globex(instrument: str, symbol: str) -> bool:
    return instrument == "FUTURE" or symbol in _TREASURY_YIELDS


def _globex_trading(now: datetime) -> bool:
    """CME Globex's week: Sunday 18:00 to Friday 17:00 New York, halted 17:00-18:00 on the
    evenings between (crawler's own market hours follow the same rule)."""
    local = now.astimezone(ZoneInfo("America/New_York"))
    day, clock = local.weekday(), local.time()
    if day == 5:
        return False
    if day == 6:
        return clock >= time(18)
    if day == 4:
        return clock < time(17)
    return not time(17) <= clock < time(18)


def _trading(instrument: str, tz_name: str, now: datetime, symbol: str = "") -> bool:
    """Whether the exchange trades at `now`: crypto always, FX on weekdays (UTC), futures and
    Treasury yields on Globex's week, the rest in `REGULAR_HOURS` on local weekdays (holidays
    are not modelled)."""
    if instrument == "CRYPTOCURRENCY":
        return True
    if instrument == "CURRENCY":
        return now.astimezone(UTC).weekday() < 5
    if _on_globex(instrument, symbol):
        return _globex_trading(now)
    local = now.astimezone(ZoneInfo(tz_name))
    opens, closes = REGULAR_HOURS.get(tz_name, _DEFAULT_HOURS)
    return local.weekday() < 5 and opens <= local.time() < closes


def _market_time(
    instrument: str, tz_name: str, delay_min: int, now: datetime, symbol: str = ""
) -> int:
    """`regularMarketTime`: the minute `delay_min` before `now` while the exchange trades; the
    last close (the last regular session's end) while it does not."""
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    if _trading(instrument, tz_name, now, symbol):
        return int((minute - timedelta(minutes=delay_min)).timestamp())
    globex = _on_globex(instrument, symbol)
    zone = ZoneInfo("America/New_York" if globex else tz_name)
    local = now.astimezone(zone)
    closes = time(17) if globex else REGULAR_HOURS.get(tz_name, _DEFAULT_HOURS)[1]
    day = local.date()
    for _ in range(8):
        close = datetime.combine(day, closes, tzinfo=zone)
        if day.weekday() < 5 and close <= local:
            return int(close.timestamp())
        day -= timedelta(days=1)
    return int(minute.timestamp())  # pragma: no cover - a week has weekdays


def _profile(symbol: str) -> tuple[str, str, str, str, float, float, int]:
    """(instrumentType, currency, exchangeName, timezone, price range low/high, decimals)."""
    if symbol.endswith("=X"):
        pair = symbol[:-2]
        quote_ccy = pair[3:6] if len(pair) >= 6 else "USD"
        if quote_ccy == "JPY":
            return "CURRENCY", quote_ccy, "CCY", "Europe/London", 100.0, 160.0, 3
        return "CURRENCY", quote_ccy, "CCY", "Europe/London", 0.5, 1.5, 4
    if symbol.endswith("=F"):
        exchange = "CMX" if symbol in ("GC=F", "SI=F", "HG=F") else "NYM"
        return "FUTURE", "USD", exchange, "America/New_York", 50.0, 3000.0, 2
    if symbol.startswith("^"):
        currency, exchange, tz_name = _INDICES.get(symbol, ("USD", "SNP", "America/New_York"))
        return "INDEX", currency, exchange, tz_name, 1_000.0, 40_000.0, 2
    if "-" in symbol and symbol.rsplit("-", 1)[1] in _CRYPTO_QUOTES:
        currency = symbol.rsplit("-", 1)[1]
        return "CRYPTOCURRENCY", currency, "CCC", "UTC", 1.0, 100_000.0, 2
    suffix = "." + symbol.rsplit(".", 1)[1] if "." in symbol else ""
    currency, exchange, tz_name = _SUFFIXES.get(suffix, _SUFFIXES[""])
    if currency == "GBp":
        return "EQUITY", currency, exchange, tz_name, 100.0, 8_000.0, 1
    return "EQUITY", currency, exchange, tz_name, 10.0, 500.0, 2


class YahooFake(FakeService):
    """Yahoo Finance's cookie, crumb and chart endpoints over real HTTP on 127.0.0.1.

    Knobs: `set_quote(symbol, **fields)` (any `YahooQuote` field), `unknown(symbol)`,
    `set_empty(symbol)`, `clear_scenarios()`, plus the shared `faults` table keyed by the Yahoo
    symbol (a forced 429 answers "Too Many Requests" as Yahoo does).
    """

    name = "yahoo"

    def __init__(
        self,
        *,
        port: int = 0,
        seed: int = 0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(port=port, seed=seed)
        self._now = now
        self._scenario_lock = threading.Lock()
        self._quotes: dict[str, dict[str, Any]] = {}
        self._unknown: set[str] = set()
        self._empty: set[str] = set()
        self._omitted: set[str] = set()
        self._partial: dict[str, tuple[str, ...]] = {}
        self._crumb_refusals = 0
        self._raw: dict[str, dict[str, Any]] = {}
        self._chart_bodies: dict[str, bytes] = {}
        self._bar_bodies: dict[str, dict[str, Any]] = {}
        self._bar_requests = 0
        self._bar_429: tuple[int, int, float | None] = (0, 0, None)
        self._bar_log: list[tuple[str, int, int, str]] = []
        self.crumb = "fakeCrumb" + secrets.token_hex(4)
        self.cookie_value = "d=AQABBFAKE" + secrets.token_hex(8) + "&S=AQAAAFAKE"

    def __repr__(self) -> str:
        return f"YahooFake(url={self.url!r})"

    # -- scenario setters ------------------------------------------------------------------
    def set_quote(self, symbol: str, **values: Any) -> None:
        """Override generated fields for the Yahoo `symbol` (e.g. price=..., currency=...)."""
        allowed = set(YahooQuote.__dataclass_fields__) - {"symbol"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown quote fields {sorted(unknown)}; use {sorted(allowed)}")
        with self._scenario_lock:
            self._quotes.setdefault(symbol.upper(), {}).update(values)
            self._unknown.discard(symbol.upper())
            self._empty.discard(symbol.upper())

    def unknown(self, symbol: str) -> None:
        """Answer 404 "No data found, symbol may be delisted" for `symbol` ("*": all)."""
        with self._scenario_lock:
            self._unknown.add(_key(symbol))

    def set_empty(self, symbol: str) -> None:
        """Answer 200 with metadata but no price rows for `symbol` ("*": all)."""
        with self._scenario_lock:
            self._empty.add(_key(symbol))

    def omit(self, symbol: str) -> None:
        """Leave `symbol` ("*": all) out of batch answers, as Yahoo does with symbols it
        does not know; its chart still answers."""
        with self._scenario_lock:
            self._omitted.add(_key(symbol))

    def set_partial(self, symbol: str, *keys: str) -> None:
        """Answer `symbol` ("*": all) in batches without these record keys, e.g. "currency"
        or "regularMarketPrice" (as Yahoo does when asked with fewer `fields=`)."""
        with self._scenario_lock:
            self._partial[_key(symbol)] = keys or ("currency",)

    def set_raw(self, symbol: str, only: RawPlace | None = None, **fields: Any) -> None:
        """Put these keys, as given (a 400-digit int, 1e300), into `symbol`'s batch records
        and chart `meta` ("*": all), after everything else: hostile values in Yahoo's own
        spelling (`regularMarketPrice`, `priceHint`, `previousClose`, ...). A value of None
        removes the key. `only="quote"` or `only="chart"` limits them to one endpoint."""
        with self._scenario_lock:
            for place in ("quote", "chart"):
                if only in (None, place):
                    self._raw.setdefault(f"{place}:{_key(symbol)}", {}).update(fields)

    def set_chart_body(self, symbol: str, body: bytes) -> None:
        """Answer `symbol`'s chart ("*": every chart) with exactly `body` (HTTP 200)."""
        with self._scenario_lock:
            self._chart_bodies[_key(symbol)] = body

    def refuse_crumbs(self, times: int) -> None:
        """Answer the next `times` batch requests 401 "Invalid Crumb", whatever they send."""
        with self._scenario_lock:
            self._crumb_refusals = times

    def set_clock(self, now: Callable[[], datetime]) -> None:
        """Serve quotes as of `now()` from here on (a simulated day)."""
        self._now = now

    def rotate_crumb(self) -> str:
        """A new crumb: the one clients hold is now refused with 401 "Invalid Crumb"."""
        self.crumb = "fakeCrumb" + secrets.token_hex(4)
        return self.crumb

    def clear_scenarios(self) -> None:
        """Forget every set_quote / unknown / set_empty / omit / set_partial setting."""
        with self._scenario_lock:
            self._quotes.clear()
            self._unknown.clear()
            self._empty.clear()
            self._omitted.clear()
            self._partial.clear()
            self._crumb_refusals = 0
            self._raw.clear()
            self._chart_bodies.clear()
            self._bar_bodies.clear()
            self._bar_429 = (0, 0, None)
            self._bar_log.clear()

    def reset(self) -> None:
        """Clear faults, the request log and the scenario settings."""
        super().reset()
        self.clear_scenarios()

    # -- the log -----------------------------------------------------------------------------
    @staticmethod
    def kind_of(request: FakeRequest) -> RequestKind:
        """What a logged request was for: cookie, crumb, consent, chart or other."""
        host = _host(request)
        path = urlsplit(request.path).path
        if host.startswith("fc."):
            return "cookie"
        if path == "/v1/test/getcrumb":
            return "crumb"
        if path.startswith(_CHART_PREFIX):
            return "chart"
        if path == _QUOTE_PATH:
            return "quote"
        if path in ("/consent", "/copyConsent", "/v2/collectConsent"):
            return "consent"
        return "other"

    def requests_of(self, kind: RequestKind, symbol: str | None = None) -> list[FakeRequest]:
        """Logged requests of one kind (and, for charts, one Yahoo symbol)."""
        return [
            r
            for r in self.log_requests()
            if self.kind_of(r) == kind and (symbol is None or r.symbol == symbol.upper())
        ]

    def count(self, kind: RequestKind, symbol: str | None = None) -> int:
        """How many requests of `kind` (for `symbol`) the fake received."""
        return len(self.requests_of(kind, symbol))

    def batch_symbols(self) -> list[list[str]]:
        """The symbols each logged batch quote request asked for, in order."""
        return [_asked(r) for r in self.requests_of("quote")]

    # -- FakeService hooks -------------------------------------------------------------------
    def symbol_of(self, request: FakeRequest) -> str | None:
        path = urlsplit(request.path).path
        if path == _QUOTE_PATH:
            return QUOTE_FAULT_KEY
        if not path.startswith(_CHART_PREFIX):
            return None
        return unquote(path[len(_CHART_PREFIX) :]).upper() or None

    def route(self, request: FakeRequest) -> FakeResponse:
        kind = self.kind_of(request)
        if kind == "cookie":
            request.outcome = "cookie"
            return FakeResponse(
                404, b"<html><body>Not Found</body></html>", self._cookie_header(), "text/html"
            )
        if kind == "crumb":
            # As Yahoo's: the crumb is handed out only for a cookie this server set.
            if not self._own_cookie(request):
                request.outcome = "crumb:no_cookie"
                body = b'{"finance":{"result":null,"error":{"code":"Unauthorized",'
                body += b'"description":"Invalid Cookie"}}}'
                return FakeResponse(401, body)
            request.outcome = "crumb"
            return FakeResponse(200, self.crumb.encode(), content_type="text/plain")
        if kind == "consent":
            return self._consent(request)
        if kind == "chart" and request.symbol is not None:
            return self._chart(request, request.symbol)
        if kind == "quote":
            return self._batch(request)
        request.outcome = "not_found"
        if ".finance." in _host(request) or _host(request).startswith("127."):
            body = b'{"finance":{"result":null,"error":{"code":"Not Found",'
            body += b'"description":"HTTP 404 Not Found"}}}'
            return FakeResponse(404, body)
        return FakeResponse(404, b"<html><body>Not Found</body></html>", content_type="text/html")

    def error_response(self, request: FakeRequest) -> FakeResponse:
        """A random failure (`error_rate`): Yahoo's 500 JSON error."""
        request.outcome = "error_500"
        body = b'{"chart":{"result":null,"error":{"code":"Internal Server Error",'
        body += b'"description":"Internal Server Error"}}}'
        return FakeResponse(500, body)

    def forced_response(
        self, request: FakeRequest, status: int, headers: dict[str, str]
    ) -> FakeResponse:
        """A forced status; 429 is Yahoo's plain-text "Too Many Requests"."""
        if status == 429:
            return FakeResponse(429, b"Too Many Requests\r\n", headers, "text/plain")
        return FakeResponse(status, f"forced {status}".encode(), headers, "text/plain")

    # -- helpers ----------------------------------------------------------------------------
    def quote_for(self, symbol: str) -> YahooQuote:
        """The quote the fake serves for `symbol`: generated, then the set_quote overrides."""
        quote = generated_yahoo_quote(symbol.upper(), self._now().astimezone(UTC))
        with self._scenario_lock:
            overrides = {**self._quotes.get(GLOBAL, {}), **self._quotes.get(symbol.upper(), {})}
        return replace(quote, **overrides) if overrides else quote

    def _is_unknown(self, symbol: str) -> bool:
        with self._scenario_lock:
            if symbol in self._quotes:
                return False
            marked = symbol in self._unknown or GLOBAL in self._unknown
        return marked or symbol.startswith(_UNKNOWN_PREFIXES)

    def _is_empty(self, symbol: str) -> bool:
        with self._scenario_lock:
            return symbol in self._empty or GLOBAL in self._empty

    def _chart(self, request: FakeRequest, symbol: str) -> FakeResponse:
        if self._is_unknown(symbol):
            request.outcome = "chart:unknown"
            return FakeResponse(404, _NOT_FOUND_BODY)
        with self._scenario_lock:
            raw_body = self._chart_bodies.get(symbol, self._chart_bodies.get(GLOBAL))
        if raw_body is not None:
            request.outcome = "chart:raw"
            return FakeResponse(200, raw_body)
        if "period1" in parse_qs(urlsplit(request.path).query):
            return self._bars(request, symbol)
        quote = self.quote_for(symbol)
        empty = self._is_empty(symbol)
        request.outcome = "chart:empty" if empty else "chart"
        body = _chart_body(quote, empty=empty)
        _apply_raw(body["chart"]["result"][0]["meta"], self._raw_for("chart", symbol))
        return FakeResponse(200, json.dumps(body).encode())

    def _raw_for(self, place: RawPlace, symbol: str) -> dict[str, Any]:
        with self._scenario_lock:
            return {
                **self._raw.get(f"{place}:{GLOBAL}", {}),
                **self._raw.get(f"{place}:{symbol}", {}),
            }

    # -- chart bars (fakemarket/yahoo_bars.py) ----------------------------------------------
    def set_chart_bars(self, symbol: str, body: dict[str, Any]) -> None:
        """Serve the bars of this real chart body (a capture) for the Yahoo `symbol`'s range
        requests: those inside [period1, period2), the rest of the body as captured."""
        with self._scenario_lock:
            self._bar_bodies[symbol.upper()] = body

    def rate_limit_bars(self, after: int, times: int = 1, retry_after_s: float | None = 1) -> None:
        """Answer bar requests number after+1 .. after+times (counted from now) 429, as Yahoo
        does when it throttles a client midway through a backfill."""
        with self._scenario_lock:
            self._bar_429 = (self._bar_requests + after, times, retry_after_s)

    def bar_ranges(self, symbol: str | None = None) -> list[tuple[str, int, int, str]]:
        """(Yahoo symbol, period1, period2, interval) of each bar request served or refused
        with 422, in order (429s excluded)."""
        with self._scenario_lock:
            return [r for r in self._bar_log if symbol is None or r[0] == symbol.upper()]

    def _bars(self, request: FakeRequest, symbol: str) -> FakeResponse:
        from fakemarket.yahoo_bars import RangeRefused, bars_body, check_range, filter_body

        query = parse_qs(urlsplit(request.path).query)
        with self._scenario_lock:
            self._bar_requests += 1
            number = self._bar_requests
            after, times, retry_after_s = self._bar_429
            captured = self._bar_bodies.get(symbol)
        if after < number <= after + times:
            request.outcome = "bars:429"
            headers = {} if retry_after_s is None else {"Retry-After": f"{retry_after_s:g}"}
            return self.forced_response(request, 429, headers)
        try:
            period1 = int(query["period1"][0])
            period2 = int(query.get("period2", [str(int(self._now().timestamp()))])[0])
            interval = query.get("interval", ["1d"])[0]
        except ValueError:
            request.outcome = "bars:bad_request"
            return FakeResponse(400, b'{"chart":{"result":null,"error":{"code":"Bad Request"}}}')
        with self._scenario_lock:
            self._bar_log.append((symbol, period1, period2, interval))
        now = self._now().astimezone(UTC)
        try:
            check_range(interval, period1, period2, now)
        except RangeRefused as refused:
            request.outcome = "bars:422"
            return FakeResponse(422, json.dumps(refused.body()).encode())
        request.outcome = "bars"
        if captured is not None:
            body = filter_body(captured, period1, period2, interval)
        else:
            quote = self.quote_for(symbol)
            meta = _chart_body(quote, empty=False)["chart"]["result"][0]["meta"]
            body = bars_body(
                meta,
                symbol=symbol,
                instrument=quote.instrument_type,
                price=quote.price,
                interval=interval,
                period1=period1,
                period2=period2,
                now=now,
            )
        return FakeResponse(200, json.dumps(body, separators=(",", ":")).encode())

    def _batch(self, request: FakeRequest) -> FakeResponse:
        crumb = parse_qs(urlsplit(request.path).query).get("crumb", [""])[0]
        with self._scenario_lock:
            refused = self._crumb_refusals > 0
            self._crumb_refusals = max(0, self._crumb_refusals - 1)
        if refused or crumb != self.crumb or not self._own_cookie(request):
            request.outcome = "quote:invalid_crumb"
            return FakeResponse(401, _INVALID_CRUMB_BODY)
        records = []
        for symbol in _asked(request):
            if self._is_unknown(symbol) or self._is_empty(symbol):
                continue
            with self._scenario_lock:
                if symbol in self._omitted or GLOBAL in self._omitted:
                    continue
                dropped = self._partial.get(symbol, self._partial.get(GLOBAL, ()))
            record = quote_record(self.quote_for(symbol))
            for key in dropped:
                record.pop(key, None)
            _apply_raw(record, self._raw_for("quote", symbol))
            records.append(record)
        request.outcome = "quote"
        body = {"quoteResponse": {"result": records, "error": None}}
        return FakeResponse(200, json.dumps(body, separators=(",", ":")).encode())

    def _consent(self, request: FakeRequest) -> FakeResponse:
        path = urlsplit(request.path).path
        request.outcome = f"consent:{path.rsplit('/', 1)[-1]}"
        if path == "/consent":
            session_id = secrets.token_hex(8)
            form = (
                '<html><body><form method="post" action="/v2/collectConsent">'
                f'<input type="hidden" name="csrfToken" value="fakeCsrf{session_id}"/>'
                f'<input type="hidden" name="sessionId" value="{session_id}"/>'
                '<button type="submit" name="agree" value="agree">Accept all</button>'
                "</form></body></html>"
            )
            return FakeResponse(200, form.encode(), content_type="text/html")
        if path == "/copyConsent":
            return FakeResponse(
                200, b"<html><body>ok</body></html>", self._cookie_header(), "text/html"
            )
        return FakeResponse(200, b"<html><body>ok</body></html>", content_type="text/html")

    def _own_cookie(self, request: FakeRequest) -> bool:
        """Whether the request carries the A3 cookie this fake set (another server's is not)."""
        return f"A3={self.cookie_value}" in request.headers.get("cookie", "")

    def _cookie_header(self) -> dict[str, str]:
        return {
            "Set-Cookie": f"A3={self.cookie_value}; Max-Age={_COOKIE_MAX_AGE_S}; "
            "Domain=.yahoo.com; Path=/; SameSite=None"
        }


def quote_record(quote: YahooQuote) -> dict[str, Any]:
    """One `quoteResponse.result[]` record, with the keys and types of Yahoo's real ones."""
    zone = ZoneInfo(quote.timezone_name)
    market_time = datetime.fromtimestamp(quote.regular_market_time, UTC).astimezone(zone)
    offset = market_time.utcoffset()
    change = quote.change if quote.change is not None else quote.price - quote.previous_close
    change = round(change, 8)
    percent = round(change / quote.previous_close * 100, 7) if quote.previous_close else 0
    currency = quote.currency
    return {
        "language": "en-US",
        "region": "US",
        "quoteType": quote.instrument_type,
        "typeDisp": quote.instrument_type.title(),
        "quoteSourceName": quote.quote_source,
        "triggerable": True,
        "customPriceAlertConfidence": "HIGH",
        "currency": currency,
        "exchange": quote.exchange_name,
        "shortName": quote.long_name,
        "longName": quote.long_name,
        "messageBoardId": f"finmb_{quote.symbol}",
        "exchangeTimezoneName": quote.timezone_name,
        "exchangeTimezoneShortName": market_time.tzname() or "UTC",
        "gmtOffSetMilliseconds": int(offset.total_seconds() * 1000) if offset else 0,
        "market": "us_market",
        "esgPopulated": False,
        "marketState": quote.market_state,
        "regularMarketChangePercent": percent,
        "regularMarketPrice": quote.price,
        "regularMarketChange": change,
        "regularMarketTime": quote.regular_market_time,
        "regularMarketDayHigh": quote.high,
        "regularMarketDayRange": f"{quote.low} - {quote.high}",
        "regularMarketDayLow": quote.low,
        "regularMarketVolume": quote.volume,
        "regularMarketPreviousClose": quote.previous_close,
        "regularMarketOpen": quote.open,
        "fullExchangeName": quote.exchange_name,
        # LSE: prices in pence ("GBp") while the company reports in pounds.
        "financialCurrency": "GBP" if currency == "GBp" else currency,
        "sourceInterval": 15,
        "exchangeDataDelayedBy": quote.delay_min,
        "tradeable": False,
        "cryptoTradeable": quote.instrument_type == "CRYPTOCURRENCY",
        "hasPrePostMarketData": quote.instrument_type == "EQUITY",
        "firstTradeDateMilliseconds": 345_479_400_000,
        "priceHint": quote.price_hint,
        "symbol": quote.symbol,
    }


def _asked(request: FakeRequest) -> list[str]:
    """The symbols of a batch quote request, upper-cased, in order, without duplicates."""
    raw = parse_qs(urlsplit(request.path).query).get("symbols", [""])[0]
    return list(dict.fromkeys(s.strip().upper() for s in raw.split(",") if s.strip()))


def _chart_body(quote: YahooQuote, *, empty: bool) -> dict[str, Any]:
    """Yahoo's v8 chart answer for range=1d&interval=1d, with one row (or none when empty)."""
    zone = ZoneInfo(quote.timezone_name)
    market_time = datetime.fromtimestamp(quote.regular_market_time, UTC).astimezone(zone)
    offset = market_time.utcoffset()
    gmtoffset = int(offset.total_seconds()) if offset is not None else 0
    abbreviation = market_time.tzname() or "UTC"
    day_start = int(market_time.replace(hour=0, minute=0, second=0).timestamp())
    period = {"timezone": abbreviation, "gmtoffset": gmtoffset}
    meta: dict[str, Any] = {
        "currency": quote.currency,
        "symbol": quote.symbol,
        "exchangeName": quote.exchange_name,
        "fullExchangeName": quote.exchange_name,
        "instrumentType": quote.instrument_type,
        "firstTradeDate": 345_479_400,
        "regularMarketTime": quote.regular_market_time,
        "hasPrePostMarketData": quote.instrument_type == "EQUITY",
        "gmtoffset": gmtoffset,
        "timezone": abbreviation,
        "exchangeTimezoneName": quote.timezone_name,
        "regularMarketPrice": quote.price,
        "regularMarketDayHigh": quote.high,
        "regularMarketDayLow": quote.low,
        "regularMarketVolume": quote.volume,
        "longName": quote.long_name,
        "shortName": quote.long_name,
        "chartPreviousClose": quote.previous_close,
        "previousClose": quote.previous_close,
        "scale": 3,
        "priceHint": quote.price_hint,
        "currentTradingPeriod": {
            name: {**period, "start": day_start + start_s, "end": day_start + end_s}
            for name, (start_s, end_s) in {
                "pre": (4 * 3600, 9 * 3600),
                "regular": (9 * 3600, 17 * 3600),
                "post": (17 * 3600, 20 * 3600),
            }.items()
        },
        "dataGranularity": "1d",
        "range": "1d",
        "validRanges": _VALID_RANGES,
    }
    if empty:
        # As Yahoo answers for a delisted instrument: no price, no currency, no bars.
        for key in (
            "regularMarketPrice",
            "regularMarketDayHigh",
            "regularMarketDayLow",
            "regularMarketVolume",
            "chartPreviousClose",
            "previousClose",
        ):
            meta.pop(key, None)
        meta["currency"] = None
        return {
            "chart": {
                "result": [{"meta": meta, "indicators": {"quote": [{}], "adjclose": [{}]}}],
                "error": None,
            }
        }
    row = asdict(quote)
    return {
        "chart": {
            "result": [
                {
                    "meta": meta,
                    "timestamp": [day_start + 9 * 3600],
                    "indicators": {
                        "quote": [
                            {
                                "open": [row["open"]],
                                "high": [row["high"]],
                                "low": [row["low"]],
                                "close": [row["price"]],
                                "volume": [row["volume"]],
                            }
                        ],
                        "adjclose": [{"adjclose": [row["price"]]}],
                    },
                }
            ],
            "error": None,
        }
    }


def _apply_raw(target: dict[str, Any], raw: dict[str, Any]) -> None:
    for key, value in raw.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def _host(request: FakeRequest) -> str:
    """The Host header without its port ("query2.finance.yahoo.com")."""
    return request.headers.get("host", "").rsplit(":", 1)[0].lower()


def _key(symbol: str) -> str:
    return GLOBAL if symbol == GLOBAL else symbol.upper()
