"""`crawler status` answers without Typer or pydantic, and finds the same socket as Settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crawler.config import load_settings
from crawler.config.files import socket_path_from_files

REPO = Path(__file__).resolve().parents[1]
LOCATION_VARS = (
    "CRAWLER_SOCKET", "DATA_DIR", "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR", "STATE_DIRECTORY",
    "XDG_DATA_HOME", "CRAWLER_CONFIG",
)  # fmt: skip

CASES = [
    pytest.param({}, "", id="defaults"),
    pytest.param({"CRAWLER_SOCKET": "{tmp}/env.sock"}, "", id="env socket"),
    pytest.param({"CRAWLER_SOCKET": "rel/env.sock"}, "", id="relative env socket"),
    pytest.param({}, '[daemon]\nsocket = "toml.sock"\n', id="toml socket, relative to the toml"),
    pytest.param(
        {"CRAWLER_SOCKET": "{tmp}/env.sock"}, '[daemon]\nsocket = "t.sock"\n', id="env wins"
    ),
    pytest.param({"RUNTIME_DIRECTORY": "{tmp}/run"}, "", id="systemd runtime dir"),
    pytest.param({"XDG_RUNTIME_DIR": "{tmp}/xdg"}, "", id="xdg runtime dir"),
    pytest.param({"XDG_RUNTIME_DIR": "relative"}, "", id="relative xdg ignored"),
    pytest.param({"DATA_DIR": "{tmp}/data"}, "", id="env data dir"),
    pytest.param({}, '[storage]\ndata_dir = "d"\n', id="toml data dir"),
    pytest.param({"DATA_DIR": "{tmp}/e"}, '[storage]\ndata_dir = "d"\n', id="env data dir wins"),
    pytest.param({"STATE_DIRECTORY": "{tmp}/state"}, "", id="systemd state dir"),
    pytest.param({"XDG_DATA_HOME": "{tmp}/share"}, "", id="xdg data home"),
]


@pytest.mark.parametrize(("env", "toml"), CASES)
def test_the_quick_socket_path_equals_the_settings_one(
    env: dict[str, str], toml: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in LOCATION_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text(toml)
    monkeypatch.setenv("CRAWLER_CONFIG", str(config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    assert socket_path_from_files() == load_settings().socket_path


def _status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    probe = (
        "import runpy, sys, json\n"
        f"sys.argv = ['crawler', 'status', *{list(args)!r}]\n"
        "try:\n"
        "    runpy.run_module('crawler', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    ('pydantic', 'pydantic_settings', 'typer', 'pandas', 'yfinance', 'curl_cffi',\n"
        "     'apscheduler', 'h11', 'prometheus_client'))\n"
        "sys.stderr.write(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO,
        timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_status_without_a_daemon_imports_neither_typer_nor_pydantic(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    env = {**os.environ, "CRAWLER_CONFIG": str(config), "CRAWLER_SOCKET": str(tmp_path / "s")}
    result = _status(env, *args)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report == {"code": 3, "heavy": []}
    assert str(tmp_path / "s") in result.stdout


def test_a_broken_config_falls_back_to_the_full_cli_and_its_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[cache]\nttl = 5\n")
    env = {**os.environ, "CRAWLER_CONFIG": str(config)}
    result = subprocess.run(
        [sys.executable, "-m", "crawler", "status"], capture_output=True, text=True, env=env,
        cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "unknown key 'cache.ttl'" in result.stderr
