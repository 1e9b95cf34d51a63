"""The seed's awaitable API over the synchronous hybrid: each call runs in a worker thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.orchestrator.hybrid.source import HybridDataSource
from crawler.sources.circuit_breaker import CircuitBreaker

__all__ = ["AsyncHybridDataSource"]


class AsyncHybridDataSource:
    """The seed's awaitable API over the same synchronous core (calls run in worker threads).

    source = AsyncHybridDataSource()
    quote = await source.get_quote("AAPL", AssetClass.STOCKS)
    await source.cleanup()
    """

    def __init__(self, *args: Any, hybrid: HybridDataSource | None = None, **kwargs: Any) -> None:
        self.hybrid = hybrid or HybridDataSource(*args, **kwargs)

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return self.hybrid.breakers

    async def get_quote(
        self, symbol: str, asset_class: AssetClass | None = None, force_fresh: bool = False
    ) -> Quote:
        return await asyncio.to_thread(self.hybrid.get_quote, symbol, asset_class, force_fresh)

    async def get_quotes(
        self, symbols: Iterable[str], asset_class: AssetClass | None = None
    ) -> list[Quote]:
        return await asyncio.to_thread(self.hybrid.get_quotes, list(symbols), asset_class)

    def get_statistics(self) -> dict[str, Any]:
        return self.hybrid.get_statistics()

    async def cleanup(self) -> None:
        await asyncio.to_thread(self.hybrid.cleanup)
