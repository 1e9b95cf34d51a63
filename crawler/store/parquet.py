"""The history as Parquet: typed columns, written in row groups, constant memory.

pyarrow is an optional extra (``pip install 'crawler[parquet]'``; ``make dev`` installs it):
importing this module does not import it, `write_parquet` does, and its absence is one line
naming the extra (a `ConfigError`: exit 2, HTTP 400 from the daemon).

The columns, in `CSV_COLUMNS` order, with their Arrow types:

- ``as_of`` and ``fetched_at``: ``timestamp[us, tz=UTC]`` (``as_of`` null when the source gave
  no time of its own, as CSV's empty cell);
- prices (``price``, ``change``, ``change_pct``, ``open``, ``high``, ``low``,
  ``previous_close``): **exact decimals**, ``decimal128(38, 12)``. The history keeps every price
  as the exact decimal string the source gave; a double would change 0.1 into
  0.1000000000000000055..., so doubles are not used. Arrow casts the stored strings itself (no
  Python object per cell); a value with more than 12 decimals (a streamed float32 change) is
  rounded half-even to 12 (its column in that row group only, in Python), not refused;
- ``volume``: int64; ``stale`` and ``from_cache``: bool; the rest strings.

Rows go from the SQLite cursor to the file `ROW_GROUP_ROWS` at a time: one row group is the
most that is ever held in memory, whatever the number of rows.

    written = write_parquet(rows, out, CSV_COLUMNS, positions)   # `HistoryStore.export` does
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import IO, Any

from crawler.utils.exceptions import ConfigError, StorageError
from crawler.utils.heavy_imports import import_pyarrow

__all__ = [
    "DECIMAL_PRECISION",
    "DECIMAL_SCALE",
    "ROW_GROUP_ROWS",
    "parquet_schema",
    "write_parquet",
]

#: Rows per row group (and per batch read from SQLite).
ROW_GROUP_ROWS = 16_384
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 12
_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_EXTRA_HINT = (
    "Parquet export needs pyarrow, an optional extra: pip install 'crawler[parquet]' "
    "(make dev installs it)"
)
_DECIMAL_COLUMNS = ("price", "change", "change_pct", "open", "high", "low", "previous_close")
_TIME_COLUMNS = ("as_of", "fetched_at")


def _pyarrow() -> Any:
    try:
        return import_pyarrow()
    except ImportError:
        raise ConfigError(_EXTRA_HINT) from None


def parquet_schema(columns: Sequence[str]) -> Any:
    """The Arrow schema of `columns` (names from `CSV_COLUMNS`)."""
    pa = _pyarrow()
    types = {
        "volume": pa.int64(),
        "stale": pa.bool_(),
        "from_cache": pa.bool_(),
        **dict.fromkeys(_TIME_COLUMNS, pa.timestamp("us", tz="UTC")),
        **dict.fromkeys(_DECIMAL_COLUMNS, pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)),
    }
    return pa.schema([pa.field(name, types.get(name, pa.string())) for name in columns])


def write_parquet(
    rows: Iterable[Sequence[Any]],
    out: IO[bytes],
    columns: Sequence[str],
    positions: Sequence[int],
    convert: Callable[[Sequence[Any]], Sequence[Any]] | None = None,
) -> int:
    """Write `rows` to `out` as one Parquet file; returns the rows written.

    Column ``columns[i]`` is ``row[positions[i]]`` of each stored row (after `convert`, when
    given): timestamps as integer microseconds since the epoch (UTC), decimals as their exact
    strings, flags as 0/1.
    """
    pa = _pyarrow()
    schema = parquet_schema(columns)
    raw_types = [
        pa.int64()
        if field.type == pa.timestamp("us", tz="UTC")
        else pa.string()
        if pa.types.is_decimal(field.type)
        else pa.int8()
        if field.type == pa.bool_()
        else field.type
        for field in schema
    ]
    written = 0
    iterator = iter(rows) if convert is None else map(convert, rows)
    try:
        with pa.parquet.ParquetWriter(out, schema, compression="zstd") as writer:
            while batch := list(itertools.islice(iterator, ROW_GROUP_ROWS)):
                stored = list(zip(*batch, strict=True))
                del batch
                arrays = [
                    _column(pa, stored[position], raw, field.type)
                    for position, raw, field in zip(positions, raw_types, schema, strict=True)
                ]
                del stored
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
                written += len(arrays[0])
            if written == 0:
                # An empty file still has the schema (ParquetWriter writes it on close).
                writer.write_table(schema.empty_table())
    except pa.ArrowException as exc:
        raise StorageError(f"cannot write Parquet: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"cannot write Parquet: {exc.strerror or exc}") from exc
    return written


def _column(pa: Any, values: Sequence[Any], raw: Any, kind: Any) -> Any:
    """One column of a row group: Arrow casts the stored values itself. A decimal with more
    decimals than `DECIMAL_SCALE` (a streamed float32 change such as -0.0000014538922) makes
    that cast refuse the whole column: then, and only then, that column's values are rounded
    half-even to the scale in Python (the rest stay exact), rather than fail the export."""
    array = pa.array(values, type=raw)
    try:
        return array.cast(kind)
    except pa.ArrowInvalid:
        if not pa.types.is_decimal(kind):
            raise
    with localcontext() as context:
        context.prec = DECIMAL_PRECISION
        try:
            rounded = [
                None if v is None else Decimal(v).quantize(_QUANTUM, ROUND_HALF_EVEN)
                for v in values
            ]
        except (InvalidOperation, TypeError, ValueError):
            return array.cast(kind)  # not a rounding matter: Arrow's own error
    return pa.array(rounded, type=kind)
