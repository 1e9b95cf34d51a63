"""Symbols as people type them (crawler.normalizer.user_symbols): Yahoo's spellings become the
Bloomberg symbol they mean, spellings of one instrument fold into one, contradictions refused."""

from __future__ import annotations

import pytest

from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import parse_symbol, to_yahoo
from crawler.normalizer.user_symbols import from_yahoo, read_symbol
from crawler.utils.exceptions import SymbolError

ISSUE_TABLE = [
    ("VOD.L", "VOD:LN"),
    ("BTC-USD", "XBTUSD:CUR"),
    ("7203.T", "7203:JP"),
    ("BRK-B", "BRK/B:US"),
    ("BRK.B", "BRK/B:US"),
    ("^GSPC", "SPX:IND"),
    ("EURUSD=X", "EURUSD:CUR"),
    ("GC=F", "GC1:COM"),
]


@pytest.mark.parametrize(("yahoo", "bloomberg"), ISSUE_TABLE)
def test_yahoo_input_becomes_the_bloomberg_symbol_it_means(yahoo: str, bloomberg: str) -> None:
    read = read_symbol(yahoo)
    assert read.symbol.canonical == bloomberg
    assert read.notice == f"{yahoo} is how Yahoo writes it; using {bloomberg}"
    assert "\n" not in read.notice


@pytest.mark.parametrize(
    "bloomberg",
    ["VOD:LN", "SAP:GR", "7203:JP", "5:HK", "600519:CH", "RY:CN", "BT/A:LN", "ETH-USD"],
)
def test_translation_is_the_inverse_of_to_yahoo(bloomberg: str) -> None:
    if bloomberg == "ETH-USD":  # Yahoo's ether is Bloomberg's XETUSD
        assert from_yahoo(bloomberg) == "XETUSD:CUR"
        return
    assert from_yahoo(to_yahoo(parse_symbol(bloomberg))) == bloomberg


@pytest.mark.parametrize("text", ["AAPL", "VOD:LN", "BRK/B:US", "XBTUSD:CUR", "TA-35:IND"])
def test_bloomberg_input_is_left_alone(text: str) -> None:
    read = read_symbol(text)
    assert read.notice is None and read.symbol == parse_symbol(text)


def test_spellings_of_one_instrument_are_one_symbol() -> None:
    spellings = ["BRK-B", "BRK.B", "brk/b", "BRK/B:US"]
    assert {read_symbol(s).symbol.canonical for s in spellings} == {"BRK/B:US"}
    assert read_symbol("BTCUSD:CUR").symbol.canonical == "XBTUSD:CUR"
    assert read_symbol("BTCUSD:CUR").notice == "BTCUSD:CUR is XBTUSD:CUR on Bloomberg; using that"
    assert read_symbol("BTC-USD").symbol == read_symbol("XBTUSD:CUR").symbol


def test_an_asset_class_contradicting_the_symbol_is_refused() -> None:
    with pytest.raises(SymbolError) as caught:
        read_symbol("XBTUSD:CUR", AssetClass.STOCKS)
    assert caught.value.message == (
        "--asset-class stocks contradicts XBTUSD:CUR (XBTUSD:CUR), which is crypto; "
        "drop --asset-class or fix the symbol"
    )
    with pytest.raises(SymbolError):
        read_symbol("EURUSD=X", AssetClass.CRYPTO)
    with pytest.raises(SymbolError):
        read_symbol("AAPL:US", AssetClass.FOREX)
    # A fund tracked as what it follows is not a contradiction.
    assert read_symbol("SPY", AssetClass.INDICES).symbol.asset_class is AssetClass.INDICES
    assert read_symbol("XBTUSD:CUR", AssetClass.CRYPTO).symbol.asset_class is AssetClass.CRYPTO


def test_bloomberg_tickers_ending_in_a_slash_are_accepted() -> None:
    bp = read_symbol("BP/:LN").symbol
    assert bp.canonical == "BP/:LN" and bp.asset_class is AssetClass.STOCKS
    assert to_yahoo(bp) == "BP.L"
    for bad in ("BP//:LN", "/BP:LN", "BP/-:LN"):
        with pytest.raises(SymbolError):
            parse_symbol(bad)


def test_unknown_yahoo_forms_still_get_the_hint() -> None:
    with pytest.raises(SymbolError, match="looks like a Yahoo symbol"):
        read_symbol("^NOPE")
