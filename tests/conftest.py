"""Shared fixtures: the fake services, real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fakemarket.brightdata import BrightDataFake
from fakemarket.yahoo import YahooFake
from tests.redis_server import RedisServer, redis_server_binary


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
