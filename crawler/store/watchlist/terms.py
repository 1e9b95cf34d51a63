"""The watchlist's terms, written once for both watchlists (`Watchlist`, `RedisWatchlist`).

Symbols are stored exactly as given, in canonical form ("AAPL:US"): `canonical_symbol` checks
one (parsing and normalising them is `crawler.normalizer.symbols`' job, not ours). A watchlist
holds at most `MAX_SYMBOLS` (`_full` says so). `WatchlistTerms` writes `symbols()` and
`in` once above each backend's `items()` and `_holds`.
"""

from __future__ import annotations

from typing import Final, Protocol

from crawler.normalizer.schemas import AssetClass
from crawler.utils.exceptions import SymbolError, WatchlistFullError

__all__ = [
    "MAX_SYMBOLS",
    "WHAT",
    "HasCanonical",
    "WatchlistTerms",
    "canonical_symbol",
]

#: The most symbols a watchlist holds; each costs a request per refresh.
MAX_SYMBOLS: Final = 10_000
_MAX_SYMBOL_CHARS: Final = 64
WHAT: Final = "watchlist"


class HasCanonical(Protocol):
    """Anything with a canonical symbol string, e.g. `crawler.normalizer.symbols.Symbol`."""

    @property
    def canonical(self) -> str:
        """The symbol as stored, e.g. "AAPL:US"."""
        ...


def canonical_symbol(symbol: HasCanonical | str) -> str:
    """`symbol` as stored (stripped); SymbolError if it cannot be a canonical symbol."""
    text = symbol if isinstance(symbol, str) else symbol.canonical
    text = text.strip()
    if not text or len(text) > _MAX_SYMBOL_CHARS or any(ch.isspace() for ch in text):
        raise SymbolError(
            f"symbol {text!r} is not a canonical symbol (1-{_MAX_SYMBOL_CHARS} characters, "
            "no spaces), e.g. AAPL:US"
        )
    return text


class WatchlistTerms:
    """What both watchlists answer the same way, above `items()` and `_holds`."""

    def __init__(self, max_symbols: int) -> None:
        self._max_symbols = max_symbols

    def items(self) -> list[tuple[str, AssetClass]]:
        """(symbol, asset class) pairs in insertion order."""
        raise NotImplementedError

    def _holds(self, name: str) -> bool:
        """Whether the (stripped) symbol `name` is tracked."""
        raise NotImplementedError

    def _full(self, adding: str) -> WatchlistFullError:
        """The refusal of an add to a full watchlist."""
        return WatchlistFullError(
            f"watchlist is full ({self._max_symbols:,} symbols); remove some before adding {adding}"
        )

    def symbols(self) -> list[str]:
        """The symbols in insertion order."""
        return [name for name, _ in self.items()]

    def __contains__(self, symbol: object) -> bool:
        if not isinstance(symbol, str):
            symbol = getattr(symbol, "canonical", None)
            if not isinstance(symbol, str):
                return False
        return self._holds(symbol.strip())
