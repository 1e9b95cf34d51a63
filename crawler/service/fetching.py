"""`Operations.fetch`'s helpers: who is told of each symbol's outcome, and what goes into the
history as the quotes land.

    told = ToldOnce(on_done, unpaid, hybrid)       # told.first / told.last as on_done callbacks
    recorder = FetchRecorder(HistoryRecorder(history), hybrid.paid_sources)
    # recorder.keep as on_quote (a paid source's quote committed at once); close()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from crawler.logging import get_logger
from crawler.normalizer.schemas import Quote
from crawler.utils.exceptions import CrawlerError, StorageError

if TYPE_CHECKING:
    from crawler.orchestrator.hybrid import HybridDataSource
    from crawler.store.history_recorder import HistoryRecorder

__all__ = ["FetchRecorder", "ToldOnce", "fresh_quote"]

log = get_logger("crawler.operations")


def fresh_quote(outcome: Quote | CrawlerError | None) -> bool:
    """A quote, and not a stale one (a last-known quote served because no source could)."""
    return isinstance(outcome, Quote) and not outcome.stale


class FetchRecorder:
    """`fetch`'s side of a HistoryRecorder: which quotes it keeps, and failures logged, not
    raised (the quotes were fetched and are answered; losing their row is not a failed
    fetch)."""

    def __init__(self, recorder: HistoryRecorder, paid: frozenset[str]) -> None:
        self._recorder = recorder
        self._paid = paid

    def keep(self, quote: Quote) -> None:
        """Record `quote` unless it came from the cache; a paid one is committed at once."""
        if quote.from_cache:
            return  # recorded when it was fetched
        self._recorder.add(quote, durable=quote.source in self._paid)

    def close(self) -> None:
        """Commit what is left; a storage failure is logged."""
        try:
            self._recorder.close()
        except StorageError as exc:
            log.warning("could not record quotes in the history", error=exc.message)


class ToldOnce:
    """`fetch`'s `on_done`, told once per symbol. A symbol whose free try failed is fetched
    again (paid): it is told then, at the end, unless its first outcome was a fresh quote."""

    def __init__(
        self,
        on_done: Callable[[str, Quote | CrawlerError], None] | None,
        unpaid: set[str],
        hybrid: HybridDataSource,
    ) -> None:
        self._on_done = on_done
        self._unpaid = unpaid
        self._hybrid = hybrid
        self._reported: set[str] = set()

    def first(self, key: str, outcome: Quote | CrawlerError) -> None:
        """The first fetch's outcome (held back when a paid retry follows)."""
        retried = key in self._unpaid and bool(self._hybrid.paid_sources)
        if (
            self._on_done is not None
            and key not in self._reported
            and (not retried or fresh_quote(outcome))
        ):
            self._reported.add(key)
            self._on_done(key, outcome)

    def last(self, key: str, outcome: Quote | CrawlerError) -> None:
        """The paid retry's outcome."""
        if self._on_done is not None and key not in self._reported:
            self._reported.add(key)
            self._on_done(key, outcome)
