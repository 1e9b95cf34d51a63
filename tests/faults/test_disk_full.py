"""Issue 13 item 9: a full disk is a storage error, not a source failure.

ENOSPC on the data dir opened both breakers (the sources were healthy), collections said
"0 errors, recorded 0", and the breakers stayed open 60-120 s after space came back. Now a
storage error never counts against a source: the breakers stay closed, the collection says
how many quotes were not stored, and once there is space again the next collection stores
everything. The data dir is a real, small tmpfs filled to the last byte (root only: skipped
with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.utils.exceptions import CrawlerError
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

SYMBOLS = [f"D{i:02d}:US" for i in range(20)]
COST = Decimal("0.0015")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to give the space back)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    # Unbuffered: a buffered file kept the chunk that did not fit and raised ENOSPC again when
    # it was closed, outside the try (the daemon writing at the same moment made that likely).
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError), filler.open("ab") as handle:  # the last few bytes too
        while True:
            handle.write(b"\0")
            handle.flush()
    return filler


def _breakers(daemon: DaemonHarness) -> dict[str, str]:
    status, body = daemon.client(30).get("/status")
    assert status == 200, body
    return {name: b["state"] for name, b in body["breakers"].items() if name != "stream"}


def test_a_full_data_dir_blames_no_source(small_disk: Path, tmp_path: Path) -> None:
    with FakeMarket() as market:
        daemon = DaemonHarness(
            market, tmp_path, SOURCES_ORDER="bright_data,yfinance",
            TOTAL_BUDGET=str(1_000 * COST), COST_PER_REQUEST=str(COST), CACHE_TTL_SECONDS="1",
        )  # fmt: skip
        try:
            daemon.start()
            for symbol in SYMBOLS:
                assert daemon.client().post("/symbols", {"symbol": symbol})[0] == 201
            status, first = daemon.client(60).post("/collect", {})
            assert status == 200 and first["quotes"] == len(SYMBOLS), first

            filler = _fill(small_disk)
            for _ in range(3):  # Bright Data's breaker opens after 3 failures
                time.sleep(1.1)  # past the daemon's 1 s cache TTL: the sources are asked
                try:
                    status, body = daemon.client(60).post("/collect", {})
                except CrawlerError as exc:  # the answer itself may fail to be built
                    status, body = 0, {"error": {"message": str(exc)}}
                text = str(body)
                # Said plainly: the disk is what failed, and how many quotes it cost.
                if status == 200:
                    assert body["storage_errors"] > 0, text
                    assert "full" in str(body["storage_error"]), text
                else:
                    assert "not stored" in text and "full" in text, text
            assert set(_breakers(daemon).values()) == {"closed"}, _breakers(daemon)

            filler.unlink()  # space is back: the very next collection stores everything
            fresh = [f"E{i:02d}:US" for i in range(5)]  # new quotes, not history duplicates
            for symbol in fresh:
                assert daemon.client().post("/symbols", {"symbol": symbol})[0] == 201
            status, after = daemon.client(60).post("/collect", {})
            assert status == 200, after
            assert after["quotes"] == len(SYMBOLS) + len(fresh) and not after["errors"], after
            assert after["recorded"] >= len(fresh), after
            assert set(_breakers(daemon).values()) == {"closed"}
        finally:
            code = daemon.stop()
        assert code == 0, daemon.log_tail()
