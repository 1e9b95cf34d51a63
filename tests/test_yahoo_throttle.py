"""The Yahoo token bucket: spacing, the shared 429 pause, Retry-After, backoff, deadlines.

Time is a fake clock that only `sleep` moves, so nothing here sleeps for real.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from crawler.sources.yahoo_throttle import (
    BACKOFF_CAP_S,
    YahooThrottle,
    parse_retry_after,
    shared_throttle,
)

NOW = datetime(2026, 1, 6, 12, 0, tzinfo=UTC)


class FakeTime:
    def __init__(self) -> None:
        self.now_s = 1000.0
        self.lock = threading.Lock()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now_s += seconds


def make(rate: float = 2.0, jitter: float = 0.0) -> tuple[YahooThrottle, FakeTime]:
    fake = FakeTime()
    throttle = YahooThrottle(
        rate, clock=fake.clock, sleep=fake.sleep, now=lambda: NOW, random=lambda: jitter
    )
    return throttle, fake


def test_requests_are_spaced_at_the_rate() -> None:
    throttle, fake = make(rate=2.0)
    start = fake.now_s
    times = []
    for _ in range(5):
        assert throttle.acquire()
        times.append(fake.now_s - start)
    assert times == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert throttle.statistics()["requests_granted"] == 5


def test_idle_time_does_not_build_a_burst() -> None:
    throttle, fake = make(rate=2.0)
    throttle.acquire()
    fake.now_s += 60  # a quiet minute
    start = fake.now_s
    throttle.acquire()
    throttle.acquire()
    assert fake.now_s - start == 0.5


def test_a_429_with_retry_after_seconds_pauses_every_caller() -> None:
    throttle, fake = make(rate=100.0)
    throttle.acquire()
    assert throttle.on_rate_limited("7") == 7.0
    stats = throttle.statistics()
    assert stats["throttled"] is True and stats["paused_for_s"] == 7.0
    assert stats["rate_limited_total"] == 1
    start = fake.now_s
    throttle.acquire()
    assert fake.now_s - start == pytest.approx(7.0)
    assert throttle.statistics()["throttled"] is False


def test_a_429_with_an_http_date() -> None:
    throttle, _ = make()
    when = (NOW + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert throttle.on_rate_limited(when) == pytest.approx(30.0)


def test_without_retry_after_the_backoff_doubles_with_jitter_and_resets() -> None:
    throttle, _ = make(jitter=1.0)  # the top of the jitter range: the full backoff
    assert [throttle.on_rate_limited(None) for _ in range(3)] == [2.0, 4.0, 8.0]
    throttle.on_answer()
    assert throttle.on_rate_limited(None) == 2.0
    low, _ = make(jitter=0.0)  # the bottom: half
    assert low.on_rate_limited(None) == 1.0
    for _ in range(20):
        capped = throttle.on_rate_limited(None)
    assert capped == BACKOFF_CAP_S


def test_a_caller_that_cannot_go_before_its_deadline_is_refused_without_a_token() -> None:
    throttle, fake = make(rate=1.0)
    throttle.on_rate_limited("30")
    assert throttle.acquire(deadline_at_s=fake.now_s + 10) is False
    assert fake.sleeps == []
    stats = throttle.statistics()
    assert stats["refused_at_deadline"] == 1 and stats["requests_granted"] == 0
    assert throttle.acquire(deadline_at_s=fake.now_s + 31) is True


def test_a_pause_that_starts_while_waiting_is_waited_out_too() -> None:
    fake = FakeTime()
    throttle: YahooThrottle

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        if len(fake.sleeps) == 1:
            throttle.on_rate_limited("10")  # another worker got a 429 meanwhile

    throttle = YahooThrottle(1.0, clock=fake.clock, sleep=sleep, now=lambda: NOW)
    throttle.acquire()
    start = fake.now_s
    throttle.acquire()  # waits 1 s for its token, then the 10 s pause
    assert fake.now_s - start >= 10.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("99999999", 3600.0),
        ("Tue, 06 Jan 2026 12:01:00 GMT", 60.0),
        ("Tue, 06 Jan 2026 11:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf")])
def test_a_bad_rate_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        YahooThrottle(rate)


def test_the_shared_bucket_is_one_per_process_and_follows_the_rate() -> None:
    first = shared_throttle(2.0)
    assert shared_throttle(5.0) is first
    assert first.rate_per_s == 5.0
    first.set_rate(2.0)
