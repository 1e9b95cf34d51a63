"""The orchestration layer of the seed: circuit breakers, the hybrid fetcher and the scheduler.

Names are loaded on first use so that importing `crawler.orchestrator.circuit_breaker` (or
the CLI) does not drag in requests, yfinance or APScheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crawler.utils.lazy import lazy_attribute

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
    return lazy_attribute(__name__, _HOMES, name)
