"""The project's own fake market: Bright Data's Web Unlocker serving Bloomberg quote pages,
Yahoo Finance as yfinance calls it, and Yahoo's websocket streamer (`fakemarket.stream`). Real
servers on 127.0.0.1 with fault knobs; every test, benchmark and offline run talks to these,
never to a real host.

    with FakeMarket() as market:
        env = market.environment(api_key="test-key")   # BRIGHT_DATA_ENDPOINT, YFINANCE_ENDPOINT...
        market.bright_data.faults.set("AAPL:US", latency_s=0.05)
        market.yahoo.set_outage("refuse")
        market.stream.tick_rate = 5.0                    # streamed ticks (0 by default)

By hand: `python -m fakemarket --bright-data-port 8801 --yahoo-port 8802`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from fakemarket.core import FakeService, Fault, free_port

__all__ = [
    "BrightDataFake",
    "FakeMarket",
    "FakeService",
    "Fault",
    "YahooFake",
    "YahooStreamFake",
    "free_port",
]

DEFAULT_API_KEY = "fake-market-key"
DEFAULT_ZONE = "web_unlocker1"


_LAZY = {
    "BrightDataFake": "fakemarket.brightdata",
    "YahooFake": "fakemarket.yahoo",
    "YahooStreamFake": "fakemarket.stream",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one fake does not require the other.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fakemarket' has no attribute {name!r}")


class FakeMarket:
    """The three fakes, started and stopped together. The streamer sends no ticks until
    `stream.tick_rate` is set (or `stream_tick_rate=` given), so it disturbs nothing."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        zone: str = DEFAULT_ZONE,
        bright_data_port: int = 0,
        yahoo_port: int = 0,
        stream_port: int = 0,
        stream_tick_rate: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.zone = zone
        from fakemarket.brightdata import BrightDataFake
        from fakemarket.yahoo import YahooFake

        self.bright_data = BrightDataFake(api_key=api_key, zone=zone, port=bright_data_port)
        self.yahoo = YahooFake(port=yahoo_port)
        from fakemarket.stream import YahooStreamFake

        self.stream = YahooStreamFake(port=stream_port, tick_rate=stream_tick_rate)

    def start(self) -> FakeMarket:
        self.bright_data.start()
        self.yahoo.start()
        self.stream.start()
        return self

    def stop(self) -> None:
        self.bright_data.stop()
        self.yahoo.stop()
        self.stream.stop()

    def reset(self) -> None:
        self.bright_data.reset()
        self.yahoo.reset()
        self.stream.reset()

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
            "YFINANCE_STREAM_ENDPOINT": self.stream.url,
        }
        if with_bright_data:
            env["BRIGHT_DATA_API_KEY"] = self.api_key
        return env
