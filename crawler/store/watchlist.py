"""The watchlist: the symbols the daemon tracks, in the order they were added.

One JSON record (`items`: a list of ``[canonical, asset_class]``) in a JSON-only diskcache,
changed only inside a transaction (SQLite ``BEGIN IMMEDIATE``), so the daemon and a CLI adding
symbols at the same moment both keep their additions.

Symbols are stored exactly as given, in canonical form ("AAPL:US"); parsing and normalising
them is `crawler.normalizer.symbols`' job, not ours.

    >>> import tempfile
    >>> watchlist = Watchlist(Path(tempfile.mkdtemp()))
    >>> watchlist.add("AAPL:US", AssetClass.STOCKS), watchlist.add("AAPL:US", AssetClass.STOCKS)
    (True, False)
    >>> watchlist.items()
    [('AAPL:US', <AssetClass.STOCKS: 'stocks'>)]
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Protocol

import diskcache

from crawler.normalizer.schemas import AssetClass
from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.utils.exceptions import StorageError, SymbolError

__all__ = ["MAX_SYMBOLS", "HasCanonical", "Watchlist", "canonical_symbol"]

#: The most symbols a watchlist holds; each costs a request per refresh.
MAX_SYMBOLS: Final = 10_000
_MAX_SYMBOL_CHARS: Final = 64
_KEY: Final = "items"
_WHAT: Final = "watchlist"


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


class Watchlist:
    """Tracked symbols persisted under `directory`; safe for several threads and processes."""

    def __init__(self, directory: Path, max_symbols: int = MAX_SYMBOLS) -> None:
        self._directory = Path(directory)
        self._max_symbols = max_symbols
        self._cache: diskcache.Cache = open_store(self._directory, _WHAT)

    def add(self, symbol: HasCanonical | str, asset_class: AssetClass) -> bool:
        """Append `symbol`; False if it is already present (its asset class is kept).

        Raises StorageError when the watchlist already holds `max_symbols` (default
        MAX_SYMBOLS) symbols.
        """
        canonical = canonical_symbol(symbol)
        asset = AssetClass(asset_class)
        with storage_errors(_WHAT, self._directory), self._cache.transact():
            items = self._load()
            if any(name == canonical for name, _ in items):
                return False
            if len(items) >= self._max_symbols:
                raise StorageError(
                    f"watchlist is full ({self._max_symbols} symbols); remove some before adding "
                    f"{canonical}"
                )
            items.append((canonical, asset))
            self._save(items)
        return True

    def remove(self, symbol: HasCanonical | str) -> bool:
        """Drop `symbol`; False if it was not there."""
        canonical = canonical_symbol(symbol)
        with storage_errors(_WHAT, self._directory), self._cache.transact():
            items = self._load()
            kept = [item for item in items if item[0] != canonical]
            if len(kept) == len(items):
                return False
            self._save(kept)
        return True

    def items(self) -> list[tuple[str, AssetClass]]:
        """(symbol, asset class) pairs in insertion order."""
        with storage_errors(_WHAT, self._directory):
            return self._load()

    def symbols(self) -> list[str]:
        """The symbols in insertion order."""
        return [name for name, _ in self.items()]

    def __contains__(self, symbol: object) -> bool:
        if not isinstance(symbol, str):
            symbol = getattr(symbol, "canonical", None)
            if not isinstance(symbol, str):
                return False
        return symbol.strip() in self.symbols()

    def __len__(self) -> int:
        return len(self.items())

    def close(self) -> None:
        """Close this thread's database connection."""
        self._cache.close()

    def _load(self) -> list[tuple[str, AssetClass]]:
        try:
            raw = self._cache.get(_KEY)
        except CorruptRecordError as exc:
            raise self._corrupt(exc) from exc
        if raw is None:
            return []
        try:
            return [(str(name), AssetClass(asset)) for name, asset in raw]
        except (TypeError, ValueError) as exc:
            raise self._corrupt(exc) from exc

    def _save(self, items: list[tuple[str, AssetClass]]) -> None:
        self._cache.set(_KEY, [[name, asset.value] for name, asset in items])

    def _corrupt(self, exc: Exception) -> StorageError:
        # Unlike the cache, silently emptying the watchlist would lose the user's data.
        return StorageError(
            f"watchlist at {self._directory} is corrupt ({exc}); move it aside and re-add "
            "the symbols"
        )
