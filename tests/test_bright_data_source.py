"""BrightDataSource end to end over real HTTP against the Bright Data fake, with a real ledger.

Money is checked at every step: the fake's own count of billed requests times the cost must equal
the ledger's billed spend to the micro-dollar, with no reservation left open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import Symbol, parse_symbol
from crawler.sources.base import QuoteSource
from crawler.sources.bright_data import BrightDataSource
from crawler.store.ledger import BudgetLedger
from crawler.utils.exceptions import (
    BilledFailureError,
    BudgetExhaustedError,
    RateLimitedError,
    SourceConfigError,
    TransientSourceError,
    UnknownSymbolError,
)
from fakemarket.brightdata import BrightDataFake

SECRET = "brd-SECRET-7f3c9a1e5b"
ZONE = "web_unlocker1"
COST = Decimal("0.0015")
AAPL = parse_symbol("AAPL:US")
LOGGER = "crawler.sources.bright_data"


@pytest.fixture
def fake(bright_data_fake: BrightDataFake) -> BrightDataFake:
    bright_data_fake.api_key = SECRET  # a distinctive key, so a leak is greppable
    return bright_data_fake


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[BudgetLedger]:
    ledger = BudgetLedger(tmp_path / "ledger", Decimal("10"), COST)
    try:
        yield ledger
    finally:
        ledger.close()


class Recorder:
    """The injected sleep: records each backoff wait instead of sleeping."""

    def __init__(self) -> None:
        self.waits_s: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits_s.append(seconds)


@pytest.fixture
def sleeps() -> Recorder:
    return Recorder()


@pytest.fixture
def make_source(
    fake: BrightDataFake, ledger: BudgetLedger, sleeps: Recorder
) -> Iterator[Callable[..., BrightDataSource]]:
    made: list[BrightDataSource] = []

    def make(**overrides: Any) -> BrightDataSource:
        options: dict[str, Any] = {
            "connect_timeout_s": 1,
            "read_timeout_s": 2,
            "deadline_s": 5,
            "sleep": sleeps,
            "rng": lambda: 0.5,
        }
        options.update(overrides)
        endpoint = options.pop("endpoint", fake.url)
        key = options.pop("api_key", SECRET)
        zone = options.pop("zone", ZONE)
        source = BrightDataSource(endpoint, key, zone, options.pop("ledger", ledger), **options)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


def assert_money_matches(fake: BrightDataFake, ledger: BudgetLedger) -> None:
    stats = ledger.statistics()
    assert stats["open_reservations"] == 0
    assert stats["billed_cost"] == fake.billed_count * COST
    assert stats["total_cost"] == stats["billed_cost"]
    assert stats["requests_billed"] == fake.billed_count


def outcomes(fake: BrightDataFake) -> list[str]:
    return [request.outcome for request in fake.log_requests()]


def wait_until(predicate: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    """Polls `predicate` (the fake logs a request on its own thread); fails after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < end, f"not within {deadline_s:g} s: {what}"
        time.sleep(0.01)


# -- success ---------------------------------------------------------------------------------


def test_quote_is_fetched_billed_and_settled(
    fake: BrightDataFake, ledger: BudgetLedger, make_source: Callable[..., BrightDataSource]
) -> None:
    fake.set_quote("AAPL:US", price="262.36", currency="USD", volume=52_262_300)
    source = make_source()

    quote = source.fetch(AAPL)

    assert isinstance(quote, Quote)
    assert str(quote.price) == "262.36"
    assert quote.currency == "USD" and quote.volume == 52_262_300
    assert quote.source == "bright_data" and quote.symbol == "AAPL:US"
    assert outcomes(fake) == ["billed:quote"]
    request = fake.log_requests()[0]
    assert request.path == "/request" and request.method == "POST"
    assert b'"url": "https://www.bloomberg.com/quote/AAPL:US"' in request.body
    assert b'"format": "raw"' in request.body
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["billed_cost"] == COST
    stats = source.statistics()
    assert (stats["requests"], stats["billed"], stats["unbilled"], stats["successes"]) == (
        1,
        1,
        0,
        1,
    )


def test_source_satisfies_the_protocol(make_source: Callable[..., BrightDataSource]) -> None:
    source = make_source()
    assert isinstance(source, QuoteSource)
    assert source.name == "bright_data"


@pytest.mark.parametrize("text", ["EURUSD:CUR", "GC1:COM", "SPX:IND", "VOD:LN"])
def test_generated_quotes_for_other_asset_classes(
    text: str,
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_source: Callable[..., BrightDataSource],
) -> None:
    symbol = parse_symbol(text)
    quote = make_source().fetch(symbol)
    assert quote.symbol == symbol.canonical
    assert quote.price == fake.quote_for(symbol.canonical).price
    assert_money_matches(fake, ledger)


# -- configuration errors: not billed, not retried ----------------------------------------------


def test_bad_key_is_a_config_error_not_retried_not_billed(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    sleeps: Recorder,
    make_source: Callable[..., BrightDataSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong_key = "brd-WRONG-0000ffff"
    source = make_source(api_key=wrong_key)
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceConfigError, match="401") as caught:
        source.fetch(AAPL)
    assert outcomes(fake) == ["unbilled:bad_key"]
    assert sleeps.waits_s == []
    assert wrong_key not in str(caught.value) and wrong_key not in caplog.text
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["total_cost"] == 0


def test_unknown_zone_is_a_config_error_not_retried(
    fake: BrightDataFake, ledger: BudgetLedger, make_source: Callable[..., BrightDataSource]
) -> None:
    with pytest.raises(SourceConfigError, match="zone 'no_such_zone'"):
        make_source(zone="no_such_zone").fetch(AAPL)
    assert outcomes(fake) == ["unbilled:bad_zone"]
    assert_money_matches(fake, ledger)


def test_wrong_endpoint_path_is_a_config_error(
    fake: BrightDataFake, ledger: BudgetLedger, make_source: Callable[..., BrightDataSource]
) -> None:
    with pytest.raises(SourceConfigError, match="404"):
        make_source(endpoint=fake.url + "/api/v2").fetch(AAPL)
    assert len(fake.log_requests()) == 1
    assert_money_matches(fake, ledger)


# -- transient errors: not billed, retried with backoff ------------------------------------------


def test_unlocker_error_is_retried_with_jittered_backoff_and_never_billed(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    sleeps: Recorder,
    make_source: Callable[..., BrightDataSource],
) -> None:
    fake.unlocker_error("AAPL:US", code="reject_block")
    source = make_source(max_attempts=3, backoff_base_s=0.5, rng=lambda: 0.5)

    with pytest.raises(TransientSourceError, match="after 3 attempt") as caught:
        source.fetch(AAPL)

    assert not isinstance(caught.value, RateLimitedError)
    assert "reject_block" in str(caught.value)
    assert outcomes(fake) == ["unbilled:unlocker_error:reject_block"] * 3
    # Full jitter: rng() * base * 2**(n-1) → 0.5*0.5*1, 0.5*0.5*2.
    assert sleeps.waits_s == [0.25, 0.5]
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["total_cost"] == 0
    stats = source.statistics()
    assert (stats["requests"], stats["unbilled"], stats["retries"], stats["failures"]) == (
        3,
        3,
        2,
        1,
    )


def test_rate_limited_unlocker_honours_retry_after_then_succeeds(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    sleeps: Recorder,
    make_source: Callable[..., BrightDataSource],
) -> None:
    fake.unlocker_error("AAPL:US", code="sr_rate_limit", times=1, retry_after_s=2)

    quote = make_source(deadline_s=10).fetch(AAPL)

    assert quote.price == fake.quote_for("AAPL:US").price
    assert sleeps.waits_s == [2.0]
    assert outcomes(fake) == ["unbilled:unlocker_error:sr_rate_limit", "billed:quote"]
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["billed_cost"] == COST


def test_outer_429_storm_gives_rate_limited_error_with_retry_after(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    sleeps: Recorder,
    make_source: Callable[..., BrightDataSource],
) -> None:
    fake.faults.set("*", status=429, retry_after_s=1.5)

    with pytest.raises(RateLimitedError) as caught:
        make_source(deadline_s=10, max_attempts=3).fetch(AAPL)

    assert caught.value.retry_after_s == 1.5
    assert sleeps.waits_s == [1.5, 1.5]
    assert outcomes(fake) == ["unbilled:forced_429"] * 3
    assert_money_matches(fake, ledger)


def test_retry_after_past_the_deadline_is_not_waited_for(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    sleeps: Recorder,
    make_source: Callable[..., BrightDataSource],
) -> None:
    fake.faults.set("*", status=429, retry_after_s=60)
    with pytest.raises(RateLimitedError):
        make_source(deadline_s=5, max_attempts=3).fetch(AAPL)
    assert sleeps.waits_s == []
    assert len(fake.log_requests()) == 1
    assert_money_matches(fake, ledger)


def test_unlocker_errors_are_transient_and_released(
    fake: BrightDataFake, ledger: BudgetLedger, make_source: Callable[..., BrightDataSource]
) -> None:
    fake.faults.set("AAPL:US", error_rate=1.0)
    with pytest.raises(TransientSourceError):
        make_source(max_attempts=2).fetch(AAPL)
    assert outcomes(fake) == ["unbilled:unlocker_error:reject_block"] * 2
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["total_cost"] == 0


@pytest.mark.parametrize(
    ("knobs", "outcome"),
    [
        ({"status": 503}, "unbilled:forced_503"),
        ({"status": 502}, "unbilled:forced_502"),
        ({"garbage": True}, "garbage"),  # 200 without x-brd-status-code
    ],
)
def test_answers_that_do_not_prove_no_charge_count_as_spent(
    knobs: dict[str, Any],
    outcome: str,
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_source: Callable[..., BrightDataSource],
) -> None:
    """Issue 13 item 1: a 5xx without x-brd-error or an answer without x-brd-status-code does
    not prove Bright Data did not bill; each attempt (retries reserve again) counts as spent."""
    fake.faults.set("AAPL:US", **knobs)
    source = make_source(max_attempts=2)
    with pytest.raises(TransientSourceError, match="counted as spent"):
        source.fetch(AAPL)
    assert outcomes(fake) == [outcome] * 2
    stats = ledger.statistics()
    assert stats["open_reservations"] == 0
    assert stats["billed_cost"] == 2 * COST >= fake.billed_count * COST
    assert source.statistics()["unknown_outcome"] == 2


def test_connection_refused_is_transient(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    sleeps: Recorder,
    make_source: Callable[..., BrightDataSource],
) -> None:
    source = make_source(max_attempts=2)
    fake.set_outage("refuse")
    with pytest.raises(
        TransientSourceError, match=r"cannot reach 127.0.0.1 \(connection refused; no network\?\)"
    ):
        source.fetch(AAPL)
    assert len(sleeps.waits_s) == 1
    assert source.statistics()["unbilled"] == 2
    assert ledger.statistics()["total_cost"] == 0


class VirtualClock:
    """The source's clock and sleep: time moves only by what the source chose to wait."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.waits_s: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.waits_s.append(seconds)
        self.now_s += seconds


class WaitingSession(requests.Session):
    """A real session that notes each POST's (connect, read) timeout and, when the read
    timeout fires, moves the virtual clock by exactly the read timeout the source gave."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.timeouts: list[tuple[float, float]] = []

    def post(self, url: Any, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        connect_s, read_s = kwargs["timeout"]
        self.timeouts.append((connect_s, read_s))
        try:
            return super().post(url, *args, **kwargs)
        except requests.ReadTimeout:
            self.clock.now_s += read_s
            raise


def test_deadline_bounds_a_hanging_unlocker(
    fake: BrightDataFake, ledger: BudgetLedger, make_source: Callable[..., BrightDataSource]
) -> None:
    fake.faults.set("*", hang=True)
    clock = VirtualClock()
    session = WaitingSession(clock)
    source = make_source(
        read_timeout_s=0.3,
        deadline_s=0.8,
        max_attempts=10,
        backoff_base_s=0.1,
        clock=clock,
        sleep=clock.sleep,
        session=session,
    )
    try:
        with pytest.raises(TransientSourceError, match=r"after 3 attempt\(s\).*within 0.05s"):
            source.fetch(AAPL)
    finally:
        session.close()

    # Each attempt's read timeout is capped by what is left of the 0.8 s (0.3, 0.3, then the
    # 0.05 left), and no attempt starts past the deadline: after 0.75 s of timeouts and
    # backoff (0.05, 0.1) the third waits only until 0.8, and a fourth (0.2 s backoff) would
    # start past it.
    assert session.timeouts == [
        (pytest.approx(0.8), pytest.approx(0.3)),
        (pytest.approx(0.45), pytest.approx(0.3)),
        (pytest.approx(0.05), pytest.approx(0.05)),
    ]
    assert clock.waits_s == [pytest.approx(0.05), pytest.approx(0.1)]
    assert clock.now_s == pytest.approx(0.8)
    assert source.statistics()["requests"] == 3
    wait_until(lambda: len(fake.log_requests()) == 3, "the fake saw the 3 attempts")
    assert all(outcome == "hang" for outcome in outcomes(fake))
    # A timeout after sending: Bright Data may still bill it, so each attempt counts as spent.
    assert ledger.statistics()["total_cost"] == 3 * COST
    assert ledger.statistics()["open_reservations"] == 0


# -- billed outcomes --------------------------------------------------------------------------


def test_target_404_is_unknown_symbol_billed_not_retried(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    sleeps: Recorder,
    make_source: Callable[..., BrightDataSource],
) -> None:
    fake.set_page("AAPL:US", "target_404")
    with pytest.raises(UnknownSymbolError, match="404"):
        make_source().fetch(AAPL)
    assert outcomes(fake) == ["billed:target_404"]
    assert sleeps.waits_s == []
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["billed_cost"] == COST


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("target_500", "HTTP 500"),
        ("bot_wall", "BOT WALL"),
        ("no_quote", "no quote"),
        ("truncated", "truncated"),
    ],
)
def test_paid_pages_without_a_quote_are_billed_failures_logged_at_error(
    kind: str,
    reason: str,
    fake: BrightDataFake,
    ledger: BudgetLedger,
    sleeps: Recorder,
    make_source: Callable[..., BrightDataSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.set_page("AAPL:US", kind)  # type: ignore[arg-type]
    source = make_source()
    with (
        caplog.at_level(logging.INFO, logger=LOGGER),
        pytest.raises(BilledFailureError, match=reason),
    ):
        source.fetch(AAPL)
    assert outcomes(fake) == [f"billed:{kind}"]
    assert sleeps.waits_s == []  # paying again for the same wall is the orchestrator's call
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert errors and reason in errors[0].getMessage()
    assert_money_matches(fake, ledger)
    assert ledger.statistics()["billed_cost"] == COST
    assert source.statistics()["bot_walls"] == (1 if kind == "bot_wall" else 0)


def test_page_over_five_megabytes_is_refused_and_billed(
    fake: BrightDataFake, ledger: BudgetLedger, make_source: Callable[..., BrightDataSource]
) -> None:
    fake.set_quote("AAPL:US", extra={"filler": "x" * (6 * 1024 * 1024)})
    with pytest.raises(BilledFailureError, match="5242880-byte limit"):
        make_source().fetch(AAPL)
    assert_money_matches(fake, ledger)


def test_endless_body_stops_being_read_past_five_megabytes(
    ledger: BudgetLedger, make_source: Callable[..., BrightDataSource]
) -> None:
    sent_bytes = [0]

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("x-brd-status-code", "200")
            self.send_header("Transfer-Encoding", "chunked")  # no Content-Length to refuse on
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(1600):  # 100 MB if nobody stops reading
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent_bytes[0] += len(chunk)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        source = make_source(endpoint=f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(BilledFailureError, match="5242880-byte limit"):
            source.fetch(AAPL)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    # Socket buffers hold a few MB more than we read; reading it all would be 100 MB.
    assert sent_bytes[0] < 40 * 1024 * 1024
    assert ledger.statistics()["billed_cost"] == COST


# -- the budget -------------------------------------------------------------------------------


def test_exhausted_budget_sends_nothing(
    fake: BrightDataFake, tmp_path: Path, make_source: Callable[..., BrightDataSource]
) -> None:
    small = BudgetLedger(tmp_path / "small", COST, COST)  # exactly one request a day
    try:
        source = make_source(ledger=small)
        source.fetch(AAPL)
        with pytest.raises(BudgetExhaustedError):
            source.fetch(AAPL)
        assert len(fake.log_requests()) == 1
        assert small.statistics()["billed_cost"] == COST
    finally:
        small.close()


def test_every_outcome_on_one_ledger_matches_the_fakes_bill(
    fake: BrightDataFake, ledger: BudgetLedger, make_source: Callable[..., BrightDataSource]
) -> None:
    pages = {"BOT:US": "bot_wall", "NONE:US": "no_quote", "GONE:US": "target_404"}
    for text, kind in pages.items():
        fake.set_page(text, kind)  # type: ignore[arg-type]
    fake.unlocker_error("BLOCK:US", code="reject_block")
    fake.unlocker_error("SLOW:US", code="sr_rate_limit", times=1)
    fake.faults.set("DOWN:US", status=503)
    source = make_source(max_attempts=2)

    served = 0
    for text in ["AAPL:US", "BOT:US", "NONE:US", "GONE:US", "BLOCK:US", "SLOW:US", "DOWN:US"]:
        try:
            source.fetch(parse_symbol(text))
            served += 1
        except (BilledFailureError, UnknownSymbolError, TransientSourceError):
            pass

    assert served == 2  # AAPL, and SLOW on its retry
    assert fake.billed_count == 5 and fake.unbilled_count == 5
    # DOWN's two plain 503s prove nothing, so the ledger counts them: 5 billed + 2 unknown.
    assert ledger.statistics()["billed_cost"] == Decimal("0.0105")
    assert ledger.statistics()["open_reservations"] == 0
    stats = source.statistics()
    assert (stats["billed"], stats["unbilled"], stats["unknown_outcome"]) == (7, 3, 2)


# -- the key never leaks ----------------------------------------------------------------------


def test_the_api_key_never_appears_in_errors_logs_or_reprs(
    fake: BrightDataFake,
    make_source: Callable[..., BrightDataSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.set_page("BOT:US", "bot_wall")
    fake.set_page("GONE:US", "target_404")
    fake.unlocker_error("BLOCK:US", code="reject_block")
    fake.faults.set("DOWN:US", status=503)
    fake.faults.set("HANG:US", hang=True)
    texts: list[str] = []
    quick: dict[str, Any] = {"max_attempts": 2, "read_timeout_s": 0.2, "deadline_s": 1}
    sources = [make_source(**quick), make_source(zone="x", **quick)]

    with caplog.at_level(logging.DEBUG):
        for source in sources:
            texts.append(repr(source))
            for text in ["AAPL:US", "BOT:US", "GONE:US", "BLOCK:US", "DOWN:US", "HANG:US"]:
                try:
                    source.fetch(parse_symbol(text))
                except Exception as exc:
                    chained: BaseException | None = exc
                    while chained is not None:
                        texts += [str(chained), repr(chained)]
                        chained = chained.__cause__ or chained.__context__
            texts.append(repr(source.statistics()))
        fake.set_outage("refuse")
        with pytest.raises(TransientSourceError) as refused:
            sources[0].fetch(AAPL)
        texts += [str(refused.value), repr(refused.value.__cause__)]

    texts.append(caplog.text)
    texts.append(repr(fake))
    assert len(texts) > 20
    leaks = [text for text in texts if SECRET in text]
    assert leaks == []
    # And the key did go out, in the header only: the fake accepted it.
    assert any(r.outcome == "billed:quote" for r in fake.log_requests())


def test_symbol_type_is_what_fetch_takes(make_source: Callable[..., BrightDataSource]) -> None:
    # Guards the contract: fetch takes a parsed Symbol, never a string.
    assert isinstance(AAPL, Symbol)
    assert make_source().fetch(AAPL).asset_class == AAPL.asset_class


class ForwardingProxy(BaseHTTPRequestHandler):
    """A plain HTTP proxy on 127.0.0.1: forwards each absolute-URI POST and notes it."""

    seen: ClassVar[list[str]] = []
    hop_by_hop: ClassVar[set[str]] = {"connection", "content-length", "transfer-encoding", "host"}

    def do_POST(self) -> None:
        type(self).seen.append(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self.hop_by_hop}
        with requests.Session() as upstream:
            upstream.trust_env = False  # the test sets HTTP_PROXY: not to ourselves
            answer = upstream.post(self.path, data=body, headers=headers, timeout=10)
        payload = answer.content
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in self.hop_by_hop | {"content-encoding"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_proxy_and_ca_variables_are_read_once_and_still_honoured(
    fake: BrightDataFake,
    ledger: BudgetLedger,
    make_source: Callable[..., BrightDataSource],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session reads the environment when it is made, not on every request (a tenth of a
    paid quote's CPU): HTTP_PROXY still routes the requests, NO_PROXY still bypasses it."""
    ForwardingProxy.seen = []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), ForwardingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        proxied = make_source()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        direct = make_source()
        monkeypatch.delenv("HTTP_PROXY")  # read once: the first source keeps its proxy
        assert proxied.fetch(AAPL).price is not None
        assert len(ForwardingProxy.seen) == 1 and ForwardingProxy.seen[0].endswith("/request")
        assert direct.fetch(AAPL).price is not None
        assert len(ForwardingProxy.seen) == 1
        assert_money_matches(fake, ledger)
    finally:
        proxy.shutdown()
        proxy.server_close()
