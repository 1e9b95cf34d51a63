"""The one exchange table, every row both ways: code → Yahoo suffix → code, code → calendar →
market hours, code → asset class → accepted suffix; checked against yfinance's own MIC table and
exchange_calendars' calendar names."""

from __future__ import annotations

import pytest

from crawler.markets.calendars import SUFFIX_MARKETS, market_of
from crawler.normalizer.exchanges import (
    ASSET_SUFFIXES,
    EXCHANGES,
    US_EXCHANGES,
    Exchange,
    asset_class_of_suffix,
    exchange_for_yahoo_suffix,
)
from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import (
    KNOWN_SUFFIXES,
    exchange_of,
    infer_asset_class,
    parse_symbol,
    to_yahoo,
)
from crawler.normalizer.yahoo_map import COMPOSITE_EXCHANGE, EXCHANGE_SUFFIXES
from crawler.utils.exceptions import UnmappableSymbolError

ROWS = sorted(EXCHANGES.values(), key=lambda row: row.code)
#: Rows whose Yahoo ticker is built by a rule beyond the suffix (see symbols.py).
_RULED = {"CH": "600000.SS", "HK": "1234.HK"}


def _yfinance_mic_table() -> dict[str, str]:
    const = pytest.importorskip("yfinance.const")
    table = getattr(const, "_MIC_TO_YAHOO_SUFFIX", None)
    if not isinstance(table, dict):
        pytest.skip("this yfinance has no _MIC_TO_YAHOO_SUFFIX table")
    return {str(mic): str(suffix) for mic, suffix in table.items()}


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.code)
def test_each_row_maps_to_yahoo_and_back(row: Exchange) -> None:
    symbol = parse_symbol(f"{'600000' if row.code == 'CH' else '1234'}:{row.code}")
    assert symbol.asset_class is AssetClass.STOCKS
    if row.yahoo is None:
        with pytest.raises(UnmappableSymbolError, match="Yahoo has no data"):
            to_yahoo(symbol)
        assert row.code not in EXCHANGE_SUFFIXES
        return
    yahoo = to_yahoo(symbol)
    assert yahoo == _RULED.get(row.code, f"1234{row.yahoo}")
    # Back: the Yahoo suffix names a code of the same market (composites come first).
    suffix = "" if "." not in yahoo else yahoo[yahoo.index(".") :]
    back = exchange_for_yahoo_suffix(suffix)
    assert back is not None and EXCHANGES[back].composite == row.composite, (row.code, back)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.code)
def test_each_row_has_its_calendar_and_market_both_ways(row: Exchange) -> None:
    symbol = parse_symbol(f"1234:{row.code}")
    assert exchange_of(symbol) == row.composite
    assert EXCHANGES[row.composite].composite == row.composite  # a composite is its own
    if row.code != row.composite:
        assert COMPOSITE_EXCHANGE[row.code] == row.composite
    expected = row.calendar or "UNKNOWN"
    assert market_of(symbol.canonical, AssetClass.STOCKS) == expected
    assert market_of(symbol.canonical, None) == expected
    # Back: every calendar a row names is a calendar of the row's composite too.
    if row.calendar is not None:
        assert SUFFIX_MARKETS[row.code] == row.calendar


def test_every_calendar_is_an_exchange_calendar() -> None:
    exchange_calendars = pytest.importorskip("exchange_calendars")
    names = set(exchange_calendars.get_calendar_names(include_aliases=True))
    assert {row.calendar for row in ROWS if row.calendar} - names == set()
    # The rows without one have none in exchange_calendars either (checked, not assumed).
    assert not {"XQAT", "XCAI"} & names


def test_yahoo_suffixes_agree_with_yfinances_own_table() -> None:
    table = _yfinance_mic_table()
    known_suffixes = set(table.values())
    for row in ROWS:
        if row.code in _RULED or row.yahoo is None:
            continue
        if row.mic in table:
            expected = table[row.mic]
            assert row.yahoo == ("." + expected if expected else ""), row.code
        elif row.composite == "US":
            assert row.yahoo == ""  # yfinance: XNYS and XNAS quote without a suffix
        else:  # a MIC yfinance keys otherwise (XKOS as KQKS): the suffix must still be Yahoo's
            assert row.yahoo.removeprefix(".") in known_suffixes, row.code
    # The venues Yahoo has no data for are absent from yfinance's table too.
    for row in ROWS:
        if row.yahoo is None:
            assert row.mic not in table, row.code


@pytest.mark.parametrize(
    ("code", "yahoo"),
    [("GF", ".F"), ("GD", ".DU"), ("GY", ".DE"), ("GA", ".AT"), ("HB", ".BD"), ("CP", ".PR"),
     ("EY", ".CA"), ("CI", ".SN"), ("PM", ".PS"), ("CV", ".V"), ("QD", ".QA"), ("LI", ".IL"),
     ("RM", None), ("LX", None)],
)  # fmt: skip
def test_the_mappings_once_written_from_memory(code: str, yahoo: str | None) -> None:
    assert EXCHANGES[code].yahoo == yahoo


def test_asset_classes_of_suffixes_both_ways() -> None:
    for suffix, asset_class in ASSET_SUFFIXES.items():
        assert asset_class_of_suffix(suffix) is asset_class
        assert infer_asset_class(suffix) is asset_class
        assert suffix in KNOWN_SUFFIXES
    for code in EXCHANGES:
        assert asset_class_of_suffix(code) is AssetClass.STOCKS is infer_asset_class(code)
    assert set(EXCHANGES) | set(ASSET_SUFFIXES) == KNOWN_SUFFIXES
    assert asset_class_of_suffix("ZZ") is None
    assert {"US", "UN", "UW", "UQ", "UR", "UA", "UP", "UV", "UF"} == US_EXCHANGES


@pytest.mark.parametrize(
    ("text", "market"),
    [("BNBUSD:CUR", "CRYPTO"), ("XBTUSD:CUR", "CRYPTO"), ("USDTUSD:CUR", "CRYPTO"),
     ("USDTRY:CUR", "FX"), ("USDCAD:CUR", "FX"), ("EURUSD:CUR", "FX")],
)  # fmt: skip
def test_crypto_pairs_are_crypto_for_parsing_and_market_hours_alike(text: str, market: str) -> None:
    symbol = parse_symbol(text)
    assert (symbol.asset_class is AssetClass.CRYPTO) == (market == "CRYPTO")
    assert market_of(text, None) == market
    assert market_of(text, AssetClass.FOREX) == market
    if market == "CRYPTO":
        assert to_yahoo(symbol).endswith("-USD")
