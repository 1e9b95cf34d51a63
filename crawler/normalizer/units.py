"""Minor currency units shown in their major unit: pence in pounds, cents in rand, agorot in
shekels — for display and export only; stored quotes keep the source's unit.

Yahoo quotes London listings in pence ("GBp", also spelled "GBX"), Johannesburg in cents
("ZAc") and Tel Aviv in agorot ("ILA"). With `--major-units` (or ``[display] major_units``)
they are shown in GBP, ZAR and ILS: every price field is divided by 100 exactly (a decimal
shift, no rounding) and the currency code changes with them. The change in percent, the volume
and everything else stay as they are.

    >>> to_major(Quote(symbol="VOD:LN", price=Decimal("71.94"), source="yfinance",
    ...                currency="GBp")).price
    Decimal('0.7194')
    >>> major_dict({"price": "71.94", "currency": "GBp", "change_pct": "-0.5"})
    {'price': '0.7194', 'currency': 'GBP', 'change_pct': '-0.5'}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from crawler.normalizer.schemas import Quote

__all__ = [
    "MINOR_UNITS",
    "PRICE_FIELDS",
    "major_decimal",
    "major_dict",
    "major_row",
    "major_unit",
    "to_major",
]

#: A minor unit's code → (its major currency, the power of ten between them). Case matters:
#: "GBp" is pence, "GBP" pounds.
MINOR_UNITS: Mapping[str, tuple[str, int]] = {
    "GBp": ("GBP", 2),
    "GBX": ("GBP", 2),
    "ZAc": ("ZAR", 2),
    "ILA": ("ILS", 2),
}
#: The fields of a quote that are amounts of money in its currency (not `change_pct`).
PRICE_FIELDS: tuple[str, ...] = ("price", "change", "open", "high", "low", "previous_close")


def major_unit(currency: str | None) -> tuple[str, int] | None:
    """(major currency, decimal places to shift) for a minor unit's code; None otherwise."""
    if currency is None:
        return None
    return MINOR_UNITS.get(currency)


def major_decimal(value: Decimal, places: int) -> Decimal:
    """`value` divided by 10**places, exactly (71.94, 2 → 0.7194)."""
    return value.scaleb(-places)


def to_major(quote: Quote) -> Quote:
    """`quote` in its major unit when its currency is a minor unit; otherwise `quote` itself."""
    unit = major_unit(quote.currency)
    if unit is None:
        return quote
    major, places = unit
    changes: dict[str, Any] = {"currency": major}
    for name in PRICE_FIELDS:
        value = getattr(quote, name)
        if value is not None:
            changes[name] = major_decimal(value, places)
    return dataclasses.replace(quote, **changes)


def _shift_text(value: Any, places: int) -> Any:
    """A JSON amount (an exact decimal string, or a number) shifted; anything else as it is."""
    if value is None or isinstance(value, bool):
        return value
    try:
        number = Decimal(value) if isinstance(value, str) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return value
    if not number.is_finite():
        return value
    return str(major_decimal(number, places))


def major_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """A quote's JSON dict (`Quote.to_json_dict()`, or what the daemon sent) in major units;
    a copy either way, unchanged when its currency is not a minor unit."""
    out = dict(data)
    unit = major_unit(out.get("currency"))
    if unit is None:
        return out
    major, places = unit
    out["currency"] = major
    for name in PRICE_FIELDS:
        if name in out:
            out[name] = _shift_text(out[name], places)
    return out


def major_row(row: Sequence[Any], currency_at: int, price_at: Sequence[int]) -> Sequence[Any]:
    """A stored row (exact decimal strings) in major units: `row[currency_at]` is its currency
    and `price_at` the positions of its amounts. The same row when nothing changes."""
    unit = major_unit(row[currency_at])
    if unit is None:
        return row
    major, places = unit
    out = list(row)
    out[currency_at] = major
    for position in price_at:
        value = out[position]
        if value is not None:
            out[position] = str(major_decimal(Decimal(value), places))
    return out
