"""Issue 22, item 16: `symbols add` of 280 is a summary, an unknown Yahoo suffix is refused, and
`export --since` filters on the fetch time (or, with --by quote, on the quote's own time)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness, one_clean_line


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    with FakeMarket() as market:
        harness = DaemonHarness(market, tmp_path_factory.mktemp("small"), STREAM_ENABLED="false")
        # yfinance only: an old Yahoo time must stay old (Bright Data would pay for a fresh one).
        harness.env.pop("BRIGHT_DATA_API_KEY")
        harness.start()
        try:
            yield harness
        finally:
            harness.stop()


def test_adding_280_symbols_prints_a_summary(daemon: DaemonHarness) -> None:
    assert daemon.cli("symbols", "add", "H1:US", "H2:US").returncode == 0
    given = [f"H{i}:US" for i in range(1, 281)]
    result = daemon.cli("symbols", "add", *given)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    assert result.stdout.startswith("added 278 symbols (stocks 278); 2 already tracked: ")
    assert "H1:US, H2:US" in result.stdout
    verbose = daemon.cli("symbols", "add", *given, "--verbose")
    assert verbose.stdout.count("already tracked: ") == 280
    as_json = json.loads(daemon.cli("symbols", "add", *given, "--json").stdout)
    assert len(as_json["symbols"]) == 280
    few = daemon.cli("symbols", "add", "H1:US", "H300:US")
    assert few.stdout == "already tracked: H1:US (stocks)\nadded H300:US (stocks)\n"


def test_an_unknown_yahoo_suffix_is_refused(daemon: DaemonHarness) -> None:
    result = daemon.cli("symbols", "add", "FOO.XYZ")
    assert result.returncode == 2
    line = one_clean_line(result.stderr)
    assert ".XYZ is not a Yahoo exchange suffix" in line and "FOO:US" in line
    listed = json.loads(daemon.cli("symbols", "list", "--json").stdout)["symbols"]
    assert not [s for s in listed if s["symbol"].startswith("FOO")]
    known = daemon.cli("symbols", "add", "VOD.L")
    assert known.returncode == 0 and "added VOD:LN" in known.stdout


def test_export_since_filters_on_the_fetch_time(daemon: DaemonHarness) -> None:
    """A quote fetched now whose source time is two hours old is in `--since 1h` (the fetch
    time), and out of it with `--by quote` (the quote's own time)."""
    old = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    daemon.market.yahoo.set_quote("OLDQ", regular_market_time=int(old.timestamp()))
    fetched = daemon.cli("fetch", "OLDQ:US", "--json")
    assert fetched.returncode in (0, 1), fetched.stderr
    (quote,) = json.loads(fetched.stdout)["quotes"]
    assert datetime.fromisoformat(quote["as_of"]) < datetime.now(UTC) - timedelta(hours=1)
    by_fetch = daemon.cli("export", "--since", "1h", "--symbols", "OLDQ:US")
    assert by_fetch.returncode == 0, by_fetch.stderr
    assert [row["symbol"] for row in csv.DictReader(io.StringIO(by_fetch.stdout))] == ["OLDQ:US"]
    by_quote = daemon.cli("export", "--since", "1h", "--symbols", "OLDQ:US", "--by", "quote")
    assert list(csv.DictReader(io.StringIO(by_quote.stdout))) == []
    help_text = daemon.cli("export", "--help").stdout
    assert "--by" in help_text and "fetched" in help_text


def test_bad_by_is_usage(tmp_path: Path, daemon: DaemonHarness) -> None:
    result = daemon.cli("export", "--by", "sometime")
    assert result.returncode == 2 and "--by" in one_clean_line(result.stderr)
