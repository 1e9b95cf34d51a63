"""A circuit breaker that never holds its lock while the guarded call runs.

    breaker = CircuitBreaker("bright_data", failure_threshold=3, recovery_timeout=120)
    try:
        quote = breaker.call(source.fetch, symbol)
    except CircuitBreakerError as exc:      # refused at once: open, or a trial is in flight
        print(f"Circuit {exc.state}: {exc.message}")

States (the seed's): CLOSED lets every call through and opens after `failure_threshold`
consecutive failures. OPEN refuses every call until `recovery_timeout` seconds have passed; the
next call then moves it to HALF_OPEN. HALF_OPEN lets exactly one trial call run at a time; every
other caller is refused immediately (never queued, unlike pybreaker). `success_threshold`
successful trials close it; one failed trial opens it again with a fresh timeout.

What counts: any `Exception` raised by the call is a failure, except the types in `excluded`
(an unknown symbol says nothing about the service's health), which count as neither and are
re-raised. A BaseException that is not an Exception (KeyboardInterrupt, SystemExit) passes
through untouched and counts as neither. Either way a HALF_OPEN trial slot is given back, so the
breaker cannot be wedged.

Stale outcomes: every state change bumps a generation counter and each call remembers the
generation it was admitted in. The outcome of a call admitted before the latest state change is
added to the totals but cannot change the state: a slow success that started before the breaker
opened must not close it.

The lock is a plain `threading.Lock`, held only to read or change the breaker's fields. State-change
logging and the `on_state_change` callback run after it is released, so a callback may call
`get_statistics()` without deadlocking.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, ParamSpec, TypeVar

from crawler.logging import get_logger
from crawler.utils.exceptions import CircuitBreakerError

__all__ = ["BreakerState", "CircuitBreaker", "CircuitBreakerError"]

log = get_logger("crawler.breaker")

P = ParamSpec("P")
R = TypeVar("R")


class BreakerState(StrEnum):
    """A breaker's state. A str enum, so `breaker.state == "open"` holds."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: Called as `(breaker name, old state, new state)` after every state change, outside the lock.
_StateChangeCallback = Callable[[str, BreakerState, BreakerState], None]


class _Outcome(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    EXCLUDED = "excluded"  # an `excluded` error: neither success nor failure
    ABANDONED = "abandoned"  # a BaseException such as KeyboardInterrupt: neither


@dataclass(frozen=True)
class _Ticket:
    """What `call` learned at admission, needed again when the outcome is known."""

    generation: int
    is_trial: bool  # holds the single HALF_OPEN trial slot


@dataclass(frozen=True)
class _Transition:
    old: BreakerState
    new: BreakerState
    reason: str


class CircuitBreaker:
    """Guards calls to one service; see the module docstring for the state machine.

    `recovery_timeout` is in seconds on the scale of `clock` (monotonic seconds by default;
    tests pass a fake). `excluded` lists error types that neither trip nor heal the breaker.
    `on_state_change(name, old, new)` is called after each state change, e.g. for metrics;
    an error it raises is logged and swallowed so that metrics cannot change a fetch's outcome.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        recovery_timeout: float = 60,
        success_threshold: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        excluded: Iterable[type[BaseException]] = (),
        on_state_change: _StateChangeCallback | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if success_threshold < 1:
            raise ValueError(f"success_threshold must be at least 1, got {success_threshold}")
        if recovery_timeout < 0:
            raise ValueError(f"recovery_timeout must be 0 or more seconds, got {recovery_timeout}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = float(recovery_timeout)
        self.success_threshold = success_threshold
        self._clock = clock
        self._excluded: tuple[type[BaseException], ...] = tuple(excluded)
        self._on_state_change = on_state_change
        self._lock = threading.Lock()
        # Everything below is read and written only with `_lock` held.
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._trial_in_flight = False
        self._trial_successes = 0
        self._total_calls = 0
        self._total_successes = 0
        self._total_failures = 0
        self._total_excluded = 0
        self._total_rejections = 0
        self._transitions = 0
        self._opened_count = 0

    # -- the seed's API --------------------------------------------------------------------
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run `fn(*args, **kwargs)` if the breaker admits it, and record the outcome.

        Raises CircuitBreakerError at once when the breaker is open or a HALF_OPEN trial is
        already in flight; otherwise returns what `fn` returns or re-raises what it raised.
        """
        ticket, transition = self._admit()
        self._announce(transition)
        try:
            result = fn(*args, **kwargs)
        except self._excluded:
            self._settle(ticket, _Outcome.EXCLUDED)
            raise
        except Exception:
            self._settle(ticket, _Outcome.FAILURE)
            raise
        except BaseException:
            self._settle(ticket, _Outcome.ABANDONED)
            raise
        self._settle(ticket, _Outcome.SUCCESS)
        return result

    @property
    def state(self) -> BreakerState:
        """The current state. OPEN stays OPEN past its timeout until the next call arrives."""
        with self._lock:
            return self._state

    def is_available(self) -> bool:
        """Whether a call made now would be admitted (a read: it changes nothing)."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.OPEN:
                return self._remaining_locked(self._clock()) <= 0
            return not self._trial_in_flight

    def reset(self) -> None:
        """Close the breaker and forget consecutive failures; lifetime totals are kept.

        Calls still in flight belong to an older generation, so their outcomes cannot reopen it.
        """
        with self._lock:
            transition = self._move_locked(BreakerState.CLOSED, "by manual reset")
            # Bump even when already closed: in-flight failures must not count after a reset.
            if transition is None:
                self._generation += 1
                self._consecutive_failures = 0
        self._announce(transition)

    def get_statistics(self) -> dict[str, Any]:
        """Counters and state, as plain JSON-ready values.

        `total_calls` counts calls that ran (rejections are in `total_rejections`);
        `failure_rate_pct` is failures over calls that counted (successes plus failures), so
        excluded errors and interrupts do not dilute it.
        """
        with self._lock:
            remaining_s = self._remaining_locked(self._clock())
            counted = self._total_successes + self._total_failures
            rate_pct = 100.0 * self._total_failures / counted if counted else 0.0
            state = self._state.value
            return {
                "name": self.name,
                "state": state,
                "total_calls": self._total_calls,
                "total_successes": self._total_successes,
                "total_failures": self._total_failures,
                "total_excluded": self._total_excluded,
                "total_rejections": self._total_rejections,
                "consecutive_failures": self._consecutive_failures,
                "failure_rate_pct": round(rate_pct, 2),
                "recovery_in_seconds": round(remaining_s, 1),
                "transitions": self._transitions,
                "opened_count": self._opened_count,
                "state_info": {
                    "state": state,
                    "recovery_in_seconds": round(remaining_s, 1),
                    "failure_threshold": self.failure_threshold,
                    "recovery_timeout": self.recovery_timeout,
                },
            }

    def recovery_remaining_s(self) -> float:
        """Seconds until an OPEN breaker admits a trial call; 0.0 when not open."""
        with self._lock:
            return self._remaining_locked(self._clock())

    def _get_recovery_time_remaining(self) -> float:
        """`recovery_remaining_s`, kept under the seed's name because its troubleshooting
        guide calls it."""
        return self.recovery_remaining_s()

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state.value!r})"

    # -- internals: every *_locked method expects `_lock` to be held ----------------------
    def _remaining_locked(self, now_s: float) -> float:
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.recovery_timeout - now_s)

    def _admit(self) -> tuple[_Ticket, _Transition | None]:
        with self._lock:
            transition: _Transition | None = None
            if self._state is BreakerState.OPEN:
                remaining_s = self._remaining_locked(self._clock())
                if remaining_s > 0:
                    self._total_rejections += 1
                    raise CircuitBreakerError(
                        self._state.value,
                        f"circuit {self.name!r} is open; retry in {math.ceil(remaining_s)}s",
                    )
                transition = self._move_locked(
                    BreakerState.HALF_OPEN, "after the recovery timeout; admitting a trial call"
                )
            if self._state is BreakerState.HALF_OPEN:
                if self._trial_in_flight:
                    self._total_rejections += 1
                    raise CircuitBreakerError(
                        self._state.value,
                        f"circuit {self.name!r} is half_open; a trial call is already in flight",
                    )
                self._trial_in_flight = True
                ticket = _Ticket(self._generation, is_trial=True)
            else:
                ticket = _Ticket(self._generation, is_trial=False)
            self._total_calls += 1
            return ticket, transition

    def _settle(self, ticket: _Ticket, outcome: _Outcome) -> None:
        with self._lock:
            if outcome is _Outcome.SUCCESS:
                self._total_successes += 1
            elif outcome is _Outcome.FAILURE:
                self._total_failures += 1
            elif outcome is _Outcome.EXCLUDED:
                self._total_excluded += 1
            if ticket.generation != self._generation:
                # Admitted before the latest state change: totals only. The change that bumped
                # the generation also cleared the trial slot, so there is nothing to give back.
                return
            if ticket.is_trial:
                transition = self._settle_trial_locked(outcome)
            else:
                transition = self._settle_closed_locked(outcome)
        self._announce(transition)

    def _settle_trial_locked(self, outcome: _Outcome) -> _Transition | None:
        self._trial_in_flight = False
        if outcome is _Outcome.FAILURE:
            self._consecutive_failures += 1
            return self._move_locked(
                BreakerState.OPEN,
                f"after a failed trial call; retry in {self.recovery_timeout:.0f}s",
            )
        if outcome is _Outcome.SUCCESS:
            self._trial_successes += 1
            if self._trial_successes >= self.success_threshold:
                return self._move_locked(
                    BreakerState.CLOSED,
                    f"after {self._trial_successes} successful trial call(s)",
                )
        return None

    def _settle_closed_locked(self, outcome: _Outcome) -> _Transition | None:
        if outcome is _Outcome.SUCCESS:
            self._consecutive_failures = 0
        elif outcome is _Outcome.FAILURE:
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.failure_threshold:
                return self._move_locked(
                    BreakerState.OPEN,
                    f"after {self._consecutive_failures} consecutive failures; "
                    f"retry in {self.recovery_timeout:.0f}s",
                )
        return None

    def _move_locked(self, new: BreakerState, reason: str) -> _Transition | None:
        old = self._state
        if old is new:
            return None
        self._state = new
        self._generation += 1
        self._transitions += 1
        # Whatever trial was in flight belongs to the old generation now.
        self._trial_in_flight = False
        self._trial_successes = 0
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
            self._opened_count += 1
        elif new is BreakerState.CLOSED:
            self._consecutive_failures = 0
        return _Transition(old, new, reason)

    def _announce(self, transition: _Transition | None) -> None:
        """Log and report a state change; called with `_lock` released."""
        if transition is None:
            return
        log.warning(
            "circuit breaker changed state",
            breaker=self.name,
            old=transition.old.value,
            new=transition.new.value,
            reason=transition.reason,
        )
        if self._on_state_change is not None:
            try:
                self._on_state_change(self.name, transition.old, transition.new)
            except Exception:
                log.exception("on_state_change callback failed", breaker=self.name)
