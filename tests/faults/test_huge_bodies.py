"""Issue 23 item 9 against the real daemon: a 60 MB Yahoo batch answer used to take the
daemon's VmHWM from 133 to 404 MB (read whole, copied, decoded). It is now read with a cap: the
request fails cleanly, each symbol says why, and the peak memory barely moves."""

from __future__ import annotations

import json
from pathlib import Path

from fakemarket import FakeMarket
from fakemarket.yahoo import QUOTE_FAULT_KEY
from tests.faults.daemon_harness import DaemonHarness

HUGE_BYTES = 60 << 20
#: What the capped read may add to the daemon's peak: the 4 MiB cap, curl's buffers, noise.
ALLOWED_GROWTH_KB = 40 * 1024


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_60_mb_batch_answer_fails_cleanly_without_the_memory(tmp_path: Path) -> None:
    with FakeMarket() as market:
        daemon = DaemonHarness(market, tmp_path, SOURCES_ORDER="yfinance", STREAM_ENABLED="false")
        proc = daemon.start()
        try:
            # Warm up: yfinance, curl and the JSON machinery loaded, one batch served.
            warm = daemon.cli("fetch", "--json", "IBM:US", "ORCL:US")
            assert warm.returncode == 0, warm.stderr
            before_kb = _peak_kb(proc.pid)

            market.yahoo.faults.set(QUOTE_FAULT_KEY, huge_body_bytes=HUGE_BYTES)
            huge = daemon.cli("fetch", "--json", "AAPL:US", "MSFT:US", "QQQ:US")

            after_kb = _peak_kb(proc.pid)
            assert daemon.alive()
            assert huge.returncode == 1, (huge.stdout, huge.stderr)
            assert "internal error" not in huge.stdout + huge.stderr
            answer = json.loads(huge.stdout)
            errors = answer["errors"]
            assert set(errors) == {"AAPL:US", "MSFT:US", "QQQ:US"}, answer
            assert all("over the 4,194,304-byte limit" in e["message"] for e in errors.values())
            assert after_kb - before_kb < ALLOWED_GROWTH_KB, (before_kb, after_kb)

            # The daemon goes on: a normal answer is served again.
            market.yahoo.faults.clear(QUOTE_FAULT_KEY)
            again = daemon.cli("fetch", "--json", "--fresh", "AAPL:US")
            assert again.returncode == 0, again.stderr
        finally:
            daemon.stop()
