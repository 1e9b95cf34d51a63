"""Third-party errors translated at the boundary, one table per library.

A table is an ordered tuple of (the library's exception class, our `CrawlerError` class): the
first entry the exception is an instance of decides, as in a chain of `except` clauses, so the
specific classes come before their bases. The boundary catches what its table names (see
`caught`) and raises ours `from` the library's error; each library's test walks its whole
exception tree (every subclass of its base) through the table, as httpx's tests/test_exceptions.py
does, so a class added upstream cannot escape untranslated.

    >>> from crawler.utils.exceptions import StorageError, TransientSourceError
    >>> table = ((TimeoutError, TransientSourceError), (OSError, StorageError))
    >>> mapped_class(table, ConnectionRefusedError).__name__, mapped_class(table, ValueError)
    ('StorageError', None)
    >>> caught(table, TransientSourceError)
    (<class 'TimeoutError'>,)
"""

from __future__ import annotations

from crawler.utils.exceptions import CrawlerError

__all__ = ["ErrorTable", "caught", "mapped_class"]

#: (the library's exception class, ours), most specific first.
ErrorTable = tuple[tuple[type[BaseException], type[CrawlerError]], ...]


def mapped_class(
    table: ErrorTable, error: BaseException | type[BaseException]
) -> type[CrawlerError] | None:
    """Our class for `error` (an exception or its class): the first entry it is an instance
    (a subclass) of; None when the table does not name it."""
    cls = error if isinstance(error, type) else type(error)
    for theirs, ours in table:
        if issubclass(cls, theirs):
            return ours
    return None


def caught(table: ErrorTable, *ours: type[CrawlerError]) -> tuple[type[BaseException], ...]:
    """The library classes `table` maps to exactly one of `ours` (all of them when none is
    given), in table order: what an `except` clause at the boundary names."""
    return tuple(theirs for theirs, mine in table if not ours or mine in ours)
