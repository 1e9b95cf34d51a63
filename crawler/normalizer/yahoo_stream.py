"""Yahoo's streamer frames: `PricingData` protobuf, decoded by yfinance's `pricing_pb2` (pure).

    pricing = decode_frame('{"type":"pricing","message":"CgdCVEMtVVNE..."}')   # or bare base64
    pricing.id, pricing.price, pricing.time_ms        # "BTC-USD", 94745.08, 1736509140000
    quote = pricing_to_quote(pricing, symbol, fetched_at=now)

The frame arrives either wrapped as JSON text `{"type": "pricing", "message": "<base64>"}` (the
current stream) or as bare base64 text (the older one). The message is Yahoo's `PricingData`
(yfinance's `pricing.proto`); the fields we read are in `_FIELD_NAMES`. Traps the real frames hold:

- `time` is **milliseconds** since the epoch, zig-zag encoded (`sint64`), unlike the REST
  quote's seconds;
- prices are float32: 94745.08 arrives as 94745.078125, so each one is turned back into the
  shortest decimal that encodes to the same float32;
- FX frames carry no currency: a six-letter pair's quote currency is its last three letters,
  anything else stays None (never guessed);
- unknown fields (real frames carry 46 and 47) are skipped, never an error.

A frame that is not base64, not protobuf, or has no id or price raises ParseError; a frame of
more than `MAX_FRAME_BYTES` is refused unread (a real one is ~150 bytes). A tick whose price or
time cannot be true (9.99995e-41 or 3e38, dated 2001 or 2036: the plausibility rules of
`crawler.normalizer.plausibility` for a live quote) raises ImplausibleQuoteError, and its absurd
secondary numbers (a 3e38 day high) read as missing.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.util
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from crawler.normalizer.plausibility import bounded, check_quote
from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol
from crawler.utils.exceptions import ParseError

__all__ = [
    "MAX_FRAME_BYTES",
    "STREAM_SOURCE",
    "PricingData",
    "decode_frame",
    "decode_pricing",
    "frame_payload",
    "pricing_id",
    "pricing_to_quote",
]

#: The `source` of quotes that came from the stream.
STREAM_SOURCE = "yahoo_stream"

# Yahoo's field name → ours, for the fields crawler reads (yfinance's pricing.proto names them).
_FIELD_NAMES: dict[str, str] = {
    "id": "id",
    "price": "price",
    "time": "time_ms",
    "currency": "currency",
    "exchange": "exchange",
    "quote_type": "quote_type",
    "market_hours": "market_hours",
    "change_percent": "change_percent",
    "day_volume": "day_volume",
    "day_high": "day_high",
    "day_low": "day_low",
    "change": "change",
    "short_name": "short_name",
    "open_price": "open_price",
    "previous_close": "previous_close",
    "price_hint": "price_hint",
}
#: The longest frame read (the websocket client refuses bigger messages before buffering them).
MAX_FRAME_BYTES = 64 * 1024
_MAX_FRAME_CHARS = MAX_FRAME_BYTES


@dataclass(frozen=True, slots=True)
class PricingData:
    """The fields of one `PricingData` message that crawler uses (None when absent)."""

    id: str
    price: Decimal | None = None
    time_ms: int | None = None
    currency: str | None = None
    exchange: str | None = None
    quote_type: int | None = None
    market_hours: int | None = None
    change_percent: Decimal | None = None
    day_volume: int | None = None
    day_high: Decimal | None = None
    day_low: Decimal | None = None
    change: Decimal | None = None
    short_name: str | None = None
    open_price: Decimal | None = None
    previous_close: Decimal | None = None
    price_hint: int | None = None

    @property
    def as_of(self) -> datetime | None:
        """The exchange's time of this price (UTC), from milliseconds."""
        if self.time_ms is None or self.time_ms <= 0:
            return None
        try:
            return datetime.fromtimestamp(self.time_ms / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None


def decode_frame(frame: str | bytes) -> PricingData:
    """One websocket text frame (JSON-wrapped or bare base64) → PricingData; ParseError."""
    return decode_pricing(frame_payload(frame))


def frame_payload(frame: str | bytes) -> bytes:
    """The protobuf bytes of one frame (JSON-wrapped or bare base64); ParseError."""
    text = frame.decode("ascii", "replace") if isinstance(frame, bytes) else frame
    text = text.strip()
    if len(text) > _MAX_FRAME_CHARS:
        raise ParseError(f"stream frame of {len(text)} characters is too long")
    if text.startswith("{"):
        try:
            wrapper = json.loads(text)
        except ValueError as exc:
            raise ParseError(f"stream frame is not JSON: {exc}") from None
        if not isinstance(wrapper, dict) or not isinstance(wrapper.get("message"), str):
            raise ParseError("stream frame has no base64 'message'")
        if wrapper.get("type", "pricing") != "pricing":
            raise ParseError(f"stream frame of type {str(wrapper.get('type'))[:40]!r}")
        text = wrapper["message"]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError("stream frame is not base64") from None


def pricing_id(payload: bytes) -> str:
    """Just the symbol id of a `PricingData` message, cheaply; ParseError.

    Yahoo writes field 1 (the id) first, so the usual case reads a few bytes; otherwise the
    whole message is decoded. A stream keeps only the newest tick per symbol and decodes that
    one in full when it flushes, so most ticks cost only this.
    """
    if len(payload) > 2 and payload[0] == 0x0A and payload[1] < 0x80:
        end = 2 + payload[1]
        if end <= len(payload):
            try:
                identity = payload[2:end].decode("utf-8")
            except UnicodeDecodeError:
                raise ParseError("stream frame's id is not UTF-8") from None
            if identity:
                return identity
    return decode_pricing(payload).id


def decode_pricing(payload: bytes) -> PricingData:
    """A `PricingData` protobuf message → PricingData; unknown fields skipped; ParseError.

    Decoded by yfinance's generated `pricing_pb2`. proto3 scalars have no presence, but a
    serializer never writes a field at its default, so `ListFields()` (the non-default ones)
    is what the frame carried: an absent field stays None, as it did with the hand decoder.
    """
    message = _pricing_message_class()()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise ParseError(f"stream frame is not a PricingData message: {exc}") from None
    values: dict[str, Any] = {}
    for field, value in message.ListFields():
        name = _FIELD_NAMES.get(field.name)
        if name is None:
            continue
        values[name] = _shortest_decimal(value) if field.type == field.TYPE_FLOAT else value
    identity = values.pop("id", None)
    if not identity:
        raise ParseError("stream frame has no symbol id")
    return PricingData(id=identity, **values)


@functools.cache
def _pricing_message_class() -> Any:
    # yfinance ships the generated module; loaded from its file so that decoding a frame does
    # not import yfinance itself (and pandas with it). Loading it twice registers the same
    # descriptor again, which protobuf accepts.
    package = importlib.util.find_spec("yfinance")
    locations = package.submodule_search_locations if package else None
    if not locations:
        raise ParseError("yfinance's pricing_pb2 is not installed: cannot decode stream frames")
    path = Path(next(iter(locations))) / "pricing_pb2.py"
    spec = importlib.util.spec_from_file_location("crawler._yfinance_pricing_pb2", path)
    if spec is None or spec.loader is None:
        raise ParseError(f"cannot load {path}: cannot decode stream frames")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PricingData


def _shortest_decimal(number: float) -> Decimal | None:
    """The shortest decimal that encodes to the same float32 (94745.078125 → 94745.08)."""
    if number != number or number in (float("inf"), float("-inf")):
        return None
    packed = struct.pack("<f", number)
    # From 6: a float32 holds 6 to 9 significant digits, and %.6g already drops trailing zeros,
    # so a shorter decimal (272, 1.05) comes out of the first try anyway.
    for digits in range(6, 10):
        text = f"{number:.{digits}g}"
        if struct.pack("<f", float(text)) == packed:
            return Decimal(text)
    return Decimal(repr(number))


def _fx_currency(yahoo_id: str) -> str | None:
    # "EURUSD=X" is priced in USD; "JPY=X" (USD/JPY) in JPY. Anything else: unknown.
    if not yahoo_id.endswith("=X"):
        return None
    pair = yahoo_id[:-2]
    if len(pair) == 6 and pair.isalpha():
        return pair[3:].upper()
    if len(pair) == 3 and pair.isalpha():
        return pair.upper()
    return None


def _present(value: Decimal | None) -> Decimal | None:
    # Yahoo sends 0 for "no data" (an index's open, a closed session's range).
    return bounded(value) if value else None


def pricing_to_quote(
    pricing: PricingData, symbol: Symbol, *, fetched_at: datetime, name: str | None = None
) -> Quote:
    """The Quote a streamed `pricing` gives for `symbol` (its canonical form); ParseError
    without a usable price, ImplausibleQuoteError for one that cannot be true."""
    if not pricing.price:  # absent, or Yahoo's 0 for "no data"
        raise ParseError(f"stream frame for {pricing.id} has no price")
    currency = pricing.currency or None
    if currency is None and symbol.asset_class is AssetClass.FOREX:
        currency = _fx_currency(pricing.id)
    previous = _present(pricing.previous_close)
    quote = Quote(
        symbol=symbol.canonical,
        price=pricing.price,
        source=STREAM_SOURCE,
        currency=currency,
        change=bounded(pricing.change),
        change_pct=bounded(pricing.change_percent),
        open=_present(pricing.open_price),
        high=_present(pricing.day_high),
        low=_present(pricing.day_low),
        previous_close=previous,
        volume=pricing.day_volume if pricing.day_volume and pricing.day_volume > 0 else None,
        as_of=pricing.as_of,
        fetched_at=fetched_at,
        asset_class=symbol.asset_class,
        name=pricing.short_name or name,
    )
    return check_quote(quote, now=fetched_at, live=True)
