"""Symbols as people type them: Yahoo's spellings translated, one instrument one spelling.

A user who writes `VOD.L` means Vodafone in London, not a US stock called "VOD.L" that Bright
Data is paid to look up and never finds. `from_yahoo` turns Yahoo-form input into the
Bloomberg form it means; `read_symbol` is what the CLI and the control API call for anything a
person typed, and says in one line what it changed.

    >>> from_yahoo("VOD.L"), from_yahoo("BTC-USD"), from_yahoo("^GSPC"), from_yahoo("GC=F")
    ('VOD:LN', 'XBTUSD:CUR', 'SPX:IND', 'GC1:COM')
    >>> from_yahoo("AAPL") is None, from_yahoo("VOD:LN") is None
    (True, True)
    >>> read_symbol("brk.b").notice
    'BRK.B is how Yahoo writes it; using BRK/B:US'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import Symbol, infer_asset_class, parse_symbol
from crawler.normalizer.yahoo_map import (
    COMMODITY_FUTURES,
    CRYPTO_BASES,
    CURRENCY_SPECIALS,
    EXCHANGE_SUFFIXES,
    INDEX_TICKERS,
    TREASURY_TICKERS,
)
from crawler.utils.exceptions import SymbolError

__all__ = ["UserSymbol", "from_yahoo", "read_symbol"]


def _first_key_by_value(table: dict[str, str]) -> dict[str, str]:
    """value -> the first key holding it (tables list the composite/preferred code first)."""
    reverse: dict[str, str] = {}
    for key, value in table.items():
        reverse.setdefault(value, key)
    return reverse


# Yahoo exchange suffix (".L") -> Bloomberg composite code ("LN"). Mainland China's two
# exchanges fold into CH, the code whose Yahoo suffix is picked from the ticker.
_EXCHANGE_BY_SUFFIX: Final = {
    **_first_key_by_value({k: v for k, v in EXCHANGE_SUFFIXES.items() if v}),
    ".SS": "CH",
    ".SZ": "CH",
}
# Yahoo symbol -> Bloomberg symbol for the tables' whole symbols. Treasuries before the index
# aliases of the same Yahoo series (^TNX is GT10:GOV, not USGG10YR:IND).
_WHOLE: Final[dict[str, str]] = {
    **{yahoo: f"{bbg}:COM" for yahoo, bbg in _first_key_by_value(COMMODITY_FUTURES).items()},
    **{yahoo: f"{bbg}:IND" for yahoo, bbg in _first_key_by_value(INDEX_TICKERS).items()},
    **{yahoo: f"{bbg}:GOV" for yahoo, bbg in _first_key_by_value(TREASURY_TICKERS).items()},
    **{yahoo: f"{bbg}:CUR" for yahoo, bbg in _first_key_by_value(CURRENCY_SPECIALS).items()},
}
# Yahoo crypto code -> Bloomberg's (XBT for BTC, XET for ETH: the table lists them first).
_CRYPTO_BY_YAHOO: Final = _first_key_by_value(CRYPTO_BASES)
_CRYPTO_PAIR: Final = re.compile(r"([A-Z]{2,5})-([A-Z]{3})\Z")
_FX_PAIR: Final = re.compile(r"([A-Z]{6})=X\Z")
_SHARE_CLASS: Final = re.compile(r"([A-Z0-9]+)[-.]([A-Z]{1,2})\Z")
#: TICKER.XYZ with a suffix of three or four letters that no exchange has (FOO.XYZ): refused.
_UNKNOWN_SUFFIX: Final = re.compile(r"([A-Z0-9][A-Z0-9-]*)(\.[A-Z]{3,4})\Z")
_LOCAL: Final = re.compile(r"([A-Z0-9][A-Z0-9-]*)(\.[A-Z]{1,3})\Z")

# Which asset classes each kind of suffix can mean; anything else contradicts the symbol.
_ALLOWED_CLASSES: Final[dict[AssetClass, frozenset[AssetClass]]] = {
    AssetClass.CRYPTO: frozenset({AssetClass.CRYPTO}),
    AssetClass.FOREX: frozenset({AssetClass.FOREX}),
    AssetClass.COMMODITIES: frozenset({AssetClass.COMMODITIES}),
    AssetClass.INDICES: frozenset({AssetClass.INDICES}),
    AssetClass.BONDS: frozenset({AssetClass.BONDS}),
    # A listing may be a fund tracking an index, a commodity or bonds; never a currency.
    AssetClass.STOCKS: frozenset(
        {AssetClass.STOCKS, AssetClass.INDICES, AssetClass.COMMODITIES, AssetClass.BONDS}
    ),
}


@dataclass(frozen=True, slots=True)
class UserSymbol:
    """A symbol read from user input, and the one-line notice of what was changed (if any)."""

    symbol: Symbol
    notice: str | None = None


def from_yahoo(text: str) -> str | None:
    """The Bloomberg symbol meant by Yahoo-form `text`, or None when `text` is not Yahoo's.

    Only text without a colon is considered: `TICKER:SUFFIX` is already Bloomberg's form.
    """
    upper = text.strip().upper()
    if not upper or ":" in upper:
        return None
    if upper in _WHOLE:
        return _WHOLE[upper]
    fx = _FX_PAIR.match(upper)
    if fx:
        return f"{fx.group(1)}:CUR"
    crypto = _CRYPTO_PAIR.match(upper)
    if crypto and crypto.group(1) in _CRYPTO_BY_YAHOO:
        return f"{_CRYPTO_BY_YAHOO[crypto.group(1)]}{crypto.group(2)}:CUR"
    local = _LOCAL.match(upper)
    if local and local.group(2) in _EXCHANGE_BY_SUFFIX:
        code = _EXCHANGE_BY_SUFFIX[local.group(2)]
        ticker = local.group(1)
        if code == "HK":
            ticker = ticker.lstrip("0") or "0"  # Yahoo pads Hong Kong codes: 0005.HK is 5:HK
        return f"{ticker.replace('-', '/')}:{code}"
    share = _SHARE_CLASS.match(upper)
    if share:
        return f"{share.group(1)}/{share.group(2)}:US"
    return None


def read_symbol(text: str, asset_class: AssetClass | None = None) -> UserSymbol:
    """Parse a symbol a person typed: Yahoo's form translated, Bloomberg's spellings of one
    instrument folded into one (BTCUSD:CUR is XBTUSD:CUR), and an `asset_class` that
    contradicts the symbol refused. Raises SymbolError with a one-line message."""
    if not isinstance(text, str):
        raise SymbolError(f"symbol must be text, got {type(text).__name__}")
    shown = text.strip().upper()
    translated = from_yahoo(text)
    unknown_suffix = _UNKNOWN_SUFFIX.match(shown) if translated is None else None
    if unknown_suffix:
        # Yahoo's TICKER.SUFFIX form with a suffix we do not know: taking it for a US ticker
        # "FOO.XYZ:US" (as before) silently tracked something that does not exist.
        known = ", ".join(sorted(_EXCHANGE_BY_SUFFIX)[:8])
        raise SymbolError(
            f"{shown}: {unknown_suffix.group(2)} is not a Yahoo exchange suffix crawler knows "
            f"({known}, ...); write Bloomberg's TICKER:SUFFIX, e.g. "
            f"{unknown_suffix.group(1)}:US or {unknown_suffix.group(1)}:LN"
        )
    symbol = parse_symbol(translated or text)
    folded = _fold_crypto(symbol)
    _check_class(folded, asset_class, shown)
    final = parse_symbol(folded.canonical, asset_class) if asset_class else folded
    if translated is not None:
        return UserSymbol(final, f"{shown} is how Yahoo writes it; using {final.canonical}")
    if folded.canonical != symbol.canonical:
        return UserSymbol(final, f"{shown} is {final.canonical} on Bloomberg; using that")
    return UserSymbol(final)


def _fold_crypto(symbol: Symbol) -> Symbol:
    if symbol.asset_class is not AssetClass.CRYPTO:
        return symbol
    for bloomberg, yahoo in CRYPTO_BASES.items():
        if symbol.ticker.startswith(yahoo) and bloomberg != yahoo:
            preferred = _CRYPTO_BY_YAHOO[yahoo]
            if preferred != yahoo:
                return parse_symbol(preferred + symbol.ticker[len(yahoo) :] + ":CUR")
    return symbol


def _check_class(symbol: Symbol, asset_class: AssetClass | None, shown: str) -> None:
    if asset_class is None:
        return
    implied = infer_asset_class(symbol.suffix, symbol.ticker)
    if asset_class not in _ALLOWED_CLASSES[implied]:
        raise SymbolError(
            f"--asset-class {asset_class.value} contradicts {symbol.canonical} "
            f"({shown}), which is {implied.value}; drop --asset-class or fix the symbol"
        )
