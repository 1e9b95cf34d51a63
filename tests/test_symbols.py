"""Symbols: parsing, normalisation, asset classes, Bloomberg → Yahoo, and every rejection."""

from __future__ import annotations

import pytest

from crawler.normalizer import symbols
from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import (
    KNOWN_SUFFIXES,
    MAX_SYMBOL_CHARS,
    Symbol,
    bloomberg_url,
    exchange_of,
    infer_asset_class,
    parse_symbol,
    to_yahoo,
)
from crawler.normalizer.yahoo_map import EXCHANGE_SUFFIXES
from crawler.utils.exceptions import SymbolError, UnmappableSymbolError

CONVERSIONS = [
    # United States, share classes, single-venue codes
    ("AAPL:US", "AAPL"),
    ("MSFT", "MSFT"),
    ("BRK/B:US", "BRK-B"),
    ("BF/B:US", "BF-B"),
    ("BRK.A:US", "BRK-A"),
    ("IBM:UN", "IBM"),
    ("NVDA:UW", "NVDA"),
    ("SPY:UP", "SPY"),
    # Europe
    ("VOD:LN", "VOD.L"),
    ("BT/A:LN", "BT-A.L"),
    ("SAP:GR", "SAP.DE"),
    ("SAP:GY", "SAP.DE"),
    ("SIE:GF", "SIE.F"),  # Frankfurt; Xetra (GY) is .DE
    ("MC:FP", "MC.PA"),
    ("ASML:NA", "ASML.AS"),
    ("ABI:BB", "ABI.BR"),
    ("NESN:SW", "NESN.SW"),
    ("NOVN:SE", "NOVN.SW"),
    ("ROG:VX", "ROG.SW"),
    ("ENI:IM", "ENI.MI"),
    ("SAN:SM", "SAN.MC"),
    ("VOLVB:SS", "VOLVB.ST"),
    ("EQNR:NO", "EQNR.OL"),
    ("DSV:DC", "DSV.CO"),
    ("NOKIA:FH", "NOKIA.HE"),
    ("RYA:ID", "RYA.IR"),
    ("EDP:PL", "EDP.LS"),
    ("OMV:AV", "OMV.VI"),
    ("PKO:PW", "PKO.WA"),
    ("THYAO:TI", "THYAO.IS"),
    # Asia-Pacific
    ("7203:JP", "7203.T"),
    ("6758:JT", "6758.T"),
    ("5:HK", "0005.HK"),
    ("700:HK", "0700.HK"),
    ("00005:HK", "0005.HK"),
    ("9988:HK", "9988.HK"),
    ("600519:CH", "600519.SS"),
    ("000001:CH", "000001.SZ"),
    ("300750:CH", "300750.SZ"),
    ("900901:CH", "900901.SS"),
    ("005930:KS", "005930.KS"),
    ("247540:KQ", "247540.KQ"),
    ("2330:TT", "2330.TW"),
    ("RELIANCE:IN", "RELIANCE.NS"),
    ("M&M:IN", "M&M.NS"),
    ("500325:IB", "500325.BO"),
    ("BHP:AU", "BHP.AX"),
    ("FPH:NZ", "FPH.NZ"),
    ("D05:SP", "D05.SI"),
    ("MAY:MK", "MAY.KL"),
    ("PTT:TB", "PTT.BK"),
    ("BBCA:IJ", "BBCA.JK"),
    # Americas
    ("RY:CN", "RY.TO"),
    ("RCI/B:CT", "RCI-B.TO"),
    ("PETR4:BZ", "PETR4.SA"),
    ("WALMEX:MM", "WALMEX.MX"),
    ("GGAL:AR", "GGAL.BA"),
    # Middle East and Africa
    ("NPN:SJ", "NPN.JO"),
    ("2222:AB", "2222.SR"),
    ("QNBK:QD", "QNBK.QA"),
    ("TEVA:IT", "TEVA.TA"),
    # Currencies and crypto
    ("EURUSD:CUR", "EURUSD=X"),
    ("USDJPY:CUR", "USDJPY=X"),
    ("GBPUSD:CUR", "GBPUSD=X"),
    ("USDCNH:CUR", "USDCNH=X"),
    ("DXY:CUR", "DX-Y.NYB"),
    ("XBTUSD:CUR", "BTC-USD"),
    ("ETHUSD:CUR", "ETH-USD"),
    ("XETUSD:CUR", "ETH-USD"),
    ("XBTEUR:CUR", "BTC-EUR"),
    ("DOGEUSD:CUR", "DOGE-USD"),
    # Commodities, front month
    ("CL1:COM", "CL=F"),
    ("CO1:COM", "BZ=F"),
    ("GC1:COM", "GC=F"),
    ("SI1:COM", "SI=F"),
    ("HG1:COM", "HG=F"),
    ("NG1:COM", "NG=F"),
    ("XB1:COM", "RB=F"),
    ("KC1:COM", "KC=F"),
    # Indices
    ("SPX:IND", "^GSPC"),
    ("INDU:IND", "^DJI"),
    ("CCMP:IND", "^IXIC"),
    ("UKX:IND", "^FTSE"),
    ("NKY:IND", "^N225"),
    ("DAX:IND", "^GDAXI"),
    ("CAC:IND", "^FCHI"),
    ("HSI:IND", "^HSI"),
    ("SX5E:IND", "^STOXX50E"),
    ("RTY:IND", "^RUT"),
    ("VIX:IND", "^VIX"),
    ("AS51:IND", "^AXJO"),
    ("SPTSX:IND", "^GSPTSE"),
    ("KOSPI:IND", "^KS11"),
    ("SHCOMP:IND", "000001.SS"),
    ("SENSEX:IND", "^BSESN"),
    ("IBOV:IND", "^BVSP"),
    ("TA-35:IND", "TA35.TA"),
    ("ES1:IND", "ES=F"),
    ("USGG10YR:IND", "^TNX"),
    # US Treasuries
    ("GT10:GOV", "^TNX"),
    ("GT30:GOV", "^TYX"),
    ("GT5:GOV", "^FVX"),
    ("GB3:GOV", "^IRX"),
]


@pytest.mark.parametrize(("bloomberg", "yahoo"), CONVERSIONS)
def test_bloomberg_to_yahoo(bloomberg: str, yahoo: str) -> None:
    assert to_yahoo(parse_symbol(bloomberg)) == yahoo


def test_conversion_table_is_large_and_covers_every_category() -> None:
    assert len(CONVERSIONS) >= 60
    classes = {parse_symbol(b).asset_class for b, _ in CONVERSIONS}
    assert classes == set(AssetClass)


REJECTIONS = [
    ("", "empty symbol"),
    ("   \t\n", "empty symbol"),
    ("A" * (MAX_SYMBOL_CHARS + 1), "the limit is 32"),
    ("AAPL:US" + " " * 5 + "X" * 30, "the limit is 32"),
    ("AA\x00PL", "contains a NUL byte"),
    ("\x00", "contains a NUL byte"),
    ("AAPLé", "non-ASCII"),
    ("７２０３:JP", "non-ASCII"),
    ("AAPL\u2028", "non-ASCII"),
    ("A:B:C", "has 2 colons"),
    ("AAPL::US", "has 2 colons"),
    (":US", "no ticker before ':'"),
    (":", "no ticker before ':'"),
    ("AAPL:", "no suffix after ':'"),
    ("AAPL:XX", "unknown suffix 'XX'"),
    ("AAPL:EQUITY", "unknown suffix 'EQUITY'"),
    ("AAPL: US", "unknown suffix ' US'"),
    ("C 1:COM", "contains a space"),
    ("AAPL :US", "contains a space"),
    ("AA;PL", "characters not allowed: ';'"),
    ("$(rm)", "characters not allowed: '$()'"),
    ("AAPL|cat", "characters not allowed: '|'"),
    ("`id`:US", "characters not allowed: '`'"),
    ("A\nB:US", "characters not allowed: '\\n'"),
    ("A*B", "characters not allowed: '*'"),
    ("^GSPC", "looks like a Yahoo symbol"),
    ("EURUSD=X", "looks like a Yahoo symbol"),
    ("../ETC", "must start and end with a letter or digit"),
    ("BRK//B", "must start and end with a letter or digit"),
    ("AAPL-:US", "must start and end with a letter or digit"),
    ("-", "must start and end with a letter or digit"),
    ("&", "must start and end with a letter or digit"),
    ("M&&M:IN", "must start and end with a letter or digit"),
]


@pytest.mark.parametrize(("text", "expected"), REJECTIONS)
def test_rejection_message(text: str, expected: str) -> None:
    with pytest.raises(SymbolError) as info:
        parse_symbol(text)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and "\r" not in message
    assert message.isascii()
    assert not isinstance(info.value, UnmappableSymbolError)


def test_rejection_table_is_large() -> None:
    assert len(REJECTIONS) >= 20


def test_unknown_suffix_message_lists_known_suffixes() -> None:
    with pytest.raises(SymbolError, match=r"use one of US, LN, .*CUR, COM, IND, GOV"):
        parse_symbol("AAPL:ZZ")


def test_long_input_is_truncated_in_the_message() -> None:
    text = "X" * 10_000
    with pytest.raises(SymbolError) as info:
        parse_symbol(text)
    message = str(info.value)
    assert len(message) < 200
    assert "(10000 chars)" in message


def test_message_shows_control_characters_escaped() -> None:
    with pytest.raises(SymbolError) as info:
        parse_symbol("AA\x1bPL")
    assert "'AA\\x1bPL'" in str(info.value)


def test_non_text_is_rejected() -> None:
    with pytest.raises(SymbolError, match="must be text, got bytes"):
        parse_symbol(b"AAPL")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("AAPL", "AAPL:US"),
        ("aapl", "AAPL:US"),
        ("  aapl:us \n", "AAPL:US"),
        ("\tvod:ln", "VOD:LN"),
        ("brk/b", "BRK/B:US"),
        ("eurusd:cur", "EURUSD:CUR"),
        ("Gc1:Com", "GC1:COM"),
    ],
)
def test_normalisation(text: str, canonical: str) -> None:
    symbol = parse_symbol(text)
    assert symbol.canonical == canonical
    assert str(symbol) == canonical


def test_only_ascii_whitespace_is_stripped() -> None:
    # \x1f counts as whitespace to str.strip(); it must be reported, not silently dropped.
    with pytest.raises(SymbolError, match="not allowed"):
        parse_symbol("AAPL\x1f")


def test_symbol_fields() -> None:
    assert parse_symbol("7203:jp") == Symbol("7203", "JP", AssetClass.STOCKS)


@pytest.mark.parametrize(
    ("text", "asset_class"),
    [
        ("AAPL", AssetClass.STOCKS),
        ("VOD:LN", AssetClass.STOCKS),
        ("EURUSD:CUR", AssetClass.FOREX),
        ("USDJPY:CUR", AssetClass.FOREX),
        ("XBTUSD:CUR", AssetClass.CRYPTO),
        ("ETHUSD:CUR", AssetClass.CRYPTO),
        ("GC1:COM", AssetClass.COMMODITIES),
        ("SPX:IND", AssetClass.INDICES),
        ("GT10:GOV", AssetClass.BONDS),
    ],
)
def test_asset_class_inferred_from_suffix(text: str, asset_class: AssetClass) -> None:
    assert parse_symbol(text).asset_class is asset_class


def test_infer_asset_class_directly() -> None:
    assert infer_asset_class("cur", "xbtusd") is AssetClass.CRYPTO
    assert infer_asset_class("CUR") is AssetClass.FOREX
    assert infer_asset_class("GY") is AssetClass.STOCKS
    assert infer_asset_class("IND", "SPX") is AssetClass.INDICES
    with pytest.raises(SymbolError, match="unknown suffix 'NOPE'"):
        infer_asset_class("NOPE")


def test_explicit_asset_class_overrides_inference() -> None:
    etf = parse_symbol("SPY", AssetClass.INDICES)
    assert etf.asset_class is AssetClass.INDICES
    assert etf.canonical == "SPY:US"
    # The suffix, not the class, decides the Yahoo form and the exchange.
    assert to_yahoo(etf) == "SPY"
    assert exchange_of(etf) == "US"
    assert parse_symbol(etf.canonical, etf.asset_class) == etf
    assert parse_symbol("XBTUSD:CUR", AssetClass.FOREX).asset_class is AssetClass.FOREX


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("XYZ:IND", "not in the IND table"),
        ("CL2:COM", "not in the COM table"),
        ("GUKG10:GOV", "only US Treasuries have one"),
        ("GT2:GOV", "only US Treasuries have one"),
        ("EUR:CUR", "not a six-letter currency pair"),
        ("HSBA:HK", "Hong Kong tickers are numeric"),
        ("ABC:CH", "CH tickers are six-digit"),
        ("830799:CH", "CH tickers are six-digit"),
        ("60051:CH", "CH tickers are six-digit"),
    ],
)
def test_unmappable_symbols(text: str, reason: str) -> None:
    symbol = parse_symbol(text)  # valid Bloomberg symbols: parsing succeeds
    with pytest.raises(UnmappableSymbolError) as info:
        to_yahoo(symbol)
    message = str(info.value)
    assert message.startswith(f"no Yahoo equivalent for {symbol.canonical} ({reason}")
    assert message.endswith("); yfinance is skipped for it")
    assert isinstance(info.value, SymbolError)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("aapl", "https://www.bloomberg.com/quote/AAPL:US"),
        ("BRK/B:US", "https://www.bloomberg.com/quote/BRK/B:US"),
        ("eurusd:cur", "https://www.bloomberg.com/quote/EURUSD:CUR"),
    ],
)
def test_bloomberg_url(text: str, url: str) -> None:
    assert bloomberg_url(parse_symbol(text)) == url


@pytest.mark.parametrize(
    ("text", "exchange"),
    [
        ("AAPL", "US"),
        ("IBM:UN", "US"),
        ("VOD:LN", "LN"),
        ("SAP:GY", "GR"),
        ("7203:JT", "JP"),
        ("7203:JP", "JP"),
        ("ROG:VX", "SW"),
        ("RY:CT", "CN"),
        ("500325:IB", "IN"),
        ("5:HK", "HK"),
        ("EURUSD:CUR", None),
        ("GC1:COM", None),
        ("SPX:IND", None),
        ("GT10:GOV", None),
    ],
)
def test_exchange_of(text: str, exchange: str | None) -> None:
    assert exchange_of(parse_symbol(text)) == exchange


def test_every_exchange_code_maps_a_listing() -> None:
    for code in EXCHANGE_SUFFIXES:
        ticker = "600000" if code == "CH" else "1234"
        yahoo = to_yahoo(Symbol(ticker, code, AssetClass.STOCKS))
        assert yahoo.startswith(ticker.lstrip("0")), code
        assert exchange_of(Symbol(ticker, code, AssetClass.STOCKS)) is not None
    assert len({suffix for suffix in EXCHANGE_SUFFIXES.values() if suffix}) >= 30
    assert {"CUR", "COM", "IND", "GOV"} <= KNOWN_SUFFIXES


@pytest.mark.parametrize(
    ("ticker", "suffix", "asset_class", "expected"),
    [
        ("aapl", "US", AssetClass.STOCKS, "not allowed: 'alp'"),
        ("", "US", AssetClass.STOCKS, "must start and end"),
        ("AAPL", "us", AssetClass.STOCKS, "unknown suffix 'us'"),
        ("AAPL", "US", "stocks", "use an AssetClass member"),
        ("A" * 40, "US", AssetClass.STOCKS, "the limit is 32"),
        (1, "US", AssetClass.STOCKS, "must have str ticker and suffix"),
    ],
)
def test_constructor_applies_the_same_rules(
    ticker: object, suffix: str, asset_class: object, expected: str
) -> None:
    with pytest.raises(SymbolError, match=expected):
        Symbol(ticker, suffix, asset_class)  # type: ignore[arg-type]


def test_symbol_is_frozen_and_hashable() -> None:
    symbol = parse_symbol("AAPL")
    with pytest.raises(AttributeError):
        symbol.ticker = "MSFT"  # type: ignore[misc]
    assert {symbol, parse_symbol("aapl:us")} == {symbol}


def test_exported_members() -> None:
    assert set(symbols.__all__) == {
        "KNOWN_SUFFIXES",
        "MAX_SYMBOL_CHARS",
        "Symbol",
        "bloomberg_url",
        "exchange_of",
        "infer_asset_class",
        "parse_symbol",
        "to_yahoo",
    }
    for name in symbols.__all__:
        assert getattr(symbols, name) is not None
