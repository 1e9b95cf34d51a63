"""Issue 23 item 6: the plausibility rules every source's quotes pass (crawler.normalizer.
plausibility), on their own; the parsers and sources that apply them are tested beside them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from crawler.normalizer.plausibility import (
    CONFIRM_AFTER,
    MAX_REFERENCE_AGE,
    QuoteGate,
    bounded,
    check_quote,
    is_signed,
)
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.utils.exceptions import ImplausibleQuoteError, ParseError

NOW = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)


def quote(
    price: str,
    symbol: str = "AAPL:US",
    asset_class: AssetClass = AssetClass.STOCKS,
    as_of: datetime | None = NOW,
    at: datetime = NOW,
) -> Quote:
    return Quote(
        symbol=symbol, price=Decimal(price), source="test", as_of=as_of, fetched_at=at,
        asset_class=asset_class,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("price", "symbol", "asset_class", "reason"),
    [
        ("0", "AAPL:US", AssetClass.STOCKS, "above zero"),
        ("-12.5", "AAPL:US", AssetClass.STOCKS, "above zero"),
        ("-5.25", "EURUSD:CUR", AssetClass.FOREX, "above zero"),
        ("-1", "XBTUSD:CUR", AssetClass.CRYPTO, "above zero"),
        ("1E+30", "AAPL:US", AssetClass.STOCKS, "above 1"),
        ("3E+38", "EURUSD:CUR", AssetClass.FOREX, "above"),
        ("1E+300", "GC1:COM", AssetClass.COMMODITIES, "above"),
        ("9.99995E-41", "AAPL:US", AssetClass.STOCKS, "below"),
        ("1E-13", "XBTUSD:CUR", AssetClass.CRYPTO, "below"),
        ("NaN", "AAPL:US", AssetClass.STOCKS, "not a finite"),
        ("Infinity", "SPX:IND", AssetClass.INDICES, "not a finite"),
        ("-3", "SPX:IND", AssetClass.INDICES, "above zero"),
    ],
)
def test_prices_that_cannot_be_true_are_refused_with_a_reason(
    price: str, symbol: str, asset_class: AssetClass, reason: str
) -> None:
    with pytest.raises(ImplausibleQuoteError, match=reason) as caught:
        check_quote(quote(price, symbol, asset_class), now=NOW)
    assert isinstance(caught.value, ParseError)  # an error for that symbol, like a bad page
    assert caught.value.message.startswith(f"{symbol}: price ")
    assert "\n" not in caught.value.message and len(caught.value.message) < 200


@pytest.mark.parametrize(
    ("price", "symbol", "asset_class"),
    [
        ("262.36", "AAPL:US", AssetClass.STOCKS),
        ("712345.67", "BRK/A:US", AssetClass.STOCKS),
        ("0.0001", "PENNY:US", AssetClass.STOCKS),
        ("1.0489877", "EURUSD:CUR", AssetClass.FOREX),
        ("1500000000", "XBTIDR:CUR", AssetClass.CRYPTO),
        ("0.0000000015", "BABYDOGE:CUR", AssetClass.CRYPTO),
        ("-37.63", "CL1:COM", AssetClass.COMMODITIES),  # WTI, 2020-04-20
        ("0", "GJGB10:GOV", AssetClass.BONDS),
        ("-0.52", "GTDEM10Y:GOV", AssetClass.BONDS),
        ("-0.25", "GDBR10:IND", AssetClass.INDICES),  # a yield index
        ("5904.10", "SPX:IND", AssetClass.INDICES),
    ],
)
def test_real_prices_pass(price: str, symbol: str, asset_class: AssetClass) -> None:
    assert check_quote(quote(price, symbol, asset_class), now=NOW).price == Decimal(price)


def test_only_yields_futures_and_spreads_may_go_negative() -> None:
    assert is_signed("CL1:COM", AssetClass.COMMODITIES)
    assert is_signed("GT10:GOV", AssetClass.BONDS)
    assert is_signed("USGG10YR:IND", AssetClass.INDICES)
    assert not is_signed("SPX:IND", AssetClass.INDICES)
    assert not is_signed("AAPL:US", AssetClass.STOCKS)
    assert not is_signed("EURUSD:CUR", AssetClass.FOREX)
    assert not is_signed("XBTUSD:CUR", AssetClass.CRYPTO)


@pytest.mark.parametrize(
    ("as_of", "live", "reason"),
    [
        (datetime(9999, 12, 31, tzinfo=UTC), False, "later than now"),
        (datetime(3270, 1, 1, tzinfo=UTC), False, "later than now"),
        (datetime(2036, 6, 1, tzinfo=UTC), True, "later than now"),
        (NOW + timedelta(minutes=11), False, "later than now"),
        (datetime(1989, 12, 31, tzinfo=UTC), False, "before 1990-01-01"),
        (datetime(2001, 9, 10, tzinfo=UTC), True, "more than 7 days old"),
    ],
)
def test_times_that_cannot_be_true_are_refused(as_of: datetime, live: bool, reason: str) -> None:
    with pytest.raises(ImplausibleQuoteError, match=reason):
        check_quote(quote("262.36", as_of=as_of), now=NOW, live=live)


def test_a_little_skew_and_an_old_polled_quote_pass() -> None:
    check_quote(quote("262.36", as_of=NOW + timedelta(minutes=9)), now=NOW)
    # A suspended share's last price is still its price when polled (shown source_stale).
    check_quote(quote("202", "WSKT:IJ", as_of=datetime(2024, 7, 23, 20, tzinfo=UTC)), now=NOW)
    check_quote(quote("262.36", as_of=None), now=NOW)


def test_secondary_numbers_out_of_range_read_as_missing() -> None:
    assert bounded(Decimal("1E+300")) is None
    assert bounded(Decimal("NaN")) is None
    assert bounded(Decimal("-4.9")) == Decimal("-4.9")
    assert bounded(None) is None


# -- the band around the last good quote -----------------------------------------------------


def test_a_real_crash_of_90_and_even_99_9_percent_passes() -> None:
    gate = QuoteGate()
    last = quote("100")
    assert gate.check(quote("10"), now=NOW, reference=last).price == Decimal("10")
    assert gate.check(quote("0.1"), now=NOW, reference=last).price == Decimal("0.1")
    assert gate.check(quote("99000"), now=NOW, reference=last).price == Decimal("99000")


def test_a_misplaced_decimal_point_by_four_places_is_refused() -> None:
    gate = QuoteGate()
    with pytest.raises(ImplausibleQuoteError, match=r"last good quote 123\.45") as caught:
        gate.check(quote("0.01"), now=NOW, reference=quote("123.45"))
    assert "×1000" in caught.value.message
    with pytest.raises(ImplausibleQuoteError):
        gate.check(quote("1500000000000", as_of=None), now=NOW, reference=quote("123.45"))
    assert gate.refusals == 2


def test_signed_instruments_have_only_the_upper_side_of_the_band() -> None:
    gate = QuoteGate()
    crude = quote("18.27", "CL1:COM", AssetClass.COMMODITIES)
    assert gate.check(
        quote("-37.63", "CL1:COM", AssetClass.COMMODITIES), now=NOW, reference=crude
    ).price == Decimal("-37.63")
    with pytest.raises(ImplausibleQuoteError):
        gate.check(quote("-37630", "CL1:COM", AssetClass.COMMODITIES), now=NOW, reference=crude)


def test_a_new_level_that_persists_a_minute_is_taken_a_glitch_is_not() -> None:
    # A 1-for-1000 reverse split: 0.05 becomes 50.
    gate = QuoteGate()
    last = quote("0.05")
    with pytest.raises(ImplausibleQuoteError, match="new level"):
        gate.check(quote("50.10", at=NOW), now=NOW, reference=last)
    # The chart asked right after the batch is the same observation, not a confirmation.
    soon = NOW + timedelta(seconds=1)
    with pytest.raises(ImplausibleQuoteError):
        gate.check(quote("50.20", at=soon), now=soon, reference=last)
    later = NOW + CONFIRM_AFTER
    assert gate.check(quote("50.30", at=later), now=later, reference=last).price == Decimal("50.30")
    # A glitch that does not come back leaves nothing behind.
    with pytest.raises(ImplausibleQuoteError):
        gate.check(quote("0.00001", at=later), now=later, reference=quote("50.30"))
    back = later + CONFIRM_AFTER
    assert gate.check(quote("50.40", at=back), now=back, reference=quote("50.30"))


def test_an_old_or_bad_reference_does_not_lock_a_symbol_out() -> None:
    gate = QuoteGate()
    ancient = quote("0.01", as_of=NOW - MAX_REFERENCE_AGE - timedelta(days=1))
    assert gate.check(quote("123.45"), now=NOW, reference=ancient)
    stored_garbage = quote("-5")  # kept before these rules existed
    assert gate.check(quote("123.45"), now=NOW, reference=stored_garbage)
    assert gate.check(quote("123.45"), now=NOW, reference=quote("0.01", "MSFT:US"))


def test_the_gate_remembers_the_last_quote_it_let_through() -> None:
    gate = QuoteGate()
    assert gate.last_good("AAPL:US") is None
    gate.check(quote("262.36"), now=NOW, reference=None)
    with pytest.raises(ImplausibleQuoteError):
        gate.check(quote("0.01"), now=NOW, reference=gate.last_good("AAPL:US"))
    kept = gate.last_good("AAPL:US")
    assert kept is not None and kept.price == Decimal("262.36")  # a refusal is not remembered
