"""One error table per third-party client, tested complete (httpx's tests/test_exceptions.py).

Each test walks the library's whole exception tree (every subclass of its base exception, as
installed) through our table: every class maps to one of our errors, so a class added upstream
cannot escape untranslated. Where the boundary is cheap to drive for real (redis-py's, Bright
Data's through its session seam), each class is raised there too and ours comes out. curl_cffi's
table is the class-level part of yfinance's `_translate` (an HTTP status or a full disk decides
first), driven end to end by the yfinance source's own tests against the fake market.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import urllib3
import websockets.exceptions

from crawler.normalizer.symbols import parse_symbol
from crawler.sources.bright_data import REQUESTS_ERRORS, BrightDataSource
from crawler.sources.yahoo_stream import stream_errors
from crawler.sources.yfinance_source import curl_errors
from crawler.store.ledger import BudgetLedger
from crawler.store.redis_client import RedisConnection, redis_errors
from crawler.utils.error_map import ErrorTable, caught, mapped_class
from crawler.utils.exceptions import (
    APIError,
    CrawlerError,
    SourceConfigError,
    StorageError,
    StoreUnavailableError,
    TransientSourceError,
)


def tree(base: type[BaseException]) -> list[type[BaseException]]:
    """`base` and every class below it, as the installed library defines them."""
    found: list[type[BaseException]] = []
    pending = [base]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found


def instance(cls: type[BaseException]) -> BaseException | None:
    """`cls` made with a plain message where its constructor allows one (None otherwise)."""
    for args in (("boom",), (), (None, "boom")):
        try:
            exc = cls(*args)
            str(exc)
        except Exception:
            continue
        return exc
    return None


def assert_complete(table: ErrorTable, *bases: type[BaseException]) -> list[type[BaseException]]:
    classes = [cls for base in bases for cls in tree(base)]
    unmapped = [cls for cls in classes if mapped_class(table, cls) is None]
    assert unmapped == [], f"escape untranslated: {unmapped}"
    for cls in classes:
        ours = mapped_class(table, cls)
        assert ours is not None and issubclass(ours, CrawlerError)
    return classes


def test_the_table_decides_by_its_first_entry_like_except_clauses() -> None:
    table: ErrorTable = ((TimeoutError, TransientSourceError), (OSError, StorageError))
    assert mapped_class(table, TimeoutError("x")) is TransientSourceError
    assert mapped_class(table, ConnectionRefusedError) is StorageError
    assert mapped_class(table, ValueError) is None
    assert caught(table) == (TimeoutError, OSError)
    assert caught(table, StorageError) == (OSError,)


# -- redis-py (crawler.store.redis_client) ---------------------------------------------------


def test_every_redis_error_maps_to_ours() -> None:
    table = redis_errors(redis)
    classes = assert_complete(table, redis.RedisError)
    assert len(classes) > 20  # the walk saw redis-py's tree, not just its base
    for cls in (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                redis.AuthenticationError, ConnectionResetError):  # fmt: skip
        assert mapped_class(table, cls) is StoreUnavailableError
    refused = (redis.ResponseError, redis.ReadOnlyError, redis.exceptions.NoScriptError)
    for cls in (*refused, redis.DataError):
        assert mapped_class(table, cls) is StorageError


def test_redis_errors_raised_at_the_boundary_come_out_as_the_table_says() -> None:
    connection = RedisConnection("redis://127.0.0.1:1/0")
    raised = 0
    for cls in tree(redis.RedisError):
        exc = instance(cls)
        if exc is None:
            continue
        with pytest.raises(CrawlerError) as caught_error, connection.errors("test", probe=True):
            raise exc
        assert type(caught_error.value) is mapped_class(connection.error_table, cls)
        assert caught_error.value.__cause__ is exc
        raised += 1
    assert raised > 20


# -- requests and urllib3 (crawler.sources.bright_data) ----------------------------------------


def test_every_requests_and_urllib3_error_maps_to_ours() -> None:
    assert_complete(REQUESTS_ERRORS, requests.RequestException, urllib3.exceptions.HTTPError)
    assert mapped_class(REQUESTS_ERRORS, requests.exceptions.InvalidURL) is SourceConfigError
    assert mapped_class(REQUESTS_ERRORS, requests.ConnectTimeout) is TransientSourceError
    assert mapped_class(REQUESTS_ERRORS, urllib3.exceptions.ProtocolError) is TransientSourceError


class _RaisingSession(requests.Session):
    """A requests session whose every POST raises `error` (the source's session seam)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        raise self.error


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[BudgetLedger]:
    ledger = BudgetLedger(tmp_path / "ledger", Decimal("10"), Decimal("0.0015"))
    try:
        yield ledger
    finally:
        ledger.close()


def test_requests_errors_raised_at_the_bright_data_boundary_come_out_as_the_table_says(
    ledger: BudgetLedger,
) -> None:
    raised = 0
    for cls in tree(requests.RequestException) + tree(urllib3.exceptions.HTTPError):
        exc = instance(cls)
        if exc is None:
            continue
        with _RaisingSession(exc) as session:
            source = BrightDataSource(
                "http://127.0.0.1:9/request", "key", "zone", ledger,
                session=session, max_attempts=1, sleep=lambda _s: None,
            )  # fmt: skip
            with pytest.raises(CrawlerError) as caught_error:
                source.fetch(parse_symbol("AAPL:US"))
        ours = mapped_class(REQUESTS_ERRORS, cls)
        assert ours is not None and isinstance(caught_error.value, ours), (cls, caught_error)
        raised += 1
    assert raised > 20


# -- websockets (crawler.sources.yahoo_stream) -------------------------------------------------


def test_every_websockets_error_maps_to_ours_when_connecting() -> None:
    table = stream_errors()
    classes = assert_complete(table, websockets.exceptions.WebSocketException, OSError)
    assert len(classes) > 20
    assert {mapped_class(table, cls) for cls in classes} == {TransientSourceError}


# -- curl_cffi (crawler.sources.yfinance_source) -----------------------------------------------


def test_every_curl_cffi_error_maps_to_ours() -> None:
    from curl_cffi.curl import CurlError
    from curl_cffi.requests.exceptions import InvalidJSONError, JSONDecodeError

    table = curl_errors()
    classes = assert_complete(table, CurlError)
    assert len(classes) > 20
    for cls in (InvalidJSONError, JSONDecodeError):
        assert mapped_class(table, cls) is APIError
    requests_like = [
        cls for cls in classes if issubclass(cls, OSError) and not issubclass(cls, InvalidJSONError)
    ]
    assert {mapped_class(table, cls) for cls in requests_like} == {TransientSourceError}
    outside = [cls for cls in classes if not issubclass(cls, OSError)]
    assert CurlError in outside
    assert {mapped_class(table, cls) for cls in outside} == {APIError}
