"""Issue 13 item 10: the small ones, each through the real CLI or the real daemon."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness, one_clean_line


@pytest.fixture(scope="module")
def market() -> Iterator[FakeMarket]:
    with FakeMarket() as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(market: FakeMarket, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    harness = DaemonHarness(market, tmp_path_factory.mktemp("small"))
    harness.start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.mark.parametrize(
    "query",
    [
        "symbol=AAPL:US&limit=1000000000000000000000000000000",
        "symbol=AAPL:US&limit=9223372036854775808",
        "symbol=AAPL:US&since=99999999999999d",
        "symbol=AAPL:US&until=99999999999999w",
    ],
)
def test_absurd_history_queries_are_400_not_500(daemon: DaemonHarness, query: str) -> None:
    status, body = daemon.client().get(f"/history?{query}")
    assert status == 400, body
    assert "\n" not in body["error"]["message"]


def test_history_files_are_private(daemon: DaemonHarness) -> None:
    assert daemon.client().post("/symbols", {"symbol": "AAPL:US"})[0] in (200, 201)
    assert daemon.client(60).post("/collect", {})[0] == 200
    history = daemon.data_dir / "history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o700
    files = list(history.iterdir())
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_retention_out_of_range_is_refused_at_start(market: FakeMarket, tmp_path: Path) -> None:
    harness = DaemonHarness(market, tmp_path, HISTORY_RETENTION_DAYS="99999999")
    result = harness.cli("start", "--foreground")
    assert result.returncode == 2
    line = one_clean_line(result.stderr)
    assert "retention" in line.lower() and "36500" in line, line


def test_an_api_key_in_the_config_file_is_refused_with_the_reason(
    market: FakeMarket, tmp_path: Path
) -> None:
    secret = "sk-in-the-toml-0123456789abcdef"
    config = tmp_path / "config.toml"
    config.write_text(f'[bright_data]\napi_key = "{secret}"\n')
    harness = DaemonHarness(market, tmp_path, CRAWLER_CONFIG=str(config))
    for args in (("config", "show"), ("start", "--foreground")):
        result = harness.cli(*args)
        assert result.returncode == 2, result.stdout
        line = one_clean_line(result.stderr)
        assert "bright_data.api_key is not read from the config file" in line, line
        assert "BRIGHT_DATA_API_KEY" in line
        assert secret not in result.stderr + result.stdout
