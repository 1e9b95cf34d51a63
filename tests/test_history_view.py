"""`crawler history` on a history too long to show at once (12,000 rows of one symbol): the
newest rows first, a cut answer that says so and how to get the rest, `--limit` honoured in the
table, --json and --csv, offline and through the daemon."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from crawler.normalizer.schemas import Quote
from crawler.store.history import HistoryStore
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

ROWS = 12_000
NEWEST = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)


def _as_of(i: int) -> datetime:
    """Row i's time: row 0 is the oldest, row ROWS - 1 the newest, one minute apart."""
    return NEWEST - timedelta(minutes=ROWS - 1 - i)


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


@pytest.fixture(scope="module")
def harness(market: FakeMarket, tmp_path_factory: pytest.TempPathFactory) -> DaemonHarness:
    """A data dir whose history holds ROWS quotes of AAPL:US (price = the row's index)."""
    daemon = DaemonHarness(market, tmp_path_factory.mktemp("history"))
    store = HistoryStore(daemon.data_dir / "history")
    store.record(
        Quote(symbol="AAPL:US", price=Decimal(i), source="bright_data", as_of=_as_of(i))
        for i in range(ROWS)
    )
    store.close()
    return daemon


@pytest.fixture(scope="module", params=["offline", "daemon"])
def run(request: pytest.FixtureRequest, harness: DaemonHarness) -> Iterator[DaemonHarness]:
    """The harness, with its daemon running for the "daemon" case."""
    if request.param == "daemon":
        harness.start()
        try:
            yield harness
        finally:
            assert harness.stop() == 0
    else:
        yield harness


def test_json_default_is_the_newest_hundred_and_says_it_was_cut(run: DaemonHarness) -> None:
    result = run.cli("history", "AAPL:US", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    prices = [q["price"] for q in body["quotes"]]
    assert prices == [str(i) for i in range(ROWS - 1, ROWS - 101, -1)]
    assert body["quotes"][0]["as_of"] == NEWEST.isoformat()
    assert (body["truncated"], body["total"], body["limit"]) == (True, ROWS, 100)
    assert body["order"] == "newest_first"
    assert "showing the newest 100 of 12,000 quotes of AAPL:US" in result.stderr
    assert "crawler export --symbols AAPL:US" in result.stderr


def test_limit_is_honoured_in_every_format(run: DaemonHarness) -> None:
    as_json = json.loads(run.cli("history", "AAPL:US", "--json", "--limit", "3").stdout)
    assert [q["price"] for q in as_json["quotes"]] == ["11999", "11998", "11997"]

    table = run.cli("history", "AAPL:US", "--limit", "3", env={**run.env, "COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert [p for p in ("11999", "11998", "11997", "11996") if p in table.stdout] == [
        "11999",
        "11998",
        "11997",
    ]
    assert "showing the newest 3 of 12,000" in table.stderr

    as_csv = run.cli("history", "AAPL:US", "--csv", "--limit", "3")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["price"] for r in rows] == ["11999", "11998", "11997"]
    assert "showing the newest 3 of 12,000" in as_csv.stderr


def test_csv_limit_zero_is_every_row_and_not_cut(run: DaemonHarness) -> None:
    result = run.cli("history", "AAPL:US", "--csv", "--limit", "0", "--oldest-first")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == ROWS and rows[0]["price"] == "0" and rows[-1]["price"] == "11999"
    assert result.stderr == ""


def test_oldest_first_and_a_window_that_fits_is_not_cut(run: DaemonHarness) -> None:
    oldest = json.loads(run.cli("history", "AAPL:US", "--json", "--oldest-first").stdout)
    assert [q["price"] for q in oldest["quotes"][:2]] == ["0", "1"]
    since = (NEWEST - timedelta(minutes=4)).isoformat()
    window = run.cli("history", "AAPL:US", "--json", "--since", since)
    body = json.loads(window.stdout)
    assert [q["price"] for q in body["quotes"]] == ["11999", "11998", "11997", "11996", "11995"]
    assert (body["truncated"], body["total"]) == (False, 5)
    assert window.stderr == ""


def test_a_json_limit_past_the_cap_is_a_usage_error(run: DaemonHarness) -> None:
    result = run.cli("history", "AAPL:US", "--json", "--limit", "10001")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --limit 10001 is out of range; use 1 to 10,000 "
        "(--csv or `crawler export` stream more)"
    )


def test_help_documents_the_default(harness: DaemonHarness) -> None:
    text = harness.cli("history", "--help", env={**harness.env, "COLUMNS": "200"}).stdout
    assert "newest 100, newest first" in text and "default 100" in text
