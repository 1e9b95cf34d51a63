"""The Bloomberg → Yahoo tables: exchange codes, indices, futures, treasuries, crypto.

Data only; `crawler.normalizer.symbols` holds the rules that use it. A symbol missing from
these tables is not guessed at: `to_yahoo` raises `UnmappableSymbolError` and yfinance is
skipped for it, because a wrong Yahoo ticker returns a real price for the wrong instrument.
"""

from __future__ import annotations

from typing import Final

from crawler.normalizer.exchanges import EXCHANGES, US_EXCHANGES

__all__ = [
    "COMMODITY_FUTURES",
    "COMPOSITE_EXCHANGE",
    "CRYPTO_BASES",
    "CURRENCY_SPECIALS",
    "EXCHANGE_SUFFIXES",
    "INDEX_TICKERS",
    "TREASURY_TICKERS",
    "US_EXCHANGES",
]

# Derived from the one exchange table (crawler.normalizer.exchanges); kept here under their
# old names for the code that maps symbols. Bloomberg exchange code → Yahoo ticker suffix, for
# the venues Yahoo has data for ("" means no suffix: US listings).
EXCHANGE_SUFFIXES: Final[dict[str, str]] = {
    code: exchange.yahoo for code, exchange in EXCHANGES.items() if exchange.yahoo is not None
}
# Single-venue code → the composite code of its market (venues of one market share its hours).
COMPOSITE_EXCHANGE: Final[dict[str, str]] = {
    code: exchange.composite for code, exchange in EXCHANGES.items() if exchange.composite != code
}

# Bloomberg `:IND` ticker → Yahoo symbol.
INDEX_TICKERS: Final[dict[str, str]] = {
    # United States
    "SPX": "^GSPC",
    "INDU": "^DJI",
    "CCMP": "^IXIC",
    "NDX": "^NDX",
    "RTY": "^RUT",
    "VIX": "^VIX",
    "TRAN": "^DJT",
    # Europe
    "UKX": "^FTSE",
    "DAX": "^GDAXI",
    "CAC": "^FCHI",
    "SX5E": "^STOXX50E",
    "SXXP": "^STOXX",
    "AEX": "^AEX",
    "BEL20": "^BFX",
    "SMI": "^SSMI",
    "IBEX": "^IBEX",
    "FTSEMIB": "FTSEMIB.MI",
    "ATX": "^ATX",
    "OMX": "^OMX",
    "XU100": "XU100.IS",
    # Asia-Pacific
    "NKY": "^N225",
    "HSI": "^HSI",
    "HSCEI": "^HSCE",
    "SHCOMP": "000001.SS",
    "KOSPI": "^KS11",
    "KOSDAQ": "^KQ11",
    "TWSE": "^TWII",
    "AS51": "^AXJO",
    "SENSEX": "^BSESN",
    "NIFTY": "^NSEI",
    "STI": "^STI",
    "FBMKLCI": "^KLSE",
    "JCI": "^JKSE",
    "NZSE50FG": "^NZ50",
    # Americas
    "SPTSX": "^GSPTSE",
    "IBOV": "^BVSP",
    "MEXBOL": "^MXX",
    "MERVAL": "^MERV",
    # Middle East
    "TA-35": "TA35.TA",
    "SASEIDX": "^TASI.SR",
    # Index futures, front month (Bloomberg files them under :IND)
    "ES1": "ES=F",
    "NQ1": "NQ=F",
    "DM1": "YM=F",
    "RTY1": "RTY=F",
    # US Treasury yields in their index form (the same Yahoo series as the :GOV tickers)
    "USGG3M": "^IRX",
    "USGG5YR": "^FVX",
    "USGG10YR": "^TNX",
    "USGG30YR": "^TYX",
}

# Bloomberg `:COM` front-month generic → Yahoo continuous future. Grains (`C 1`, `S 1`,
# `W 1`) are left out: Bloomberg pads them with a space, which parse_symbol refuses.
COMMODITY_FUTURES: Final[dict[str, str]] = {
    "CL1": "CL=F",  # WTI crude
    "CO1": "BZ=F",  # Brent crude
    "NG1": "NG=F",  # natural gas
    "HO1": "HO=F",  # heating oil
    "XB1": "RB=F",  # RBOB gasoline
    "GC1": "GC=F",  # gold
    "SI1": "SI=F",  # silver
    "HG1": "HG=F",  # copper
    "PL1": "PL=F",  # platinum
    "PA1": "PA=F",  # palladium
    "KC1": "KC=F",  # coffee
    "CC1": "CC=F",  # cocoa
    "SB1": "SB=F",  # sugar no. 11
    "CT1": "CT=F",  # cotton
    "LC1": "LE=F",  # live cattle
    "LH1": "HE=F",  # lean hogs
    "BO1": "ZL=F",  # soybean oil
    "SM1": "ZM=F",  # soybean meal
}

# Bloomberg `:GOV` ticker → Yahoo yield index. Only US Treasuries have one.
TREASURY_TICKERS: Final[dict[str, str]] = {
    "GB3": "^IRX",
    "GT5": "^FVX",
    "GT10": "^TNX",
    "GT30": "^TYX",
}

# `:CUR` tickers that are not six-letter pairs.
CURRENCY_SPECIALS: Final[dict[str, str]] = {
    "DXY": "DX-Y.NYB",  # the ICE dollar index
}

# Crypto base code as Bloomberg writes it → Yahoo's code. Bloomberg uses X-prefixed codes
# for some (XBT bitcoin, XET ether); the plain codes are accepted too.
CRYPTO_BASES: Final[dict[str, str]] = {
    "XBT": "BTC",
    "BTC": "BTC",
    "XET": "ETH",
    "ETH": "ETH",
    "XRP": "XRP",
    "LTC": "LTC",
    "BCH": "BCH",
    "ADA": "ADA",
    "SOL": "SOL",
    "DOT": "DOT",
    "XLM": "XLM",
    "XMR": "XMR",
    "EOS": "EOS",
    "DOGE": "DOGE",
    "LINK": "LINK",
    "AVAX": "AVAX",
    "BNB": "BNB",
    # Four letters: a six-letter FX pair (USDCAD, USDTRY) can never match them.
    "USDT": "USDT",
    "USDC": "USDC",
}
