"""Issue 23 item 9: every upstream body is read with a cap. A Yahoo answer (batch or chart)
over `MAX_BODY_BYTES` fails that request cleanly after reading at most the cap; a stream frame
over `MAX_FRAME_BYTES` is refused by the websocket client before it is buffered, and the stream
reconnects. The fake market's `huge_body_bytes` knob pads a real answer into a huge valid one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol, parse_symbol, to_yahoo
from crawler.normalizer.yahoo_stream import MAX_FRAME_BYTES
from crawler.sources.yahoo_redirect import MAX_ANSWER_BYTES
from crawler.sources.yahoo_stream import YahooStream
from crawler.sources.yahoo_throttle import YahooThrottle
from crawler.sources.yfinance_source import MAX_BODY_BYTES, YFinanceSource
from crawler.utils.exceptions import APIError
from fakemarket.stream import YahooStreamFake
from fakemarket.yahoo import QUOTE_FAULT_KEY, YahooFake

SYMBOLS = [parse_symbol(s) for s in ("AAPL:US", "MSFT:US", "QQQ:US")]


@pytest.fixture
def source(yahoo_fake: YahooFake, tmp_path: Path) -> Iterator[YFinanceSource]:
    source = YFinanceSource(
        endpoint=yahoo_fake.url, cache_dir=tmp_path / "yfinance", timeout_s=10, deadline_s=30,
        throttle=YahooThrottle(1000.0),
    )  # fmt: skip
    yield source
    source.close()


def test_a_60_mb_batch_answer_fails_that_request_cleanly(
    yahoo_fake: YahooFake, source: YFinanceSource
) -> None:
    yahoo_fake.faults.set(QUOTE_FAULT_KEY, huge_body_bytes=60 << 20)
    with pytest.raises(APIError, match=f"over the {MAX_BODY_BYTES:,}-byte limit") as caught:
        source.fetch_batch(SYMBOLS)
    assert "\n" not in caught.value.message
    # The next answer of a normal size is read as ever.
    yahoo_fake.faults.clear(QUOTE_FAULT_KEY)
    answer = source.fetch_batch(SYMBOLS)
    assert set(answer.quotes) == {s.canonical for s in SYMBOLS}


def test_a_huge_chart_fails_only_its_symbol(yahoo_fake: YahooFake, source: YFinanceSource) -> None:
    yahoo_fake.faults.set("MSFT", huge_body_bytes=MAX_BODY_BYTES + 1)
    with pytest.raises(APIError, match="over the"):
        source.fetch(parse_symbol("MSFT:US"))
    assert source.fetch(parse_symbol("AAPL:US")).price > 0
    # Exactly at the cap is still read (a padded answer is valid JSON).
    yahoo_fake.faults.set("QQQ", huge_body_bytes=MAX_BODY_BYTES)
    assert source.fetch(parse_symbol("QQQ:US")).price > 0


def wait_until(predicate: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


def test_a_stream_frame_over_the_cap_is_refused_unread_and_the_stream_reconnects() -> None:
    fake = YahooStreamFake().start()
    landed: list[Quote] = []
    lock = threading.Lock()
    symbol = parse_symbol("AAPL:US")
    wanted: dict[str, Symbol] = {to_yahoo(symbol): symbol}

    def sink(quotes: list[Quote]) -> None:
        with lock:
            landed.extend(quotes)

    stream = YahooStream(
        fake.url, wanted=lambda: dict(wanted), sink=sink, refresh_s=0.05, flush_interval_s=0.05,
        connect_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2,
    )  # fmt: skip
    stream.start()
    try:
        wait_until(lambda: fake.subscribed() == {"AAPL"}, "the subscription")
        assert stream.connects == 1
        # Bigger than a frame may be (a real one is ~150 bytes), smaller than websockets'
        # default 1 MiB: refused by the client at the frame header, never buffered.
        assert fake.send_frame("A" * (4 * MAX_FRAME_BYTES)) == 1
        wait_until(lambda: stream.connects == 2, "the reconnection")
        assert stream.disconnects == 1
        wait_until(lambda: fake.subscribed() == {"AAPL"}, "the resubscription")
        fake.tick_rate = 20.0
        wait_until(lambda: len(landed) > 0, "ticks after the reconnection")
    finally:
        stream.stop()
        fake.stop()


def test_yfinances_own_calls_are_capped_by_the_session(yahoo_fake: YahooFake) -> None:
    # yfinance's cookie, crumb and consent calls do not go through our capped read; the
    # session's backstop stops curl past MAX_ANSWER_BYTES, declared or not.
    from curl_cffi.requests.exceptions import RequestException

    from crawler.sources.yahoo_redirect import RedirectingSession

    session = RedirectingSession(yahoo_fake.url, max_timeout_s=10)
    try:
        crumb_url = "https://query1.finance.yahoo.com/v1/test/getcrumb"
        yahoo_fake.faults.set("*", huge_body_bytes=MAX_ANSWER_BYTES)
        assert len(session.get(crumb_url).content) == MAX_ANSWER_BYTES
        yahoo_fake.faults.set("*", huge_body_bytes=MAX_ANSWER_BYTES + 1)
        with pytest.raises(RequestException, match=r"(?i)maximum file size|63"):
            session.get(crumb_url)
    finally:
        session.close()
