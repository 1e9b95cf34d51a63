"""Issue 18's proof through the real daemon at default settings: 300 symbols, 20 that Yahoo
serves and 280 found only on Bloomberg (Yahoo does not know them). The Yahoo-served ones cost
nothing, `crawler budget` names why each paid request was made, and (issue 22 item 9) the
second collection asks Yahoo nothing about the 280. `crawler fetch --paid` buys on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.orchestrator.budget_report import split_labels
from fakemarket import FakeMarket

REPO = Path(__file__).resolve().parents[1]
YAHOO_SERVED = [f"K{i:02d}:US" for i in range(14)] + [
    "VOD:LN", "SAP:GR", "EURUSD:CUR", "XBTUSD:CUR", "GBPUSD:CUR", "7203:JP",
]  # fmt: skip
BLOOMBERG_ONLY = [f"ZZZZ{i:03d}:US" for i in range(280)]


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


def crawler(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        env=env, capture_output=True, text=True, timeout=180, cwd=env["DATA_DIR"] + "/..",
    )  # fmt: skip


@pytest.fixture(scope="module")
def env(market: FakeMarket, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("cost")
    (base / "config.toml").write_text("")  # every default
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIGHT_DATA_", "YFINANCE_", "BUDGET_", "STREAM_", "DATA_DIR"))
    }
    env.update(market.environment())
    env.update(
        PYTHONPATH=str(REPO),
        DATA_DIR=str(base / "data"),
        CRAWLER_SOCKET=str(base / "run" / "crawler.sock"),
        CRAWLER_CONFIG=str(base / "config.toml"),
        # Every other setting is the default; the collections measured are the forced ones.
        AUTO_UPDATE_ENABLED="false",
    )
    (base / "data").mkdir(mode=0o700)
    added = crawler(env, "symbols", "add", *YAHOO_SERVED, *BLOOMBERG_ONLY)
    assert added.returncode == 0, added.stderr
    started = crawler(env, "start")
    assert started.returncode == 0, started.stderr
    try:
        yield env
    finally:
        crawler(env, "stop")


def _allowance(collect_json: str) -> int | None:
    body = json.loads(collect_json)
    report = body.get("report", body) if isinstance(body, dict) else {}
    value = report.get("paid_allowance")
    return None if value is None else int(value)


def _paid_symbols(market: FakeMarket) -> set[str]:
    return {r.symbol for r in market.bright_data.log_requests() if r.symbol}


def test_yahoo_served_symbols_cost_nothing_and_the_reasons_are_named(
    market: FakeMarket, env: dict[str, str]
) -> None:
    # Issue 22 item 5: what `budget` and `status` say a collection may pay is what it gets.
    shown = json.loads(crawler(env, "budget", "--json").stdout)["allowance_per_collection"]
    status = json.loads(crawler(env, "status", "--json").stdout)
    assert status["spending"]["allowance_per_collection"] == shown
    collected = crawler(env, "collect", "--json")
    assert collected.returncode in (0, 1), collected.stderr
    assert isinstance(shown, int) and shown > 0
    assert _allowance(collected.stdout) == shown, (collected.stdout[-400:], shown)
    assert not _paid_symbols(market) & set(YAHOO_SERVED)
    assert _paid_symbols(market) <= set(BLOOMBERG_ONLY) and _paid_symbols(market)
    report = json.loads(crawler(env, "budget", "--json").stdout)
    assert set(report["paid_by_reason"]) == {"unservable"}, report["paid_by_reason"]
    assert report["paid_by_reason"]["unservable"] == report["requests_used"] > 0
    text = crawler(env, "budget").stdout
    assert "unservable" in text
    status = json.loads(crawler(env, "status", "--json").stdout)
    assert status["spending"]["paid_by_reason"] == report["paid_by_reason"]
    metrics = json.loads(crawler(env, "status", "--json").stdout)["daemon"]["socket"]
    assert metrics  # the Prometheus text comes over the same socket:
    scraped = subprocess.run(
        ["curl", "-s", "--unix-socket", metrics, "http://localhost/v1/metrics"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    line = f'crawler_paid_requests_total{{reason="unservable"}} {report["requests_used"]}.0'
    assert line in scraped.splitlines(), [x for x in scraped.splitlines() if "paid_req" in x]

    # The second collection asks Yahoo nothing about the 280 it knows it cannot serve.
    market.yahoo.reset()
    shown = json.loads(crawler(env, "budget", "--json").stdout)["allowance_per_collection"]
    again = crawler(env, "collect", "--json")
    assert again.returncode in (0, 1), again.stderr
    assert _allowance(again.stdout) == shown
    # What the policy saved: the seed's order would have paid for every symbol fetched.
    saved = json.loads(crawler(env, "budget", "--json").stdout)["seed_order"]
    assert saved["paid"] < saved["requests"] and saved["saved_requests"] > 0, saved
    assert "the seed's order would have paid" in crawler(env, "budget").stdout
    asked = {s for batch in market.yahoo.batch_symbols() for s in batch}
    charts = {r.symbol for r in market.yahoo.requests_of("chart")}
    assert not {s for s in asked | charts if s and s.startswith("ZZZZ")}, sorted(asked)[:5]


def test_fetch_paid_buys_on_purpose_and_says_so(market: FakeMarket, env: dict[str, str]) -> None:
    before = market.bright_data.billed_count
    free = crawler(env, "fetch", "--fresh", "--json", "K01:US")
    assert free.returncode == 0, free.stderr
    assert market.bright_data.billed_count == before  # Yahoo serves it: free
    bought = crawler(env, "fetch", "--paid", "--json", "K01:US")
    assert bought.returncode == 0, bought.stderr
    assert json.loads(bought.stdout)["quotes"][0]["source"] == "bright_data"
    assert market.bright_data.billed_count == before + 1
    report = json.loads(crawler(env, "budget", "--json").stdout)
    assert report["paid_by_reason"].get("asked") == 1
    assert split_labels({"K01:US#asked": 1}) == ({"K01:US": 1}, {"asked": 1})
