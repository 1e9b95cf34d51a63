"""`crawler alerts` without a daemon, as a real subprocess on a real data dir: rules added,
listed (secrets masked), removed and tested directly; bad input is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alert_receiver import Receiver
from tests.faults.daemon_harness import clean_env, one_clean_line

SECRET = "hunter2hunter2"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "home").mkdir()
    return clean_env(
        tmp_path,
        DATA_DIR=str(tmp_path / "data"),
        CRAWLER_SOCKET=str(tmp_path / "run" / "crawler.sock"),
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


def crawler(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_add_list_remove_without_a_daemon(env: dict[str, str], receiver: Receiver) -> None:
    url = receiver.url("/hook", auth=f"me:{SECRET}")
    added = crawler(env, "alerts", "add", "AAPL", "--above", "200.5", "--notify", url)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == (
        f"added alert 1: AAPL:US above 200.5 -> json://me:****@127.0.0.1:{receiver.port}/hook"
    )
    moved = crawler(env, "alerts", "add", "VOD.L", "--move", "3", "--from", "last-alert")
    assert moved.returncode == 0 and "note: VOD.L is how Yahoo writes it" in moved.stderr
    assert crawler(env, "alerts", "add", "EURUSD:CUR", "--stale", "15m").returncode == 0
    assert crawler(env, "alerts", "add", "--budget", "80").returncode == 0

    listed = crawler(env, "alerts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rules = json.loads(listed.stdout)["alerts"]
    assert [rule["rule"] for rule in rules] == [
        "AAPL:US above 200.5",
        "VOD:LN move 3% from last-alert",
        "EURUSD:CUR stale 15m",
        "budget 80%",
    ]
    assert {rule["state"] for rule in rules} == {"armed"}
    table = crawler(env, "alerts", "list")
    assert "AAPL:US above 200.5" in table.stdout

    tested = crawler(env, "alerts", "test")  # every URL in use: the receiver's
    assert tested.returncode == 0, tested.stderr
    assert receiver.notices[-1]["title"] == "crawler alert: test"

    removed = crawler(env, "alerts", "remove", "2")
    assert (removed.returncode, removed.stdout.strip()) == (0, "removed alert 2")
    again = crawler(env, "alerts", "remove", "2")
    assert again.returncode == 1
    assert one_clean_line(again.stderr) == "error: there is no alert 2; see `crawler alerts list`"
    for done in (added, moved, listed, table, tested, removed, again):
        assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["AAPL:US"], "give exactly one of --above PRICE"),
        (["AAPL:US", "--above", "1", "--below", "2"], "(got --above, --below)"),
        (["AAPL:US", "--above", "-3"], "--above -3: must be more than 0"),
        (["AAPL:US", "--above", "lots"], "--above 'lots' is not a number"),
        (["AAPL:US", "--stale", "soon"], "--stale 'soon': use a duration like"),
        (["--above", "3"], "--above needs a symbol"),
        (["AAPL:US", "--budget", "80"], "--budget takes no symbol"),
        (["--budget", "120"], "--budget 120: a percent of the budget, 1 to 100"),
        (["AAPL:US", "--move", "2", "--from", "open"], "--from 'open': one of close, last-alert"),
        (["BAD SYMBOL", "--above", "1"], "BAD SYMBOL"),
        (["AAPL:US", "--above", "1", "--notify", f"nosuch://u:{SECRET}@x/"], "nosuch://"),
        (["AAPL:US", "--above", "1", "--notify", SECRET], "not an Apprise URL"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    env: dict[str, str], args: list[str], message: str
) -> None:
    done = crawler(env, "alerts", "add", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = one_clean_line(done.stderr)
    assert message in line and SECRET not in line


def test_bad_ids_and_a_missing_data_dir(env: dict[str, str], receiver: Receiver) -> None:
    bad = crawler(env, "alerts", "remove", "x1")
    assert bad.returncode == 2
    assert (
        one_clean_line(bad.stderr)
        == "error: alert id 'x1' is not a number; see `crawler alerts list`"
    )
    # Reading never creates a data dir: with neither a daemon nor one there, exit 3.
    listed = crawler(env, "alerts", "list")
    assert listed.returncode == 3 and "there is no data dir at" in one_clean_line(listed.stderr)
    assert not Path(env["DATA_DIR"]).exists()
    receiver.status = 503
    refused = crawler(env, "alerts", "test", "--notify", receiver.url())
    assert refused.returncode == 1
    assert "the target refused or did not answer" in one_clean_line(refused.stderr)
