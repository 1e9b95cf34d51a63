"""Shared fixtures: the fake services, real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakemarket.brightdata import BrightDataFake
from fakemarket.yahoo import YahooFake


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
