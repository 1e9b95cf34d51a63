"""The orchestration layer of the seed: circuit breakers, the hybrid fetcher and the scheduler.

Names are loaded on first use so that importing `crawler.orchestrator.circuit_breaker` (or
the CLI) does not drag in requests, yfinance or APScheduler.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crawler.orchestrator.circuit_breaker import CircuitBreaker, CircuitBreakerError
    from crawler.orchestrator.hybrid import AsyncHybridDataSource, HybridDataSource
    from crawler.orchestrator.scheduler import DataScheduler

__all__ = [
    "AsyncHybridDataSource",
    "CircuitBreaker",
    "CircuitBreakerError",
    "DataScheduler",
    "HybridDataSource",
]

_HOMES = {
    "CircuitBreaker": "crawler.orchestrator.circuit_breaker",
    "CircuitBreakerError": "crawler.orchestrator.circuit_breaker",
    "HybridDataSource": "crawler.orchestrator.hybrid",
    "AsyncHybridDataSource": "crawler.orchestrator.hybrid",
    "DataScheduler": "crawler.orchestrator.scheduler",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'crawler.orchestrator' has no attribute {name!r}")
    return getattr(import_module(home), name)
