"""The project's own fake market: Bright Data's Web Unlocker serving Bloomberg quote pages, and
Yahoo Finance as yfinance calls it. Real HTTP servers on 127.0.0.1 with fault knobs; every test,
benchmark and offline run talks to these, never to a real host.

    with FakeMarket() as market:
        env = market.environment(api_key="test-key")   # BRIGHT_DATA_ENDPOINT, YFINANCE_ENDPOINT...
        market.bright_data.faults.set("AAPL:US", latency_s=0.05)
        market.yahoo.set_outage("refuse")

By hand: `python -m fakemarket --bright-data-port 8801 --yahoo-port 8802`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from fakemarket.core import FakeService, Fault, free_port

__all__ = ["BrightDataFake", "FakeMarket", "FakeService", "Fault", "YahooFake", "free_port"]

DEFAULT_API_KEY = "fake-market-key"
DEFAULT_ZONE = "web_unlocker1"


_LAZY = {"BrightDataFake": "fakemarket.brightdata", "YahooFake": "fakemarket.yahoo"}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one fake does not require the other.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fakemarket' has no attribute {name!r}")


class FakeMarket:
    """Both fakes, started and stopped together."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        zone: str = DEFAULT_ZONE,
        bright_data_port: int = 0,
        yahoo_port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.zone = zone
        from fakemarket.brightdata import BrightDataFake
        from fakemarket.yahoo import YahooFake

        self.bright_data = BrightDataFake(api_key=api_key, zone=zone, port=bright_data_port)
        self.yahoo = YahooFake(port=yahoo_port)

    def start(self) -> FakeMarket:
        self.bright_data.start()
        self.yahoo.start()
        return self

    def stop(self) -> None:
        self.bright_data.stop()
        self.yahoo.stop()

    def reset(self) -> None:
        self.bright_data.reset()
        self.yahoo.reset()

    def __enter__(self) -> FakeMarket:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def environment(self, *, with_bright_data: bool = True) -> dict[str, str]:
        """Environment variables that point crawler at this market."""
        env = {
            "BRIGHT_DATA_ENDPOINT": self.bright_data.url,
            "BRIGHT_DATA_ZONE": self.zone,
            "YFINANCE_ENDPOINT": self.yahoo.url,
        }
        if with_bright_data:
            env["BRIGHT_DATA_API_KEY"] = self.api_key
        return env
