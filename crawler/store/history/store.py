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
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

from crawler.normalizer.schemas import Quote, utc_now
from crawler.store.datadir import ensure_data_dir, refuse_empty_file, store_open_lock
from crawler.store.history.export import write_rows
from crawler.store.history.rows import (
    HISTORY_FILENAME,
    INSERT,
    MIGRATE_TO_2,
    SCHEMA,
    SCHEMA_2,
    SCHEMA_VERSION,
    SELECT,
    Kind,
    TimeBy,
    major_units_row,
    quote_of,
    row_of,
    time_filter,
)
from crawler.utils.clock import epoch_us as _to_us
from crawler.utils.clock import from_epoch_us as _from_us
from crawler.utils.exceptions import ConfigError, StorageError

__all__ = ["HistoryStore"]

_BUSY_TIMEOUT_MS = 10_000
# Big enough to amortise the per-call overhead, small enough to keep memory flat.
_FETCH_BATCH_ROWS = 2_000


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
        with self._transaction("initialise") as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"history {self.path} has schema version {version}, newer than this "
                    f"crawler understands ({SCHEMA_VERSION}); upgrade crawler"
                )
            for statement in SCHEMA:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(quotes)")}
            if "bar_interval" not in columns:
                for statement in MIGRATE_TO_2:
                    conn.execute(statement)
            for statement in SCHEMA_2:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: the lock is waited for up front), rolled
        back on any error; sqlite3 errors become StorageError ("cannot `doing` history")."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"cannot {doing} history {self.path}: {exc}") from exc

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
        with self._transaction("write") as conn:
            before = conn.total_changes
            # A generator in, a generator to executemany: constant memory for any size.
            conn.executemany(INSERT, (row_of(quote) for quote in quotes))
        return conn.total_changes - before

    def prune(self, older_than_days: int | None = None) -> int:
        """Delete collected quotes whose as_of is older than the retention (or
        `older_than_days`). Backfilled bars are kept: they were asked for, by date."""
        days = self.retention_days if older_than_days is None else older_than_days
        cutoff_us = _to_us(self._now() - timedelta(days=days))
        with self._transaction("prune") as conn:
            cursor = conn.execute(
                "DELETE FROM quotes WHERE as_of_us < ? AND bar_interval = ''", (cutoff_us,)
            )
        return cursor.rowcount

    def record_bars(
        self, bars: Iterable[Quote], symbol: str, interval: str, start: datetime, end: datetime
    ) -> int:
        """Store a backfill's bars of `symbol` and remember [start, end) as fetched, in one
        transaction (a crash never records a window without its bars); returns the new rows.
        Bars already stored (same symbol, source, interval and time) are not added again."""
        with self._transaction("write") as conn:
            before = conn.total_changes
            conn.executemany(INSERT, (row_of(bar) for bar in bars))
            added = conn.total_changes - before
            if end > start:
                conn.execute(
                    "INSERT INTO bar_windows (symbol, bar_interval, start_us, end_us) "
                    "VALUES (?, ?, ?, ?)",
                    (symbol, interval, _to_us(start), _to_us(end)),
                )
        return added

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
        return (quote_of(row) for row in self._rows(sql, params))

    @staticmethod
    def _select_symbol(
        symbol: str,
        since: datetime | None,
        until: datetime | None,
        limit: int | None,
        newest_first: bool,
        kind: Kind = "all",
    ) -> tuple[str, list[Any]]:
        clauses, params = time_filter(since, until, kind)
        order = "as_of_us DESC, id DESC" if newest_first else "as_of_us, id"
        sql = f"{SELECT} WHERE {' AND '.join(['symbol = ?', *clauses])} ORDER BY {order}"
        params.insert(0, symbol)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return sql, params

    def latest(self, symbol: str) -> Quote | None:
        """The most recent quote of `symbol` by as_of (last written wins a tie), or None."""
        sql = f"{SELECT} WHERE symbol = ? ORDER BY as_of_us DESC, id DESC LIMIT 1"
        for row in self._rows(sql, [symbol]):
            return quote_of(row)
        return None

    def count(
        self,
        symbol: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: Kind = "all",
    ) -> int:
        """Rows stored, in total or for one symbol, with ``since <= as_of < until``."""
        clauses, params = time_filter(since, until, kind)
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
        clauses, params = time_filter(since, until, kind, time_by)
        if symbols is not None:
            wanted = list(dict.fromkeys(symbols))
            if not wanted:
                return 0
            clauses.append(f"symbol IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "as_of_us DESC, id DESC" if newest_first else "as_of_us, id"
        sql = f"{SELECT}{where} ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows: Iterable[Sequence[Any]] = self._rows(sql, params)
        if major_units:
            rows = map(major_units_row, rows)
        return write_rows(fmt, rows, out)
