"""systemd/crawler.service: hardened (exposure <= 2.0) and valid, checked by systemd itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "crawler.service"
INSTALLED_CRAWLER = "/opt/crawler/.venv/bin/crawler"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _unit_text() -> str:
    return UNIT.read_text(encoding="utf-8")


def test_unit_is_a_notify_service_with_a_watchdog() -> None:
    text = _unit_text()
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^ExecStart=\S+/crawler start --foreground\b", text, re.M)
    assert re.search(r"^WatchdogSec=\d+s?$", text, re.M)
    assert re.search(r"^LoadCredential=bright_data_api_key:", text, re.M)
    assert re.search(r"^RuntimeDirectory=crawler$", text, re.M)
    assert re.search(r"^StateDirectory=crawler$", text, re.M)
    # The key must never travel in the environment, where other tools can read it.
    assert "BRIGHT_DATA_API_KEY" not in text
    # SIGTERM stops it without starting Python; an allow list without a deny list does nothing.
    assert not re.search(r"^ExecStop=", text, re.M)
    assert not re.search(r"^IPAddressAllow=", text, re.M)
    assert re.search(r"^ExecReload=\S+/crawler reload$", text, re.M)


def test_security_exposure_is_at_most_2() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_verify_is_clean_with_a_real_executable(tmp_path: Path) -> None:
    # The unit names the installed path; point it at a real executable that runs this checkout.
    executable = tmp_path / "crawler"
    executable.write_text(f'#!/bin/sh\nexec {sys.executable} -m crawler "$@"\n')
    executable.chmod(0o755)
    venv_crawler = Path(sys.executable).parent / "crawler"
    target = venv_crawler if venv_crawler.is_file() else executable
    text = _unit_text()
    assert INSTALLED_CRAWLER in text
    copy = tmp_path / "crawler.service"
    copy.write_text(text.replace(INSTALLED_CRAWLER, str(target)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # Only our unit's problems count; the host's own units may have warnings of their own.
    ours = [line for line in result.stderr.splitlines() if "crawler.service" in line]
    assert ours == [], "\n".join(ours)
