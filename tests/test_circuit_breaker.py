"""CircuitBreaker: a fake clock for time, real threads for concurrency, no sleeps, no mocks."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import pytest

import crawler.orchestrator.circuit_breaker as circuit_breaker_module
from crawler.orchestrator.circuit_breaker import BreakerState, CircuitBreaker, CircuitBreakerError
from crawler.utils import exceptions
from crawler.utils.exceptions import TransientSourceError, UnknownSymbolError

#: How long a test waits for a thread that should finish at once. Only a bug makes it wait.
JOIN_TIMEOUT_S = 5.0


class FakeClock:
    """An injected monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ok() -> str:
    return "quote"


def fail() -> str:
    raise TransientSourceError("upstream timed out")


def unknown_symbol() -> str:
    raise UnknownSymbolError("no such symbol ZZZZ:US")


def make_breaker(
    clock: FakeClock,
    failure_threshold: int = 3,
    recovery_timeout: float = 10,
    success_threshold: int = 1,
    name: str = "svc",
    on_state_change: Callable[[str, BreakerState, BreakerState], None] | None = None,
) -> CircuitBreaker:
    return CircuitBreaker(
        name,
        failure_threshold=failure_threshold,
        recovery_timeout=recovery_timeout,
        success_threshold=success_threshold,
        clock=clock,
        excluded=(UnknownSymbolError,),
        on_state_change=on_state_change,
    )


def trip(breaker: CircuitBreaker) -> None:
    """Fail until the breaker opens."""
    for _ in range(breaker.failure_threshold):
        with pytest.raises(TransientSourceError):
            breaker.call(fail)
    assert breaker.state == BreakerState.OPEN


def run_step(breaker: CircuitBreaker, clock: FakeClock, step: str) -> None:
    """One step of a transition table: ok, fail, skip (excluded), reject, or +N seconds."""
    if step.startswith("+"):
        clock.now += float(step[1:])
    elif step == "ok":
        assert breaker.call(ok) == "quote"
    elif step == "fail":
        with pytest.raises(TransientSourceError):
            breaker.call(fail)
    elif step == "skip":
        with pytest.raises(UnknownSymbolError):
            breaker.call(unknown_symbol)
    elif step == "reject":
        with pytest.raises(CircuitBreakerError):
            breaker.call(ok)
    else:
        raise AssertionError(f"unknown step {step!r}")


CLOSED, OPEN, HALF = "closed", "open", "half_open"

# (failure_threshold, recovery_timeout, success_threshold), [(step, state after the step), ...]
TRANSITIONS: dict[str, tuple[tuple[int, float, int], list[tuple[str, str]]]] = {
    "opens after consecutive failures, closes after a trial": (
        (3, 10, 1),
        [
            ("fail", CLOSED),
            ("fail", CLOSED),
            ("fail", OPEN),
            ("reject", OPEN),
            ("+9.9", OPEN),
            ("reject", OPEN),
            ("+0.1", OPEN),
            ("ok", CLOSED),
            ("fail", CLOSED),
        ],
    ),
    "a success in closed resets the consecutive count": (
        (3, 10, 1),
        [
            ("fail", CLOSED),
            ("fail", CLOSED),
            ("ok", CLOSED),
            ("fail", CLOSED),
            ("fail", CLOSED),
            ("fail", OPEN),
        ],
    ),
    "a failed trial reopens with a fresh timeout": (
        (2, 10, 1),
        [
            ("fail", CLOSED),
            ("fail", OPEN),
            ("+10", OPEN),
            ("fail", OPEN),
            ("+9", OPEN),
            ("reject", OPEN),
            ("+1", OPEN),
            ("ok", CLOSED),
        ],
    ),
    "excluded errors neither count nor reset": (
        (3, 10, 1),
        [
            ("fail", CLOSED),
            ("fail", CLOSED),
            ("skip", CLOSED),
            ("skip", CLOSED),
            ("skip", CLOSED),
            ("skip", CLOSED),
            ("fail", OPEN),
        ],
    ),
    "an excluded trial leaves half_open in place": (
        (1, 10, 1),
        [("fail", OPEN), ("+10", OPEN), ("skip", HALF), ("skip", HALF), ("ok", CLOSED)],
    ),
    "success_threshold=2 needs two trials": (
        (1, 10, 2),
        [("fail", OPEN), ("+10", OPEN), ("ok", HALF), ("ok", CLOSED)],
    ),
    "success_threshold=2: a failure after one success reopens": (
        (1, 10, 2),
        [
            ("fail", OPEN),
            ("+10", OPEN),
            ("ok", HALF),
            ("fail", OPEN),
            ("reject", OPEN),
            ("+10", OPEN),
            ("ok", HALF),
            ("ok", CLOSED),
        ],
    ),
    "recovery_timeout=0 half-opens on the next call": (
        (1, 0, 1),
        [("fail", OPEN), ("ok", CLOSED)],
    ),
}


@pytest.mark.parametrize("case", list(TRANSITIONS), ids=list(TRANSITIONS))
def test_transition_table(case: str) -> None:
    (failure_threshold, recovery_timeout, success_threshold), steps = TRANSITIONS[case]
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold, recovery_timeout, success_threshold)
    assert breaker.state == CLOSED
    for index, (step, expected) in enumerate(steps):
        run_step(breaker, clock, step)
        assert breaker.state == expected, f"after step {index} ({step})"


def test_state_is_a_str_enum_equal_to_its_value() -> None:
    breaker = make_breaker(FakeClock())
    assert breaker.state == "closed"
    assert breaker.state is BreakerState.CLOSED
    assert [s.value for s in BreakerState] == ["closed", "open", "half_open"]
    assert f"{BreakerState.HALF_OPEN}" == "half_open"


def test_rejection_error_carries_state_and_message() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, 3, 120, name="bright_data")
    trip(breaker)
    clock.now += 33
    with pytest.raises(CircuitBreakerError) as info:
        breaker.call(ok)
    assert info.value.state == "open"
    assert info.value.message == "circuit 'bright_data' is open; retry in 87s"
    assert str(info.value) == info.value.message


def test_rejection_does_not_run_the_function() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, 1)
    trip(breaker)
    ran: list[int] = []
    with pytest.raises(CircuitBreakerError):
        breaker.call(ran.append, 1)
    assert ran == []


def test_call_passes_args_and_kwargs_through() -> None:
    breaker = make_breaker(FakeClock())

    def join(a: str, b: str, *, sep: str) -> str:
        return sep.join([a, b])

    assert breaker.call(join, "x", "y", sep="-") == "x-y"


# -- concurrency -----------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["open_and_due", "half_open"])
def test_half_open_admits_exactly_one_of_32_threads(start: str) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=10, success_threshold=2)
    trip(breaker)
    clock.now += 10
    if start == "half_open":
        breaker.call(ok)  # first of two trial successes: half_open, slot free
        assert breaker.state == HALF
    threads_n = 32
    barrier = threading.Barrier(threads_n)
    release = threading.Event()
    counted = threading.Condition()
    calls: list[int] = []
    rejections: list[CircuitBreakerError] = []
    others: list[BaseException] = []

    def trial() -> str:
        with counted:
            calls.append(1)
            counted.notify_all()
        release.wait(JOIN_TIMEOUT_S)
        return "quote"

    def worker() -> None:
        barrier.wait(JOIN_TIMEOUT_S)
        try:
            breaker.call(trial)
        except CircuitBreakerError as exc:
            with counted:
                rejections.append(exc)
                counted.notify_all()
        except BaseException as exc:  # recorded so the assertion below names it
            others.append(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    try:
        # The 31 refusals must come while the trial is still held in flight: nobody queues.
        with counted:
            counted.wait_for(
                lambda: len(calls) + len(rejections) >= threads_n, timeout=JOIN_TIMEOUT_S
            )
            assert (len(calls), len(rejections)) == (1, threads_n - 1)
        assert breaker.state == HALF
    finally:
        release.set()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads)
    assert others == []
    assert (len(calls), len(rejections)) == (1, threads_n - 1)
    assert {exc.state for exc in rejections} == {"half_open"}
    stats = breaker.get_statistics()
    assert stats["total_rejections"] == threads_n - 1
    assert breaker.state == (HALF if start == "open_and_due" else CLOSED)


def _probe_promptly(breaker: CircuitBreaker, probe: Callable[[], object]) -> object:
    """Run `probe` in another thread; fail if it does not return within the join timeout."""
    box: list[object] = []
    helper = threading.Thread(target=lambda: box.append(probe()), daemon=True)
    helper.start()
    helper.join(JOIN_TIMEOUT_S)
    assert not helper.is_alive(), "blocked: the breaker's lock is held during the call"
    return box[0]


@pytest.mark.parametrize("trial", [False, True], ids=["closed", "half_open_trial"])
def test_lock_is_not_held_while_the_call_runs(trial: bool) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=10)
    if trial:
        trip(breaker)
        clock.now += 10
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(JOIN_TIMEOUT_S)
        return "slow"

    caller = threading.Thread(target=breaker.call, args=(slow,), daemon=True)
    caller.start()
    try:
        assert started.wait(JOIN_TIMEOUT_S)
        stats = _probe_promptly(breaker, breaker.get_statistics)
        assert isinstance(stats, dict) and stats["total_calls"] == (2 if trial else 1)
        assert _probe_promptly(breaker, lambda: breaker.state) == (HALF if trial else CLOSED)
        assert _probe_promptly(breaker, breaker.is_available) is (not trial)
        assert _probe_promptly(breaker, breaker._get_recovery_time_remaining) == 0.0

        def second_call() -> object:
            try:
                return breaker.call(ok)
            except CircuitBreakerError as exc:
                return exc

        outcome = _probe_promptly(breaker, second_call)
        if trial:
            assert isinstance(outcome, CircuitBreakerError)  # refused at once, not queued
        else:
            assert outcome == "quote"  # closed: calls run side by side
    finally:
        release.set()
        caller.join(JOIN_TIMEOUT_S)
    assert not caller.is_alive()
    assert breaker.state == CLOSED


# -- generations -----------------------------------------------------------------------------


class SlowCall:
    """A call held in flight on another thread until the test lets it finish."""

    def __init__(self, breaker: CircuitBreaker, succeed: bool) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.succeed = succeed
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(breaker,), daemon=True)

    def _body(self) -> str:
        self.started.set()
        self.release.wait(JOIN_TIMEOUT_S)
        if not self.succeed:
            raise TransientSourceError("slow failure")
        return "slow"

    def _run(self, breaker: CircuitBreaker) -> None:
        try:
            breaker.call(self._body)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> SlowCall:
        self.thread.start()
        assert self.started.wait(JOIN_TIMEOUT_S)
        return self

    def finish(self) -> None:
        self.release.set()
        self.thread.join(JOIN_TIMEOUT_S)
        assert not self.thread.is_alive()

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.thread.join(JOIN_TIMEOUT_S)


def test_stale_success_does_not_close_an_open_breaker() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=2, recovery_timeout=10)
    with SlowCall(breaker, succeed=True) as slow:
        trip(breaker)
        clock.now += 60  # even well past the timeout, the old success must not close it
        slow.finish()
    assert slow.error is None
    assert breaker.state == OPEN
    stats = breaker.get_statistics()
    assert stats["total_successes"] == 1  # still counted in the totals
    assert stats["transitions"] == 1


def test_stale_success_neither_closes_nor_frees_a_half_open_trial() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=10)
    with SlowCall(breaker, succeed=True) as old:
        trip(breaker)
        clock.now += 10
        with SlowCall(breaker, succeed=False) as trial:
            old.finish()
            assert breaker.state == HALF
            with pytest.raises(CircuitBreakerError):  # the trial still holds the slot
                breaker.call(ok)
            trial.finish()
    assert isinstance(trial.error, TransientSourceError)
    assert breaker.state == OPEN


def test_stale_failure_does_not_reopen_a_recovered_breaker() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=10)
    with SlowCall(breaker, succeed=False) as old:
        trip(breaker)
        clock.now += 10
        breaker.call(ok)
        assert breaker.state == CLOSED
        old.finish()
    assert isinstance(old.error, TransientSourceError)
    assert breaker.state == CLOSED
    stats = breaker.get_statistics()
    assert stats["consecutive_failures"] == 0
    assert stats["total_failures"] == 2


# -- what counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("error_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_passes_through_and_frees_the_trial_slot(
    error_type: type[BaseException],
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=10)
    trip(breaker)
    clock.now += 10
    raised = error_type()

    def interrupted() -> str:
        raise raised

    with pytest.raises(error_type) as info:
        breaker.call(interrupted)
    assert info.value is raised  # untouched, not wrapped
    assert breaker.state == HALF
    assert breaker.is_available()  # not wedged: the next caller becomes the trial
    assert breaker.call(ok) == "quote"
    assert breaker.state == CLOSED
    stats = breaker.get_statistics()
    assert (stats["total_failures"], stats["total_successes"]) == (1, 1)


def test_base_exception_in_closed_counts_as_nothing() -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=1)

    def interrupted() -> str:
        raise KeyboardInterrupt

    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            breaker.call(interrupted)
    assert breaker.state == CLOSED
    stats = breaker.get_statistics()
    assert (stats["total_calls"], stats["total_failures"], stats["total_successes"]) == (3, 0, 0)


def test_excluded_errors_are_reraised_and_never_trip() -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=1)
    for _ in range(10):
        with pytest.raises(UnknownSymbolError):
            breaker.call(unknown_symbol)
    assert breaker.state == CLOSED
    stats = breaker.get_statistics()
    assert stats["total_calls"] == 10
    assert stats["total_excluded"] == 10
    assert (stats["total_failures"], stats["total_successes"]) == (0, 0)
    assert stats["consecutive_failures"] == 0


def test_excluded_subclass_is_excluded_too() -> None:
    breaker = CircuitBreaker("svc", failure_threshold=1, clock=FakeClock(), excluded=[LookupError])
    prices: dict[str, float] = {}
    with pytest.raises(KeyError):
        breaker.call(prices.__getitem__, "ZZZZ:US")
    assert breaker.state == CLOSED


# -- statistics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "rate_pct"),
    [
        ([], 0.0),
        (["ok", "ok", "ok", "fail"], 25.0),
        (["ok", "ok", "fail"], 33.33),
        (["ok", "skip", "skip", "fail"], 50.0),  # excluded calls do not dilute the rate
        (["fail", "fail"], 100.0),
    ],
)
def test_failure_rate_pct(steps: list[str], rate_pct: float) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=10)
    for step in steps:
        run_step(breaker, clock, step)
    assert breaker.get_statistics()["failure_rate_pct"] == rate_pct


def test_statistics_keys_and_counts() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=2, recovery_timeout=30, name="yfinance")
    for step in ["ok", "fail", "fail", "reject", "reject", "+30", "fail", "+30", "ok"]:
        run_step(breaker, clock, step)
    stats = breaker.get_statistics()
    assert stats == {
        "name": "yfinance",
        "state": "closed",
        "total_calls": 5,
        "total_successes": 2,
        "total_failures": 3,
        "total_excluded": 0,
        "total_rejections": 2,
        "consecutive_failures": 0,
        "failure_rate_pct": 60.0,
        "recovery_in_seconds": 0.0,
        "transitions": 5,  # closed>open>half_open>open>half_open>closed
        "opened_count": 2,
        "state_info": {
            "state": "closed",
            "recovery_in_seconds": 0.0,
            "failure_threshold": 2,
            "recovery_timeout": 30.0,
        },
    }
    assert type(stats["state"]) is str
    json.dumps(stats)  # plain values: the control socket serves this as JSON


def test_recovery_time_remaining() -> None:
    clock = FakeClock(now=100.0)
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=120)
    assert breaker._get_recovery_time_remaining() == 0.0  # closed
    trip(breaker)
    assert breaker._get_recovery_time_remaining() == 120.0
    clock.now += 33
    assert breaker._get_recovery_time_remaining() == 87.0
    stats = breaker.get_statistics()
    assert stats["recovery_in_seconds"] == 87.0
    assert stats["state_info"]["recovery_in_seconds"] == 87.0
    assert not breaker.is_available()
    clock.now += 87
    assert breaker._get_recovery_time_remaining() == 0.0
    # Due but not yet tried: still OPEN until a call arrives, yet a call would be admitted.
    assert breaker.state == OPEN
    assert breaker.is_available()


# -- reset -----------------------------------------------------------------------------------


def test_reset_closes_and_keeps_totals() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=2, recovery_timeout=120)
    trip(breaker)
    breaker.reset()
    assert breaker.state == CLOSED
    assert breaker.is_available()
    assert breaker._get_recovery_time_remaining() == 0.0
    stats = breaker.get_statistics()
    assert stats["consecutive_failures"] == 0
    assert stats["total_failures"] == 2
    assert stats["transitions"] == 2
    # A fresh count: one failure is not enough to trip again.
    run_step(breaker, clock, "fail")
    assert breaker.state == CLOSED


def test_reset_when_closed_clears_the_count_and_ignores_in_flight_failures() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=2)
    with SlowCall(breaker, succeed=False) as old:
        run_step(breaker, clock, "fail")
        breaker.reset()
        assert breaker.get_statistics()["consecutive_failures"] == 0
        old.finish()
    assert breaker.state == CLOSED
    assert breaker.get_statistics()["consecutive_failures"] == 0
    assert breaker.get_statistics()["transitions"] == 0


def test_reset_during_a_trial_frees_the_slot_for_good() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=10)
    trip(breaker)
    clock.now += 10
    with SlowCall(breaker, succeed=False) as trial:
        breaker.reset()
        assert breaker.call(ok) == "quote"
        trial.finish()
    assert breaker.state == CLOSED  # the old trial's failure belongs to an older generation


# -- reporting -------------------------------------------------------------------------------


def test_transitions_are_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=3, recovery_timeout=120, name="bright_data")
    with caplog.at_level(logging.WARNING, logger="crawler.breaker"):
        trip(breaker)
        clock.now += 120
        breaker.call(ok)
    records = [r for r in caplog.records if r.name == "crawler.breaker"]
    assert all(r.levelno == logging.WARNING for r in records)
    # Key-value events: the data are the record's attributes (JSON fields in the daemon's log).
    assert {r.getMessage() for r in records} == {"circuit breaker changed state"}
    assert [(r.breaker, r.old, r.new, r.reason) for r in records] == [  # type: ignore[attr-defined]
        ("bright_data", "closed", "open", "after 3 consecutive failures; retry in 120s"),
        ("bright_data", "open", "half_open", "after the recovery timeout; admitting a trial call"),
        ("bright_data", "half_open", "closed", "after 1 successful trial call(s)"),
    ]


def test_no_log_without_a_transition(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=3)
    with caplog.at_level(logging.DEBUG, logger="crawler.breaker"):
        for step in ["ok", "fail", "fail", "skip", "ok"]:
            run_step(breaker, clock, step)
    assert caplog.records == []


def test_on_state_change_reports_each_change_outside_the_lock() -> None:
    clock = FakeClock()
    seen: list[tuple[str, str, str, str]] = []
    breaker: CircuitBreaker

    def record(name: str, old: BreakerState, new: BreakerState) -> None:
        # Reading the breaker from the callback would deadlock if the lock were still held.
        seen.append((name, old, new, breaker.get_statistics()["state"]))

    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=5, on_state_change=record)

    def scenario() -> None:
        for step in ["fail", "+5", "fail", "+5", "ok"]:
            run_step(breaker, clock, step)
        breaker.reset()  # already closed: no change to report

    runner = threading.Thread(target=scenario, daemon=True)
    runner.start()
    runner.join(JOIN_TIMEOUT_S)
    assert not runner.is_alive(), "deadlock: the callback ran with the lock held"
    assert seen == [
        ("svc", CLOSED, OPEN, OPEN),
        ("svc", OPEN, HALF, HALF),
        ("svc", HALF, OPEN, OPEN),
        ("svc", OPEN, HALF, HALF),
        ("svc", HALF, CLOSED, CLOSED),
    ]


def test_a_failing_callback_does_not_change_the_outcome(caplog: pytest.LogCaptureFixture) -> None:
    def broken(name: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("metrics backend down")

    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=5, on_state_change=broken)
    with caplog.at_level(logging.ERROR, logger="crawler.breaker"):
        run_step(breaker, clock, "fail")  # still the source's error, not the callback's
        clock.now += 5
        assert breaker.call(ok) == "quote"
    assert breaker.state == CLOSED
    assert sum("callback" in r.getMessage() for r in caplog.records) == 3


# -- surface ---------------------------------------------------------------------------------


def test_public_names() -> None:
    assert set(circuit_breaker_module.__all__) == {
        "BreakerState",
        "CircuitBreaker",
        "CircuitBreakerError",
    }
    assert circuit_breaker_module.CircuitBreakerError is exceptions.CircuitBreakerError
    for name in circuit_breaker_module.__all__:
        assert getattr(circuit_breaker_module, name).__doc__


@pytest.mark.parametrize(
    "kwargs",
    [{"failure_threshold": 0}, {"success_threshold": 0}, {"recovery_timeout": -1}],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("svc", **kwargs)  # type: ignore[arg-type]


def test_seed_guide_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    # orchestrator-guide.md, "Usage", "Error Handling", "Monitor Circuit Breakers" and
    # "Troubleshooting", with `src` replaced by `crawler` and a fake clock added.
    from crawler.orchestrator import CircuitBreaker
    from crawler.orchestrator.circuit_breaker import CircuitBreakerError

    clock = FakeClock()
    breaker = CircuitBreaker(
        name="api_service",
        failure_threshold=5,  # Open after 5 consecutive failures
        recovery_timeout=60,  # Wait 60s before attempting recovery
        success_threshold=1,  # Close after 1 success in HALF_OPEN
        clock=clock,
    )

    def api_function(arg1: int, arg2: int) -> int:
        return arg1 + arg2

    arg1, arg2 = 1, 2
    try:
        result = breaker.call(api_function, arg1, arg2)
        print(f"Success: {result}")
    except CircuitBreakerError:
        print("Service unavailable - circuit is open")

    def broken_api() -> int:
        raise TransientSourceError("503")

    for _ in range(5):
        with pytest.raises(TransientSourceError):
            breaker.call(broken_api)
    try:
        result = breaker.call(api_function, arg1, arg2)
        print(f"Success: {result}")
    except CircuitBreakerError:
        print("Service unavailable - circuit is open")

    try:
        breaker.call(api_function, arg1, arg2)
    except CircuitBreakerError as e:
        print(f"Circuit {e.state}: {e.message}")

    stats = breaker.get_statistics()
    for key in ["state", "total_calls", "total_failures", "failure_rate_pct"]:
        assert key in stats
    print(f"recovery {stats['recovery_in_seconds']}")

    breakers = {"api_service": breaker}
    for name, b in breakers.items():
        if not b.is_available():
            print(f"Warning: {name} circuit is OPEN")
            stats = b.get_statistics()
            print(f"  Recovery in: {stats['state_info']['recovery_in_seconds']}s")

    print(f"State: {breaker.state}")
    print(f"Recovery in: {breaker._get_recovery_time_remaining()}s")
    breaker.reset()
    print(f"State: {breaker.state}")

    assert capsys.readouterr().out.splitlines() == [
        "Success: 3",
        "Service unavailable - circuit is open",
        "Circuit open: circuit 'api_service' is open; retry in 60s",
        "recovery 60.0",
        "Warning: api_service circuit is OPEN",
        "  Recovery in: 60.0s",
        "State: open",
        "Recovery in: 60.0s",
        "State: closed",
    ]
