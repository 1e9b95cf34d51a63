"""The Yahoo parsers on real bodies: batch quotes and charts, with every trap the fixtures hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import parse_symbol
from crawler.normalizer.yahoo import (
    is_invalid_crumb,
    parse_chart,
    parse_quote_batch,
    yahoo_decimal,
)
from crawler.utils.exceptions import ImplausibleQuoteError, ParseError, UnknownSymbolError

YAHOO = Path(__file__).parents[1].parent / "shared" / "fixtures" / "yahoo"
FETCHED_AT = datetime(2025, 2, 17, 11, 0, tzinfo=UTC)


def body(name: str) -> bytes:
    path = YAHOO / name
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent (../shared/fixtures is not checked out)")
    return path.read_bytes()


def quote_of(name: str, yahoo: str, ours: str) -> Quote:
    symbol = parse_symbol(ours)
    batch = parse_quote_batch(body(f"quote/{name}"), {yahoo: symbol}, fetched_at=FETCHED_AT)
    assert batch.omitted == [] and batch.partial == {}, (batch.omitted, batch.partial)
    return batch.quotes[yahoo]


# -- batch quotes -----------------------------------------------------------------------------


def test_batch_aapl_exact_numbers() -> None:
    quote = quote_of("quote-AAPL.json", "AAPL", "AAPL:US")
    assert quote.symbol == "AAPL:US" and quote.source == "yfinance"
    assert str(quote.price) == "244.60"
    assert quote.currency == "USD"
    assert str(quote.change) == "3.07"
    assert str(quote.change_pct) == "1.2711"
    assert str(quote.previous_close) == "241.53"
    assert str(quote.open) == "241.07"
    assert (str(quote.low), str(quote.high)) == ("241.00", "245.41")
    assert quote.volume == 40896227
    assert quote.as_of == datetime(2025, 2, 14, 21, 0, tzinfo=UTC)
    assert quote.name == "Apple Inc."


def test_batch_crypto_change_is_yahoos_24h_figure_not_price_minus_previous_close() -> None:
    quote = quote_of("quote-BTC-USD.json", "BTC-USD", "XBTUSD:CUR")
    assert str(quote.price) == "96077.45"
    assert str(quote.previous_close) == "96137.88"
    assert str(quote.change) == "-1225.89"  # not -60.43
    assert str(quote.change_pct) == "-1.2599"
    assert quote.as_of == datetime(2025, 2, 17, 10, 53, tzinfo=UTC)


def test_batch_stale_crypto_keeps_yahoos_zero_change_and_its_price_hint() -> None:
    quote = quote_of("quote-ZRC-USD.json", "ZRC-USD", "ZRCUSD:CUR")
    assert str(quote.price) == "0.076523"  # priceHint 6
    assert str(quote.previous_close) == "0.024664"
    assert quote.change == 0  # Yahoo's own figure, not price - previous close
    assert quote.volume is None  # no volume key at all


def test_batch_fx_has_no_volume_and_four_decimals() -> None:
    quote = quote_of("quote-EURUSD=X.json", "EURUSD=X", "EURUSD:CUR")
    assert str(quote.price) == "1.0490"  # priceHint 4
    assert quote.currency == "USD"
    assert str(quote.change) == "-0.0006"
    assert str(quote.change_pct) == "-0.0525"
    assert quote.volume is None  # 0 on a currency means none, not nothing traded


def test_batch_index_zero_open_high_low_are_missing_not_zero() -> None:
    quote = quote_of("quote-^VXAPL.json", "^VXAPL", "VXAPL:IND")
    assert str(quote.price) == "23.77"
    assert quote.open is None and quote.high is None and quote.low is None
    assert quote.volume is None
    assert str(quote.change) == "-0.51"
    assert str(quote.previous_close) == "24.28"


def test_batch_price_is_in_currency_not_financial_currency() -> None:
    quote = quote_of("quote-SPOT.json", "SPOT", "SPOT:US")
    assert quote.currency == "USD"
    assert str(quote.price) == "638.18"
    assert str(quote.change) == "-10.14"


@pytest.mark.parametrize(
    ("name", "yahoo", "ours", "price", "change"),
    [
        ("quote-GC=F.json", "GC=F", "GC1:COM", "2910.30", "9.60"),
        ("quote-QQQ.json", "QQQ", "QQQ:US", "538.15", "2.25"),
        ("quote-WSKT.JK.json", "WSKT.JK", "WSKT:IJ", "202.00", "0.00"),
    ],
)
def test_batch_other_instruments(name: str, yahoo: str, ours: str, price: str, change: str) -> None:
    quote = quote_of(name, yahoo, ours)
    assert (str(quote.price), str(quote.change)) == (price, change)


def test_batch_suspended_quote_keeps_its_own_months_old_time() -> None:
    quote = quote_of("quote-WSKT.JK.json", "WSKT.JK", "WSKT:IJ")
    assert quote.as_of == datetime(2024, 7, 23, 20, 0, tzinfo=UTC)
    assert quote.currency == "IDR"


def test_batch_asked_with_fewer_fields_is_partial_never_guessed() -> None:
    symbol = parse_symbol("MSFT:US")
    batch = parse_quote_batch(body("quote/quote-MSFT-fields-beta.json"), {"MSFT": symbol})
    assert batch.quotes == {}
    assert batch.partial == {"MSFT": "answered without currency"}
    assert batch.omitted == []


def test_batch_unknown_symbols_are_silently_omitted() -> None:
    asked = {"AAPL": parse_symbol("AAPL:US"), "NONEXIST": parse_symbol("NONEXIST:US")}
    batch = parse_quote_batch(body("quote/y2022_quoteCombine-AAPL-NONEXIST.json"), asked)
    assert list(batch.quotes) == ["AAPL"]
    assert str(batch.quotes["AAPL"].price) == "160.07"
    assert str(batch.quotes["AAPL"].change) == "-4.25"
    assert batch.omitted == ["NONEXIST"]


def test_batch_empty_result_omits_everything() -> None:
    asked = {"NONEXIST": parse_symbol("NONEXIST:US")}
    batch = parse_quote_batch(body("quote/y2022_quoteCombine-NONEXIST.json"), asked)
    assert batch.quotes == {} and batch.omitted == ["NONEXIST"]


def test_invalid_crumb_answer_is_recognised_and_is_not_a_quote_response() -> None:
    raw = body("quote/stockbot_v7_error_401_invalid_crumb.json")
    assert is_invalid_crumb(401, raw)
    assert not is_invalid_crumb(200, raw)
    with pytest.raises(ParseError, match="Invalid Crumb"):
        parse_quote_batch(raw, {"AAPL": parse_symbol("AAPL:US")})


def test_batch_record_for_a_symbol_not_asked_is_ignored() -> None:
    raw = b'{"quoteResponse":{"result":[{"symbol":"MSFT","regularMarketPrice":1.5,'
    raw += b'"currency":"USD","priceHint":2}],"error":null}}'
    batch = parse_quote_batch(raw, {"AAPL": parse_symbol("AAPL:US")})
    assert batch.quotes == {} and batch.omitted == ["AAPL"]


@pytest.mark.parametrize("raw", [b"", b"<html>", b"[]", b'{"quoteResponse":{"result":null}}'])
def test_batch_garbage_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_quote_batch(raw, {"AAPL": parse_symbol("AAPL:US")})


# -- charts -------------------------------------------------------------------------------------


def test_chart_multi_day_window_never_uses_chart_previous_close() -> None:
    raw = body("chart/chart-OCDO.L-2020-01-01-to-2020-01-03.json")
    # Fetched after the capture's own time (2025-02-20): a quote is never from the future.
    fetched_at = datetime(2025, 2, 20, 12, 0, tzinfo=UTC)
    quote = parse_chart(raw, parse_symbol("OCDO:LN"), fetched_at=fetched_at)
    assert str(quote.price) == "305.30"
    assert quote.currency == "GBp"  # pence stay pence
    assert quote.previous_close is None  # 1279 is the close before 2020-01-01
    assert quote.change is None and quote.change_pct is None  # no invented -76 %
    assert (str(quote.low), str(quote.high)) == ("299.10", "306.51")
    assert quote.volume == 145121


def test_chart_bars_are_rounded_to_price_hint() -> None:
    raw = body("chart/scheb_chart_AAPL_history_2024-10.json")
    quote = parse_chart(raw, parse_symbol("AAPL:US"))
    assert str(quote.price) == "227.55"
    assert str(quote.open) == "229.30"  # the bar's 229.3000030517578
    assert quote.previous_close is None  # chartPreviousClose 227.79 is from before 2024-09-30


def test_chart_delisted_without_price_is_unknown() -> None:
    raw = body("chart/scheb_chart_CAPIO.ST_delisted_noData.json")
    with pytest.raises(UnknownSymbolError, match="no price"):
        parse_chart(raw, parse_symbol("CAPIO:SS"))


@pytest.mark.parametrize(
    ("name", "ours", "price", "currency"),
    [
        ("chart/chart-BTC-USD-2020-01-01-to-2020-01-03.json", "XBTUSD:CUR", "97208.17", "USD"),
        ("chart/chart-EURUSD=X-2020-01-01-to-2020-01-03.json", "EURUSD:CUR", "1.0436", "USD"),
    ],
)
def test_chart_other_instruments(name: str, ours: str, price: str, currency: str) -> None:
    quote = parse_chart(body(name), parse_symbol(ours))
    assert (str(quote.price), quote.currency) == (price, currency)
    assert quote.change is None


def test_chart_one_day_window_derives_change_from_previous_close() -> None:
    meta = {
        "currency": "USD",
        "regularMarketPrice": 101.5,
        "chartPreviousClose": 100,
        "range": "1d",
        "priceHint": 2,
        "instrumentType": "EQUITY",
        "regularMarketTime": 1739566800,
    }
    quote = parse_chart({"chart": {"result": [{"meta": meta}], "error": None}}, parse_symbol("X"))
    assert (str(quote.change), str(quote.change_pct)) == ("1.50", "1.5000")
    crypto = {**meta, "instrumentType": "CRYPTOCURRENCY", "previousClose": 100}
    quote = parse_chart({"chart": {"result": [{"meta": crypto}]}}, parse_symbol("XBTUSD:CUR"))
    assert quote.change is None  # a crypto day change is Yahoo's rolling 24 h, not ours


def test_chart_not_found_is_unknown() -> None:
    raw = b'{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found"}}}'
    with pytest.raises(UnknownSymbolError):
        parse_chart(raw, parse_symbol("ZZZZ"))


def test_yahoo_decimal_rules() -> None:
    assert yahoo_decimal(128.96499633789062, 2) == Decimal("128.96")
    assert yahoo_decimal(0.0, 2) is None
    assert yahoo_decimal(float("nan"), 2) is None
    assert yahoo_decimal(True, 2) is None
    assert yahoo_decimal(244.6) == Decimal("244.6")


# -- issue 23 items 6 and 7: hostile numbers cost only their own symbol ---------------------


def _batch_of_three(field: str, value: object) -> tuple[bytes, dict[str, object]]:
    """Real AAPL, QQQ and SPOT records in one answer, SPOT's `field` set to `value` (None:
    the key removed)."""
    records = []
    for name in ("quote-AAPL.json", "quote-QQQ.json", "quote-SPOT.json"):
        records.extend(json.loads(body(f"quote/{name}"))["quoteResponse"]["result"])
    spot = records[2]
    if value is None:
        spot.pop(field, None)
    else:
        spot[field] = value
    text = json.dumps({"quoteResponse": {"result": records, "error": None}})
    return text.encode(), spot


ASKED = {
    "AAPL": parse_symbol("AAPL:US"),
    "QQQ": parse_symbol("QQQ:US"),
    "SPOT": parse_symbol("SPOT:US"),
}
YEAR_3270_S = int(datetime(3270, 1, 1, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"regularMarketPrice": -5.25}, "a stock price must be above zero"),
        ({"regularMarketPrice": 1e300, "priceHint": None}, "no instrument trades there"),
        ({"regularMarketPrice": 1e300}, "no instrument trades there"),
        ({"regularMarketPrice": 10**400}, "no instrument trades there"),
        ({"regularMarketPrice": 1e-300}, "below"),
        ({"regularMarketTime": YEAR_3270_S}, "3270-01-01 00:00:00 UTC refused"),
    ],
)
def test_a_refused_record_is_that_symbols_error_and_the_rest_of_the_batch_is_served(
    changes: dict[str, object], reason: str
) -> None:
    records = []
    for name in ("quote-AAPL.json", "quote-QQQ.json", "quote-SPOT.json"):
        records.extend(json.loads(body(f"quote/{name}"))["quoteResponse"]["result"])
    for key, value in changes.items():
        if value is None:
            records[2].pop(key)
        else:
            records[2][key] = value
    raw = json.dumps({"quoteResponse": {"result": records, "error": None}}).encode()

    batch = parse_quote_batch(raw, ASKED, fetched_at=FETCHED_AT)

    assert str(batch.quotes["AAPL"].price) == "244.60"
    assert str(batch.quotes["QQQ"].price) == "538.15"
    assert "SPOT" not in batch.quotes
    assert reason in batch.partial["SPOT"]  # asked of the chart next, with this reason
    assert "internal error" not in batch.partial["SPOT"]


@pytest.mark.parametrize(
    ("field", "value", "attribute"),
    [
        ("regularMarketChange", 10**400, "change"),
        ("regularMarketChange", 1e300, "change"),
        ("regularMarketChangePercent", 10**400, "change_pct"),
        ("regularMarketPreviousClose", 1e-300, "previous_close"),
        ("regularMarketDayHigh", 10**400, "high"),
        ("regularMarketVolume", 10**400, "volume"),
    ],
)
def test_an_absurd_secondary_number_reads_as_missing_and_keeps_the_quote(
    field: str, value: object, attribute: str
) -> None:
    raw, _ = _batch_of_three(field, value)
    batch = parse_quote_batch(raw, ASKED, fetched_at=FETCHED_AT)
    assert set(batch.quotes) == {"AAPL", "QQQ", "SPOT"}
    assert str(batch.quotes["SPOT"].price) == "638.18"
    assert getattr(batch.quotes["SPOT"], attribute) is None
    assert str(batch.quotes["AAPL"].change) == "3.07"


def _chart_with(**meta: object) -> bytes:
    document = json.loads(body("chart/scheb_chart_AAPL_history_2024-10.json"))
    document["chart"]["result"][0]["meta"].update(meta)
    return json.dumps(document).encode()


def test_chart_previous_close_1e_minus_300_is_no_previous_close_not_a_division_by_zero() -> None:
    quote = parse_chart(_chart_with(previousClose=1e-300), parse_symbol("AAPL:US"))
    assert str(quote.price) == "227.55"
    assert quote.previous_close is None and quote.change is None and quote.change_pct is None


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"regularMarketPrice": 1e300}, "no instrument trades there"),
        ({"regularMarketPrice": 10**400}, "no instrument trades there"),
        ({"regularMarketPrice": -5.25}, "above zero"),
        ({"regularMarketTime": YEAR_3270_S}, "later than now"),
    ],
)
def test_chart_with_an_impossible_quote_is_refused(meta: dict[str, object], reason: str) -> None:
    with pytest.raises(ImplausibleQuoteError, match=reason):
        parse_chart(_chart_with(**meta), parse_symbol("AAPL:US"))


def test_chart_nested_100000_deep_is_a_clean_parse_error() -> None:
    deep = b'{"chart":{"result":[{"meta":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}}"
    with pytest.raises(ParseError, match="nested too deep"):
        parse_chart(deep, parse_symbol("AAPL:US"))
    with pytest.raises(ParseError, match="nested too deep"):
        parse_quote_batch(b"[" * 100_000, ASKED)
