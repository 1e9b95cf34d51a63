"""YFinanceSource against the Yahoo fake: yfinance's real code over real HTTP on 127.0.0.1.

yfinance keeps process-wide state (its cache location, one cookie+crumb), so the cookie
warm-up is checked in a fresh subprocess; in-process tests share one yfinance cache dir.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import parse_symbol
from crawler.sources.yfinance_source import YFinanceSource
from crawler.utils.exceptions import (
    APIError,
    ConfigError,
    RateLimitedError,
    TransientSourceError,
    UnknownSymbolError,
    UnmappableSymbolError,
)
from fakemarket.yahoo import YahooFake

REPO = Path(__file__).resolve().parents[1]
MakeSource = Callable[..., YFinanceSource]


@pytest.fixture(scope="module")
def yf_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("yfinance-cache")


@pytest.fixture
def make_source(yahoo_fake: YahooFake, yf_cache_dir: Path) -> Iterator[MakeSource]:
    sources: list[YFinanceSource] = []

    def make(**overrides: Any) -> YFinanceSource:
        kwargs: dict[str, Any] = {
            "endpoint": yahoo_fake.url,
            "cache_dir": yf_cache_dir,
            "timeout_s": 3,
            "deadline_s": 5,
        }
        kwargs.update(overrides)
        source = YFinanceSource(**kwargs)
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.close()


def _expected(fake: YahooFake, yahoo_symbol: str) -> dict[str, Any]:
    q = fake.quote_for(yahoo_symbol)
    return {
        "price": Decimal(str(q.price)),
        "previous_close": Decimal(str(q.previous_close)),
        "open": Decimal(str(q.open)),
        "high": Decimal(str(q.high)),
        "low": Decimal(str(q.low)),
        "volume": q.volume,
        "currency": q.currency,
        "as_of": datetime.fromtimestamp(q.regular_market_time, UTC),
    }


def test_warm_up_runs_cookie_crumb_and_chart_through_the_redirect(
    yahoo_fake: YahooFake, tmp_path: Path
) -> None:
    # A fresh interpreter: no cookie or crumb remembered by yfinance, an empty cache dir.
    child = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from crawler.normalizer.symbols import parse_symbol
        from crawler.sources.yfinance_source import YFinanceSource
        source = YFinanceSource(endpoint={yahoo_fake.url!r}, cache_dir=Path({str(tmp_path)!r}),
                                timeout_s=3, deadline_s=10)
        quote = source.fetch(parse_symbol("AAPL:US"))
        source.close()
        print(json.dumps(quote.to_json_dict()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", child],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    quote = json.loads(result.stdout.strip().splitlines()[-1])
    assert Decimal(quote["price"]) == _expected(yahoo_fake, "AAPL")["price"]

    kinds = [YahooFake.kind_of(r) for r in yahoo_fake.log_requests()]
    assert kinds == ["cookie", "crumb", "chart"]
    cookie, crumb, chart = yahoo_fake.log_requests()
    assert cookie.headers["host"].startswith("fc.yahoo.com:")
    assert crumb.headers["host"].split(":")[0].endswith(".finance.yahoo.com")
    assert "A3=" in crumb.headers.get("cookie", "")
    assert chart.headers["host"].startswith("query2.finance.yahoo.com:")
    assert chart.symbol == "AAPL"
    assert "A3=" in chart.headers.get("cookie", "")
    assert parse_qs(urlsplit(chart.path).query)["crumb"] == [yahoo_fake.crumb]


def test_a_fetch_after_warm_up_is_exactly_one_chart_request(
    yahoo_fake: YahooFake, make_source: MakeSource
) -> None:
    source = make_source()
    source.fetch(parse_symbol("AAPL:US"))
    yahoo_fake.reset()
    source.fetch(parse_symbol("MSFT:US"))
    requests = yahoo_fake.log_requests()
    assert [(YahooFake.kind_of(r), r.symbol) for r in requests] == [("chart", "MSFT")]
    query = parse_qs(urlsplit(requests[0].path).query)
    assert query["range"] == ["1d"]
    assert query["interval"] == ["1d"]


@pytest.mark.parametrize(
    ("text", "yahoo_symbol", "currency", "asset_class"),
    [
        ("AAPL:US", "AAPL", "USD", AssetClass.STOCKS),
        ("EURUSD:CUR", "EURUSD=X", "USD", AssetClass.FOREX),
        ("GC1:COM", "GC=F", "USD", AssetClass.COMMODITIES),
        ("SPX:IND", "^GSPC", "USD", AssetClass.INDICES),
        ("VOD:LN", "VOD.L", "GBp", AssetClass.STOCKS),
        ("XBTUSD:CUR", "BTC-USD", "USD", AssetClass.CRYPTO),
    ],
)
def test_quotes_for_each_asset_class(
    yahoo_fake: YahooFake,
    make_source: MakeSource,
    text: str,
    yahoo_symbol: str,
    currency: str,
    asset_class: AssetClass,
) -> None:
    symbol = parse_symbol(text)
    quote = make_source().fetch(symbol)
    expected = _expected(yahoo_fake, yahoo_symbol)

    assert yahoo_fake.count("chart", yahoo_symbol) == 1
    assert quote.symbol == symbol.canonical
    assert quote.source == "yfinance"
    assert quote.currency == currency == expected["currency"]
    assert quote.asset_class == symbol.asset_class == asset_class
    for field in ("price", "previous_close", "open", "high", "low", "as_of"):
        assert getattr(quote, field) == expected[field], field
    # Yahoo's volume 0 on a currency or an index means "none".
    assert quote.volume == (expected["volume"] or None)
    if asset_class is AssetClass.CRYPTO:
        assert quote.change is None  # the chart has no 24 h change, and none is derived
    else:
        assert quote.change == expected["price"] - expected["previous_close"]
    assert quote.as_of is not None and quote.as_of.tzinfo is not None


def test_warnings_from_inside_yfinance_do_not_escape(make_source: MakeSource) -> None:
    # pandas deprecations inside yfinance (e.g. sort_index(inplace=True)) are filtered by
    # module; "always" would show every one of them if the filter were missing.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_source().fetch(parse_symbol("AAPL:US"))
    assert [str(w.message) for w in caught] == []


def test_prices_are_the_decimal_of_the_float_and_change_is_derived(
    yahoo_fake: YahooFake, make_source: MakeSource
) -> None:
    yahoo_fake.set_quote("VOD.L", price=7234.5, previous_close=7100.1, currency="GBp")
    quote = make_source().fetch(parse_symbol("VOD:LN"))
    assert quote.price == Decimal("7234.5")
    assert quote.currency == "GBp"
    assert quote.previous_close == Decimal("7100.1")
    assert quote.change == Decimal("134.4")
    assert quote.change_pct == Decimal("1.8929")  # 134.4 / 7100.1 = 1.89293...%


@pytest.mark.parametrize("text", ["ZZZZ:US", "MSFT:US"])
def test_unknown_symbol_is_a_clean_unknown_symbol_error(
    yahoo_fake: YahooFake, make_source: MakeSource, text: str
) -> None:
    yahoo_fake.unknown("MSFT")
    with pytest.raises(UnknownSymbolError) as caught:
        make_source().fetch(parse_symbol(text))
    message = str(caught.value)
    assert "\n" not in message
    assert text.split(":")[0] in message
    assert "delisted" in message
    assert yahoo_fake.count("chart", text.split(":")[0]) >= 1


def test_a_chart_without_rows_is_an_unknown_symbol(
    yahoo_fake: YahooFake, make_source: MakeSource
) -> None:
    yahoo_fake.set_empty("AAPL")
    with pytest.raises(UnknownSymbolError):
        make_source().fetch(parse_symbol("AAPL:US"))


def test_429_is_rate_limited(yahoo_fake: YahooFake, make_source: MakeSource) -> None:
    yahoo_fake.faults.set("AAPL", status=429, retry_after_s=3)
    with pytest.raises(RateLimitedError) as caught:
        make_source().fetch(parse_symbol("AAPL:US"))
    assert "rate-limited" in str(caught.value)
    assert yahoo_fake.count("chart", "AAPL") >= 1


def test_a_hang_ends_at_the_deadline(yahoo_fake: YahooFake, make_source: MakeSource) -> None:
    # curl's own timeout is a minute and the fake holds the request until it stops, so only
    # our deadline can end this fetch: curl's timeout would say "timed out", not "deadline",
    # and would not count as a deadline timeout. No wall-clock bound: load cannot fake this.
    yahoo_fake.faults.set("AAPL", hang=True)
    source = make_source(deadline_s=0.5, timeout_s=60)
    started = time.monotonic()
    with pytest.raises(TransientSourceError) as caught:
        source.fetch(parse_symbol("AAPL:US"))
    # Not before the deadline (the machine can only make this longer, never shorter).
    assert time.monotonic() - started >= 0.5
    assert "within the 0.5 s deadline" in str(caught.value)
    assert source.statistics()["timeouts"] == 1


def test_garbage_body_is_an_api_error(yahoo_fake: YahooFake, make_source: MakeSource) -> None:
    yahoo_fake.faults.set("AAPL", garbage=True)
    with pytest.raises(APIError) as caught:
        make_source().fetch(parse_symbol("AAPL:US"))
    assert type(caught.value).__module__ == "crawler.utils.exceptions"
    assert "\n" not in str(caught.value)


def test_server_error_is_transient(yahoo_fake: YahooFake, make_source: MakeSource) -> None:
    yahoo_fake.faults.set("AAPL", error_rate=1.0)
    with pytest.raises(TransientSourceError) as caught:
        make_source().fetch(parse_symbol("AAPL:US"))
    assert "500" in str(caught.value)


def test_refused_connection_is_transient(yahoo_fake: YahooFake, make_source: MakeSource) -> None:
    source = make_source()
    yahoo_fake.set_outage("refuse")
    with pytest.raises(TransientSourceError):
        source.fetch(parse_symbol("AAPL:US"))


def test_unmappable_symbol_propagates_without_a_request(
    yahoo_fake: YahooFake, make_source: MakeSource
) -> None:
    with pytest.raises(UnmappableSymbolError):
        make_source().fetch(parse_symbol("ZZZ:IND"))
    assert yahoo_fake.log_requests() == []


def test_concurrent_fetches_each_get_their_own_quote(
    yahoo_fake: YahooFake, make_source: MakeSource
) -> None:
    source = make_source(max_workers=4)
    texts = ["AAPL:US", "MSFT:US", "VOD:LN", "EURUSD:CUR", "GC1:COM", "SPX:IND", "NVDA:US"]
    results: dict[str, Any] = {}

    def fetch(text: str) -> None:
        try:
            results[text] = source.fetch(parse_symbol(text))
        except Exception as exc:  # collected, asserted below
            results[text] = exc

    threads = [threading.Thread(target=fetch, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    for text in texts:
        quote = results[text]
        assert not isinstance(quote, Exception), quote
        yahoo_symbol = {"VOD:LN": "VOD.L", "EURUSD:CUR": "EURUSD=X", "GC1:COM": "GC=F"}.get(
            text, {"SPX:IND": "^GSPC"}.get(text, text.split(":")[0])
        )
        assert quote.symbol == text
        assert quote.price == _expected(yahoo_fake, yahoo_symbol)["price"]
    stats = source.statistics()
    assert stats["successes"] == len(texts)
    assert stats["fetches"] == len(texts)


def test_statistics_count_outcomes(yahoo_fake: YahooFake, make_source: MakeSource) -> None:
    source = make_source()
    source.fetch(parse_symbol("AAPL:US"))
    with pytest.raises(UnknownSymbolError):
        source.fetch(parse_symbol("ZZZZ:US"))
    stats = source.statistics()
    assert stats["fetches"] == 2
    assert stats["successes"] == 1
    assert stats["errors"] == {"UnknownSymbolError": 1}
    assert "ZZZZ" in stats["last_error"]


def test_closed_source_refuses(make_source: MakeSource) -> None:
    source = make_source()
    source.close()
    with pytest.raises(APIError):
        source.fetch(parse_symbol("AAPL:US"))


def test_a_non_http_endpoint_is_a_config_error(yf_cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match="YFINANCE_ENDPOINT"):
        YFinanceSource(endpoint="ftp://127.0.0.1:1", cache_dir=yf_cache_dir)


def test_the_redirect_refuses_non_yahoo_hosts(yahoo_fake: YahooFake) -> None:
    from curl_cffi.requests.exceptions import InvalidURL

    from crawler.sources.yahoo_redirect import RedirectingSession

    session = RedirectingSession(yahoo_fake.url, max_timeout_s=2)
    try:
        assert session.rewrite("https://query2.finance.yahoo.com/v8/finance/chart/A?x=1") == (
            f"http://query2.finance.yahoo.com:{yahoo_fake.port}/v8/finance/chart/A?x=1"
        )
        with pytest.raises(InvalidURL):
            session.get("https://example.com/")
    finally:
        session.close()
    assert yahoo_fake.log_requests() == []


def test_importing_the_source_loads_neither_yfinance_nor_pandas() -> None:
    code = (
        "import sys, crawler.sources.yfinance_source\n"
        "heavy = [m for m in ('yfinance', 'pandas', 'curl_cffi') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
