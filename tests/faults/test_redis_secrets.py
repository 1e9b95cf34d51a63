"""A Redis password never leaves the node, whatever form its URL gives it (issue 23, item 5).

Each form is given to a real daemon (a password-protected redis-server where the form can reach
it, an unreachable address otherwise, so the daemon logs its errors), and every place a URL is
shown is read back through the real CLI and the control socket: `crawler config show` (text and
JSON), `crawler status` (text and JSON), `/v1/status`, `/v1/config`, the daemon's log, and the
error a paid fetch gets while Redis cannot be asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness
from tests.redis_server import RedisServer, redis_server_binary

PASSWORD = "Pw-7sEcReT-q9"  # long enough for the log redactor, unlike any other text
USER_PASSWORD = "Us3r-sEcReT-k2"


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server that wants a password (and has a user "crawler" with its own)."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    server = RedisServer(tmp_path_factory.mktemp("locked-redis"))
    server.start()
    client = redis.Redis(host="127.0.0.1", port=server.port)
    client.acl_setuser("crawler", enabled=True, passwords=[f"+{USER_PASSWORD}"],
                       keys=["*"], channels=["*"], commands=["+@all"])  # fmt: skip
    client.config_set("requirepass", PASSWORD)
    client.close()
    try:
        yield server
    finally:
        server.stop()


def forms(port: int, tmp: Path) -> dict[str, tuple[str, bool]]:
    """name -> (URL, whether it reaches the locked Redis)."""
    host = f"127.0.0.1:{port}"
    return {
        "colon": (f"redis://:{PASSWORD}@{host}/0", True),
        "user": (f"redis://crawler:{USER_PASSWORD}@{host}/0", True),
        "query": (f"redis://{host}/0?password={PASSWORD}", True),
        "tls": (f"rediss://:{PASSWORD}@127.0.0.1:1/0", False),
        "unix": (f"unix://{tmp}/no-redis.sock?db=0&password={PASSWORD}", False),
    }


@pytest.mark.parametrize("form", ["colon", "user", "query", "tls", "unix"])
def test_a_redis_password_is_masked_everywhere_a_url_is_shown(
    form: str, locked_redis: RedisServer, tmp_path: Path
) -> None:
    url, reachable = forms(locked_redis.port, tmp_path)[form]
    secret = USER_PASSWORD if form == "user" else PASSWORD
    with FakeMarket() as market:
        node = DaemonHarness(market, tmp_path / "node", REDIS_URL=url, NODE_NAME="solo",
                             LOG_LEVEL="debug")  # fmt: skip
        seen: dict[str, str] = {}
        shown = node.cli("config", "show")
        assert shown.returncode == 0, shown.stderr
        seen["config show"] = shown.stdout + shown.stderr
        shown = node.cli("config", "show", "--json")
        seen["config show --json"] = shown.stdout + shown.stderr
        assert "****" in json.loads(shown.stdout)["redis_url"]
        try:
            node.start()
            status, body = node.client().get("/status")
            assert status == 200
            seen["/v1/status"] = json.dumps(body)
            assert body["store"]["reachable"] is reachable, body["store"]
            assert "****" in body["store"]["redis_url"]
            seen["/v1/config"] = json.dumps(node.client().get("/config")[1])
            for args in (("status",), ("status", "--json")):
                shown = node.cli(*args)
                assert shown.returncode == 0, shown.stderr
                seen[" ".join(args)] = shown.stdout + shown.stderr
            assert node.cli("symbols", "add", "S01:US").returncode in (0, 1)
            fetched = node.cli("fetch", "--fresh", "--json", "S02:US")
            seen["fetch"] = fetched.stdout + fetched.stderr
            collected = node.cli("collect")
            seen["collect"] = collected.stdout + collected.stderr
            if not reachable:
                # Unreachable: the paid source was skipped with a message naming the store.
                assert "unreachable" in seen["fetch"] + seen["collect"] + seen["status"]
        finally:
            node.stop()
        seen["daemon log"] = node.log_tail(1_000_000)
        logs = node.cli("logs", "-n", "500")
        seen["crawler logs"] = logs.stdout + logs.stderr
    if not reachable:
        assert "unreachable" in seen["daemon log"].lower()  # the errors were logged, masked
    leaked = [place for place, text in seen.items() if secret in text]
    assert not leaked, {place: seen[place][:2000] for place in leaked}
    assert "****" in seen["config show"] and "****" in seen["status"]


def test_a_bad_redis_url_is_refused_in_one_line_without_its_password(tmp_path: Path) -> None:
    with FakeMarket() as market:
        node = DaemonHarness(market, tmp_path / "node", NODE_NAME="solo")
        for url in (
            f"http://127.0.0.1:6379/0?password={PASSWORD}",
            f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
            f"redis://[::1/0?password={PASSWORD}",
        ):
            env = {**node.env, "REDIS_URL": url}
            for args in (("config", "show"), ("start", "--foreground")):
                result = node.cli(*args, env=env, timeout_s=30)
                assert result.returncode == 2, (url, args, result.stdout, result.stderr)
                assert PASSWORD not in result.stdout + result.stderr, (url, args, result.stderr)
