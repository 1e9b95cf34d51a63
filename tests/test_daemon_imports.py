"""The daemon loads pandas without pyarrow, and its Parquet export still loads pyarrow in full.

pandas imports pyarrow at its own import whenever it is installed (the `crawler[parquet]` extra,
which `make dev` installs): 44 MB of the daemon's memory at 1,000 symbols for nothing it uses.
Read from the running daemon's own memory map, after a collection that needed pandas (market
hours and yfinance), then after a Parquet export through its socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

pq = pytest.importorskip("pyarrow.parquet", reason="the crawler[parquet] extra is not installed")

SYMBOLS = ["AAPL:US", "VOD:LN", "EURUSD:CUR"]


def _mapped(daemon: DaemonHarness, package: str) -> bool:
    assert daemon.proc is not None
    maps = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
    return f"/site-packages/{package}/" in maps


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonHarness]:
    with FakeMarket() as market:
        harness = DaemonHarness(market, tmp_path)
        assert harness.cli("symbols", "add", *SYMBOLS).returncode == 0
        harness.start()
        try:
            yield harness
        finally:
            assert harness.stop() == 0, harness.log_tail()


def test_pandas_is_loaded_without_pyarrow_and_parquet_still_works(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    collected = daemon.cli("collect")
    assert collected.returncode == 0, collected.stderr
    assert _mapped(daemon, "pandas"), "the collection was meant to need pandas"
    assert not _mapped(daemon, "pyarrow")

    out = tmp_path / "quotes.parquet"
    exported = daemon.cli("export", "--format", "parquet", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    symbols = set(pq.read_table(out).column("symbol").to_pylist())
    assert symbols == set(SYMBOLS)
