"""Benchmark: write N quotes into a temporary history, then export them as CSV, JSONL and Parquet.

Exports stream to /dev/null (Parquet to a temporary file: its writer seeks nowhere, but its
size is worth printing). pyarrow is imported, and a 100-row Parquet export made, before the
baseline is taken, so the Parquet figures show the export's own growth; the import's and the
first use's costs (Arrow's kernels and codec) are printed on their own.

Prints rows/s for the write and each export, and memory: peak RSS
(``getrusage`` maxrss) and current RSS before and after each export, so the export's growth
over the same process's baseline shows; with ``--tracemalloc`` also the Python heap peak of
each export (about 5x slower). The last line is one JSON object with every figure.

    python bench/bench_export.py [--rows 1000000] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

# Standalone: make `crawler` importable without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.store.history import HistoryStore

__all__ = ["main", "run"]

_SYMBOLS = ("AAPL:US", "MSFT:US", "VOD:LN", "HSBA:LN", "7203:JP", "EURUSD:CUR", "XBTUSD:CUR")
_T0 = datetime(2025, 1, 1, tzinfo=UTC)
_FORMATS: tuple[Literal["csv", "jsonl", "parquet"], ...] = ("csv", "jsonl", "parquet")


def _quotes(rows: int) -> Iterator[Quote]:
    """Realistic rows, every optional field set, generated lazily (constant memory)."""
    for i in range(rows):
        price = Decimal(10_000 + i % 50_000) / 100
        yield Quote(
            symbol=_SYMBOLS[i % len(_SYMBOLS)],
            price=price,
            source="bright_data" if i % 3 else "yfinance",
            currency="USD",
            change=Decimal("-1.25"),
            change_pct=Decimal("-0.4512"),
            open=price + 1,
            high=price + 2,
            low=price - 2,
            previous_close=price + Decimal("1.25"),
            volume=1_000_000 + i,
            as_of=_T0 + timedelta(seconds=i),
            fetched_at=_T0 + timedelta(seconds=i, milliseconds=350),
            asset_class=AssetClass.STOCKS,
            name="Benchmark Corp",
        )


def _maxrss_kib() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _current_rss_kib() -> int | None:
    """Resident set size now, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def run(rows: int, trace: bool) -> dict[str, Any]:
    """Run the benchmark in a temporary directory; returns the figures."""
    figures: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        store = HistoryStore(Path(tmp) / "history")
        try:
            started = time.perf_counter()
            written = 0
            batch_rows = 10_000
            quotes = _quotes(rows)
            while written < rows:
                n = min(batch_rows, rows - written)
                written += store.record(next(quotes) for _ in range(n))
            write_s = time.perf_counter() - started
            figures["write_rows_per_s"] = round(written / write_s)
            figures["db_bytes"] = sum(p.stat().st_size for p in (Path(tmp) / "history").iterdir())
            before_import_kib = _current_rss_kib()
            import pyarrow.parquet  # noqa: F401 - loaded before the baseline (see the docstring)

            after_import_kib = _current_rss_kib()
            if before_import_kib is not None and after_import_kib is not None:
                figures["pyarrow_import_rss_kib"] = after_import_kib - before_import_kib
            # Arrow loads its cast kernels and the zstd codec on first use: a 100-row export
            # before the baseline, so the export's own working set is what the figures show.
            store.export("parquet", io.BytesIO(), limit=100)
            after_first_use_kib = _current_rss_kib()
            if after_import_kib is not None and after_first_use_kib is not None:
                figures["parquet_first_use_rss_kib"] = after_first_use_kib - after_import_kib
            figures["baseline_maxrss_kib"] = _maxrss_kib()
            figures["baseline_rss_kib"] = _current_rss_kib()
            for fmt in _FORMATS:
                target = Path(tmp) / "export.parquet" if fmt == "parquet" else Path(os.devnull)
                with target.open("wb") as sink:
                    started = time.perf_counter()
                    exported = store.export(fmt, sink)
                    export_s = time.perf_counter() - started
                if fmt == "parquet":
                    figures["parquet_bytes"] = target.stat().st_size
                assert exported == rows, (fmt, exported)
                figures[f"{fmt}_rows_per_s"] = round(exported / export_s)
                figures[f"{fmt}_s"] = round(export_s, 2)
                figures[f"{fmt}_maxrss_kib"] = _maxrss_kib()
                figures[f"{fmt}_rss_kib"] = _current_rss_kib()
                figures[f"{fmt}_maxrss_growth_kib"] = (
                    figures[f"{fmt}_maxrss_kib"] - figures["baseline_maxrss_kib"]
                )
            # Traced passes last: tracemalloc's own bookkeeping would inflate the RSS figures.
            for fmt in _FORMATS if trace else ():
                target = Path(tmp) / "export.parquet" if fmt == "parquet" else Path(os.devnull)
                with target.open("wb") as sink:
                    tracemalloc.start()
                    try:
                        store.export(fmt, sink)
                        peak_bytes = tracemalloc.get_traced_memory()[1]
                        figures[f"{fmt}_tracemalloc_peak_bytes"] = peak_bytes
                    finally:
                        tracemalloc.stop()
        finally:
            store.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the figures and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to write and export")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also trace each export's heap peak (slow)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    figures = run(args.rows, args.tracemalloc)
    print(f"rows                 {figures['rows']:>12,}")
    print(f"write                {figures['write_rows_per_s']:>12,} rows/s")
    print(f"baseline peak RSS    {figures['baseline_maxrss_kib']:>12,} KiB")
    if "pyarrow_import_rss_kib" in figures:
        imported = figures["pyarrow_import_rss_kib"]
        print(f"pyarrow import RSS   {imported:>12,} KiB (in the baseline)")
    if "parquet_first_use_rss_kib" in figures:
        first_use = figures["parquet_first_use_rss_kib"]
        print(f"Arrow's first use    {first_use:>12,} KiB (in the baseline)")
    for fmt in _FORMATS:
        print(
            f"export {fmt:<6}        {figures[f'{fmt}_rows_per_s']:>12,} rows/s   "
            f"peak RSS {figures[f'{fmt}_maxrss_kib']:,} KiB "
            f"(+{figures[f'{fmt}_maxrss_growth_kib']:,} over baseline)"
            + (
                f"   heap peak {figures[f'{fmt}_tracemalloc_peak_bytes'] / 1e6:.1f} MB"
                if args.tracemalloc
                else ""
            )
        )
    print(json.dumps(figures, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
