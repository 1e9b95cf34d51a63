"""Yahoo Finance answers → `Quote`s, as pure functions of the JSON bodies.

Two shapes are read:

- the batch quote, `GET /v7/finance/quote?symbols=A,B,...` → `parse_quote_batch`. Each record of
  `quoteResponse.result` becomes a quote when it carries a price and a currency; Yahoo silently
  leaves unknown symbols out, and a record asked with fewer `fields=` lacks the rest. Both are
  reported (`omitted`, `partial`) so the caller can ask the chart for them, never guessed at.
- the chart, `GET /v8/finance/chart/SYMBOL?range=1d&interval=1d` → `parse_chart`. The quote is
  read from `chart.result[0].meta` without building a DataFrame; the last bar is read only for
  the open (the meta has no open).

The traps these functions know (see ../shared/fixtures/yahoo/README.md):

- every price is rounded to the instrument's `priceHint` decimals: Yahoo's numbers are float32
  values, and a bar's `128.96499633789062` means 128.96;
- a 0 where a price belongs (previous close, open/high/low on an index) means "no data": it
  becomes None and never yields a derived change;
- the change is Yahoo's own `regularMarketChange` (for crypto a rolling 24 h figure, NOT price
  minus previous close); the chart has no change field, so a chart change is derived from
  `meta.previousClose`, or from `chartPreviousClose` only when the window is one day (for a
  longer window it is the close before the window, not yesterday's), and never for crypto;
- LSE prices stay in "GBp" (pence), exactly as `currency` says; `financialCurrency` is ignored.

Hostile numbers never cost more than their own symbol: every number is read within bounds
(1e300, a 400-digit integer, 1e-300) before any rounding or division, so no InvalidOperation,
OverflowError or DivisionByZero escapes; a batch record whose price fails the plausibility
rules (`crawler.normalizer.plausibility`: -5.25 on a stock, 1e300, an `as_of` in 3270) is
reported in `partial` with the reason, for the chart to be asked, while the rest of the batch
is served; an absurd secondary number (change, open, ...) reads as missing. A body nested too
deep for the JSON decoder (100,000 levels) is a ParseError.

    batch = parse_quote_batch(body, {"AAPL": parse_symbol("AAPL:US")})
    batch.quotes["AAPL"].price        # Decimal("244.60")
    batch.omitted, batch.partial      # Yahoo symbols to ask the chart for
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from crawler.normalizer.plausibility import bounded, check_price, check_quote
from crawler.normalizer.schemas import Quote, utc_now
from crawler.normalizer.symbols import Symbol
from crawler.utils.exceptions import ImplausibleQuoteError, ParseError, UnknownSymbolError

__all__ = [
    "SOURCE_NAME",
    "QuoteBatch",
    "is_invalid_crumb",
    "load_chart",
    "parse_chart",
    "parse_quote_batch",
    "price_hint",
    "yahoo_decimal",
    "yahoo_time",
    "yahoo_volume",
]

SOURCE_NAME = "yfinance"

_PCT_STEP = Decimal("0.0001")
# priceHint is 2 for most instruments, 4 for FX, up to 8 for tiny coins; beyond 12 it is noise.
_MAX_HINT = 12
_STEPS = {hint: Decimal(1).scaleb(-hint) for hint in range(_MAX_HINT + 1)}
# Instruments that have no traded volume: Yahoo's 0 there means "none", not "nothing traded".
_NO_VOLUME_TYPES = frozenset({"CURRENCY", "INDEX"})
_CRYPTO = "CRYPTOCURRENCY"
# A day's volume fits SQLite's integer (2^63); a time fits datetime (year 9999).
_MAX_VOLUME = 2**63 - 1
_MAX_EPOCH_S = 253_402_300_799


@dataclass(frozen=True, slots=True)
class QuoteBatch:
    """What one batch answer held. Keys are Yahoo symbols as asked.

    `quotes`: complete records. `partial`: answered without a price or a currency (one line
    each saying what was missing). `omitted`: asked but not in the answer (Yahoo drops unknown
    symbols without a word).
    """

    quotes: dict[str, Quote] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)
    omitted: list[str] = field(default_factory=list)


def parse_quote_batch(
    body: bytes | str | Mapping[str, Any],
    asked: Mapping[str, Symbol],
    fetched_at: datetime | None = None,
) -> QuoteBatch:
    """The quotes of a `/v7/finance/quote` answer for `asked` (Yahoo symbol → our Symbol).

    Raises ParseError when the body is not a quote response at all (not JSON, no
    `quoteResponse.result` list, or Yahoo's `finance.error` envelope).
    """
    document = _load(body, "batch quote")
    response = document.get("quoteResponse")
    if not isinstance(response, dict):
        raise ParseError(f"Yahoo's batch quote answer has no quoteResponse: {_error_of(document)}")
    records = response.get("result")
    if not isinstance(records, list):
        error = response.get("error")
        raise ParseError(f"Yahoo's batch quote answer has no result list (error: {error!r})")
    fetched = fetched_at or utc_now()
    # Yahoo answers in its own spelling; match case-insensitively, report in ours.
    by_upper = {name.upper(): name for name in asked}
    quotes: dict[str, Quote] = {}
    partial: dict[str, str] = {}
    for record in records:
        if not isinstance(record, dict):
            continue
        asked_as = by_upper.get(str(record.get("symbol", "")).upper())
        if asked_as is None or asked_as in quotes:
            continue  # not asked (Yahoo may add an alias): never attach it to another symbol
        try:
            quote, missing = _quote_from_record(record, asked[asked_as], fetched)
        except ParseError as exc:  # refused (ImplausibleQuoteError) or unreadable: this one only
            quote, missing = None, exc.message
        except (ArithmeticError, ValueError, TypeError) as exc:  # a bug must not sink the batch
            quote, missing = None, f"unreadable record ({type(exc).__name__})"
        if quote is None:
            partial[asked_as] = missing
        else:
            quotes[asked_as] = quote
            partial.pop(asked_as, None)
    omitted = [name for name in asked if name not in quotes and name not in partial]
    return QuoteBatch(quotes=quotes, partial=partial, omitted=omitted)


def parse_chart(
    body: bytes | str | Mapping[str, Any], symbol: Symbol, fetched_at: datetime | None = None
) -> Quote:
    """The quote in a `/v8/finance/chart/SYMBOL` answer.

    Raises UnknownSymbolError for Yahoo's "Not Found" / "No data found" answers and for a chart
    without a price (a delisted instrument: HTTP 200, `indicators.quote = [{}]`), ParseError
    for anything that is not a chart.
    """
    result, meta = load_chart(body, symbol)
    hint = price_hint(meta.get("priceHint"))
    price = _price(meta.get("regularMarketPrice"), hint, symbol)
    currency = meta.get("currency")
    if price is None or not currency:
        raise UnknownSymbolError(
            f"Yahoo's chart for {symbol.canonical} has no "
            + ("price" if price is None else "currency")
            + " (delisted or never traded)"
        )
    instrument = str(meta.get("instrumentType") or "")
    previous = yahoo_decimal(meta.get("previousClose"), hint)
    if previous is None and meta.get("range") == "1d":
        # Over a one-day window the close before the window is yesterday's close.
        previous = yahoo_decimal(meta.get("chartPreviousClose"), hint)
    change = change_pct = None
    if previous is not None and instrument != _CRYPTO:
        change, change_pct = _derived_change(price, previous)
    opened = yahoo_decimal(_last_bar(result).get("open"), hint)
    day = (price, str(currency), opened, previous, change, change_pct)
    return _day_quote(meta, symbol, day, hint, instrument, fetched_at or utc_now())


def load_chart(
    body: bytes | str | Mapping[str, Any], symbol: Symbol, what: str = "chart"
) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """`chart.result[0]` of a `/v8/finance/chart` answer and its `meta` (the quote's and the
    bars' parsers both start here; `what` names the request in a refusal).

    Raises UnknownSymbolError for Yahoo's "Not Found" / "No data found" / delisted envelope,
    ParseError for another refusal and for anything that is not a chart.
    """
    document = _load(body, "chart")
    chart = document.get("chart")
    if not isinstance(chart, dict):
        raise ParseError(
            f"Yahoo's chart answer for {symbol.canonical} has no chart object: "
            + _error_of(document)
        )
    results = chart.get("result")
    if not results:
        error = chart.get("error")
        if isinstance(error, dict):
            code = str(error.get("code", ""))
            text = " ".join(str(error.get("description", "")).split())[:300]
            if code == "Not Found" or "No data found" in text or "delisted" in text:
                raise UnknownSymbolError(f"Yahoo does not know {symbol.canonical}: {text}")
            raise ParseError(f"Yahoo refused the {what} of {symbol.canonical}: {code}: {text}")
        raise ParseError(f"Yahoo's chart for {symbol.canonical} has no result")
    result = results[0] if isinstance(results, list) else None
    meta = result.get("meta") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(meta, dict):
        raise ParseError(f"Yahoo's chart for {symbol.canonical} has no meta")
    return result, meta


def is_invalid_crumb(status: int, body: bytes) -> bool:
    """True for Yahoo's 401 "Invalid Crumb" (or "Invalid Cookie"): refresh and retry once."""
    return status == 401 and (b"Invalid Crumb" in body or b"Invalid Cookie" in body)


def yahoo_decimal(value: Any, hint: int | None = None) -> Decimal | None:
    """A Yahoo number as a Decimal rounded to `hint` decimals; None for missing, non-finite,
    out of range (beyond ±MAX_PRICE: 1e300, a 400-digit integer) and 0 (Yahoo's "no data"
    for a price), including a number that rounds to 0 (1e-300).

    >>> yahoo_decimal(128.96499633789062, 2)
    Decimal('128.96')
    >>> yahoo_decimal(0, 2) is None
    True
    """
    number = _raw_decimal(value)
    if number is None or bounded(number) is None:
        return None
    if hint is not None:
        number = number.quantize(_STEPS[hint], ROUND_HALF_EVEN)
    return number if number else None


def _raw_decimal(value: Any) -> Decimal | None:
    """A JSON number as an exact Decimal, unrounded; None for anything else, NaN, ±inf and 0."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value == 0:
        return None
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _price(value: Any, hint: int | None, symbol: Symbol) -> Decimal | None:
    """The price field: None when missing or 0 (Yahoo's "no data"); ImplausibleQuoteError
    when a number is there but cannot be a price (out of range, negative on a stock, or so
    small that it rounds to nothing)."""
    number = _raw_decimal(value)
    if number is None:
        return None
    check_price(number, symbol.canonical, symbol.asset_class)
    if hint is not None:
        number = number.quantize(_STEPS[hint], ROUND_HALF_EVEN)
    if not number:
        raise ImplausibleQuoteError(
            f"{symbol.canonical}: price {value!r} refused: rounds to 0 at priceHint {hint}"
        )
    return number


def _derived_change(price: Decimal, previous: Decimal) -> tuple[Decimal | None, Decimal | None]:
    """price − previous and its percentage, or (None, None) when the numbers cannot give a
    believable one (a previous close of 1e-300 rounds to nothing; a huge ratio overflows)."""
    try:
        change = price - previous
        pct = (change / previous * 100).quantize(_PCT_STEP, ROUND_HALF_EVEN)
    except (ArithmeticError, InvalidOperation):
        return None, None
    return bounded(change), bounded(pct)


# -- internals ------------------------------------------------------------------------------


def _quote_from_record(
    record: dict[str, Any], symbol: Symbol, fetched_at: datetime
) -> tuple[Quote | None, str]:
    """A quote from one batch record, or (None, what was missing)."""
    hint = price_hint(record.get("priceHint"))
    price = _price(record.get("regularMarketPrice"), hint, symbol)
    currency = record.get("currency")
    if price is None or not isinstance(currency, str) or not currency:
        missing = [
            label
            for label, absent in (("price", price is None), ("currency", not currency))
            if absent
        ]
        return None, "answered without " + " and ".join(missing)
    previous = yahoo_decimal(record.get("regularMarketPreviousClose"), hint)
    # Yahoo's own change (crypto: rolling 24 h). Only a number counts: a record asked with
    # fewer fields has none, and deriving one would be a guess.
    raw_change: Any = record.get("regularMarketChange")
    change = change_pct = None
    if _is_number(raw_change):
        change = _signed(raw_change, hint)
        raw_pct: Any = record.get("regularMarketChangePercent")
        if change is not None and _is_number(raw_pct):
            change_pct = _signed(raw_pct, 4)
    instrument = str(record.get("quoteType") or "")
    opened = yahoo_decimal(record.get("regularMarketOpen"), hint)
    day = (price, currency, opened, previous, change, change_pct)
    return _day_quote(record, symbol, day, hint, instrument, fetched_at), ""


#: What a chart and a batch record each read their own way: price, currency, open, previous
#: close, change, change %.
_Day = tuple[Decimal, str, Decimal | None, Decimal | None, Decimal | None, Decimal | None]


def _day_quote(
    fields: Mapping[str, Any],
    symbol: Symbol,
    day: _Day,
    hint: int | None,
    instrument: str,
    fetched_at: datetime,
) -> Quote:
    """The quote, checked (`check_quote`), from what the caller read (`day`) and what a
    chart's meta and a batch record name alike: the day's high and low, the volume, the time
    of the price and the instrument's name."""
    price, currency, opened, previous, change, change_pct = day
    name = fields.get("longName") or fields.get("shortName")
    quote = Quote(
        symbol=symbol.canonical,
        asset_class=symbol.asset_class,
        name=str(name) if name else None,
        source=SOURCE_NAME,
        price=price,
        currency=currency,
        open=opened,
        high=yahoo_decimal(fields.get("regularMarketDayHigh"), hint),
        low=yahoo_decimal(fields.get("regularMarketDayLow"), hint),
        previous_close=previous,
        change=change,
        change_pct=change_pct,
        volume=yahoo_volume(fields.get("regularMarketVolume"), instrument),
        as_of=yahoo_time(fields.get("regularMarketTime")),
        fetched_at=fetched_at,
    )
    return check_quote(quote, now=fetched_at)


def _signed(value: Any, places: int | None) -> Decimal | None:
    """A change (which may be 0 or negative) rounded to `places`; None when absurd."""
    if value == 0:
        return Decimal(0) if places is None else Decimal(0).quantize(_STEPS[places])
    number = bounded(_raw_decimal(value))
    if number is None:
        return None
    return number if places is None else number.quantize(_STEPS[places], ROUND_HALF_EVEN)


def _load(body: bytes | str | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise ParseError(f"Yahoo's {what} answer is not JSON: {reason}") from None
    except RecursionError:
        raise ParseError(f"Yahoo's {what} answer is nested too deep to be a quote") from None
    if not isinstance(document, dict):
        raise ParseError(f"Yahoo's {what} answer is not a JSON object")
    return document


def _error_of(document: Mapping[str, Any]) -> str:
    """Yahoo's `{"finance": {"error": {...}}}` envelope in a few words."""
    finance = document.get("finance")
    error = finance.get("error") if isinstance(finance, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code', '')}: {error.get('description', '')}"[:200]
    return "unexpected shape"


def price_hint(value: Any) -> int | None:
    """Yahoo's `priceHint` (decimals to round prices to), None when absent or absurd."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_HINT:
        return value
    return None


def _is_number(value: Any) -> bool:
    """A finite JSON number (an int of any size is finite: never float() it, 400 digits
    overflow a float)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def yahoo_volume(value: Any, instrument: str) -> int | None:
    """A volume as an int; None when missing, negative, beyond SQLite's integer, or 0 on an
    instrument that has no traded volume (a currency, an index)."""
    if not _is_number(value) or value < 0 or value > _MAX_VOLUME:
        return None
    if value == 0 and instrument in _NO_VOLUME_TYPES:
        return None
    return int(value)


def yahoo_time(value: Any) -> datetime | None:
    """Epoch seconds as a UTC datetime; None when missing, not positive or past year 9999."""
    if not _is_number(value) or value <= 0 or value > _MAX_EPOCH_S:
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _last_bar(result: Mapping[str, Any]) -> dict[str, Any]:
    """The last bar's fields (open, high, ...), from `indicators.quote[0]`; {} without bars."""
    indicators = result.get("indicators")
    if not isinstance(indicators, dict):
        return {}
    series = indicators.get("quote")
    if not isinstance(series, list) or not series or not isinstance(series[0], dict):
        return {}
    bar: dict[str, Any] = {}
    for key, values in series[0].items():
        if isinstance(values, list) and values:
            bar[key] = values[-1]
    return bar
