"""Yahoo's streamer frames: the real capture, both framings, FX, unknown fields, garbage."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import parse_symbol
from crawler.normalizer.yahoo_stream import (
    STREAM_SOURCE,
    decode_frame,
    decode_pricing,
    frame_payload,
    pricing_id,
    pricing_to_quote,
)
from crawler.utils.exceptions import ParseError
from fakemarket.stream import encode_pricing

CAPTURE = (
    Path(__file__).resolve().parents[2]
    / "shared/fixtures/yahoo/stream/yfinance_ws_BTC-USD_2025-01-10.b64"
)
NOW = datetime(2025, 1, 10, 11, 39, 5, tzinfo=UTC)


@pytest.fixture
def capture() -> str:
    if not CAPTURE.exists():
        pytest.skip(f"the real streamer capture is not here: {CAPTURE} (../shared/fixtures)")
    return CAPTURE.read_text().strip()


def test_the_real_capture_decodes_to_yfinances_values(capture: str) -> None:
    pricing = decode_frame(capture)
    assert pricing.id == "BTC-USD"
    assert pricing.price == Decimal("94745.08")  # float32 94745.078125, shortest decimal
    assert pricing.time_ms == 1736509140000  # milliseconds, zig-zag
    assert pricing.as_of == datetime(2025, 1, 10, 11, 39, tzinfo=UTC)
    assert (pricing.currency, pricing.exchange) == ("USD", "CCC")
    assert pricing.change == Decimal("1431.8906")
    assert pricing.change_percent == Decimal("1.5344921")
    assert (pricing.day_high, pricing.day_low) == (Decimal("95227.555"), Decimal("92517.22"))
    assert pricing.open_price == Decimal("92529.99")
    assert pricing.day_volume == 59712028672
    assert pricing.price_hint == 2


def test_json_wrapped_and_bare_frames_decode_alike(capture: str) -> None:
    wrapped = json.dumps({"type": "pricing", "message": capture})
    assert decode_frame(wrapped) == decode_frame(capture)
    assert decode_frame(wrapped.encode()) == decode_frame(capture)


def test_the_capture_becomes_a_quote(capture: str) -> None:
    symbol = parse_symbol("XBTUSD:CUR", AssetClass.CRYPTO)
    quote = pricing_to_quote(decode_frame(capture), symbol, fetched_at=NOW)
    assert quote.symbol == symbol.canonical
    assert quote.source == STREAM_SOURCE
    assert (quote.price, quote.currency) == (Decimal("94745.08"), "USD")
    assert quote.as_of == datetime(2025, 1, 10, 11, 39, tzinfo=UTC)
    assert quote.fetched_at == NOW
    assert quote.previous_close is None  # absent in the frame: never invented


def test_fx_frames_carry_no_currency_the_pair_names_it() -> None:
    frame = encode_pricing("EURUSD=X", 1.0489877, 1736509140000, currency=None, price_hint=4)
    pricing = decode_pricing(frame)
    assert pricing.currency is None
    quote = pricing_to_quote(pricing, parse_symbol("EURUSD:CUR"), fetched_at=NOW)
    assert quote.currency == "USD"
    assert quote.price == Decimal("1.0489877")
    # Not a pair: left unknown rather than guessed.
    dxy = decode_pricing(encode_pricing("DX-Y.NYB", 104.2, 1736509140000, currency=None))
    assert pricing_to_quote(dxy, parse_symbol("DXY:CUR"), fetched_at=NOW).currency is None


def key(number: int, wire: int) -> bytes:
    """A protobuf field key (a varint of number << 3 | wire)."""
    value, out = number << 3 | wire, bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes([value])


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    base = encode_pricing("AAPL", 244.6, 1739566800000)
    extra = (
        key(46, 0) + b"\x96\x01"  # varint
        + key(47, 2) + b"\x03abc"  # length-delimited
        + key(48, 1) + struct.pack("<d", 1.5)  # fixed64
        + key(49, 5) + struct.pack("<f", 2.5)  # fixed32
        + key(2, 0) + b"\x07"  # a known field in an unexpected wire type
    )  # fmt: skip
    pricing = decode_pricing(base + extra)
    assert (pricing.id, pricing.price) == ("AAPL", Decimal("244.6"))


def test_zero_means_missing_not_zero() -> None:
    frame = encode_pricing("^VIX", 23.77, 1736509140000, day_high=0.0, open_price=0.0)
    quote = pricing_to_quote(decode_pricing(frame), parse_symbol("VIX:IND"), fetched_at=NOW)
    assert quote.open is None and quote.high is None and quote.volume is None


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ("%%%not base64%%%", "not base64"),
        ('{"type":"pricing"}', "no base64 'message'"),
        ('{"type":"heartbeat","message":"AA=="}', "of type 'heartbeat'"),
        ("{not json", "not JSON"),
        (base64.b64encode(b"\x12\x02hi").decode(), "no symbol id"),
        # protobuf's parser says only that the bytes are corrupt, not where:
        (base64.b64encode(b"\x0a\x10AAPL").decode(), "not a PricingData message"),  # truncated
        (base64.b64encode(b"\x0b").decode(), "not a PricingData message"),  # wire type 3
        (base64.b64encode(b"\x08" + b"\xff" * 11).decode(), "not a PricingData message"),
    ],
)
def test_bad_frames_are_parse_errors(frame: str, problem: str) -> None:
    with pytest.raises(ParseError, match=problem):
        decode_frame(frame)


def test_a_frame_without_a_price_gives_no_quote() -> None:
    frame = encode_pricing("AAPL", 0.0, 1739566800000)
    with pytest.raises(ParseError, match="no price"):
        pricing_to_quote(decode_pricing(frame), parse_symbol("AAPL:US"), fetched_at=NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_parse_error_only(payload: bytes) -> None:
    try:
        pricing = decode_pricing(payload)
    except ParseError:
        return
    assert pricing.id


def test_the_id_alone_is_read_cheaply_and_agrees_with_the_full_decode(capture: str) -> None:
    payload = frame_payload(capture)
    assert pricing_id(payload) == decode_frame(capture).id == "BTC-USD"
    # Field 1 not first: the whole message is decoded to find it.
    reordered = key(27, 0) + b"\x04" + key(1, 2) + b"\x04AAPL"
    assert pricing_id(reordered) == "AAPL"
    with pytest.raises(ParseError):
        pricing_id(b"\x00\x01\x02")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_an_id_or_a_parse_error_only(payload: bytes) -> None:
    with contextlib.suppress(ParseError):
        assert pricing_id(payload)
