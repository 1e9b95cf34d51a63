"""The [stream] settings: defaults, config.toml, the environment, and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawler.config import Settings, load_settings
from crawler.utils.exceptions import ConfigError


def settings_from(tmp_path: Path, toml: str = "", **overrides: object) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(toml)
    return load_settings({"data_dir": tmp_path / "data", **overrides}, config_file=config)


def test_defaults_stream_from_yahoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STREAM_ENABLED", "YFINANCE_STREAM_ENDPOINT", "STREAM_HISTORY_INTERVAL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = settings_from(tmp_path)
    assert settings.stream_enabled is True
    assert settings.yfinance_stream_endpoint.startswith("wss://streamer.finance.yahoo.com")
    assert settings.stream_history_interval_seconds == 60


def test_config_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = (
        '[stream]\nenabled = false\nendpoint = "ws://127.0.0.1:9/"\nhistory_interval_seconds = 5\n'
    )
    monkeypatch.delenv("STREAM_ENABLED", raising=False)
    monkeypatch.delenv("YFINANCE_STREAM_ENDPOINT", raising=False)
    settings = settings_from(tmp_path, toml)
    assert settings.stream_enabled is False
    assert settings.yfinance_stream_endpoint == "ws://127.0.0.1:9/"
    assert settings.stream_history_interval_seconds == 5
    monkeypatch.setenv("STREAM_ENABLED", "true")
    monkeypatch.setenv("YFINANCE_STREAM_ENDPOINT", "ws://127.0.0.1:10/")
    settings = settings_from(tmp_path, toml)
    assert settings.stream_enabled is True
    assert settings.yfinance_stream_endpoint == "ws://127.0.0.1:10/"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"yfinance_stream_endpoint": "http://127.0.0.1:9/"}, "not a websocket URL"),
        ({"stream_history_interval_seconds": 0}, "stream_history_interval_seconds"),
        ({"stream_enabled": "sometimes"}, "stream_enabled"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(
    tmp_path: Path, override: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, **override)
    message = caught.value.message
    assert words in message and "\n" not in message
