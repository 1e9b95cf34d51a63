"""The quote model and asset classes: what every source produces and every store keeps.

Money is `Decimal` and travels through JSON as exact strings, so a quote read back from the
cache or the history is equal to the one written.

    >>> q = Quote(symbol="AAPL:US", price=Decimal("262.36"), currency="USD", source="bright_data")
    >>> Quote.from_json_dict(q.to_json_dict()) == q
    True
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from crawler.utils.clock import utc_now
from crawler.utils.exceptions import ParseError
from crawler.utils.text import clean_text, has_controls

__all__ = ["SOURCE_NAMES", "AssetClass", "Quote", "utc_now"]

SOURCE_NAMES = ("bright_data", "yfinance")


class AssetClass(StrEnum):
    """What kind of instrument a symbol names; decides its Yahoo form and its market hours."""

    STOCKS = "stocks"
    FOREX = "forex"
    COMMODITIES = "commodities"
    INDICES = "indices"
    BONDS = "bonds"
    CRYPTO = "crypto"

    @classmethod
    def parse(cls, text: str) -> AssetClass:
        """`AssetClass.parse("Stocks")` → STOCKS; raises ValueError naming the allowed values."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            allowed = ", ".join(member.value for member in cls)
            raise ValueError(f"unknown asset class {text!r}; use one of: {allowed}") from None


_DECIMAL_FIELDS = ("price", "change", "change_pct", "open", "high", "low", "previous_close")
_DATETIME_FIELDS = ("as_of", "fetched_at")


@dataclass(frozen=True, slots=True)
class Quote:
    """One price observation with its provenance.

    `currency` is exactly what the source says (LSE prices in "GBp" are pence, not "GBP").
    `as_of` is the source's own timestamp, `fetched_at` when we received it; both UTC-aware.
    `change_pct` is in percent (-1.83 means -1.83 %). `from_cache` and `stale` describe how
    this copy was served, not the market. `interval` is None for a collected quote; a bar
    from a backfill has its interval ("1d", "1h", "5m", "1m"): `as_of` is the bar's start,
    `price` its close. `to_json_dict` leaves `interval` out when it is None.
    """

    symbol: str
    price: Decimal
    source: str
    currency: str | None = None
    change: Decimal | None = None
    change_pct: Decimal | None = None
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    previous_close: Decimal | None = None
    volume: int | None = None
    as_of: datetime | None = None
    fetched_at: datetime = field(default_factory=utc_now)
    asset_class: AssetClass | None = None
    name: str | None = None
    from_cache: bool = False
    stale: bool = False
    interval: str | None = None

    def __post_init__(self) -> None:
        # Text from upstream (a currency of "USD\x1b[31m", a name) reaches terminals: no
        # escape sequence or control character gets into a Quote, whichever source built it
        # (and a row stored before this rule is cleaned as it is read back).
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str) and has_controls(value):
                object.__setattr__(self, name, clean_text(value).strip() or None)

    def with_flags(self, *, from_cache: bool | None = None, stale: bool | None = None) -> Quote:
        """A copy with `from_cache` / `stale` changed."""
        return replace(
            self,
            from_cache=self.from_cache if from_cache is None else from_cache,
            stale=self.stale if stale is None else stale,
        )

    def age_s(self, now: datetime | None = None) -> float:
        """Seconds since the source's timestamp (or since we fetched it, without one)."""
        reference = self.as_of or self.fetched_at
        return ((now or utc_now()) - reference).total_seconds()

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: Decimals as strings, datetimes as ISO 8601, enums as values."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "interval":
                continue  # a collected quote: its JSON is what it was before bars existed
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, AssetClass):
                value = value.value
            out[f.name] = value
        return out

    def to_json(self) -> str:
        """Compact JSON text of `to_json_dict()`."""
        return json.dumps(self.to_json_dict(), separators=(",", ":"))

    @property
    def kind(self) -> str:
        """ "bar" for a backfilled bar, "quote" for a collected quote."""
        return "quote" if self.interval is None else "bar"

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], **flags: bool) -> Quote:
        """Inverse of `to_json_dict`; raises ParseError on a malformed record. `flags`
        (`from_cache=`, `stale=`) override the stored ones without building the quote twice."""
        try:
            kwargs: dict[str, Any] = {}
            for key, value in data.items():
                if key not in _FIELD_NAMES:
                    continue
                if value is not None:
                    convert = _CONVERTERS.get(key)
                    if convert is not None:
                        value = convert(value)
                kwargs[key] = value
            kwargs.update(flags)
            return cls(**kwargs)
        except (TypeError, ValueError, InvalidOperation, KeyError) as exc:
            raise ParseError(f"malformed quote record: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Quote:
        """Parse `to_json()` output; raises ParseError."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ParseError(f"malformed quote JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ParseError("malformed quote JSON: not an object")
        return cls.from_json_dict(data)


#: The fields that carry upstream text (the symbol and source names are ours).
_TEXT_FIELDS = ("currency", "name")


def _parse_utc(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 string, got {type(value).__name__}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone")
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def _decimal(value: Any) -> Decimal:
    # Stored money is an exact string; a number from elsewhere goes through str() so a float
    # becomes its shortest repr, not its binary expansion.
    return Decimal(value) if type(value) is str else Decimal(str(value))


_FIELD_NAMES = frozenset(f.name for f in fields(Quote))
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(_DECIMAL_FIELDS, _decimal),
    **dict.fromkeys(_DATETIME_FIELDS, _parse_utc),
    "asset_class": AssetClass,
    "volume": int,
}
