"""When each symbol last got a quote, and a paid (Bloomberg) one, kept in the data dir.

Two questions of the spending policy need memory that survives a restart:

- "Is this closed market's quote already from after its close?" (`last_quote_at`): then a
  forced collection or a restarted daemon does not pay for it again until the market reopens.
- "Whose Bloomberg quote is oldest?" (`last_paid_at`): the paid requests rotate over the
  watchlist instead of going to the same symbols every time.

One JSON record (`times`: symbol -> [last_quote_at, last_paid_at], ISO 8601 or null) in a
JSON-only diskcache, changed inside a transaction, so the daemon and a CLI `crawler fetch`
writing at once both keep their times. A corrupt record is forgotten, not fatal: losing it
costs at most one extra fetch per symbol, never money beyond the ledger's budget.

    >>> import tempfile
    >>> from datetime import UTC, datetime
    >>> times = QuoteTimes(Path(tempfile.mkdtemp()))
    >>> at = datetime(2026, 11, 30, 16, 5, tzinfo=UTC)
    >>> times.record({"VOD:LN": at}, paid=["VOD:LN"])
    >>> times.snapshot()["VOD:LN"].last_paid_at == at
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import diskcache

from crawler.logging import get_logger
from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.store.quote_times.terms import WHAT, SymbolTimes, later

__all__ = ["QuoteTimes"]

_KEY: Final = "times"

log = get_logger("crawler.store")


class QuoteTimes:
    """Per-symbol quote times persisted under `directory`; safe for threads and processes."""

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._cache: diskcache.Cache = open_store(self._directory, WHAT)

    def snapshot(self) -> dict[str, SymbolTimes]:
        """Every symbol's times, read at once (one read per collection, not one per symbol)."""
        with storage_errors(WHAT, self._directory):
            return {name: _decode(value) for name, value in self._load().items()}

    def record(self, quoted: Mapping[str, datetime], paid: Iterable[str] = ()) -> None:
        """Note that the symbols in `quoted` got a quote at the given time; those also in
        `paid` got it from the paid source. Times never move backwards."""
        paid_set = set(paid)
        if not quoted:
            return
        with storage_errors(WHAT, self._directory), self._cache.transact():
            times = self._load()
            for name, at in quoted.items():
                new = later(_decode(times.get(name)), at, paid=name in paid_set)
                times[name] = [_iso(new.last_quote_at), _iso(new.last_paid_at)]
            self._cache.set(_KEY, times)

    def forget(self, symbol: str) -> None:
        """Drop a symbol no longer tracked."""
        with storage_errors(WHAT, self._directory), self._cache.transact():
            times = self._load()
            if times.pop(symbol, None) is not None:
                self._cache.set(_KEY, times)

    def close(self) -> None:
        """Close this thread's database connection."""
        self._cache.close()

    def _load(self) -> dict[str, Any]:
        try:
            raw = self._cache.get(_KEY)
        except CorruptRecordError:
            log.warning("quote times unreadable; starting afresh", directory=str(self._directory))
            return {}
        return dict(raw) if isinstance(raw, dict) else {}


def _decode(value: Any) -> SymbolTimes:
    if not isinstance(value, list) or len(value) != 2:
        return SymbolTimes()
    return SymbolTimes(_time(value[0]), _time(value[1]))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None
