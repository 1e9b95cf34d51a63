"""A hostile environment: the data dir read-only or full, the socket's directory impossible,
the configuration broken.

What could be lost: the user's data (the watchlist, the ledger, the cache, the history), and
the user's time, to a traceback. Every case runs the real CLI in a subprocess over a data dir
that already holds a watchlist, a billed request, a cached quote and a history row. Asserted:
one line on stderr, no "Traceback", a non-zero exit (2 for a configuration problem), and the
stores hold exactly what they held before.

Root ignores permission bits, so the unwritable cases use what stops root too (as the store
tests do): a read-only bind mount and a full 1 MiB tmpfs, inside `unshare -m` so nothing leaks to
the host; they skip where a private mount namespace is not allowed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import diskcache
import pytest

from crawler.store.datadir import JSONOnlyDisk
from crawler.store.history import HistoryStore
from crawler.store.ledger import BudgetLedger
from crawler.store.watchlist import Watchlist
from fakemarket import FakeMarket
from tests.faults.daemon_harness import clean_env, one_clean_line

COMMANDS = {
    "start": ["start", "--foreground"],
    "fetch": ["fetch", "TSLA:US"],
    "symbols-add": ["symbols", "add", "TSLA:US"],
}
COST = Decimal("0.0015")


# -- a populated data dir, and what it holds -------------------------------------------------


def snapshot(data: Path) -> dict[str, Any]:
    """Everything the stores under `data` hold, as plain values."""
    watchlist = Watchlist(data / "watchlist")
    ledger = BudgetLedger(data / "ledger", Decimal("5.50"), COST)
    history = HistoryStore(data / "history")
    raw = diskcache.Cache(str(data / "cache"), disk=JSONOnlyDisk, eviction_policy="none")
    try:
        stats = ledger.statistics()
        return {
            "watchlist": watchlist.items(),
            "ledger": {k: stats[k] for k in ("requests_billed", "total_cost", "open_reservations")},
            "cache": {key: raw.get(key) for key in raw.iterkeys()},
            "history": [q.to_json_dict() for s in history.symbols() for q in history.query(s)],
        }
    finally:
        watchlist.close()
        ledger.close()
        history.close()
        raw.close()


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A data dir with two tracked symbols and one fetched (billed, cached, recorded) quote."""
    base = tmp_path_factory.mktemp("populated")
    with FakeMarket() as market:
        env = clean_env(
            base, **market.environment(), DATA_DIR=str(base / "data"),
            CRAWLER_SOCKET=str(base / "run" / "crawler.sock"), SOURCES_ORDER="bright_data",
        )  # fmt: skip
        for args in (["symbols", "add", "AAPL:US", "VOD:LN"], ["fetch", "AAPL:US"]):
            done = run(args, env, base)
            assert done.returncode == 0, done.stderr
        assert market.bright_data.billed_count == 1
    state = snapshot(base / "data")
    assert len(state["watchlist"]) == 2 and state["ledger"]["requests_billed"] == 1
    assert state["cache"] and len(state["history"]) == 1
    return base / "data", state


def run(
    args: list[str], env: dict[str, str], cwd: Path, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "crawler", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def copy_of(populated: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(populated[0], data)
    return data


def env_for(tmp_path: Path, data: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "home").mkdir(exist_ok=True)
    values = {
        "DATA_DIR": str(data),
        "CRAWLER_SOCKET": str(tmp_path / "run" / "crawler.sock"),
        "BRIGHT_DATA_API_KEY": "k",
        "BRIGHT_DATA_ENDPOINT": "http://127.0.0.1:9",  # nothing must be fetched anyway
    }
    return clean_env(tmp_path, **{**values, **extra})


@pytest.fixture
def mount_namespace(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe_dir = tmp_path / "probe-mount"
    probe_dir.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {probe_dir}"],
        capture_output=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("no permission for a private mount namespace")


def in_namespace(setup: str, after: str = "true") -> list[str]:
    """`unshare -m sh -c`: mount, run the command ("$@"), then `after`, keeping its exit code."""
    script = f'{setup} && "$@"; rc=$?; {after}; exit $rc'
    return ["unshare", "-m", "sh", "-c", script, "sh"]


# -- the data dir ----------------------------------------------------------------------------

# Exit code of an unwritable or full data dir: 2 (DataDirError), like any other problem the user
# fixes in the configuration, for every command.
UNWRITABLE_EXITS = (2,)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_read_only_data_dir(
    command: str, populated: tuple[Path, dict[str, Any]], tmp_path: Path, mount_namespace: None
) -> None:
    data = copy_of(populated, tmp_path)
    setup = f"mount --bind {data} {data} && mount -o remount,ro,bind {data}"
    result = run(COMMANDS[command], env_for(tmp_path, data), tmp_path, in_namespace(setup))
    line = one_clean_line(result.stderr)
    assert result.returncode in UNWRITABLE_EXITS, result
    assert "Read-only file system" in line and str(data) in line
    assert snapshot(data) == populated[1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_full_data_dir(
    command: str, populated: tuple[Path, dict[str, Any]], tmp_path: Path, mount_namespace: None
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    after = tmp_path / "after"
    setup = (
        f"mount -t tmpfs -o size=1m,mode=0700 tmpfs {data} && cp -a {populated[0]}/. {data} && "
        f"{{ dd if=/dev/zero of={data}/filler bs=4k 2>/dev/null; true; }}"
    )
    keep = f"rm -f {data}/filler && cp -a {data} {after}"  # what the command left behind
    result = run(COMMANDS[command], env_for(tmp_path, data), tmp_path, in_namespace(setup, keep))
    line = one_clean_line(result.stderr)
    assert result.returncode in UNWRITABLE_EXITS, result
    assert "No space left on device" in line and str(data) in line
    assert snapshot(after) == populated[1]


def test_an_unwritable_data_dir_exits_2(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path, mount_namespace: None
) -> None:
    data = copy_of(populated, tmp_path)
    setup = f"mount --bind {data} {data} && mount -o remount,ro,bind {data}"
    result = run(COMMANDS["fetch"], env_for(tmp_path, data), tmp_path, in_namespace(setup))
    assert result.returncode == 2


def test_a_control_run_in_the_same_namespace_succeeds(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path, mount_namespace: None
) -> None:
    """The control for the mount cases: same command, a bind mount that is not read-only."""
    data = copy_of(populated, tmp_path)
    result = run(
        ["symbols", "add", "TSLA:US"], env_for(tmp_path, data), tmp_path,
        in_namespace(f"mount --bind {data} {data}"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [name for name, _ in snapshot(data)["watchlist"]] == ["AAPL:US", "VOD:LN", "TSLA:US"]


# -- the control socket's directory ------------------------------------------------------------


def test_socket_directory_that_cannot_be_made(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    data = copy_of(populated, tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = env_for(tmp_path, data, CRAWLER_SOCKET=str(blocker / "run" / "crawler.sock"))
    result = run(COMMANDS["start"], env, tmp_path)
    line = one_clean_line(result.stderr)
    assert result.returncode == 1, result  # DaemonError: the daemon could not set up its socket
    assert str(blocker / "run") in line
    assert not (data / "crawler.pid").exists()  # the pidfile was given back
    assert snapshot(data) == populated[1]


def test_socket_path_too_long(populated: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    data = copy_of(populated, tmp_path)
    env = env_for(tmp_path, data, CRAWLER_SOCKET=str(tmp_path / ("d" * 120) / "crawler.sock"))
    result = run(COMMANDS["start"], env, tmp_path)
    one_clean_line(result.stderr)
    assert result.returncode == 2, result
    assert snapshot(data) == populated[1]


def test_status_with_a_missing_socket_directory(tmp_path: Path) -> None:
    env = env_for(tmp_path, tmp_path / "data", CRAWLER_SOCKET=str(tmp_path / "gone" / "c.sock"))
    result = run(["status"], env, tmp_path)
    assert result.returncode == 3, result
    assert "not running" in result.stdout and "Traceback" not in result.stderr + result.stdout


# -- broken configuration ----------------------------------------------------------------------

BAD_TOML: dict[str, str | bytes] = {
    "invalid-toml": "[budget\ntotal_usd = 1\n",
    "unknown-section": "[nonsense]\nx = 1\n",
    "unknown-key": "[budget]\ntotal_usd_typo = 1\n",
    "wrong-type": '[budget]\ntotal_usd = "lots"\n',
    "out-of-range": "[scheduler]\nupdate_interval_seconds = 5\n",
    "not-utf8": b"[budget]\ntotal_usd = \xff\xfe\n",
}
BAD_ENV = {
    "budget-negative": {"TOTAL_BUDGET": "-1"},
    "budget-text": {"TOTAL_BUDGET": "abc"},
    "deadline-zero": {"QUOTE_DEADLINE_SECONDS": "0"},
    "bad-timezone": {"BUDGET_TIMEZONE": "Mars/Olympus"},
    "bad-sources": {"SOURCES_ORDER": "bright_data,carrier_pigeon"},
    "config-missing": {"CRAWLER_CONFIG": "/nonexistent/config.toml"},
}


def paired(cases: dict[str, Any]) -> list[tuple[str, str]]:
    """Each case with one command, the commands taken in turn (every command is covered)."""
    names = sorted(COMMANDS)
    return [(case, names[i % len(names)]) for i, case in enumerate(sorted(cases))]


@pytest.mark.parametrize(("case", "command"), paired(BAD_TOML))
def test_broken_config_file(
    case: str, command: str, populated: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    data = copy_of(populated, tmp_path)
    config = tmp_path / "config.toml"
    text = BAD_TOML[case]
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = run(COMMANDS[command], env_for(tmp_path, data, CRAWLER_CONFIG=str(config)), tmp_path)
    line = one_clean_line(result.stderr)
    assert result.returncode == 2, result
    assert str(config) in line or "config" in line
    assert snapshot(data) == populated[1]


@pytest.mark.parametrize(("case", "command"), paired(BAD_ENV))
def test_broken_setting_in_the_environment(
    case: str, command: str, populated: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    data = copy_of(populated, tmp_path)
    result = run(COMMANDS[command], env_for(tmp_path, data, **BAD_ENV[case]), tmp_path)
    one_clean_line(result.stderr)
    assert result.returncode == 2, result
    assert snapshot(data) == populated[1]
