"""The README's systemd install, walked in a container-like setting (issue 22, items 1-3).

What systemd would do is done by hand, as it does it: the README's own commands write
/etc/crawler (here a temporary stand-in) as root with the README's modes; the unit's
`LoadCredential=` lines become a credentials directory holding private copies of those files
for the service user; `RuntimeDirectory=crawler` is the real /run/crawler, owned by that user
(0700); `StateDirectory` a 0700 directory of its own. The daemon then runs as `nobody` (what a
DynamicUser is: an unprivileged uid), and root's CLI, with none of crawler's settings and from
another directory, talks to it over its socket. Needs root (skipped otherwise, with why).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.daemon.client import ControlClient
from fakemarket import FakeMarket
from tests.faults.daemon_harness import REPO, clean_env, one_clean_line

NOBODY = 65534
RUN_DIR = Path("/run/crawler")
UNIT = REPO / "systemd" / "crawler.service"
INSTALLED = "/opt/crawler/.venv/bin/crawler"
KEY = "sk-systemd-walk-0123456789abcdef"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: the walk runs the daemon as an unprivileged user and the CLI as root",
)


def readme_install_lines() -> list[str]:
    """The commands of the README's "Running under systemd" block, in order."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Running under systemd") :]
    block = section[section.index("```bash\n") + 8 : section.index("```\n", 10)]
    lines = []
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()  # comments out
        if line:
            lines.append(line)
    return lines


def _python_for(uid: int) -> tuple[str, dict[str, str]] | None:
    """An interpreter and PYTHONPATH with which `uid` can import this checkout, or None."""
    site = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{site}", "PATH": "/usr/bin:/bin"}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        try:
            probe = subprocess.run(
                [python, "-c", "import crawler.daemon.app"],
                user=uid, group=uid, extra_groups=[], env=env, cwd="/",
                capture_output=True, timeout=120,
            )  # fmt: skip
        except OSError:  # not there, or not executable by uid
            continue
        if probe.returncode == 0:
            return python, env
    return None


class Install:
    """/etc/crawler as the README leaves it, and the service as systemd would run it."""

    def __init__(self, base: Path, market: FakeMarket) -> None:
        self.base = base
        self.etc = base / "etc" / "crawler"
        self.credentials = base / "credentials"
        self.state = base / "state" / "crawler"
        self.market = market
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "journal.log"
        (base / "home").mkdir()
        (base / "elsewhere").mkdir()
        found = _python_for(NOBODY)
        if found is None:
            pytest.skip(
                "uid 65534 cannot import this checkout (its directory or the interpreter is "
                "not readable by other users here)"
            )
        self.python, self.python_env = found

    def run_readme(self, line: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """One README command as root: `sudo` is who we are already, /etc/crawler is ours, the
        installed crawler is this checkout's."""
        line = line.replace("sudo ", "").replace("/etc/crawler", str(self.etc))
        line = line.replace(INSTALLED, f"{sys.executable} -m crawler")
        if line.endswith(" key set"):  # its default file is /etc/crawler's
            line += f" --file {self.etc / 'bright_data_api_key'}"
        return subprocess.run(
            ["bash", "-c", line], cwd=REPO, input=stdin, capture_output=True, text=True,
            env={**clean_env(self.base), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            timeout=120,
        )  # fmt: skip

    def load_credentials(self) -> None:
        """What `LoadCredential=id:path` does: a private copy per credential, readable only by
        the service's user, in a directory of its own."""
        unit = UNIT.read_text()
        pairs = re.findall(r"^LoadCredential=([^:\s]+):(\S+)$", unit, re.M)
        assert {name for name, _ in pairs} == {"config.toml", "bright_data_api_key"}
        shutil.rmtree(self.credentials, ignore_errors=True)
        self.credentials.mkdir(mode=0o700)
        for name, source in pairs:
            target = self.credentials / name
            shutil.copyfile(source.replace("/etc/crawler", str(self.etc)), target)
            os.chown(target, NOBODY, NOBODY)
            os.chmod(target, 0o400)
        os.chown(self.credentials, NOBODY, NOBODY)
        os.chmod(self.credentials, 0o500)

    def start_service(self) -> None:
        """The unit's ExecStart as its user, with systemd's directories and credentials."""
        self.load_credentials()
        for directory in (RUN_DIR, self.state):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chown(directory, NOBODY, NOBODY)
            os.chmod(directory, 0o700)
        env = {
            **self.python_env,
            **self.market.environment(with_bright_data=False),
            "HOME": "/nonexistent",
            "CREDENTIALS_DIRECTORY": str(self.credentials),
            "RUNTIME_DIRECTORY": str(RUN_DIR),
            "STATE_DIRECTORY": str(self.state),
            "AUTO_UPDATE_ENABLED": "false",
            "MARKET_HOURS_ENABLED": "false",
            "STREAM_ENABLED": "false",
        }
        exec_start = re.search(r"^ExecStart=(\S+) (.*)$", UNIT.read_text(), re.M)
        assert exec_start is not None and exec_start.group(1) == INSTALLED
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "crawler", *exec_start.group(2).split()],
                user=NOBODY, group=NOBODY, extra_groups=[], env=env, cwd="/",
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        # systemd reaps its service at once; so must we, or `crawler stop` waits on a zombie.
        threading.Thread(target=self.proc.wait, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                status, _ = ControlClient(RUN_DIR / "crawler.sock", timeout_s=2).get("/health")
            except Exception:
                time.sleep(0.05)
                continue
            if status == 200:
                return
        raise AssertionError(self.log.read_text())

    def stop_service(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def root_cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`sudo crawler ...` in root's shell elsewhere: none of crawler's settings."""
        return subprocess.run(
            [sys.executable, "-m", "crawler", *args],
            env=clean_env(self.base, **self.market.environment(with_bright_data=False)),
            cwd=self.base / "elsewhere", input=stdin, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    if RUN_DIR.exists():
        pytest.skip(f"{RUN_DIR} exists on this machine (a real crawler service?); not touching it")
    base = Path(tempfile.mkdtemp(prefix="crawler-systemd-", dir="/tmp"))
    os.chmod(base, 0o755)  # like / : root's, traversable by the service user
    with FakeMarket(api_key=KEY) as market:
        walk = Install(base, market)
        try:
            yield walk
        finally:
            walk.stop_service()
            shutil.rmtree(RUN_DIR, ignore_errors=True)
            shutil.rmtree(base, ignore_errors=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_readme_systemd_install_runs_and_root_cli_controls_it(install: Install) -> None:
    lines = readme_install_lines()
    setup = [ln for ln in lines if "/etc/crawler" in ln or " key set" in ln]
    assert len(setup) == 3, lines  # the directory, the config, the key
    for line in setup:
        result = install.run_readme(line, stdin=KEY + "\n" if " key set" in line else "")
        assert result.returncode == 0, (line, result.stderr)
    # The README's modes: root's files in a root-only directory.
    assert _mode(install.etc) == 0o700
    for name in ("config.toml", "bright_data_api_key"):
        assert _mode(install.etc / name) == 0o600 and (install.etc / name).stat().st_uid == 0
    assert (install.etc / "bright_data_api_key").read_text() == KEY
    assert not re.search(r"^data_dir", (install.etc / "config.toml").read_text(), re.M)

    install.start_service()  # item 1: it starts as the unprivileged user
    assert install.proc is not None

    # Item 2: root's CLI, from elsewhere, no CRAWLER_SOCKET: status, symbols add, fetch, stop.
    status = install.root_cli("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    body = json.loads(status.stdout)
    assert body["daemon"]["socket"] == str(RUN_DIR / "crawler.sock")
    assert body["daemon"]["data_dir"] == str(install.state)
    assert body["daemon"]["pid"] == install.proc.pid
    assert "bright_data" not in (body.get("config_errors") or {})
    added = install.root_cli("symbols", "add", "AAPL:US")
    assert added.returncode == 0, added.stderr
    fetched = install.root_cli("fetch", "AAPL:US", "--paid", "--json")
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["quotes"][0]["source"] == "bright_data"  # the key loaded
    table = install.root_cli("status")
    assert table.returncode == 0 and "AAPL:US" in table.stdout
    assert KEY not in install.log.read_text() + table.stdout + status.stdout
    stopped = install.root_cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert install.proc.wait(30) == 0


def test_an_empty_key_file_is_refused_and_said_loudly_when_one_exists(install: Install) -> None:
    lines = readme_install_lines()
    for line in lines:
        if "/etc/crawler" in line:
            assert install.run_readme(line).returncode == 0
    (key_line,) = [ln for ln in lines if " key set" in ln]
    # Item 3: what `sudo sh -c 'printf %s "$KEY" > ...'` did (sudo drops KEY): nothing typed.
    refused = install.run_readme(key_line, stdin="")
    assert refused.returncode == 2
    assert "no key given" in one_clean_line(refused.stderr)
    assert not (install.etc / "bright_data_api_key").exists()
    # A 0-byte key file anyway (the old README step): the daemon says so, loudly.
    fd = os.open(install.etc / "bright_data_api_key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    install.start_service()
    status = install.root_cli("status", "--json")
    assert status.returncode == 0, status.stderr
    problem = json.loads(status.stdout)["config_errors"]["bright_data"]
    assert "is empty (0 bytes)" in problem and "Bright Data is OFF" in problem
    table = install.root_cli("status")
    flat = " ".join(table.stdout.split())
    assert "config error bright_data" in flat and "is empty" in flat, table.stdout
    assert "the Bright Data key is empty" in install.log.read_text()


def test_root_does_not_trust_another_users_socket_outside_a_root_directory(
    install: Install,
) -> None:
    """The trust given to the service's socket needs a directory root made for it: the same
    daemon in a directory under one the user controls is refused."""
    mine = install.base / "home" / "mallory"
    mine.mkdir(mode=0o755)
    os.chown(mine, NOBODY, NOBODY)
    run = mine / "run"
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOBODY)
    env = {
        **install.python_env,
        "HOME": "/nonexistent",
        "CRAWLER_SOCKET": str(run / "crawler.sock"),
        "DATA_DIR": str(mine / "data"),
        "AUTO_UPDATE_ENABLED": "false",
        "STREAM_ENABLED": "false",
    }
    with install.log.open("ab") as log:
        install.proc = subprocess.Popen(
            [install.python, "-m", "crawler", "start", "--foreground"],
            user=NOBODY, group=NOBODY, extra_groups=[], env=env, cwd="/",
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (run / "crawler.sock").exists():
        assert time.monotonic() < deadline and install.proc.poll() is None, install.log.read_text()
        time.sleep(0.05)
    result = subprocess.run(
        [sys.executable, "-m", "crawler", "status"],
        env={**clean_env(install.base), "CRAWLER_SOCKET": str(run / "crawler.sock")},
        cwd=install.base / "elsewhere", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "not trusting it" in one_clean_line(result.stderr)


def test_a_root_only_config_named_directly_is_one_line_naming_the_credential(
    install: Install,
) -> None:
    """The old unit's way (CRAWLER_CONFIG=/etc/crawler/config.toml, root-only): exit 2 with one
    line that says how to hand the file over, not "unexpected PermissionError" (exit 1)."""
    for line in readme_install_lines():
        if "/etc/crawler" in line:
            assert install.run_readme(line).returncode == 0
    for config_dir_mode in (0o700, 0o755):
        os.chmod(install.etc, config_dir_mode)
        result = subprocess.run(
            [install.python, "-m", "crawler", "config", "show"],
            user=NOBODY, group=NOBODY, extra_groups=[], cwd="/",
            env={**install.python_env, "HOME": "/nonexistent",
                 "CRAWLER_CONFIG": str(install.etc / "config.toml")},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        line = one_clean_line(result.stderr)
        assert "PermissionError" in line and "LoadCredential=config.toml:" in line
