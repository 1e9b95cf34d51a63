"""A history export's writing: stored rows (`crawler.store.history.rows`) to CSV, JSON lines or
Parquet, streamed to a text or binary file (memory stays constant)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import IO, Any, Literal, cast

from crawler.store.history.rows import (
    CSV_COLUMNS,
    JSON_ENCODER,
    PARQUET_POSITIONS,
    _row_json,
    csv_row,
)

__all__ = ["write_rows"]


def write_rows(
    fmt: Literal["csv", "jsonl", "parquet"],
    rows: Iterable[Sequence[Any]],
    out: IO[str] | IO[bytes],
) -> int:
    """Write stored `rows` to `out` as `fmt` (UTF-8 when `out` is binary); returns how many.
    CSV has the `CSV_COLUMNS` header; JSONL is one ``Quote.to_json_dict()`` per line; Parquet
    (binary `out` only; pyarrow, an optional extra) has the same columns, typed."""
    if fmt == "parquet":
        from crawler.store.parquet import write_parquet

        return write_parquet(rows, cast(IO[bytes], out), CSV_COLUMNS, PARQUET_POSITIONS)

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
                writer.writerow(csv_row(row))
                written += 1
        else:
            for row in rows:
                text.write(JSON_ENCODER.encode(_row_json(row)))
                text.write("\n")
                written += 1
        text.flush()
    finally:
        if wrapper is not None:
            # Detach so collecting the wrapper never closes the caller's stream.
            wrapper.flush()
            wrapper.detach()
    return written
