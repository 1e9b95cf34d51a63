"""The breaker's public recovery countdown (the hybrid source and the stream read it)."""

from __future__ import annotations

import pytest

from crawler.orchestrator.circuit_breaker import CircuitBreaker
from crawler.utils.exceptions import TransientSourceError


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def fail() -> None:
    raise TransientSourceError("down")


def test_the_countdown_runs_while_open_and_is_zero_otherwise() -> None:
    clock = Clock()
    breaker = CircuitBreaker("x", failure_threshold=1, recovery_timeout=120, clock=clock)
    assert breaker.recovery_remaining_s() == 0.0
    with pytest.raises(TransientSourceError):
        breaker.call(fail)
    assert breaker.recovery_remaining_s() == 120.0
    clock.now_s += 33
    assert breaker.recovery_remaining_s() == 87.0
    assert breaker._get_recovery_time_remaining() == 87.0  # the seed's name, same figure
