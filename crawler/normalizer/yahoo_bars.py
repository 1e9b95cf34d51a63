"""Yahoo's chart bars → `Quote`s marked as bars, as a pure function of the JSON body.

`GET /v8/finance/chart/SYMBOL?period1=&period2=&interval=1d` answers `chart.result[0]` with
`timestamp[]` (epoch seconds: each bar's start) and `indicators.quote[0]` holding `open`,
`high`, `low`, `close` and `volume` lists of the same length (see the real captures in
../shared/fixtures/yahoo/chart). Each bar becomes a Quote with:

- `interval` the bar's interval ("1d"), `as_of` the bar's own start time from Yahoo, `price`
  its close; open, high, low and volume from the bar; no change and no previous close (a bar
  is not a quote of the day's move);
- every price rounded to the instrument's `priceHint` decimals, as `parse_chart` does: Yahoo's
  numbers are float32 values, and a close of 226.2100067138672 means 226.21;
- the currency from `meta.currency` as Yahoo says it (LSE bars stay "GBp").

A bar without a close (Yahoo's null for a minute nothing traded) is skipped. A window with no
bars at all (a weekend, before a listing) comes without `timestamp`: no bars, not an error. A
chart without a currency (a delisted instrument) is UnknownSymbolError, Yahoo's error
envelope (a range it refuses, an unknown symbol) UnknownSymbolError or ParseError.

    bars = parse_chart_bars(body, parse_symbol("AAPL:US"), "1d", fetched_at=now)
    bars[0].price, bars[0].as_of, bars[0].interval     # Decimal('233.00'), 2024-09-30 13:30Z, '1d'
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from crawler.normalizer.schemas import Quote, utc_now
from crawler.normalizer.symbols import Symbol
from crawler.normalizer.yahoo import (
    SOURCE_NAME,
    load_chart,
    price_hint,
    yahoo_decimal,
    yahoo_time,
    yahoo_volume,
)
from crawler.utils.exceptions import ParseError, UnknownSymbolError

__all__ = ["parse_chart_bars"]


def parse_chart_bars(
    body: bytes | str | Mapping[str, Any],
    symbol: Symbol,
    interval: str,
    fetched_at: datetime | None = None,
) -> list[Quote]:
    """The bars in a chart answer for `symbol` at `interval` (see the module docstring)."""
    result, meta = load_chart(body, symbol, "bars")
    currency = meta.get("currency")
    stamps = result.get("timestamp")
    if not stamps:
        return []
    if not currency:
        raise UnknownSymbolError(
            f"Yahoo's chart for {symbol.canonical} has no currency (delisted or never traded)"
        )
    if not isinstance(stamps, list):
        raise ParseError(f"Yahoo's chart for {symbol.canonical} has a malformed timestamp list")
    series = _series(result)
    hint = price_hint(meta.get("priceHint"))
    instrument = str(meta.get("instrumentType") or "")
    name = meta.get("longName") or meta.get("shortName")
    fetched = fetched_at or utc_now()
    bars: list[Quote] = []
    for index, stamp in enumerate(stamps):
        at = yahoo_time(stamp)
        close = yahoo_decimal(_at(series, "close", index), hint)
        if at is None or close is None:
            continue
        bars.append(
            Quote(
                symbol=symbol.canonical,
                price=close,
                source=SOURCE_NAME,
                currency=str(currency),
                open=yahoo_decimal(_at(series, "open", index), hint),
                high=yahoo_decimal(_at(series, "high", index), hint),
                low=yahoo_decimal(_at(series, "low", index), hint),
                volume=yahoo_volume(_at(series, "volume", index), instrument),
                as_of=at,
                fetched_at=fetched,
                asset_class=symbol.asset_class,
                name=str(name) if name else None,
                interval=interval,
            )
        )
    return bars


def _series(result: Mapping[str, Any]) -> dict[str, list[Any]]:
    indicators = result.get("indicators")
    quotes = indicators.get("quote") if isinstance(indicators, dict) else None
    first = quotes[0] if isinstance(quotes, list) and quotes else None
    if not isinstance(first, dict):
        return {}
    return {key: values for key, values in first.items() if isinstance(values, list)}


def _at(series: dict[str, list[Any]], key: str, index: int) -> Any:
    values = series.get(key)
    return values[index] if values is not None and index < len(values) else None
