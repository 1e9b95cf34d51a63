"""Failures summarised, and what status shows at 300 symbols with 150 waiting (issue 22, items
6 and 8): the real CLI, a real daemon, the fake market (no Bright Data key: yfinance only; the
150 ZZZZ symbols are unknown to the fake Yahoo)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from crawler.orchestrator.failures import cause_of, group_failures, summary_lines
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness

KNOWN = [f"K{i}:US" for i in range(150)]
UNKNOWN = [f"ZZZZ{i}:US" for i in range(150)]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    with FakeMarket() as market:
        harness = DaemonHarness(
            market,
            tmp_path_factory.mktemp("reasons"),
            YFINANCE_MAX_RPS="1000",
            STREAM_ENABLED="false",
        )
        harness.env.pop("BRIGHT_DATA_API_KEY")  # yfinance only
        harness.start()
        try:
            added = harness.cli("symbols", "add", *KNOWN, *UNKNOWN)
            assert added.returncode == 0, added.stderr
            yield harness
        finally:
            harness.stop()


@pytest.fixture(scope="module")
def collected(daemon: DaemonHarness) -> dict[str, object]:
    result = daemon.cli("collect", timeout_s=180)
    return {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}


def test_collect_says_each_cause_once_and_exits_1(
    daemon: DaemonHarness, collected: dict[str, object]
) -> None:
    assert collected["returncode"] == 1  # symbols were left without a fresh quote
    stderr = str(collected["stderr"])
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr  # one cause: Yahoo does not know them
    assert errors[0].startswith("error: 150 x ") and "ZZZZ0:US, ZZZZ1:US, ZZZZ2:US" in errors[0]
    assert "and 147 more" in errors[0]
    assert "150 errors" in str(collected["stdout"])


def test_collect_json_has_every_symbol_and_the_groups(
    daemon: DaemonHarness, collected: dict[str, object]
) -> None:
    result = daemon.cli("collect", "--json", timeout_s=180)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert sorted(report["errors"]) == sorted(UNKNOWN)
    (group,) = report["failures"]
    assert group["count"] == 150 and sorted(group["symbols"]) == sorted(UNKNOWN)


def test_the_log_says_each_cause_once_per_collection(
    daemon: DaemonHarness, collected: dict[str, object]
) -> None:
    events = [json.loads(line) for line in daemon.log_tail(10**7).splitlines() if "{" in line]
    names = [event.get("event") for event in events]
    assert "fetch failed" not in names
    failures = [event for event in events if event.get("event") == "collection failures"]
    done = [event for event in events if event.get("event") == "collection done"]
    per_collection = [e for e in failures if e.get("count") == 150]
    assert len(per_collection) == len([d for d in done if "150 errors" in d["summary"]])
    assert "and 147 more" in per_collection[0]["symbols"]


def test_status_shows_prices_first_and_why_the_rest_wait(
    daemon: DaemonHarness, collected: dict[str, object]
) -> None:
    result = daemon.cli("status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("symbols: "))
    assert "300 tracked" in lines[heading] and "150 pending" in lines[heading]
    reason = lines[heading + 1]
    assert reason.strip().startswith("150 pending: ") and "Yahoo does not know it" in reason
    rows = [line for line in lines[heading + 1 :] if line.startswith(("K", "ZZZZ"))]
    assert len(rows) == 50
    assert all(row.startswith("K") and " USD " in row for row in rows)  # all with a price
    summary = json.loads(daemon.cli("status", "--json").stdout)["symbols_summary"]
    (group,) = summary["pending_reasons"]
    assert group["count"] == 150 and len(group["symbols"]) == 5


def test_status_symbol_says_why_in_full(
    daemon: DaemonHarness, collected: dict[str, object]
) -> None:
    result = daemon.cli("status", "ZZZZ7:US")
    assert result.returncode == 0, result.stderr
    assert "ZZZZ7:US (stocks): pending" in result.stdout
    why = next(line for line in result.stdout.splitlines() if line.startswith("why"))
    assert "ZZZZ7:US" in why and "Yahoo does not know it" in why
    body = json.loads(daemon.cli("status", "zzzz7", "--json").stdout)
    assert body["symbol"] == "ZZZZ7:US" and body["pending"] is True
    assert "Yahoo does not know it" in body["last_error"]
    fine = json.loads(daemon.cli("status", "K1:US", "--json").stdout)
    assert fine["pending"] is False and fine["last_quote"]["price"]
    untracked = daemon.cli("status", "NOPE:US")
    assert untracked.returncode == 2 and "not tracked" in untracked.stderr


def test_fetch_groups_its_failures_and_exits_1(
    daemon: DaemonHarness, collected: dict[str, object]
) -> None:
    result = daemon.cli("fetch", "K1:US", *UNKNOWN[:20])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: 20 x "), result.stderr
    assert "K1:US" in result.stdout


def test_grouping_takes_the_symbol_out_of_the_message() -> None:
    assert cause_of("ZZZZ2:LN", "no source could serve ZZZZ2:LN (yfinance: ZZZZ2.L unknown)") == (
        "no source could serve it (yfinance: it unknown)"
    )
    groups = group_failures(
        {"A:US": "timeout on A:US", "B:US": "timeout on B:US", "C:US": {"message": "HTTP 500"}}
    )
    assert [(g.cause, g.count) for g in groups] == [("timeout on it", 2), ("HTTP 500", 1)]
    assert summary_lines(groups) == ["2 x timeout on it: A:US, B:US", "C:US: HTTP 500"]
