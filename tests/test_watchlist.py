"""Watchlist: order, persistence, limits, and two processes adding at once."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from crawler.normalizer.schemas import AssetClass
from crawler.store.watchlist import MAX_SYMBOLS, Watchlist
from crawler.utils.exceptions import StorageError, SymbolError
from tests.test_ledger import spawn


@dataclass(frozen=True)
class FakeSymbol:
    """Shaped like crawler.normalizer.symbols.Symbol, which this store must not import."""

    ticker: str
    suffix: str

    @property
    def canonical(self) -> str:
        return f"{self.ticker}:{self.suffix}"


def test_add_keeps_insertion_order_and_refuses_duplicates(tmp_path: Path) -> None:
    watchlist = Watchlist(tmp_path)
    assert watchlist.add("MSFT:US", AssetClass.STOCKS)
    assert watchlist.add("EURUSD:CUR", AssetClass.FOREX)
    assert watchlist.add(FakeSymbol("AAPL", "US"), AssetClass.STOCKS)
    assert not watchlist.add("MSFT:US", AssetClass.INDICES)  # present: class unchanged
    assert watchlist.items() == [
        ("MSFT:US", AssetClass.STOCKS),
        ("EURUSD:CUR", AssetClass.FOREX),
        ("AAPL:US", AssetClass.STOCKS),
    ]
    assert watchlist.symbols() == ["MSFT:US", "EURUSD:CUR", "AAPL:US"]
    assert len(watchlist) == 3
    assert "AAPL:US" in watchlist
    assert FakeSymbol("EURUSD", "CUR") in watchlist
    assert "GC1:COM" not in watchlist
    assert 42 not in watchlist


def test_remove(tmp_path: Path) -> None:
    watchlist = Watchlist(tmp_path)
    for name in ("A:US", "B:US", "C:US"):
        watchlist.add(name, AssetClass.STOCKS)
    assert watchlist.remove("B:US")
    assert not watchlist.remove("B:US")
    assert watchlist.remove(FakeSymbol("A", "US"))
    assert watchlist.symbols() == ["C:US"]
    watchlist.add("B:US", AssetClass.STOCKS)  # re-added goes to the end
    assert watchlist.symbols() == ["C:US", "B:US"]


def test_persists_across_instances(tmp_path: Path) -> None:
    first = Watchlist(tmp_path)
    first.add("GC1:COM", AssetClass.COMMODITIES)
    first.add("SPX:IND", AssetClass.INDICES)
    first.close()
    second = Watchlist(tmp_path)
    assert second.items() == [("GC1:COM", AssetClass.COMMODITIES), ("SPX:IND", AssetClass.INDICES)]
    second.remove("GC1:COM")
    assert Watchlist(tmp_path).symbols() == ["SPX:IND"]


def test_limit_is_a_clear_error(tmp_path: Path) -> None:
    assert MAX_SYMBOLS == 10_000
    watchlist = Watchlist(tmp_path, max_symbols=3)
    for name in ("A:US", "B:US", "C:US"):
        assert watchlist.add(name, AssetClass.STOCKS)
    assert not watchlist.add("A:US", AssetClass.STOCKS)  # a duplicate is not an error
    with pytest.raises(StorageError, match=r"full \(3 symbols\).*D:US"):
        watchlist.add("D:US", AssetClass.STOCKS)
    assert len(watchlist) == 3


@pytest.mark.parametrize("bad", ["", "   ", "AA PL:US", "X" * 65])
def test_malformed_symbols_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SymbolError):
        Watchlist(tmp_path).add(bad, AssetClass.STOCKS)


def test_corrupt_record_is_a_storage_error(tmp_path: Path) -> None:
    watchlist = Watchlist(tmp_path)
    watchlist.add("A:US", AssetClass.STOCKS)
    with sqlite3.connect(tmp_path / "cache.db") as con:
        con.execute("UPDATE Cache SET value = ?", (b"\x00garbage",))
    con.close()
    with pytest.raises(StorageError, match="corrupt"):
        watchlist.items()


def test_two_processes_adding_at_once_lose_nothing(tmp_path: Path) -> None:
    count = 60
    workers = [
        spawn("watchlist-add", str(tmp_path), prefix, str(count), "4") for prefix in ("P", "Q")
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            assert out.strip() == "done"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    symbols = Watchlist(tmp_path).symbols()
    expected = {f"{prefix}{i}:US" for prefix in ("P", "Q") for i in range(count)}
    assert len(symbols) == len(expected)
    assert set(symbols) == expected
    # Each process's own additions keep their relative order per thread.
    p0 = [s for s in symbols if s.startswith("P") and int(s[1:-3]) % 4 == 0]
    assert p0 == sorted(p0, key=lambda s: int(s[1:-3]))
