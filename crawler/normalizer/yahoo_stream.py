"""Yahoo's streamer frames: `PricingData` protobuf, decoded by hand (pure, no protobuf package).

    pricing = decode_frame('{"type":"pricing","message":"CgdCVEMtVVNE..."}')   # or bare base64
    pricing.id, pricing.price, pricing.time_ms        # "BTC-USD", 94745.08, 1736509140000
    quote = pricing_to_quote(pricing, symbol, fetched_at=now)

The frame arrives either wrapped as JSON text `{"type": "pricing", "message": "<base64>"}` (the
current stream) or as bare base64 text (the older one). The message is Yahoo's `PricingData`
(yfinance's `pricing.proto`); the fields we read are in `_FIELDS`. Traps the real frames hold:

- `time` is **milliseconds** since the epoch, zig-zag encoded (`sint64`), unlike the REST
  quote's seconds;
- prices are float32: 94745.08 arrives as 94745.078125, so each one is turned back into the
  shortest decimal that encodes to the same float32;
- FX frames carry no currency: a six-letter pair's quote currency is its last three letters,
  anything else stays None (never guessed);
- unknown fields (real frames carry 46 and 47) are skipped by wire type, never an error.

A frame that is not base64, not protobuf, or has no id or price raises ParseError.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.normalizer.symbols import Symbol
from crawler.utils.exceptions import ParseError

__all__ = [
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

# field number → (name, kind). Kinds: "string", "float" (fixed32), "double" (fixed64),
# "sint" (zig-zag varint), "int" (plain varint: enums).
_FIELDS: dict[int, tuple[str, str]] = {
    1: ("id", "string"),
    2: ("price", "float"),
    3: ("time_ms", "sint"),
    4: ("currency", "string"),
    5: ("exchange", "string"),
    6: ("quote_type", "int"),
    7: ("market_hours", "int"),
    8: ("change_percent", "float"),
    9: ("day_volume", "sint"),
    10: ("day_high", "float"),
    11: ("day_low", "float"),
    12: ("change", "float"),
    13: ("short_name", "string"),
    15: ("open_price", "float"),
    16: ("previous_close", "float"),
    27: ("price_hint", "sint"),
}
_WANTED_WIRE = {"string": 2, "float": 5, "double": 1, "sint": 0, "int": 0}
_MAX_FRAME_CHARS = 64 * 1024


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
    """A `PricingData` protobuf message → PricingData; unknown fields skipped; ParseError."""
    values: dict[str, Any] = {}
    pos, end = 0, len(payload)
    while pos < end:
        key, pos = _varint(payload, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ParseError("stream frame holds field number 0")
        if wire == 0:
            raw, pos = _varint(payload, pos)
            value: Any = raw
        elif wire == 1:
            value, pos = payload[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(payload, pos)
            value, pos = payload[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = payload[pos : pos + 4], pos + 4
        else:
            raise ParseError(f"stream frame has wire type {wire} (field {number})")
        if pos > end:
            raise ParseError("stream frame is truncated")
        spec = _FIELDS.get(number)
        if spec is None or _WANTED_WIRE[spec[1]] != wire:
            continue  # a field we do not know (or in a shape we do not expect): skipped
        name, kind = spec
        values[name] = _convert(kind, value, name)
    identity = values.pop("id", None)
    if not identity:
        raise ParseError("stream frame has no symbol id")
    return PricingData(id=identity, **values)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ParseError("stream frame is truncated inside a varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise ParseError("stream frame has a varint over 64 bits")


def _convert(kind: str, value: Any, name: str) -> Any:
    if kind == "string":
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(f"stream frame's {name} is not UTF-8") from None
    if kind == "float":
        number = struct.unpack("<f", value)[0]
        return _shortest_decimal(number)
    if kind == "double":
        return Decimal(repr(struct.unpack("<d", value)[0]))
    if kind == "sint":
        raw = int(value) & 0xFFFFFFFFFFFFFFFF
        return (raw >> 1) ^ -(raw & 1)
    return int(value)


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
    return value if value else None


def pricing_to_quote(
    pricing: PricingData, symbol: Symbol, *, fetched_at: datetime, name: str | None = None
) -> Quote:
    """The Quote a streamed `pricing` gives for `symbol` (its canonical form); ParseError
    without a usable price."""
    if pricing.price is None or pricing.price <= 0:
        raise ParseError(f"stream frame for {pricing.id} has no price")
    currency = pricing.currency or None
    if currency is None and symbol.asset_class is AssetClass.FOREX:
        currency = _fx_currency(pricing.id)
    previous = _present(pricing.previous_close)
    return Quote(
        symbol=symbol.canonical,
        price=pricing.price,
        source=STREAM_SOURCE,
        currency=currency,
        change=pricing.change,
        change_pct=pricing.change_percent,
        open=_present(pricing.open_price),
        high=_present(pricing.day_high),
        low=_present(pricing.day_low),
        previous_close=previous,
        volume=pricing.day_volume if pricing.day_volume else None,
        as_of=pricing.as_of,
        fetched_at=fetched_at,
        asset_class=symbol.asset_class,
        name=pricing.short_name or name,
    )
