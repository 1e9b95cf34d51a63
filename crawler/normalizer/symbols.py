"""Symbols: Bloomberg's `TICKER:SUFFIX`, validated once, and their Yahoo equivalents.

Every symbol enters through `parse_symbol` (or the `Symbol` constructor, which applies the
same rules), so nothing downstream sees an empty, oversized or shell-hostile one.

    >>> s = parse_symbol(" brk/b ")
    >>> s.canonical, s.asset_class.value, to_yahoo(s)
    ('BRK/B:US', 'stocks', 'BRK-B')
    >>> to_yahoo(parse_symbol("5:HK")), to_yahoo(parse_symbol("XBTUSD:CUR"))
    ('0005.HK', 'BTC-USD')
    >>> bloomberg_url(parse_symbol("VOD:LN")), exchange_of(parse_symbol("7203:JT"))
    ('https://www.bloomberg.com/quote/VOD:LN', 'JP')
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from crawler.normalizer.exchanges import ASSET_SUFFIXES, EXCHANGES
from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.yahoo_map import (
    COMMODITY_FUTURES,
    CRYPTO_BASES,
    CURRENCY_SPECIALS,
    INDEX_TICKERS,
    TREASURY_TICKERS,
)
from crawler.utils.exceptions import SymbolError, UnmappableSymbolError

__all__ = [
    "KNOWN_SUFFIXES",
    "MAX_SYMBOL_CHARS",
    "Symbol",
    "bloomberg_url",
    "exchange_of",
    "infer_asset_class",
    "parse_symbol",
    "to_yahoo",
]

MAX_SYMBOL_CHARS: Final = 32
"""Longest accepted `TICKER:SUFFIX`; real Bloomberg symbols stay well under it."""

KNOWN_SUFFIXES: Final[frozenset[str]] = frozenset(EXCHANGES) | frozenset(ASSET_SUFFIXES)
"""Every suffix `parse_symbol` accepts: the exchange codes plus CUR, COM, IND and GOV."""

_SUFFIX_EXAMPLES: Final = "US, LN, GR, JP, HK, CN, AU, CUR, COM, IND, GOV"
_TICKER_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./-&")
# Punctuation only between letters/digits (M&M, BRK/B, TA-35): this keeps "../", "//" and a
# trailing "-" out of the Bloomberg URL path and the cache keys built from the canonical form.
# One trailing "/" is Bloomberg's own spelling of some London lines (BP/:LN, RR/:LN).
_TICKER_SHAPE: Final = re.compile(r"[A-Z0-9](?:[./&-]?[A-Z0-9])*/?\Z")
_CRYPTO_QUOTE: Final = re.compile(r"[A-Z]{3}\Z")
_FX_PAIR: Final = re.compile(r"[A-Z]{6}\Z")
# Only ASCII whitespace is stripped: str.strip() would also eat control characters such as
# \x1c-\x1f, which must be reported, not silently dropped.
_WHITESPACE: Final = " \t\r\n\f\v"
_SHOWN_CHARS: Final = 40
_SHOWN_ESCAPED_CHARS: Final = 60
_BLOOMBERG_QUOTE_URL: Final = "https://www.bloomberg.com/quote/"


@dataclass(frozen=True, slots=True)
class Symbol:
    """A validated Bloomberg symbol: upper-case `ticker`, a known `suffix`, its asset class.

    Build one with `parse_symbol`; the constructor re-checks the parts, so a hand-made
    `Symbol("aapl", "US", ...)` raises SymbolError instead of travelling on.
    """

    ticker: str
    suffix: str
    asset_class: AssetClass

    def __post_init__(self) -> None:
        shown = _show(f"{self.ticker}:{self.suffix}")
        if not isinstance(self.ticker, str) or not isinstance(self.suffix, str):
            raise SymbolError(f"symbol {shown} must have str ticker and suffix")
        if not isinstance(self.asset_class, AssetClass):
            raise SymbolError(
                f"symbol {shown} has asset class {self.asset_class!r}; use an AssetClass member"
            )
        _check_length(self.canonical, shown)
        _check_parts(self.ticker, self.suffix, shown)

    @property
    def canonical(self) -> str:
        """Bloomberg's `TICKER:SUFFIX`, e.g. "AAPL:US"; the key for caches and history."""
        return f"{self.ticker}:{self.suffix}"

    def __str__(self) -> str:
        return self.canonical


def parse_symbol(text: str, asset_class: AssetClass | None = None) -> Symbol:
    """Parse user text into a `Symbol`; raises SymbolError with a one-line message.

    A bare ticker means a US listing ("AAPL" → AAPL:US); case and surrounding whitespace do
    not matter. `asset_class` overrides the class inferred from the suffix, e.g. an ETF
    tracked as an index: `parse_symbol("SPY", AssetClass.INDICES)`.
    """
    if not isinstance(text, str):
        raise SymbolError(f"symbol must be text, got {type(text).__name__}")
    # Symbols are parsed on every cached quote served; a watchlist repeats the same few.
    return _parse_symbol_cached(text, asset_class)


@functools.lru_cache(maxsize=4096)
def _parse_symbol_cached(text: str, asset_class: AssetClass | None) -> Symbol:
    if not isinstance(text, str):
        raise SymbolError(f"symbol must be text, got {type(text).__name__}")
    stripped = text.strip(_WHITESPACE)
    shown = _show(text)
    if not stripped:
        raise SymbolError("empty symbol; give a Bloomberg ticker such as AAPL:US or VOD:LN")
    _check_length(stripped, shown)
    if "\x00" in stripped:
        raise SymbolError(f"symbol {shown} contains a NUL byte; remove it")
    if not stripped.isascii():
        raise SymbolError(
            f"symbol {shown} contains non-ASCII characters; use plain ASCII, e.g. 7203:JP"
        )
    upper = stripped.upper()
    colons = upper.count(":")
    if colons > 1:
        raise SymbolError(
            f"symbol {shown} has {colons} colons; write TICKER:SUFFIX with one, e.g. VOD:LN"
        )
    ticker, _, suffix = upper.partition(":")
    if not ticker:
        raise SymbolError(f"symbol {shown} has no ticker before ':'; write e.g. AAPL:US")
    if colons and not suffix:
        raise SymbolError(
            f"symbol {shown} has no suffix after ':'; write e.g. AAPL:US, or drop the ':' "
            "for a US listing"
        )
    suffix = suffix or "US"
    _check_parts(ticker, suffix, shown)
    return Symbol(ticker, suffix, asset_class or infer_asset_class(suffix, ticker))


def infer_asset_class(suffix: str, ticker: str = "") -> AssetClass:
    """The asset class a suffix implies: CUR → FOREX (CRYPTO for pairs such as XBTUSD),
    COM → COMMODITIES, IND → INDICES, GOV → BONDS, an exchange code → STOCKS.

    Raises SymbolError for an unknown suffix.
    """
    code = suffix.strip(_WHITESPACE).upper()
    if code == "CUR" and _crypto_pair(ticker.strip(_WHITESPACE).upper()) is not None:
        return AssetClass.CRYPTO
    if code in ASSET_SUFFIXES:
        return ASSET_SUFFIXES[code]
    if code in EXCHANGES:
        return AssetClass.STOCKS
    raise SymbolError(f"unknown suffix {_show(suffix)}; use one of {_SUFFIX_EXAMPLES}, ...")


def to_yahoo(symbol: Symbol) -> str:
    """The Yahoo Finance ticker for `symbol`, e.g. VOD:LN → "VOD.L", GC1:COM → "GC=F".

    Raises UnmappableSymbolError when Yahoo has no equivalent we know of; the caller skips
    yfinance rather than fetch a guess that may be another instrument.
    """
    ticker, suffix = symbol.ticker, symbol.suffix
    if suffix == "CUR":
        return _yahoo_currency(symbol)
    tables = {"COM": COMMODITY_FUTURES, "IND": INDEX_TICKERS, "GOV": TREASURY_TICKERS}
    if suffix in tables:
        if ticker in tables[suffix]:
            return tables[suffix][ticker]
        why = "only US Treasuries have one" if suffix == "GOV" else f"not in the {suffix} table"
        raise _unmappable(symbol, why)
    return _yahoo_listing(symbol)


def bloomberg_url(symbol: Symbol) -> str:
    """The Bloomberg quote page, e.g. "https://www.bloomberg.com/quote/AAPL:US"."""
    # The canonical form is already URL-safe: validation leaves only A-Z 0-9 . / - & and
    # the colon, and Bloomberg's own URLs keep the slash of share classes (BRK/B:US).
    return _BLOOMBERG_QUOTE_URL + symbol.canonical


def exchange_of(symbol: Symbol) -> str | None:
    """The market a listing trades on, as Bloomberg's composite code ("US", "LN", "JP", ...).

    Single-venue codes fold into their market (UN/UW → US, GY → GR, JT → JP), since venues of
    one market share its hours. None for currencies, commodities, indices and bonds. The
    suffix decides, not the asset class, so an ETF tracked as an index still has an exchange.
    """
    exchange = EXCHANGES.get(symbol.suffix)
    return None if exchange is None else exchange.composite


def _yahoo_currency(symbol: Symbol) -> str:
    pair = _crypto_pair(symbol.ticker)
    if pair is not None:
        return f"{pair[0]}-{pair[1]}"
    if symbol.ticker in CURRENCY_SPECIALS:
        return CURRENCY_SPECIALS[symbol.ticker]
    if _FX_PAIR.match(symbol.ticker):
        return f"{symbol.ticker}=X"
    raise _unmappable(symbol, "not a six-letter currency pair such as EURUSD")


def _yahoo_listing(symbol: Symbol) -> str:
    # Yahoo writes share classes with a hyphen (BRK-B, BT-A.L) and keeps the dot for its
    # own exchange suffix, so both separators Bloomberg may use become "-".
    # BP/:LN is plain BP.L at Yahoo: the trailing slash is Bloomberg's alone.
    local = symbol.ticker.rstrip("/").replace("/", "-").replace(".", "-")
    if symbol.suffix == "HK":
        if not symbol.ticker.isdigit():
            raise _unmappable(symbol, "Hong Kong tickers are numeric, e.g. 5:HK")
        # Yahoo pads Hong Kong codes to four digits: 5 → 0005.HK, 700 → 0700.HK.
        return (symbol.ticker.lstrip("0") or "0").zfill(4) + ".HK"
    if symbol.suffix == "CH":
        return symbol.ticker + _china_suffix(symbol)
    suffix = EXCHANGES[symbol.suffix].yahoo
    if suffix is None:
        raise _unmappable(symbol, f"Yahoo has no data for the {symbol.suffix} exchange")
    return local + suffix


def _china_suffix(symbol: Symbol) -> str:
    # Mainland codes carry their exchange in the first digit: Shanghai 6xxxxx (A) and
    # 9xxxxx (B); Shenzhen 0xxxxx/3xxxxx (A) and 2xxxxx (B).
    code = symbol.ticker
    if len(code) == 6 and code.isdigit():
        if code[0] in "69":
            return ".SS"
        if code[0] in "023":
            return ".SZ"
    raise _unmappable(symbol, "CH tickers are six-digit Shanghai (6...) or Shenzhen (0/3...)")


def _crypto_pair(ticker: str) -> tuple[str, str] | None:
    """(Yahoo base, quote currency) for a crypto pair such as XBTUSD, else None."""
    for base, yahoo_base in CRYPTO_BASES.items():
        quote = ticker[len(base) :]
        if ticker.startswith(base) and _CRYPTO_QUOTE.match(quote):
            return yahoo_base, quote
    return None


def _check_length(text: str, shown: str) -> None:
    if len(text) > MAX_SYMBOL_CHARS:
        raise SymbolError(
            f"symbol {shown} is {len(text)} characters; the limit is {MAX_SYMBOL_CHARS}"
        )


def _check_parts(ticker: str, suffix: str, shown: str) -> None:
    """Raise SymbolError unless `ticker` and `suffix` are normalised and allowed."""
    if " " in ticker:
        raise SymbolError(
            f"ticker in {shown} contains a space; space-padded Bloomberg tickers such as "
            "'C 1' are not supported, write the ticker without spaces"
        )
    bad = sorted(set(ticker) - _TICKER_CHARS)
    if "^" in bad or "=" in bad:
        raise SymbolError(
            f"symbol {shown} looks like a Yahoo symbol; use the Bloomberg form, "
            "e.g. SPX:IND for ^GSPC or EURUSD:CUR for EURUSD=X"
        )
    if bad:
        raise SymbolError(
            f"ticker in {shown} has characters not allowed: {''.join(bad)!a}; "
            "use only A-Z 0-9 . / - &"
        )
    if not _TICKER_SHAPE.match(ticker):
        raise SymbolError(
            f"ticker in {shown} must start and end with a letter or digit, with single "
            ". / - & between them, e.g. BRK/B:US"
        )
    if suffix not in KNOWN_SUFFIXES:
        raise SymbolError(
            f"unknown suffix {_show(suffix)} in {shown}; use one of {_SUFFIX_EXAMPLES}, ..."
        )


def _unmappable(symbol: Symbol, why: str) -> UnmappableSymbolError:
    return UnmappableSymbolError(
        f"no Yahoo equivalent for {symbol.canonical} ({why}); yfinance is skipped for it"
    )


def _show(text: str) -> str:
    """`ascii()` of untrusted text, cut short: one line, no control or non-ASCII characters."""
    # Cut by the escaped length: one astral character escapes to ten ASCII characters.
    kept = min(len(text), _SHOWN_CHARS)
    while len(ascii(text[:kept])) > _SHOWN_ESCAPED_CHARS:
        kept -= 1
    shown = ascii(text[:kept])
    return shown if kept == len(text) else f"{shown}... ({len(text)} chars)"
