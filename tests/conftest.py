"""Shared fixtures: the fake services, real HTTP on 127.0.0.1."""

from __future__ import annotations

import compileall
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from fakemarket.brightdata import BrightDataFake
from fakemarket.yahoo import YahooFake
from tests.redis_server import RedisServer, redis_server_binary

_REPO = Path(__file__).resolve().parents[1]

# No per-example deadline (Hypothesis' default is 200 ms): timings are not asserted in tests,
# and on a loaded machine, or beside the other xdist workers, one example can take longer.
settings.register_profile("crawler", deadline=None)
settings.load_profile("crawler")


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path factory reads the basetemp
def pytest_configure(config: pytest.Config) -> None:
    """Shorter temporary dirs for xdist's workers; crawler compiled to bytecode once.

    A worker's tmp dirs are `<basetemp>/<n>/...` rather than xdist's `<basetemp>/popen-gw<n>`:
    a data dir's socket under a test's tmp_path must stay within AF_UNIX's 107 bytes.

    The tests start about 900 Python processes themselves (`python -m crawler ...`, daemons,
    benches), and those start more. With PYTHONDONTWRITEBYTECODE set (the daemon harness sets
    it, so may the shell) none writes the .pyc it compiled: each compiled crawler again.
    """
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        if config.option.basetemp:
            number = str(worker["workerid"]).removeprefix("gw")
            config.option.basetemp = str(Path(config.option.basetemp).with_name(number))
        return
    for package in ("crawler", "fakemarket", "bench"):
        compileall.compile_dir(_REPO / package, quiet=1)


@pytest.fixture
def bright_data_fake() -> Iterator[BrightDataFake]:
    """A started Bright Data Web Unlocker fake (key "test-key", zone "web_unlocker1")."""
    fake = BrightDataFake(api_key="test-key", zone="web_unlocker1")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def yahoo_fake() -> Iterator[YahooFake]:
    """A started Yahoo Finance fake (cookie, crumb, chart); point YFINANCE_ENDPOINT at `.url`."""
    fake = YahooFake()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a random 127.0.0.1 port for the whole session.

    Skipped with the fix when redis-server is missing, except under CI (CI=true), where
    `.ci/run` installs it and a missing binary is a failure.
    """
    if redis_server_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing under CI; .ci/run should have installed it")
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session's Redis, emptied before each test (a test never sees another's keys)."""
    if not redis_server.answers():  # a test that restarted or stopped it
        redis_server.start()
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url
