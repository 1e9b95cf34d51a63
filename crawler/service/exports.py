"""The history verbs: one symbol's history as JSON, CSV or JSONL, and the whole history exported
as CSV, JSONL or Parquet, spooled to a temporary file so a bad argument fails before a byte.

    asked = HistoryQuery("AAPL:US", since="2h", limit=50)
    ops.history(asked)                      # {"symbol", "quotes", "order", "limit", "total", ...}
    sent, total, chunks = ops.history_export("csv", asked)
    rows, chunks = ops.export("parquet", since="1d")

`Operations` inherits these verbs from `HistoryVerbs`; the rows are `HistoryStore`'s.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from crawler.normalizer.symbols import parse_symbol
from crawler.normalizer.units import to_major
from crawler.normalizer.user_symbols import read_symbol
from crawler.service.answers import parse_time
from crawler.utils.exceptions import ConfigError, StorageError

if TYPE_CHECKING:
    from crawler.store.history import HistoryStore, Kind, TimeBy

__all__ = [
    "EXPORT_FORMATS",
    "HISTORY_DEFAULT_ROWS",
    "HISTORY_MAX_JSON_ROWS",
    "HistoryQuery",
    "HistoryVerbs",
    "check_history_limit",
]

#: Formats `export` writes.
EXPORT_FORMATS = ("csv", "jsonl", "parquet")
_STREAM_CHUNK_BYTES = 64 * 1024
#: Rows `history` shows when no limit is given: the newest, a few screens' worth.
HISTORY_DEFAULT_ROWS = 100
#: Rows a JSON history answer may hold (it is built in memory); CSV streams any number.
HISTORY_MAX_JSON_ROWS = 10_000


@dataclass(frozen=True)
class HistoryQuery:
    """One symbol's history as asked (`crawler history`, `GET /v1/history`).

    `since`/`until` as "2h" or ISO dates; `limit` rows (None: `HISTORY_DEFAULT_ROWS`; 0: all,
    streamed answers only); `oldest_first` the oldest rows in that order, else the newest
    newest first; `major_units`: GBp, ZAc and ILA quotes in GBP, ZAR and ILS; `kind`: "quotes"
    (collected), "bars" (backfilled) or "all".
    """

    symbol: str
    since: str | None = None
    until: str | None = None
    limit: int | None = None
    oldest_first: bool = False
    major_units: bool = False
    kind: str = "all"


class HistoryVerbs:
    """The history verbs over `history_store` (None: StorageError when asked), times read
    against `_now()`. A base class of `Operations`, which sets both."""

    history_store: HistoryStore | None
    _now: Callable[[], datetime]

    def _history(self) -> HistoryStore:
        if self.history_store is None:
            raise StorageError("this crawler has no history store")
        return self.history_store

    def _window(
        self, since: str | None, until: str | None
    ) -> tuple[datetime | None, datetime | None]:
        """(start, end) of `--since`/`--until` read against now; ConfigError naming a bad one."""
        now = self._now()
        return parse_time("since", since, now), parse_time("until", until, now)

    def history(self, asked: HistoryQuery) -> dict[str, Any]:
        """The newest `asked.limit` quotes of its symbol (default `HISTORY_DEFAULT_ROWS`),
        newest first, or the oldest ones oldest first (see `HistoryQuery`).

        {"symbol", "quotes", "order": "newest_first"|"oldest_first", "limit", "total",
        "truncated", "kind"}: `total` counts every matching row, so a cut answer says so.
        """
        canonical = read_symbol(asked.symbol).symbol.canonical
        start, end = self._window(asked.since, asked.until)
        rows_wanted = _history_limit(asked.limit, HISTORY_MAX_JSON_ROWS)
        assert rows_wanted is not None  # a JSON answer always has a bound
        store = self._history()
        # One row more than asked tells whether there are more without counting them all.
        checked = _kind(asked.kind)
        newest_first = not asked.oldest_first
        rows = list(
            store.query(
                canonical, start, end, rows_wanted + 1, newest_first=newest_first, kind=checked
            )
        )
        truncated = len(rows) > rows_wanted
        total = store.count(canonical, start, end, checked) if truncated else len(rows)
        major = asked.major_units
        return {
            "symbol": canonical,
            "quotes": [(to_major(q) if major else q).to_json_dict() for q in rows[:rows_wanted]],
            "order": "newest_first" if newest_first else "oldest_first",
            "limit": rows_wanted,
            "total": total,
            "truncated": truncated,
            "kind": checked,
        }

    def history_export(self, fmt: str, asked: HistoryQuery) -> tuple[int, int, Iterator[bytes]]:
        """`history` as CSV or JSONL: (rows sent, rows matching, the bytes in chunks).

        `asked.limit` 0 sends every matching row; None sends `HISTORY_DEFAULT_ROWS`.
        """
        canonical = read_symbol(asked.symbol).symbol.canonical
        start, end = self._window(asked.since, asked.until)
        rows_wanted = _history_limit(asked.limit, None)
        checked = _kind(asked.kind)
        total = self._history().count(canonical, start, end, checked)
        sent, stream = self._spool(
            fmt,
            start,
            end,
            [canonical],
            limit=rows_wanted,
            newest_first=not asked.oldest_first,
            major_units=asked.major_units,
            kind=checked,
        )
        return sent, total, stream

    def export(
        self,
        fmt: str,
        since: str | None = None,
        until: str | None = None,
        symbols: Iterable[str] | None = None,
        major_units: bool = False,
        kind: str = "all",
        time_by: str = "fetched",
    ) -> tuple[int, Iterator[bytes]]:
        """(rows, the history as CSV, JSONL or Parquet bytes in chunks, oldest first).

        `since`/`until` apply to when crawler fetched each quote (`time_by` "fetched", the
        default: "the last hour's quotes" are those collected in it, whatever their source's
        own time) or to the quote's own time ("quote").

        The export is written to a temporary file first, so a bad argument or a storage error
        is raised here, before the first byte is sent, and the row count is known up front;
        memory stays constant either way.
        """
        start, end = self._window(since, until)
        wanted = None if symbols is None else [parse_symbol(s).canonical for s in symbols]
        if time_by not in ("fetched", "quote"):
            raise ConfigError(f"--by {time_by!r} is not known; use fetched or quote")
        by: TimeBy = "fetched" if time_by == "fetched" else "quote"
        return self._spool(
            fmt, start, end, wanted, major_units=major_units, kind=_kind(kind), time_by=by
        )

    def _spool(
        self,
        fmt: str,
        start: datetime | None,
        end: datetime | None,
        symbols: list[str] | None,
        limit: int | None = None,
        newest_first: bool = False,
        major_units: bool = False,
        kind: Kind = "all",
        time_by: TimeBy = "quote",
    ) -> tuple[int, Iterator[bytes]]:
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"--format {fmt!r} is not known; use one of: csv, jsonl, parquet")
        checked: Literal["csv", "jsonl", "parquet"] = (
            "csv" if fmt == "csv" else "parquet" if fmt == "parquet" else "jsonl"
        )
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the generator below
        try:
            rows = self._history().export(
                checked, spool, start, end, symbols, limit, newest_first, major_units, kind,
                time_by,
            )  # fmt: skip
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return rows, _chunks(spool)

    def export_to(
        self,
        fmt: str,
        out: Any,
        since: str | None = None,
        until: str | None = None,
        symbols: Iterable[str] | None = None,
    ) -> tuple[int, int]:
        """Like `export`, written straight to the binary file `out`; returns (rows, bytes)."""
        written = 0
        rows, chunks = self.export(fmt, since, until, symbols)
        for chunk in chunks:
            out.write(chunk)
            written += len(chunk)
        return rows, written


def _kind(text: str) -> Kind:
    """A history kind from user text; ConfigError (exit 2, HTTP 400) naming the allowed ones."""
    if text == "quotes":
        return "quotes"
    if text == "bars":
        return "bars"
    if text in ("all", "both"):
        return "all"
    raise ConfigError(f"--kind {text!r} is not known; use all, quotes or bars")


def check_history_limit(limit: int | None, streamed: bool) -> None:
    """ConfigError (exit 2) for a `history --limit` out of range, as `history` would raise it
    (the CLI checks first, so the answer is the same with no data dir to read)."""
    _history_limit(limit, None if streamed else HISTORY_MAX_JSON_ROWS)


def _history_limit(limit: int | None, most: int | None) -> int | None:
    """The rows a history answer holds: `limit`, the default for None, everything (None) for 0
    where `most` is None; ConfigError (exit 2) for a value out of range."""
    if limit is None:
        return HISTORY_DEFAULT_ROWS
    if limit == 0 and most is None:
        return None
    if limit < 1 or (most is not None and limit > most):
        allowed = f"1 to {most:,}" if most is not None else "0 (all) or more"
        raise ConfigError(
            f"--limit {limit} is out of range; use {allowed}"
            + (" (--csv or `crawler export` stream more)" if most is not None else "")
        )
    return limit


def _chunks(spool: Any) -> Iterator[bytes]:
    try:
        while chunk := spool.read(_STREAM_CHUNK_BYTES):
            yield chunk
    finally:
        spool.close()
