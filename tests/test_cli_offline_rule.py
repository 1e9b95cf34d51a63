"""The CLI's one rule for "through the daemon, else on the data dir"
(`crawler.cli.common.via_daemon_or_offline`), the secrets the log redactor is given, and the
lazy package exports: the pieces the commands share, each written once."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawler.cli.common import via_daemon_or_offline
from crawler.config import Settings
from crawler.utils.exceptions import DaemonNotRunningError
from crawler.utils.lazy import by_name, lazy_attribute


class _Backend:
    """What a command works on without a daemon: records that it was opened and closed."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        log.append("opened")

    def close(self) -> None:
        self.log.append("closed")


def _no_daemon() -> dict[str, str]:
    raise DaemonNotRunningError("crawler daemon is not running (no answer on /nowhere)")


def test_the_daemon_answers_first(tmp_path: Path) -> None:
    log: list[str] = []
    settings = Settings(data_dir=tmp_path / "data")
    answer = via_daemon_or_offline(
        settings, lambda: {"from": "daemon"}, lambda _b: {"from": "disk"}, lambda _s: _Backend(log)
    )
    assert answer == {"from": "daemon"}
    assert log == []  # nothing opened on the data dir


def test_without_a_daemon_the_backend_is_opened_and_closed(tmp_path: Path) -> None:
    log: list[str] = []
    settings = Settings(data_dir=tmp_path / "data")
    answer = via_daemon_or_offline(
        settings, _no_daemon, lambda _b: {"from": "disk"}, lambda _s: _Backend(log)
    )
    assert answer == {"from": "disk"}
    assert log == ["opened", "closed"]


def test_a_read_makes_no_data_dir(tmp_path: Path) -> None:
    log: list[str] = []
    settings = Settings(data_dir=tmp_path / "none")
    with pytest.raises(DaemonNotRunningError) as caught:
        via_daemon_or_offline(
            settings, _no_daemon, lambda _b: {}, lambda _s: _Backend(log), creates=False
        )
    assert f"there is no data dir at {tmp_path / 'none'}" in caught.value.message
    assert log == []
    assert not (tmp_path / "none").exists()


def test_a_redis_store_is_enough_where_the_command_keeps_data_there(tmp_path: Path) -> None:
    log: list[str] = []
    settings = Settings(data_dir=tmp_path / "none", redis_url="redis://127.0.0.1:6379/0")
    answer = via_daemon_or_offline(
        settings,
        _no_daemon,
        lambda _b: {"alerts": []},
        lambda _s: _Backend(log),
        creates=False,
        redis_holds_data=True,
    )
    assert answer == {"alerts": []}
    with pytest.raises(DaemonNotRunningError):  # data commands need the data dir itself
        via_daemon_or_offline(
            settings, _no_daemon, lambda _b: {}, lambda _s: _Backend(log), creates=False
        )


def test_clean_strips_escapes_from_either_answer(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    dirty = {"name": "Apple\x1b[31m Inc"}
    kept = via_daemon_or_offline(settings, lambda: dirty, lambda _b: {}, lambda _s: _Backend([]))
    assert kept == dirty
    cleaned = via_daemon_or_offline(
        settings, lambda: dirty, lambda _b: {}, lambda _s: _Backend([]), clean=True
    )
    assert "\x1b" not in cleaned["name"]
    offline = via_daemon_or_offline(
        settings, _no_daemon, lambda _b: dirty, lambda _s: _Backend([]), clean=True
    )
    assert "\x1b" not in offline["name"]


def test_secret_values_are_the_key_and_the_redis_credentials(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        bright_data_api_key="bd-key-0123456789abcdef",
        redis_url="redis://crawler:hunter2-secret@127.0.0.1:6379/0",
    )
    secrets = settings.secret_values()
    assert "bd-key-0123456789abcdef" in secrets
    assert "hunter2-secret" in secrets
    assert Settings(data_dir=tmp_path, bright_data_api_key="").secret_values() == []


def test_lazy_exports_fail_as_python_does() -> None:
    homes = by_name({"crawler.utils.text": ("clean_text",)})
    assert lazy_attribute("crawler.example", homes, "clean_text").__name__ == "clean_text"
    with pytest.raises(AttributeError, match=r"^module 'crawler\.example' has no attribute 'x'$"):
        lazy_attribute("crawler.example", homes, "x")
    import crawler.config

    with pytest.raises(AttributeError, match=r"^module 'crawler\.config' has no attribute 'y'$"):
        crawler.config.y  # noqa: B018
