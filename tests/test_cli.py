"""The CLI without a daemon: offline mode on the data dir, exit codes, one-line errors, and how
little `crawler status` imports. Every command runs as `python -m crawler` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakemarket import FakeMarket

REPO = Path(__file__).resolve().parents[1]
API_KEY = "sk-test-CLI-SECRET-9e107d9d372bb682"
CONFIG_TOML = "[market_hours]\nenabled = false\n"
HEAVY_MODULES = ("pandas", "yfinance", "curl_cffi", "apscheduler")


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def env(market: FakeMarket, tmp_path: Path) -> dict[str, str]:
    """A crawler environment on a fresh data dir, pointed at the fake market, no daemon."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG_TOML)
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIGHT_DATA_", "YFINANCE_", "CRAWLER_", "WATCHDOG_"))
        and k not in ("NOTIFY_SOCKET", "DATA_DIR", "RUNTIME_DIRECTORY", "STATE_DIRECTORY")
    }
    return {
        **clean,
        **market.environment(),
        "PYTHONPATH": str(REPO),
        "DATA_DIR": str(tmp_path / "data"),
        "CRAWLER_SOCKET": str(tmp_path / "run" / "crawler.sock"),
        "CRAWLER_CONFIG": str(config),
        # These tests pin the CLI with the seed's order (Bright Data first); the needs-based
        # default policy is proven in test_cost_policy_daemon.py.
        "BUDGET_POLICY": "paced",
    }


def crawler(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert API_KEY not in result.stdout and API_KEY not in result.stderr
    return result


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def test_offline_fetch_serves_and_records(env: dict[str, str], market: FakeMarket) -> None:
    result = crawler(env, "fetch", "AAPL:US", "VOD:LN", "--json")
    assert result.returncode == 0, result.stderr
    quotes = json.loads(result.stdout)["quotes"]
    assert [q["symbol"] for q in quotes] == ["AAPL:US", "VOD:LN"]
    assert {q["source"] for q in quotes} == {"bright_data"}
    # The data dir keeps the cache between CLI runs: no second paid request.
    billed = market.bright_data.billed_count
    table = crawler(env, "fetch", "AAPL:US")
    assert table.returncode == 0 and "AAPL:US" in table.stdout and "cache" in table.stdout
    assert market.bright_data.billed_count == billed
    history = json.loads(crawler(env, "history", "AAPL:US", "--json").stdout)
    assert len(history["quotes"]) == 1
    exported = crawler(env, "export", "--format", "csv")
    assert exported.returncode == 0
    assert exported.stdout.splitlines()[0].startswith("symbol,")
    assert len(exported.stdout.splitlines()) == 3
    # history and export choose formats the same way: --format X, or its shorthand flag.
    as_json = crawler(env, "history", "AAPL:US", "--format", "json").stdout
    assert json.loads(as_json) == history
    as_csv = crawler(env, "history", "AAPL:US", "--csv").stdout
    assert as_csv == crawler(env, "history", "AAPL:US", "--format", "csv").stdout
    assert as_csv.startswith("symbol,")
    lines = crawler(env, "history", "AAPL:US", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["symbol"] for line in lines] == ["AAPL:US"]
    jsonl = crawler(env, "export", "--jsonl").stdout
    assert jsonl == crawler(env, "export", "--format", "jsonl").stdout
    assert len(jsonl.splitlines()) == 2
    for args, message in (
        (("history", "AAPL:US", "--format", "xml"), "use table, json, csv, jsonl"),
        (("export", "--format", "xml"), "use csv, jsonl"),
        (("history", "AAPL:US", "--json", "--format", "csv"), "choose one format"),
        (("export", "--csv", "--jsonl"), "choose one format"),
    ):
        bad = crawler(env, *args)
        assert bad.returncode == 2 and message in one_error_line(bad), args


def test_offline_symbols(env: dict[str, str]) -> None:
    assert crawler(env, "symbols", "add", "TSLA:US", "EURUSD:CUR").returncode == 0
    listed = json.loads(crawler(env, "symbols", "list", "--json").stdout)["symbols"]
    assert listed == [
        {"symbol": "TSLA:US", "asset_class": "stocks"},
        {"symbol": "EURUSD:CUR", "asset_class": "forex"},
    ]
    removed = crawler(env, "symbols", "remove", "TSLA:US")
    assert removed.returncode == 0 and "removed TSLA:US" in removed.stdout
    missing = crawler(env, "symbols", "remove", "TSLA:US")
    assert missing.returncode == 1 and "not tracked" in one_error_line(missing)


def test_a_failed_symbol_exits_1_but_prints_the_others(
    env: dict[str, str], market: FakeMarket
) -> None:
    market.bright_data.set_page("ZZZZ:US", "target_404")
    market.yahoo.unknown("ZZZZ")
    result = crawler(env, "fetch", "AAPL:US", "ZZZZ:US")
    assert result.returncode == 1
    assert "AAPL:US" in result.stdout
    assert "ZZZZ:US" in one_error_line(result)


def test_bad_symbol_is_a_usage_error(env: dict[str, str]) -> None:
    result = crawler(env, "fetch", "AAPL:XX")
    assert result.returncode == 2
    assert "unknown suffix 'XX'" in one_error_line(result)
    bad_class = crawler(env, "symbols", "add", "AAPL", "--asset-class", "shoes")
    assert bad_class.returncode == 2 and "asset class" in one_error_line(bad_class)


def test_bad_time_spec_is_a_usage_error(env: dict[str, str]) -> None:
    result = crawler(env, "history", "AAPL:US", "--since", "yesterday-ish")
    assert result.returncode == 2 and "invalid time" in one_error_line(result)


def test_bad_config_exits_2_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scheduler]\nfrobnicate = 1\n")
    for args in (("status",), ("fetch", "AAPL:US"), ("start", "--foreground")):
        result = crawler({**env, "CRAWLER_CONFIG": str(bad)}, *args)
        assert result.returncode == 2
        assert "unknown key 'scheduler.frobnicate'" in one_error_line(result)
    too_fast = crawler(env, "start", "--foreground", "--interval", "5")
    assert too_fast.returncode == 2 and "update_interval_seconds" in one_error_line(too_fast)


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    result = crawler(env, "fetch")
    assert result.returncode == 2 and "Missing argument" in one_error_line(result)
    unknown = crawler(env, "frobnicate")
    assert unknown.returncode == 2 and "No such command" in one_error_line(unknown)


def test_daemon_not_running_exits_3(env: dict[str, str]) -> None:
    status = crawler(env, "status")
    assert status.returncode == 3 and "crawler is not running" in status.stdout
    as_json = crawler(env, "status", "--json")
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["running"] is False
    result = crawler(env, "collect")
    assert result.returncode == 3
    assert "not running" in one_error_line(result)


def test_stop_when_not_running_exits_0(env: dict[str, str]) -> None:
    # `systemctl stop` of an inactive unit succeeds: the wanted state already holds.
    result = crawler(env, "stop")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("crawler is not running")
    as_json = crawler(env, "stop", "--json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["running"] is False


def test_symbols_add_and_remove_print_json(env: dict[str, str]) -> None:
    added = crawler(env, "symbols", "add", "VOD:LN", "AAPL", "--json")
    assert added.returncode == 0, added.stderr
    assert [(s["symbol"], s["added"]) for s in json.loads(added.stdout)["symbols"]] == [
        ("VOD:LN", True),
        ("AAPL:US", True),
    ]
    removed = crawler(env, "symbols", "remove", "VOD:LN", "NOPE:US", "--json")
    assert removed.returncode == 1  # one was not tracked
    assert [(s["symbol"], s["removed"]) for s in json.loads(removed.stdout)["symbols"]] == [
        ("VOD:LN", True),
        ("NOPE:US", False),
    ]


def test_debug_shows_the_traceback(env: dict[str, str]) -> None:
    result = crawler(env, "--debug", "collect")
    assert result.returncode == 3
    assert "Traceback" in result.stderr and "DaemonNotRunningError" in result.stderr


def test_config_show_masks_the_key(env: dict[str, str]) -> None:
    result = crawler(env, "config", "show", "--json")
    assert result.returncode == 0
    values = json.loads(result.stdout)
    assert values["bright_data_api_key"].startswith("****")
    assert values["data_dir"] == env["DATA_DIR"]


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crawler", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout.strip() == "crawler 0.1.0"


@pytest.mark.parametrize("args", [["status"], ["--help"], ["status", "--json"]])
def test_status_and_help_import_nothing_heavy(env: dict[str, str], args: list[str]) -> None:
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['crawler', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('crawler', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30
    )
    assert "HEAVY=\n" in result.stderr, result.stderr


def test_yahoo_input_is_translated_with_a_note_and_kept_as_one_entry(
    env: dict[str, str], market: FakeMarket
) -> None:
    added = crawler(env, "symbols", "add", "VOD.L")
    assert added.returncode == 0, added.stderr
    assert added.stderr == "note: VOD.L is how Yahoo writes it; using VOD:LN\n"
    assert added.stdout == "added VOD:LN (stocks)\n"
    again = crawler(env, "symbols", "add", "VOD:LN")
    assert again.stdout == "already tracked: VOD:LN (stocks)\n"
    listed = json.loads(crawler(env, "symbols", "list", "--json").stdout)
    assert listed["symbols"] == [{"symbol": "VOD:LN", "asset_class": "stocks"}]
    fetched = crawler(env, "fetch", "BTC-USD", "--json")
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["quotes"][0]["symbol"] == "XBTUSD:CUR"
    assert "note: BTC-USD is how Yahoo writes it; using XBTUSD:CUR" in fetched.stderr
    # Nothing was paid for a US stock named "VOD.L".
    assert not any("VOD.L" in (r.symbol or "") for r in market.bright_data.log_requests())


def test_a_contradicting_asset_class_is_refused_before_anything_is_paid(
    env: dict[str, str], market: FakeMarket
) -> None:
    before = market.bright_data.billed_count
    result = crawler(env, "symbols", "add", "XBTUSD:CUR", "--asset-class", "stocks")
    assert result.returncode == 2
    assert "contradicts XBTUSD:CUR" in one_error_line(result)
    fetched = crawler(env, "fetch", "XBTUSD:CUR", "--asset-class", "stocks")
    assert fetched.returncode == 2 and "contradicts" in one_error_line(fetched)
    assert market.bright_data.billed_count == before


def test_budget_offline_reads_the_ledger_of_the_data_dir(
    env: dict[str, str], market: FakeMarket
) -> None:
    assert crawler(env, "fetch", "AAPL:US").returncode == 0
    assert json.loads(crawler(env, "budget", "--json").stdout)["allowance_per_collection"] == 0
    assert crawler(env, "symbols", "add", "AAPL:US").returncode == 0  # now one is due
    result = crawler(env, "budget", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["requests_used"] == 1 and report["requests_allowed"] == 3666
    assert report["top_symbols"] == [{"symbol": "AAPL:US", "requests": 1}]
    assert report["paused_until"] is None and report["allowance_per_collection"] >= 1
    text = crawler(env, "budget")
    assert text.returncode == 0 and "lasts the day" in text.stdout


def test_adding_past_the_watchlist_limit_says_what_was_not_added(env: dict[str, str]) -> None:
    """12,000 symbols in one `symbols add` used to stop at 10,000 with one line that named only
    the first refused symbol: the 10,000 added were not reported, nor how many were left out."""
    given = [f"T{index}:US" for index in range(12_000)]
    result = crawler(env, "symbols", "add", *given, "--json")
    assert result.returncode == 1, result.stderr
    added = json.loads(result.stdout)["symbols"]
    assert [entry["symbol"] for entry in added] == given[:10_000]
    assert one_error_line(result) == (
        "error: watchlist is full (10,000 symbols): 2,000 of the 12,000 symbols given were not "
        "added, from T10000:US on; remove symbols before adding more"
    )
    listed = json.loads(crawler(env, "symbols", "list", "--json").stdout)["symbols"]
    assert len(listed) == 10_000  # what was added stays
