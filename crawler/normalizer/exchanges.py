"""The one table of Bloomberg exchange codes: Yahoo suffix, exchange calendar, market, class.

Data only. `crawler.normalizer.symbols` (parsing, `to_yahoo`) and `crawler.markets.calendars`
(market hours) both read this table, so the suffixes they accept and what they do with them
cannot disagree. Each row is one Bloomberg exchange code:

    code       Bloomberg's code, the suffix of "VOD:LN"
    mic        the venue's ISO 10383 MIC (how yfinance keys its own suffix table)
    yahoo      Yahoo's ticker suffix with its dot; "" for US listings; None when Yahoo has no
               data for the venue (yfinance is then skipped: no guessing at tickers)
    calendar   the exchange_calendars name whose sessions apply; None when it has none
    composite  the market's composite code: venues of one market share its hours

The Yahoo suffixes were checked against yfinance's own MIC table (`yfinance.const.
_MIC_TO_YAHOO_SUFFIX`, a test holds them equal): Frankfurt is `.F` (Xetra `.DE`), Düsseldorf
`.DU`, London's international order book `.IL`; Moscow (MISX) and Luxembourg have no Yahoo
data. The yellow-key suffixes (CUR, COM, IND, GOV) are not exchanges: `ASSET_SUFFIXES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from crawler.normalizer.schemas import AssetClass

__all__ = [
    "ASSET_SUFFIXES",
    "EXCHANGES",
    "US_EXCHANGES",
    "Exchange",
    "asset_class_of_suffix",
    "exchange_for_yahoo_suffix",
]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One Bloomberg exchange code (see the module docstring for the fields)."""

    code: str
    mic: str
    yahoo: str | None
    calendar: str | None
    composite: str


_ROWS: Final[tuple[tuple[str, str, str | None, str | None, str], ...]] = (
    # code  mic     yahoo   calendar  composite
    # United States: the composite and its venues all quote without a suffix, in NYSE hours.
    ("US", "XNYS", "", "XNYS", "US"),
    ("UN", "XNYS", "", "XNYS", "US"),
    ("UW", "XNAS", "", "XNYS", "US"),
    ("UQ", "XNAS", "", "XNYS", "US"),
    ("UR", "XNAS", "", "XNYS", "US"),
    ("UA", "XASE", "", "XNYS", "US"),
    ("UP", "ARCX", "", "XNYS", "US"),
    ("UV", "OTCM", "", "XNYS", "US"),
    ("UF", "BATS", "", "XNYS", "US"),
    # Europe
    ("LN", "XLON", ".L", "XLON", "LN"),
    ("LI", "ILSE", ".IL", "XLON", "LN"),
    ("GR", "XETR", ".DE", "XETR", "GR"),
    ("GY", "XETR", ".DE", "XETR", "GR"),
    ("GF", "XFRA", ".F", "XFRA", "GR"),
    ("GD", "XDUS", ".DU", "XDUS", "GR"),
    ("FP", "XPAR", ".PA", "XPAR", "FP"),
    ("NA", "XAMS", ".AS", "XAMS", "NA"),
    ("BB", "XBRU", ".BR", "XBRU", "BB"),
    ("SW", "XSWX", ".SW", "XSWX", "SW"),
    ("SE", "XSWX", ".SW", "XSWX", "SW"),
    ("VX", "XSWX", ".SW", "XSWX", "SW"),
    ("IM", "MTAA", ".MI", "XMIL", "IM"),
    ("SM", "BMEX", ".MC", "XMAD", "SM"),
    ("SS", "XSTO", ".ST", "XSTO", "SS"),
    ("NO", "XOSL", ".OL", "XOSL", "NO"),
    ("DC", "XCSE", ".CO", "XCSE", "DC"),
    ("FH", "XHEL", ".HE", "XHEL", "FH"),
    ("ID", "XDUB", ".IR", "XDUB", "ID"),
    ("PL", "XLIS", ".LS", "XLIS", "PL"),
    ("AV", "XVIE", ".VI", "XWBO", "AV"),
    ("PW", "XWAR", ".WA", "XWAR", "PW"),
    ("GA", "XATH", ".AT", "ASEX", "GA"),
    ("HB", "XBUD", ".BD", "XBUD", "HB"),
    ("CP", "XPRA", ".PR", "XPRA", "CP"),
    ("TI", "XIST", ".IS", "XIST", "TI"),
    ("RM", "MISX", None, "XMOS", "RM"),
    ("LX", "XLUX", None, "XLUX", "LX"),
    # Asia-Pacific. CH picks .SS or .SZ from the code (symbols.py); HK pads to four digits.
    ("JP", "XTKS", ".T", "XTKS", "JP"),
    ("JT", "XTKS", ".T", "XTKS", "JP"),
    ("HK", "XHKG", ".HK", "XHKG", "HK"),
    ("CH", "XSHG", "", "XSHG", "CH"),
    ("CG", "XSHG", ".SS", "XSHG", "CH"),
    ("CS", "XSHE", ".SZ", "XSHG", "CH"),
    ("KS", "XKRX", ".KS", "XKRX", "KS"),
    ("KP", "XKRX", ".KS", "XKRX", "KS"),
    ("KQ", "XKOS", ".KQ", "XKRX", "KQ"),
    ("TT", "XTAI", ".TW", "XTAI", "TT"),
    # exchange_calendars has no NSE calendar; BSE keeps the same hours and holidays.
    ("IN", "XNSE", ".NS", "XBOM", "IN"),
    ("IS", "XNSE", ".NS", "XBOM", "IN"),
    ("IB", "XBOM", ".BO", "XBOM", "IN"),
    ("AU", "XASX", ".AX", "XASX", "AU"),
    ("AT", "XASX", ".AX", "XASX", "AU"),
    ("NZ", "XNZE", ".NZ", "XNZE", "NZ"),
    ("SP", "XSES", ".SI", "XSES", "SP"),
    ("MK", "XKLS", ".KL", "XKLS", "MK"),
    ("TB", "XBKK", ".BK", "XBKK", "TB"),
    ("IJ", "XIDX", ".JK", "XIDX", "IJ"),
    ("PM", "XPHS", ".PS", "XPHS", "PM"),
    # Americas
    ("CN", "XTSE", ".TO", "XTSE", "CN"),
    ("CT", "XTSE", ".TO", "XTSE", "CN"),
    ("CV", "XTSX", ".V", "XTSX", "CV"),
    ("BZ", "BVMF", ".SA", "BVMF", "BZ"),
    ("BS", "BVMF", ".SA", "BVMF", "BZ"),
    ("MM", "XMEX", ".MX", "XMEX", "MM"),
    ("AR", "XBUE", ".BA", "XBUE", "AR"),
    ("CI", "XSGO", ".SN", "XSGO", "CI"),
    # Middle East and Africa (exchange_calendars has no Qatar or Egypt calendar)
    ("SJ", "XJSE", ".JO", "XJSE", "SJ"),
    ("AB", "XSAU", ".SR", "XSAU", "AB"),
    ("QD", "XQAT", ".QA", None, "QD"),
    ("IT", "XTAE", ".TA", "XTAE", "IT"),
    ("EY", "XCAI", ".CA", None, "EY"),
)

EXCHANGES: Final[Mapping[str, Exchange]] = MappingProxyType(
    {row[0]: Exchange(*row) for row in _ROWS}
)
"""Every Bloomberg exchange code `parse_symbol` accepts, by code."""

US_EXCHANGES: Final[frozenset[str]] = frozenset(
    code for code, exchange in EXCHANGES.items() if exchange.composite == "US"
)
"""The US composite and its venues (NYSE, Nasdaq tiers, NYSE American, Arca, OTC, Cboe BZX)."""

ASSET_SUFFIXES: Final[Mapping[str, AssetClass]] = MappingProxyType(
    {
        "CUR": AssetClass.FOREX,  # CRYPTO for crypto pairs (see symbols.infer_asset_class)
        "COM": AssetClass.COMMODITIES,
        "IND": AssetClass.INDICES,
        "GOV": AssetClass.BONDS,
    }
)
"""Bloomberg's yellow-key suffixes that are not exchanges, and the class each implies."""


def asset_class_of_suffix(suffix: str) -> AssetClass | None:
    """The class a suffix implies (an exchange code: STOCKS); None for an unknown suffix."""
    if suffix in ASSET_SUFFIXES:
        return ASSET_SUFFIXES[suffix]
    return AssetClass.STOCKS if suffix in EXCHANGES else None


# The code a Yahoo suffix stands for: the first row with it (composites come first).
_BY_YAHOO: Final[Mapping[str, str]] = MappingProxyType(
    {
        exchange.yahoo: code
        for code, exchange in reversed(list(EXCHANGES.items()))
        if exchange.yahoo and exchange.code != "CH"
    }
)


def exchange_for_yahoo_suffix(suffix: str) -> str | None:
    """The Bloomberg code of a Yahoo suffix (".L" → "LN", ".F" → "GF", "" → "US"); None
    for a suffix no row has."""
    if suffix == "":
        return "US"
    return _BY_YAHOO.get(suffix)
