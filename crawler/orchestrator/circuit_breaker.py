"""The seed's public home of the circuit breaker (`crawler.orchestrator.circuit_breaker`).

The class lives in `crawler.sources.circuit_breaker`, below the orchestrator, so that a source
(the Yahoo stream) can guard itself with one without importing the layer above it.
"""

from __future__ import annotations

from crawler.sources.circuit_breaker import BreakerState, CircuitBreaker, CircuitBreakerError

__all__ = ["BreakerState", "CircuitBreaker", "CircuitBreakerError"]
