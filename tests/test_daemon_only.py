"""What only the real daemon does, checked on the real daemon (not on its parts in-process):
market-hours skipping with market hours on, the modes of its own socket and files, and
`/export` streamed in chunks as it is read."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

# At every moment at least one of New York, London and Tokyo is closed (they never overlap all
# three, and all are shut at weekends); crypto never closes.
STOCKS = ["AAPL:US", "VOD:LN", "7203:JP"]
ALWAYS_OPEN = "XBTUSD:CUR"


@contextmanager
def _daemon(base: Path) -> Iterator[DaemonHarness]:
    with FakeMarket() as market:
        harness = DaemonHarness(market, base, CACHE_TTL_SECONDS="1")
        harness.env["MARKET_HOURS_ENABLED"] = "true"
        assert harness.cli("symbols", "add", *STOCKS, ALWAYS_OPEN).returncode == 0
        harness.start()
        try:
            yield harness
        finally:
            assert harness.stop() == 0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    with _daemon(tmp_path_factory.mktemp("only")) as harness:
        yield harness


def test_closed_markets_are_fetched_once_then_skipped(tmp_path: Path) -> None:
    # A daemon of its own: its first collection must be the first these symbols ever had.
    with _daemon(tmp_path) as daemon:
        _fetched_once_then_skipped(daemon)


def _fetched_once_then_skipped(daemon: DaemonHarness) -> None:
    client = daemon.client()
    first = client.call("POST", "/collect")
    # Never fetched: every symbol is fetched once, a closed market's included (its close).
    assert first["quotes"] == 4 and first["skipped_closed"] == []
    second = client.call("POST", "/collect")
    status = client.call("GET", "/status")
    closed = {e["symbol"] for e in status["symbols"] if e["market"].get("open") is False}
    assert closed and closed <= set(STOCKS)  # the clock of this run decides which
    assert set(second["skipped_closed"]) == closed
    assert ALWAYS_OPEN not in second["skipped_closed"]
    assert second["quotes"] == 4 - len(closed)


def test_the_daemon_keeps_its_socket_and_files_private(daemon: DaemonHarness) -> None:
    mode = os.stat(daemon.socket_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.socket_path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(daemon.data_dir / "crawler.pid").st_mode) == 0o600


def _raw_get(path: str, target: str) -> tuple[dict[str, str], list[int], bytes]:
    """GET over the socket by hand: (headers, the chunk sizes as sent, the body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    sizes: list[int] = []
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        sizes.append(size)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return headers, sizes, body


def test_export_is_streamed_in_chunks(daemon: DaemonHarness) -> None:
    symbols = [f"E{i:03d}:US" for i in range(400)]
    fetched = daemon.client().call("POST", "/fetch", {"symbols": symbols, "fresh": True})
    assert len(fetched["quotes"]) == 400
    headers, sizes, body = _raw_get(str(daemon.socket_path), "/v1/export?format=jsonl")
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    rows = [json.loads(line) for line in body.splitlines()]
    assert int(headers["x-crawler-rows"]) == len(rows) >= 400
    # Many chunks of bounded size, not one answer built in memory.
    assert len(sizes) >= 3 and max(sizes) <= 64 * 1024, sizes


def test_a_closed_markets_close_is_not_stale(daemon: DaemonHarness) -> None:
    """Past the cache TTL (1 s here) an open market's quote is stale, but a closed market's
    quote fetched after its close is not: it is the close, which the collector rightly does not
    pay for again. A weekend used to show every stock and index as stale."""
    client = daemon.client()
    client.call("POST", "/collect")
    deadline_s = time.monotonic() + 30
    while True:  # until every quote is past the TTL (no fixed sleep)
        status = client.call("GET", "/status")
        entries = {e["symbol"]: e for e in status["symbols"]}
        ages = [e["fetched_age_s"] for e in entries.values()]
        assert time.monotonic() < deadline_s, ("the quotes never aged past the 1 s TTL", entries)
        if None in ages:  # never fetched yet (a fetch cut short on a loaded machine): again
            client.call("POST", "/collect")
            continue
        if min(ages) > 1.5:
            break
        time.sleep(0.05)
    closed = {name for name, e in entries.items() if e["market"].get("open") is False}
    assert closed  # at every moment one of the three stock markets is shut
    assert {name for name, e in entries.items() if e["stale"]} == set(entries) - closed
    assert status["symbols_summary"]["stale"] == len(entries) - len(closed)
    assert all(entries[name]["last_quote"]["stale"] is False for name in closed)


def test_a_fetch_of_more_symbols_than_one_request_holds(daemon: DaemonHarness) -> None:
    """`crawler fetch` of 1,001 symbols through the daemon, whose API takes 1,000 a request:
    the CLI sends them in turn and prints every quote (it failed whole with the API's own
    "'symbols' must hold 1 to 1000 symbols")."""
    symbols = [f"Q{i:04d}:US" for i in range(1001)]
    result = daemon.cli("fetch", "--json", *symbols, timeout_s=300)
    assert result.returncode == 0, result.stderr[-2000:]
    body = json.loads(result.stdout)
    assert body["errors"] == {}
    assert sorted(q["symbol"] for q in body["quotes"]) == symbols


def test_adding_many_symbols_through_the_daemon_past_its_limit(tmp_path: Path) -> None:
    """`crawler symbols add` of 12,000 through the daemon goes 1,000 a request (it was one
    request a symbol: 15 s for 1,000): every symbol up to the limit is added in order, and the
    rest are named in one line as offline."""
    given = [f"T{index}:US" for index in range(12_000)]
    with FakeMarket() as market:
        harness = DaemonHarness(market, tmp_path)
        harness.start()
        try:
            result = harness.cli("symbols", "add", *given, "--json", timeout_s=300)
            assert result.returncode == 1, result.stderr[-2000:]
            added = json.loads(result.stdout)["symbols"]
            assert [entry["symbol"] for entry in added] == given[:10_000]
            assert result.stderr.strip().splitlines()[-1] == (
                "error: watchlist is full (10,000 symbols): 2,000 of the 12,000 symbols given "
                "were not added, from T10000:US on; remove symbols before adding more"
            )
            again = harness.cli("symbols", "add", *given[:1_500])
            assert again.returncode == 0, again.stderr
            assert again.stdout.startswith("added 0 symbols; 1,500 already tracked: T0:US, ")
            listed = harness.client().call("GET", "/symbols")["symbols"]
            assert [entry["symbol"] for entry in listed] == given[:10_000]
        finally:
            assert harness.stop() == 0
