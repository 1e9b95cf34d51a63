"""The watchlist in the data dir: the symbols the daemon tracks, in the order they were added.

One JSON record per symbol in a JSON-only diskcache, so an edit writes one record whatever the
watchlist's size (adding a thousand symbols one by one used to rewrite the whole list each
time):

    sym:AAPL:US   [seq, "stocks"]     seq orders the symbols as they were added
    seq           the next seq
    count         how many symbols there are (the limit is checked without reading them)
    version       bumped by every edit: a reader whose copy has the same version reuses it

Edits run inside a transaction (SQLite ``BEGIN IMMEDIATE``), so the daemon and a CLI adding
symbols at the same moment both keep their additions. A watchlist written by an older crawler
(one ``items`` record holding the whole list) is converted on open.

Symbols are stored exactly as given, in canonical form (`crawler.store.watchlist.terms`).

    >>> import tempfile
    >>> watchlist = Watchlist(Path(tempfile.mkdtemp()))
    >>> watchlist.add("AAPL:US", AssetClass.STOCKS), watchlist.add("AAPL:US", AssetClass.STOCKS)
    (True, False)
    >>> watchlist.items()
    [('AAPL:US', <AssetClass.STOCKS: 'stocks'>)]
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Final

import diskcache

from crawler.normalizer.schemas import AssetClass
from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.store.watchlist.terms import (
    MAX_SYMBOLS,
    WHAT,
    HasCanonical,
    WatchlistTerms,
    canonical_symbol,
)
from crawler.utils.exceptions import StorageError

__all__ = ["Watchlist"]

_PREFIX: Final = "sym:"
#: The records beside the symbols' (see the module doc), and the whole list of old crawlers.
_SEQ, _COUNT, _VERSION, _LEGACY_KEY = "seq", "count", "version", "items"


class Watchlist(WatchlistTerms):
    """Tracked symbols persisted under `directory`; safe for several threads and processes."""

    def __init__(self, directory: Path, max_symbols: int = MAX_SYMBOLS) -> None:
        self._directory = Path(directory)
        super().__init__(max_symbols)
        self._cache: diskcache.Cache = open_store(self._directory, WHAT)
        self._memo_lock = threading.Lock()
        self._memo: tuple[int, list[tuple[str, AssetClass]]] | None = None
        with storage_errors(WHAT, self._directory):
            if self._get(_LEGACY_KEY) is not None:
                self._convert_legacy()

    @property
    def directory(self) -> Path:
        """Where this watchlist is kept."""
        return self._directory

    def add(self, symbol: HasCanonical | str, asset_class: AssetClass) -> bool:
        """Append `symbol`; False if it is already present (its asset class is kept).

        Raises WatchlistFullError when the watchlist already holds `max_symbols` (default
        MAX_SYMBOLS) symbols.
        """
        canonical = canonical_symbol(symbol)
        asset = AssetClass(asset_class)
        with storage_errors(WHAT, self._directory), self._cache.transact():
            if self._get(_PREFIX + canonical) is not None:
                return False
            count = self._int(_COUNT)
            if count >= self._max_symbols:
                raise self._full(canonical)
            seq = self._int(_SEQ)
            self._cache.set(_PREFIX + canonical, [seq, asset.value])
            self._cache.set(_SEQ, seq + 1)
            self._cache.set(_COUNT, count + 1)
            self._bump()
        return True

    def remove(self, symbol: HasCanonical | str) -> bool:
        """Drop `symbol`; False if it was not there."""
        canonical = canonical_symbol(symbol)
        with storage_errors(WHAT, self._directory), self._cache.transact():
            if not self._cache.delete(_PREFIX + canonical):
                return False
            self._cache.set(_COUNT, max(0, self._int(_COUNT) - 1))
            self._bump()
        return True

    def items(self) -> list[tuple[str, AssetClass]]:
        """(symbol, asset class) pairs in insertion order.

        Reads one record when nothing changed since the last call (in any process); the
        whole list only after an edit.
        """
        with storage_errors(WHAT, self._directory):
            version = self._int(_VERSION)
            with self._memo_lock:
                memo = self._memo
            if memo is not None and memo[0] == version:
                return list(memo[1])
            with self._cache.transact():  # the records and their version, read together
                version = self._int(_VERSION)
                items = self._load()
            with self._memo_lock:
                self._memo = (version, items)
            return list(items)

    def _holds(self, name: str) -> bool:
        with storage_errors(WHAT, self._directory):
            return self._get(_PREFIX + name) is not None

    def __len__(self) -> int:
        with storage_errors(WHAT, self._directory):
            return self._int(_COUNT)

    def close(self) -> None:
        """Close this thread's database connection."""
        self._cache.close()

    # -- records ------------------------------------------------------------------------------

    def _get(self, key: str) -> object:
        try:
            return self._cache.get(key)
        except CorruptRecordError as exc:
            raise self._corrupt(exc) from exc

    def _int(self, key: str) -> int:
        value = self._get(key)
        if value is None:
            return 0
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._corrupt(ValueError(f"{key} is {value!r}, not a whole number"))
        return value

    def _bump(self) -> None:
        self._cache.set(_VERSION, self._int(_VERSION) + 1)

    def _load(self) -> list[tuple[str, AssetClass]]:
        entries: list[tuple[int, str, AssetClass]] = []
        for key in list(self._cache.iterkeys()):
            if not isinstance(key, str) or not key.startswith(_PREFIX):
                continue
            raw = self._get(key)
            if raw is None:  # removed between the listing and the read
                continue
            try:
                if not isinstance(raw, list) or len(raw) != 2:
                    raise ValueError(f"{key} is {raw!r}, not [seq, asset_class]")
                entries.append((int(raw[0]), key[len(_PREFIX) :], AssetClass(raw[1])))
            except (TypeError, ValueError) as exc:
                raise self._corrupt(exc) from exc
        entries.sort(key=lambda entry: entry[0])
        return [(name, asset) for _, name, asset in entries]

    def _convert_legacy(self) -> None:
        """One `items` record (crawler before per-symbol records) becomes one record each."""
        with self._cache.transact():
            raw = self._get(_LEGACY_KEY)
            if raw is None:  # another process converted it first
                return
            try:
                if not isinstance(raw, list):
                    raise ValueError(f"items is {type(raw).__name__}, not a list")
                legacy = [(str(name), AssetClass(asset)) for name, asset in raw]
            except (TypeError, ValueError) as exc:
                raise self._corrupt(exc) from exc
            seq = self._int(_SEQ)
            count = self._int(_COUNT)
            for name, asset in legacy:
                if self._get(_PREFIX + name) is None:
                    self._cache.set(_PREFIX + name, [seq, asset.value])
                    seq += 1
                    count += 1
            self._cache.set(_SEQ, seq)
            self._cache.set(_COUNT, count)
            self._cache.delete(_LEGACY_KEY)
            self._bump()

    def _corrupt(self, exc: Exception) -> StorageError:
        # Unlike the cache, silently emptying the watchlist would lose the user's data.
        return StorageError(
            f"watchlist at {self._directory} is corrupt ({exc}); move it aside and re-add "
            "the symbols"
        )
