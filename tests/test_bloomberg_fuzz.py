"""Fuzzing the Bloomberg parser: whatever the bytes, the answer is a Quote or a ParseError."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawler.normalizer.bloomberg import parse_bloomberg_number, parse_bloomberg_page
from crawler.normalizer.schemas import Quote
from crawler.normalizer.symbols import parse_symbol
from crawler.utils.exceptions import ParseError
from fakemarket.bloomberg_pages import bot_wall_page, generated_quote, quote_page, with_values

SYMBOL = parse_symbol("AAPL:US")
VALID_PAGE = quote_page(generated_quote("AAPL:US"))
SCRIPT_AT = VALID_PAGE.find(b'id="__NEXT_DATA__"')
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_parse_error(page: bytes) -> Quote | ParseError:
    """The property itself: any other exception escapes and fails the test."""
    try:
        quote = parse_bloomberg_page(page, SYMBOL)
    except ParseError as exc:
        assert exc.message and "\n" not in exc.message
        return exc
    assert isinstance(quote.price, Decimal)
    assert quote.as_of is None or quote.as_of.utcoffset() is not None
    assert quote.volume is None or isinstance(quote.volume, int)
    return quote


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(page: bytes) -> None:
    _parse_or_parse_error(page)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_after_a_script_tag(tail: bytes) -> None:
    _parse_or_parse_error(b'<html><script id="__NEXT_DATA__" type="application/json">' + tail)


@st.composite
def mutated_pages(draw: st.DrawFn) -> bytes:
    """The valid page with a few byte-level edits, mostly inside the JSON payload."""
    page = bytearray(draw(st.sampled_from([VALID_PAGE, bot_wall_page()])))
    for _ in range(draw(st.integers(1, 4))):
        low = SCRIPT_AT if draw(st.booleans()) and SCRIPT_AT > 0 else 0
        at = draw(st.integers(min(low, len(page)), len(page)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if action == "insert":
            page[at:at] = chunk
        elif action == "delete":
            del page[at : at + len(chunk)]
        elif action == "replace":
            page[at : at + len(chunk)] = chunk
        else:
            del page[at:]
    return bytes(page)


@FUZZ
@given(mutated_pages())
def test_mutated_valid_pages(page: bytes) -> None:
    _parse_or_parse_error(page)


_JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet="0123456789,.-+%KMBTkmbt NA/–−\u00a0eE", max_size=20)
    | st.text(max_size=20)
)
_JSON_VALUES = st.recursive(
    _JSON_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner)
)
_FIELDS = (
    "price",
    "openPrice",
    "prevClose",
    "volume",
    "priceChange1Day",
    "percentChange1Day",
    "highPrice",
    "lowPrice",
    "dayRange",
    "lastUpdate",
    "issuedCurrency",
    "longName",
    "name",
    "id",
    "previousClosingPriceOneTradingDayAgo",
)


@settings(FUZZ, max_examples=150)
@given(st.dictionaries(st.sampled_from(_FIELDS), _JSON_VALUES, max_size=8))
def test_mutated_quote_fields(fields: dict[str, object]) -> None:
    page = quote_page(with_values(generated_quote("AAPL:US"), extra=fields))
    result = _parse_or_parse_error(page)
    if isinstance(result, Quote) and "price" in fields:
        # Worked out here, not by the parser's own number function: a JSON number is taken
        # exactly as written, and so is a string holding a plain decimal number.
        given = _reloaded(fields["price"])
        if isinstance(given, Decimal):
            assert result.price == given
        elif isinstance(given, str) and _PLAIN_NUMBER.fullmatch(given.strip()):
            assert result.price == Decimal(given.strip())


@FUZZ
@given(st.text(max_size=40) | st.integers() | st.none() | st.decimals(allow_nan=True))
def test_number_parser_never_raises_anything_else(raw: object) -> None:
    try:
        parsed = parse_bloomberg_number(raw)
    except ParseError:
        return
    assert parsed is None or (isinstance(parsed, Decimal) and parsed.is_finite())


_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _reloaded(value: object) -> object:
    """The value as the parser sees it after a JSON round trip with Decimal numbers."""
    return json.loads(json.dumps(value), parse_float=Decimal, parse_int=Decimal)
