"""Progress on long work, at the size that showed the blank screens: 300 symbols against a fake
market answering each in 0.1 s, the real daemon, the CLI in a real terminal.

- `crawler collect` draws a bar from the daemon's events (was: 9 s of nothing);
- `crawler fetch` of 300 symbols through the daemon moves its bar as symbols finish (was:
  stuck at 0 % until the end);
- `crawler status` shows a collection in progress;
- Ctrl-C on `crawler collect` says the collection goes on in the daemon, and it does;
- `crawler export -o` says how many rows it wrote.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness
from tests.terminal import Terminal

SYMBOLS = [f"P{i:03d}:US" for i in range(300)]
CRAWLER = [sys.executable, "-m", "crawler"]


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        fake.bright_data.faults.set("*", latency_s=0.1)
        yield fake


@pytest.fixture(scope="module")
def daemon(market: FakeMarket, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    # A one-second cache, so every collection fetches all 300 again.
    harness = DaemonHarness(market, tmp_path_factory.mktemp("progress"), CACHE_TTL_SECONDS="1")
    added = harness.cli("symbols", "add", *SYMBOLS)  # offline, before the start: one process
    assert added.returncode == 0, added.stderr
    harness.start()
    try:
        yield harness
    finally:
        assert harness.stop() == 0


def _bar_counts(text: str) -> list[int]:
    return [int(done) for done in re.findall(r"(\d+)/300\b", text)]


def test_collect_draws_a_bar_that_moves(daemon: DaemonHarness) -> None:
    time.sleep(1.1)  # the cache's one second: this collection fetches all 300
    term = Terminal.run([*CRAWLER, "collect"], daemon.env, cwd=daemon.base)
    assert term.wait() == 0, term.text()
    text = term.text()
    assert "collected 300 quotes for 300 symbols" in text
    counts = _bar_counts(text)
    # The bar was drawn part-way, not only at 0 and at the end.
    assert any(0 < done < 300 for done in counts), text[-2000:]


def test_fetch_through_the_daemon_moves_its_bar(daemon: DaemonHarness) -> None:
    term = Terminal.run(
        [*CRAWLER, "fetch", "--fresh", "--json", *SYMBOLS], daemon.env, cwd=daemon.base
    )
    assert term.wait() == 0, term.text()[-2000:]
    assert any(0 < done < 300 for done in _bar_counts(term.text())), term.text()[-2000:]


def test_status_shows_a_collection_in_progress_and_ctrl_c_leaves_it_running(
    daemon: DaemonHarness,
) -> None:
    time.sleep(1.1)
    client = daemon.client()
    before = client.call("GET", "/status")["scheduler"]["collection_metrics"]["total_collections"]
    term = Terminal.run([*CRAWLER, "collect"], daemon.env, cwd=daemon.base)
    term.wait_for("/300")  # the collection has started in the daemon
    running = client.call("GET", "/status")["scheduler"]["scheduler_state"]
    progress = running["collection_in_progress"]
    assert progress is not None and progress["total"] == 300 and progress["done"] < 300
    shown = daemon.cli("status", env={**daemon.env, "COLUMNS": "120"})
    assert re.search(r"collecting now: \d+/300 symbols", shown.stdout), shown.stdout

    term.interrupt()
    assert term.wait() == 130
    (line,) = [line for line in term.text().splitlines() if "interrupted" in line]
    assert re.fullmatch(
        r"interrupted \(\d+/300 symbols done\): the collection goes on in the daemon; "
        r"`crawler status` shows its progress",
        line.strip(),
    ), line
    # ...and it does: the collection finishes in the daemon without the CLI.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = client.call("GET", "/status")["scheduler"]["collection_metrics"]
        if metrics["total_collections"] > before:
            break
        time.sleep(0.1)
    last = client.call("GET", "/status")["scheduler"]["last_collection"]
    assert metrics["total_collections"] == before + 1 and last["quotes"] == 300


def test_export_to_a_file_says_rows(daemon: DaemonHarness, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    result = daemon.cli("export", "--format", "jsonl", "-o", str(out))
    assert result.returncode == 0, result.stderr
    rows = len(out.read_text().splitlines())
    assert rows >= 300
    size = out.stat().st_size
    assert result.stderr.strip() == f"wrote {rows:,} rows ({size / 1e3:.1f} kB) to {out}"
    body = json.loads(out.read_text().splitlines()[0])
    assert body["symbol"] in SYMBOLS
