"""The quote history: every quote we fetched, with its provenance, in one SQLite file.

Lives at ``<data_dir>/history/history.sqlite3``. Rows are deduplicated on
``(symbol, source, interval, as_of)`` so polling an unchanged quote adds nothing; a quote without
a source timestamp is keyed on its ``fetched_at`` instead. A row is a collected quote (interval
'') or a backfilled bar of its interval ("1d", "1h", "5m", "1m"; `crawler.orchestrator.backfill`);
reads and exports take `kind` ("quotes", "bars", "all"). Schema version 2 added the interval; a
version-1 file is migrated in place when opened, its rows kept as collected quotes.

Storage choices, and why:

- Prices are TEXT holding the exact ``Decimal`` string, so a quote read back equals the one
  written (no binary floating point anywhere).
- Timestamps are INTEGER microseconds since the epoch, UTC: they sort correctly, compare
  cheaply and do not depend on how an ISO string was spelled (offsets, "Z", precision).
- WAL journal with ``synchronous=NORMAL``. In WAL mode a COMMIT has written the transaction to
  the WAL file through the OS before it returns, so a process crash (``kill -9``, OOM kill)
  loses no committed row: the OS still holds the pages. Only an OS crash or power loss can roll
  back the last few commits, which is an acceptable price for a market-data history (``FULL``
  would add an fsync per commit to cover that too).
- One connection per thread (``threading.local``), a ``busy_timeout`` so the daemon and a CLI
  process can write at the same time, and writes in ``BEGIN IMMEDIATE`` transactions so a
  writer waits for the lock up front instead of failing half-way.
- Reads and exports stream through a cursor in ``fetchmany`` batches: memory stays constant for
  millions of rows.

Every ``sqlite3`` error is translated to :class:`~crawler.utils.exceptions.StorageError`.

    >>> import tempfile, pathlib
    >>> from decimal import Decimal
    >>> store = HistoryStore(pathlib.Path(tempfile.mkdtemp()))
    >>> q = Quote(symbol="AAPL:US", price=Decimal("262.36"), source="bright_data")
    >>> store.record([q, q])
    1
    >>> store.latest("AAPL:US") == q
    True
    >>> store.close()
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal, cast

from crawler.normalizer.schemas import AssetClass, Quote, utc_now
from crawler.normalizer.units import major_row
from crawler.store.datadir import ensure_data_dir, refuse_empty_file, store_open_lock
from crawler.utils.clock import epoch_us as _to_us
from crawler.utils.clock import from_epoch_us as _from_us
from crawler.utils.exceptions import ConfigError, StorageError

__all__ = [
    "CSV_COLUMNS",
    "HISTORY_FILENAME",
    "KINDS",
    "HistoryStore",
    "Kind",
    "TimeBy",
    "parse_time_spec",
]

HISTORY_FILENAME = "history.sqlite3"
#: The CSV header, in this fixed order. Timestamps are ISO 8601 UTC, prices exact strings.
CSV_COLUMNS: tuple[str, ...] = (
    "symbol",
    "as_of",
    "source",
    "price",
    "currency",
    "change",
    "change_pct",
    "open",
    "high",
    "low",
    "previous_close",
    "volume",
    "fetched_at",
    "asset_class",
    "name",
    "stale",
    "from_cache",
    "interval",
)

#: Which rows a read asks for: backfilled bars, collected quotes, or both.
Kind = Literal["quotes", "bars", "all"]
#: Which time --since/--until filter on: the quote's own ("quote") or its fetch ("fetched").
TimeBy = Literal["quote", "fetched"]
KINDS: tuple[str, ...] = ("all", "quotes", "bars")

# 1: quotes. 2: `bar_interval` ('' for a collected quote, "1d"... for a backfilled bar) in the
# dedup key, and `bar_windows` (the ranges a backfill has fetched completely).
_SCHEMA_VERSION = 2
_BUSY_TIMEOUT_MS = 10_000
# Big enough to amortise the per-call overhead, small enough to keep memory flat.
_FETCH_BATCH_ROWS = 2_000

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS quotes (
    id              INTEGER PRIMARY KEY,
    symbol          TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    as_of_us        INTEGER NOT NULL,  -- the dedup key: source timestamp, else fetched_at
    source_as_of_us INTEGER,           -- the source's own timestamp; NULL when it gave none
    fetched_at_us   INTEGER NOT NULL,
    price           TEXT    NOT NULL,
    currency        TEXT,
    change          TEXT,
    change_pct      TEXT,
    open            TEXT,
    high            TEXT,
    low             TEXT,
    previous_close  TEXT,
    volume          INTEGER,
    asset_class     TEXT,
    name            TEXT,
    stale           INTEGER NOT NULL DEFAULT 0,
    from_cache      INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE INDEX IF NOT EXISTS quotes_symbol_time ON quotes (symbol, as_of_us)",
    "CREATE INDEX IF NOT EXISTS quotes_time ON quotes (as_of_us)",
)
# Version 1 -> 2, in place: existing rows are collected quotes (bar_interval ''), and the dedup
# key gains the interval, so a bar never displaces a quote of the same instant.
_MIGRATE_TO_2 = (
    "ALTER TABLE quotes ADD COLUMN bar_interval TEXT NOT NULL DEFAULT ''",
    "DROP INDEX IF EXISTS quotes_dedup",
)
_SCHEMA_2 = (
    "CREATE UNIQUE INDEX IF NOT EXISTS quotes_dedup_kind "
    "ON quotes (symbol, source, bar_interval, as_of_us)",
    """
CREATE TABLE IF NOT EXISTS bar_windows (
    symbol       TEXT    NOT NULL,
    bar_interval TEXT    NOT NULL,
    start_us     INTEGER NOT NULL,  -- [start, end): every complete bar in it is stored
    end_us       INTEGER NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS bar_windows_symbol ON bar_windows (symbol, bar_interval)",
)

_COLUMNS = (
    "symbol, source, as_of_us, source_as_of_us, fetched_at_us, price, currency, change, "
    "change_pct, open, high, low, previous_close, volume, asset_class, name, stale, from_cache, "
    "bar_interval"
)
_INSERT = f"INSERT OR IGNORE INTO quotes ({_COLUMNS}) VALUES ({', '.join('?' * 19)})"
_SELECT = f"SELECT {_COLUMNS} FROM quotes"


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _undec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _row_of(quote: Quote) -> tuple[Any, ...]:
    fetched_us = _to_us(quote.fetched_at)
    source_us = None if quote.as_of is None else _to_us(quote.as_of)
    return (
        quote.symbol,
        quote.source,
        fetched_us if source_us is None else source_us,
        source_us,
        fetched_us,
        str(quote.price),
        quote.currency,
        _dec(quote.change),
        _dec(quote.change_pct),
        _dec(quote.open),
        _dec(quote.high),
        _dec(quote.low),
        _dec(quote.previous_close),
        quote.volume,
        None if quote.asset_class is None else quote.asset_class.value,
        quote.name,
        int(quote.stale),
        int(quote.from_cache),
        quote.interval or "",
    )


def _quote_of(row: Sequence[Any]) -> Quote:
    return Quote(
        symbol=row[0],
        source=row[1],
        as_of=None if row[3] is None else _from_us(row[3]),
        fetched_at=_from_us(row[4]),
        price=Decimal(row[5]),
        currency=row[6],
        change=_undec(row[7]),
        change_pct=_undec(row[8]),
        open=_undec(row[9]),
        high=_undec(row[10]),
        low=_undec(row[11]),
        previous_close=_undec(row[12]),
        volume=row[13],
        asset_class=None if row[14] is None else AssetClass(row[14]),
        name=row[15],
        stale=bool(row[16]),
        from_cache=bool(row[17]),
        interval=row[18] or None,
    )


def _csv_row(row: Sequence[Any]) -> list[Any]:
    """A stored row in `CSV_COLUMNS` order, without building a Quote (the hot export path)."""
    as_of = "" if row[3] is None else _from_us(row[3]).isoformat()
    return [
        row[0],
        as_of,
        row[1],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        _from_us(row[4]).isoformat(),
        row[14],
        row[15],
        int(row[16]),
        int(row[17]),
        row[18],
    ]


def _major_row(row: Sequence[Any]) -> Sequence[Any]:
    """A stored row with its amounts in the major unit (GBp → GBP...), see `major_row`."""
    return major_row(row, _CURRENCY_AT, _AMOUNTS_AT)


# Positions in a stored row (`_COLUMNS`): the currency, and the amounts of money in it.
_CURRENCY_AT = 6
_AMOUNTS_AT = (5, 7, 9, 10, 11, 12)


#: Where each of `CSV_COLUMNS` is in a stored row (for Parquet: times stay microseconds).
_PARQUET_POSITIONS = (0, 3, 1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 4, 14, 15, 16, 17, 18)


# json.dumps with arguments builds a new encoder per call; one shared encoder is much cheaper.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json_dict(row: Sequence[Any]) -> dict[str, Any]:
    """`Quote.to_json_dict()` of a stored row, without building the Quote (3x faster).

    Exact because the stored TEXT is already ``str(Decimal)`` and parsing it back and printing
    it again gives the same string. `_row_json` checks its keys against the Quote model once.
    """
    data = {
        "symbol": row[0],
        "price": row[5],
        "source": row[1],
        "currency": row[6],
        "change": row[7],
        "change_pct": row[8],
        "open": row[9],
        "high": row[10],
        "low": row[11],
        "previous_close": row[12],
        "volume": row[13],
        "as_of": None if row[3] is None else _from_us(row[3]).isoformat(),
        "fetched_at": _from_us(row[4]).isoformat(),
        "asset_class": row[14],
        "name": row[15],
        "from_cache": bool(row[17]),
        "stale": bool(row[16]),
    }
    if row[18]:
        data["interval"] = row[18]
    return data


def _quote_json_dict(row: Sequence[Any]) -> dict[str, Any]:
    """`Quote.to_json_dict()` of a stored row, through the Quote (the model has changed)."""
    return _quote_of(row).to_json_dict()


# A stored row with every column set, the interval too, to read `_json_dict`'s keys off.
_SAMPLE_ROW = ("A:US", "yfinance", 0, 0, 0, "1", "USD", "0", "0", "1", "1", "1", "1", 1,
               "stocks", "A", 0, 0, "1d")  # fmt: skip
# If the Quote model grows or reorders a field, build Quotes rather than drift from it.
_row_json = (
    _json_dict
    if tuple(_json_dict(_SAMPLE_ROW)) == tuple(f.name for f in fields(Quote))
    else _quote_json_dict
)


def _time_filter(
    since: datetime | None, until: datetime | None, kind: Kind = "all", by: TimeBy = "quote"
) -> tuple[list[str], list[Any]]:
    """SQL clauses for a kind and a half-open time range on the quote's own time (`by`
    "quote", `as_of`) or on when crawler fetched it ("fetched", `fetched_at`)."""
    clauses: list[str] = []
    params: list[Any] = []
    if kind == "bars":
        clauses.append("bar_interval != ''")
    elif kind == "quotes":
        clauses.append("bar_interval = ''")
    elif kind != "all":
        raise ValueError(f"unknown kind {kind!r}; use all, quotes or bars")
    if by not in ("quote", "fetched"):
        raise ValueError(f"unknown time {by!r}; use quote or fetched")
    column = "fetched_at_us" if by == "fetched" else "as_of_us"
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(_to_us(since))
    if until is not None:
        clauses.append(f"{column} < ?")
        params.append(_to_us(until))
    return clauses, params


class HistoryStore:
    """Quote history in ``<directory>/history.sqlite3`` (pass ``<data_dir>/history``).

    Safe to share between threads (one connection each) and processes (WAL + busy timeout).
    Time ranges are half-open, ``since <= as_of < until``; aware datetimes in any zone are
    compared as instants, naive ones are taken as UTC.
    """

    def __init__(
        self,
        directory: Path,
        retention_days: int = 365,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if retention_days < 1:
            raise ConfigError(
                f"history retention_days={retention_days} is invalid; use a whole number of "
                "days >= 1 (e.g. 365)"
            )
        self.directory = Path(directory)
        self.path = self.directory / HISTORY_FILENAME
        self.retention_days = retention_days
        self._now = now
        self._local = threading.local()
        # Each thread's connection, with its thread: a connection whose thread has ended is
        # closed at the next connect, so short-lived threads (one per control request) do not
        # pile up open connections for the life of the daemon.
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        # 0700 like every other store of the data dir (a plain mkdir left it 0755 under the
        # usual umask); also proves it writable, with the one-line error of the data dir.
        try:
            ensure_data_dir(self.directory)
        except StorageError as exc:
            # A DataDirError stays one (exit 2: a setup problem, fixed by DATA_DIR).
            raise type(exc)(
                f"cannot create history directory {self.directory}: {exc.message}"
            ) from exc
        with store_open_lock(self.directory, "quote history"):
            refuse_empty_file(self.path, "quote history")
            self._create_schema()
            self._private_files()

    def _private_files(self) -> None:
        """The database and its -wal and -shm files 0600 (SQLite creates them by the umask;
        the -wal and -shm made later copy the database's mode). Inside a 0700 directory."""
        try:
            for suffix in ("", "-wal", "-shm"):
                path = Path(f"{self.path}{suffix}")
                with contextlib.suppress(FileNotFoundError):
                    if path.lstat().st_uid == os.geteuid():
                        path.chmod(0o600)
        except OSError as exc:
            raise StorageError(f"cannot open history {self.path}: {exc.strerror or exc}") from exc

    # -- connections -----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"history store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is left in an
            # implicit transaction that would hold the write lock. check_same_thread=False only
            # so close() can close every thread's connection; each is used by its own thread.
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"history {self.path} cannot use WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open history {self.path}: {exc}") from exc
        self._local.conn = conn
        with self._connections_lock:
            ended = [c for thread, c in self._connections if not thread.is_alive()]
            self._connections = [(t, c) for t, c in self._connections if t.is_alive()]
            self._connections.append((threading.current_thread(), conn))
        for stale in ended:
            stale.close()
        return conn

    @property
    def open_connections(self) -> int:
        """How many connections are open (one per live thread that has used the store)."""
        with self._connections_lock:
            return len(self._connections)

    def _create_schema(self) -> None:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > _SCHEMA_VERSION:
                    raise StorageError(
                        f"history {self.path} has schema version {version}, newer than this "
                        f"crawler understands ({_SCHEMA_VERSION}); upgrade crawler"
                    )
                for statement in _SCHEMA:
                    conn.execute(statement)
                columns = {row[1] for row in conn.execute("PRAGMA table_info(quotes)")}
                if "bar_interval" not in columns:
                    for statement in _MIGRATE_TO_2:
                        conn.execute(statement)
                for statement in _SCHEMA_2:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"cannot initialise history {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close every thread's connection. Further calls raise StorageError."""
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for _thread, conn in connections:
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot close history {self.path}: {exc}") from exc

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------------

    def record(self, quotes: Iterable[Quote]) -> int:
        """Store quotes in one transaction; returns how many rows were new (duplicates: 0)."""
        conn = self._connection()
        try:
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                # A generator in, a generator to executemany: constant memory for any size.
                conn.executemany(_INSERT, (_row_of(quote) for quote in quotes))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return conn.total_changes - before
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write history {self.path}: {exc}") from exc

    def prune(self, older_than_days: int | None = None) -> int:
        """Delete collected quotes whose as_of is older than the retention (or
        `older_than_days`). Backfilled bars are kept: they were asked for, by date."""
        days = self.retention_days if older_than_days is None else older_than_days
        cutoff_us = _to_us(self._now() - timedelta(days=days))
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.execute(
                    "DELETE FROM quotes WHERE as_of_us < ? AND bar_interval = ''", (cutoff_us,)
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return cursor.rowcount
        except sqlite3.Error as exc:
            raise StorageError(f"cannot prune history {self.path}: {exc}") from exc

    def record_bars(
        self, bars: Iterable[Quote], symbol: str, interval: str, start: datetime, end: datetime
    ) -> int:
        """Store a backfill's bars of `symbol` and remember [start, end) as fetched, in one
        transaction (a crash never records a window without its bars); returns the new rows.
        Bars already stored (same symbol, source, interval and time) are not added again."""
        conn = self._connection()
        try:
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, (_row_of(bar) for bar in bars))
                added = conn.total_changes - before
                if end > start:
                    conn.execute(
                        "INSERT INTO bar_windows (symbol, bar_interval, start_us, end_us) "
                        "VALUES (?, ?, ?, ?)",
                        (symbol, interval, _to_us(start), _to_us(end)),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return added
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write history {self.path}: {exc}") from exc

    def bar_windows(self, symbol: str, interval: str) -> list[tuple[datetime, datetime]]:
        """The [start, end) ranges a backfill has fetched for `symbol` at `interval`, merged
        (overlapping and touching ones joined), oldest first."""
        rows = self._rows(
            "SELECT start_us, end_us FROM bar_windows WHERE symbol = ? AND bar_interval = ? "
            "ORDER BY start_us",
            [symbol, interval],
        )
        merged: list[list[int]] = []
        for start_us, end_us in rows:
            if merged and start_us <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end_us)
            else:
                merged.append([start_us, end_us])
        return [(_from_us(a), _from_us(b)) for a, b in merged]

    # -- reads -----------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """Stream the rows of a SELECT in fetchmany batches; sqlite3 errors become StorageError."""
        conn = self._connection()
        try:
            cursor = conn.execute(sql, params)
            try:
                while batch := cursor.fetchmany(_FETCH_BATCH_ROWS):
                    yield from batch
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read history {self.path}: {exc}") from exc

    def query(
        self,
        symbol: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        kind: Kind = "all",
    ) -> Iterator[Quote]:
        """Quotes of `symbol` with ``since <= as_of < until`` (all sources), oldest first, or
        newest first when `newest_first` (then `limit` keeps the newest rows, not the oldest);
        `kind`: collected quotes, backfilled bars, or all."""
        sql, params = self._select_symbol(symbol, since, until, limit, newest_first, kind)
        return (_quote_of(row) for row in self._rows(sql, params))

    @staticmethod
    def _select_symbol(
        symbol: str,
        since: datetime | None,
        until: datetime | None,
        limit: int | None,
        newest_first: bool,
        kind: Kind = "all",
    ) -> tuple[str, list[Any]]:
        clauses, params = _time_filter(since, until, kind)
        order = "as_of_us DESC, id DESC" if newest_first else "as_of_us, id"
        sql = f"{_SELECT} WHERE {' AND '.join(['symbol = ?', *clauses])} ORDER BY {order}"
        params.insert(0, symbol)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return sql, params

    def latest(self, symbol: str) -> Quote | None:
        """The most recent quote of `symbol` by as_of (last written wins a tie), or None."""
        sql = f"{_SELECT} WHERE symbol = ? ORDER BY as_of_us DESC, id DESC LIMIT 1"
        for row in self._rows(sql, [symbol]):
            return _quote_of(row)
        return None

    def count(
        self,
        symbol: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: Kind = "all",
    ) -> int:
        """Rows stored, in total or for one symbol, with ``since <= as_of < until``."""
        clauses, params = _time_filter(since, until, kind)
        if symbol is not None:
            clauses.insert(0, "symbol = ?")
            params.insert(0, symbol)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(f"SELECT COUNT(*) FROM quotes{where}", params)
        return int(next(iter(rows))[0])

    def symbols(self) -> list[str]:
        """Distinct symbols in the history, sorted."""
        return [row[0] for row in self._rows("SELECT DISTINCT symbol FROM quotes ORDER BY 1", [])]

    def export(
        self,
        fmt: Literal["csv", "jsonl", "parquet"],
        out: IO[str] | IO[bytes],
        since: datetime | None = None,
        until: datetime | None = None,
        symbols: Iterable[str] | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        major_units: bool = False,
        kind: Kind = "all",
        time_by: TimeBy = "quote",
    ) -> int:
        """Stream matching rows to `out` (text or binary, UTF-8) ordered by as_of; returns rows.
        `since`/`until` apply to the quote's own time, or with `time_by` "fetched" to when it
        was fetched.

        CSV has the `CSV_COLUMNS` header; JSONL is one ``Quote.to_json_dict()`` per line;
        Parquet (binary `out` only; pyarrow, an optional extra) has the same columns, typed
        (`crawler.store.parquet`). Memory is constant: rows go from a cursor to `out` in
        batches, nothing is collected. `newest_first` reverses the order; `limit` keeps the
        first rows of that order. `major_units` writes GBp, ZAc and ILA rows in GBP, ZAR and
        ILS (`crawler.normalizer.units`; the stored rows keep the source's unit).
        """
        if fmt not in ("csv", "jsonl", "parquet"):
            raise ValueError(f"unknown export format {fmt!r}; use 'csv', 'jsonl' or 'parquet'")
        clauses, params = _time_filter(since, until, kind, time_by)
        if symbols is not None:
            wanted = list(dict.fromkeys(symbols))
            if not wanted:
                return 0
            clauses.append(f"symbol IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "as_of_us DESC, id DESC" if newest_first else "as_of_us, id"
        sql = f"{_SELECT}{where} ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows: Iterable[Sequence[Any]] = self._rows(sql, params)
        if major_units:
            rows = map(_major_row, rows)
        if fmt == "parquet":
            from crawler.store.parquet import write_parquet

            return write_parquet(rows, cast(IO[bytes], out), CSV_COLUMNS, _PARQUET_POSITIONS)

        binary = isinstance(out, (io.RawIOBase, io.BufferedIOBase)) or "b" in str(
            getattr(out, "mode", "")
        )
        wrapper: io.TextIOWrapper | None = None
        text: IO[str]
        if binary:
            # newline="" so csv's own line endings pass through untranslated.
            wrapper = io.TextIOWrapper(cast(IO[bytes], out), encoding="utf-8", newline="")
            text = wrapper
        else:
            text = cast(IO[str], out)
        written = 0
        try:
            if fmt == "csv":
                writer = csv.writer(text, lineterminator="\n")
                writer.writerow(CSV_COLUMNS)
                for row in rows:
                    writer.writerow(_csv_row(row))
                    written += 1
            else:
                for row in rows:
                    text.write(_JSON_ENCODER.encode(_row_json(row)))
                    text.write("\n")
                    written += 1
            text.flush()
        finally:
            if wrapper is not None:
                # Detach so collecting the wrapper never closes the caller's stream.
                wrapper.flush()
                wrapper.detach()
        return written


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$", re.IGNORECASE)
# A year is 365 days ("1y": a year of daily bars).
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000}


def parse_time_spec(text: str, now: datetime | None = None) -> datetime:
    """A point in time from the CLI: "2h", "30m", "7d", "1w", "1y", "45s" ago, or an ISO
    date/time.

    "2026-11-01" is midnight UTC, "2026-11-01T12:00" is UTC, "2026-11-01T12:00+01:00" keeps its
    offset; the result is always UTC-aware. Bad input raises ``ValueError`` with a one-line
    message saying what is accepted; the CLI maps it to a usage error (exit 2).
    """
    reference = utc_now() if now is None else now
    match = _DURATION.match(text)
    if match:
        amount_s = int(match.group(1)) * _UNIT_S[match.group(2).lower()]
        try:
            return (reference - timedelta(seconds=amount_s)).astimezone(UTC)
        except (OverflowError, ValueError):  # before year 1: no such time
            raise ValueError(
                f"invalid time {text!r}: {match.group(1)}{match.group(2)} ago is before year 1; "
                "use a shorter duration, e.g. 365d"
            ) from None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: use a duration ago like 30m, 2h, 7d, 1w, 1y or an ISO "
            "date/time like 2026-11-01, 2026-11-01T12:00 or 2026-11-01T12:00+01:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
