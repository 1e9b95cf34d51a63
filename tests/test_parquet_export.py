"""`crawler export --format parquet`: typed columns, read back by pyarrow equal to the CSV
export row for row, row groups, and one line naming the extra when pyarrow is missing."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.store.history import CSV_COLUMNS, HistoryStore
from crawler.store.parquet import ROW_GROUP_ROWS

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)


def sample_quotes() -> list[Quote]:
    return [
        Quote(
            symbol="VOD:LN",
            price=Decimal("71.94"),
            source="yfinance",
            currency="GBp",
            change=Decimal("-0.36"),
            change_pct=Decimal("-0.4979"),
            open=Decimal("72.30"),
            high=Decimal("72.5"),
            low=Decimal("71.5"),
            previous_close=Decimal("72.30"),
            volume=41_000_000,
            as_of=T0,
            fetched_at=T0 + timedelta(seconds=3, microseconds=250),
            asset_class=AssetClass.STOCKS,
            name='Vodafone, "Group"\nplc',
        ),
        # No source time, no optional fields, flags set.
        Quote(
            symbol="XBTUSD:CUR",
            price=Decimal("0.000000012345"),
            source="bright_data",
            fetched_at=T0 + timedelta(minutes=1),
            stale=True,
            from_cache=True,
        ),
        Quote(
            symbol="AAPL:US",
            price=Decimal("262.36"),
            source="bright_data",
            currency="USD",
            as_of=T0 + timedelta(minutes=2),
            fetched_at=T0 + timedelta(minutes=2, seconds=1),
        ),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(tmp_path / "history") as history:
        yield history


def csv_rows(store: HistoryStore) -> list[dict[str, str]]:
    buffer = io.StringIO()
    store.export("csv", buffer)
    return list(csv.DictReader(io.StringIO(buffer.getvalue())))


def as_csv_text(value: Any) -> str:
    """A Parquet value spelled as the CSV export spells it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def assert_same_rows(table: pa.Table, rows: list[dict[str, str]]) -> None:
    """Parquet rows equal CSV rows: decimals equal as numbers, the rest as CSV spells it."""
    assert table.column_names == list(CSV_COLUMNS)
    assert table.num_rows == len(rows)
    for parquet_row, csv_row in zip(table.to_pylist(), rows, strict=True):
        for name in CSV_COLUMNS:
            got, want = parquet_row[name], csv_row[name]
            if isinstance(got, Decimal):
                assert got == Decimal(want), (name, got, want)
            else:
                assert as_csv_text(got) == want, (name, got, want)


def test_parquet_reads_back_equal_to_the_csv_export(store: HistoryStore, tmp_path: Path) -> None:
    store.record(sample_quotes())
    path = tmp_path / "history.parquet"
    with path.open("wb") as out:
        assert store.export("parquet", out) == 3
    table = pq.read_table(path)
    assert_same_rows(table, csv_rows(store))
    # Typed columns: UTC timestamps, exact decimals, integers, booleans.
    types = {field.name: field.type for field in table.schema}
    assert types["as_of"] == pa.timestamp("us", tz="UTC")
    assert types["fetched_at"] == pa.timestamp("us", tz="UTC")
    assert types["price"] == pa.decimal128(38, 12)
    assert types["change_pct"] == pa.decimal128(38, 12)
    assert types["volume"] == pa.int64()
    assert types["stale"] == pa.bool_()
    first = table.slice(0, 1).to_pylist()[0]
    assert first["price"] == Decimal("71.94") and first["as_of"] == T0
    assert table.column("price").to_pylist()[1] == Decimal("0.000000012345")  # exact


def test_an_empty_export_is_a_valid_file_with_the_schema(
    store: HistoryStore, tmp_path: Path
) -> None:
    path = tmp_path / "empty.parquet"
    with path.open("wb") as out:
        assert store.export("parquet", out) == 0
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.column_names == list(CSV_COLUMNS)


def test_rows_are_written_in_row_groups(store: HistoryStore, tmp_path: Path) -> None:
    total = ROW_GROUP_ROWS + 100
    store.record(
        Quote(
            symbol="AAPL:US",
            price=Decimal(100 + i % 997) / 100,
            source="yfinance",
            currency="USD",
            as_of=T0 + timedelta(seconds=i),
            fetched_at=T0 + timedelta(seconds=i),
        )
        for i in range(total)
    )
    path = tmp_path / "many.parquet"
    with path.open("wb") as out:
        assert store.export("parquet", out) == total
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_rows == total
    assert metadata.num_row_groups == 2
    assert metadata.row_group(0).num_rows == ROW_GROUP_ROWS


# -- the CLI --------------------------------------------------------------------------------


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text("[market_hours]\nenabled = false\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIGHT_DATA_", "YFINANCE_", "CRAWLER_"))
        and k not in ("DATA_DIR", "RUNTIME_DIRECTORY", "STATE_DIRECTORY", "REDIS_URL")
    }
    env.update(
        PYTHONPATH=str(REPO),
        DATA_DIR=str(tmp_path / "data"),
        CRAWLER_SOCKET=str(tmp_path / "run" / "crawler.sock"),
        CRAWLER_CONFIG=str(config),
        **extra,
    )
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_exports_parquet_equal_to_its_csv(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    with HistoryStore(tmp_path / "data" / "history") as history:
        history.record(sample_quotes())
    out = tmp_path / "out.parquet"
    done = run(env, "export", "--format", "parquet", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "wrote 3 rows" in done.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    exported = run(env, "export", "--csv", "--symbols", "VOD:LN,XBTUSD:CUR,AAPL:US")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert_same_rows(pq.read_table(out), rows)


def test_parquet_needs_a_file(tmp_path: Path) -> None:
    done = run(cli_env(tmp_path), "export", "--format", "parquet")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: --format parquet writes a file: add -o FILE, e.g. -o history.parquet"
    )


def test_without_pyarrow_one_line_names_the_extra(tmp_path: Path) -> None:
    # A pyarrow that cannot be imported, first on the path: as on an install without the extra.
    shadow = tmp_path / "shadow" / "pyarrow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named pyarrow')\n")
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = f"{shadow.parent}{os.pathsep}{REPO}"
    out = tmp_path / "out.parquet"
    done = run(env, "export", "--format", "parquet", "-o", str(out))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "crawler[parquet]" in lines[0], done.stderr
    assert not out.exists()
