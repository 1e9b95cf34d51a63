"""Bloomberg quote page → `Quote`, as a pure function of the page's bytes.

Bloomberg renders the quote on the client: the visible price spans are empty in the server HTML,
and the numbers live in the Next.js payload `<script id="__NEXT_DATA__">` under
`props.pageProps.quote`. The payload mixes types — `price`, `openPrice`, `prevClose`, `volume`
("52,262,300.00") and `marketCap` ("3.877T") are strings; `priceChange1Day`,
`percentChange1Day` (already in percent), `highPrice` and `lowPrice` are JSON numbers — so every
number goes through `parse_bloomberg_number`, and JSON is read with `parse_float=Decimal` so no
value ever round-trips through a float.

Failures are `ParseError` with a one-line reason; a PerimeterX "not a robot" wall is the subclass
`BotWallError`, because it says something about the unlocker, not about the page format.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from crawler.normalizer.schemas import Quote, utc_now
from crawler.normalizer.symbols import Symbol
from crawler.utils.exceptions import ParseError

__all__ = [
    "MAX_PAGE_BYTES",
    "SOURCE_NAME",
    "BotWallError",
    "parse_bloomberg_number",
    "parse_bloomberg_page",
]

#: Pages larger than this are refused unread: a real quote page is ~450 KB.
MAX_PAGE_BYTES = 5 * 1024 * 1024
SOURCE_NAME = "bright_data"

# The opening of the script tag, in the two quotings HTML allows.
_SCRIPT_IDS = ('id="__NEXT_DATA__"', "id='__NEXT_DATA__'")
# PerimeterX's wall: its captcha div, its text, and Bloomberg's terms link on it.
_BOT_WALL_MARKERS = ("px-captcha", "not a robot", "/tosv2.html", "_pxAppId")
# "52,262,300.00", "-1.83", ".5": digits with optional thousands commas and a fraction.
_NUMBER_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?", re.ASCII)
_MULTIPLIERS = {
    "K": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "B": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
}
_MISSING = frozenset(("", "-", "--", "n/a", "na", "nan", "null", "none", "—"))
# Bigger than any price or volume on Earth; also keeps int() of a hostile 1E+999999 cheap.
_MAX_ADJUSTED_EXPONENT = 30


class BotWallError(ParseError):
    """The page is PerimeterX's "are you a robot" wall instead of the quote (paid, no quote)."""


def parse_bloomberg_page(page: bytes, symbol: Symbol, fetched_at: datetime | None = None) -> Quote:
    """The quote in a Bloomberg quote page (HTML bytes as Bright Data returns them).

    Raises `BotWallError` for the PerimeterX wall and `ParseError` for anything else that holds
    no usable quote: over `MAX_PAGE_BYTES`, not UTF-8, truncated, no `__NEXT_DATA__`, no quote,
    no price, a quote for another symbol.
    """
    if len(page) > MAX_PAGE_BYTES:
        raise ParseError(f"page is {len(page)} bytes, over the {MAX_PAGE_BYTES}-byte limit")
    try:
        text = page.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"page is not valid UTF-8 (byte {exc.start})") from exc

    payload = _next_data(text)
    quote = _dig(payload, "props", "pageProps", "quote")
    if not isinstance(quote, dict):
        raise ParseError(f"page has no quote for {symbol.canonical} (pageProps.quote is empty)")
    return _to_quote(quote, symbol, fetched_at or utc_now())


def parse_bloomberg_number(value: object) -> Decimal | None:
    """One Bloomberg number, exactly: JSON numbers as given, strings like "52,262,300.00",
    "3.877T", "-1.83%", "–4.90" (en dash) or "−4.90" (U+2212) too. "N/A", "--", "" and null
    mean missing (None). Anything else raises ParseError.

    >>> parse_bloomberg_number("3.877T")
    Decimal('3877000000000.000')
    """
    if value is None:
        return None
    if isinstance(value, bool):  # bool is an int to Python; never a number on a page
        raise ParseError(f"expected a number, got {value!r}")
    if isinstance(value, int):
        return _bounded(Decimal(value), value)
    if isinstance(value, Decimal):
        return _bounded(value, value)
    if not isinstance(value, str):
        raise ParseError(f"expected a number, got {type(value).__name__}")

    text = value.strip().replace("\u00a0", "").replace(" ", "")
    if text.lower() in _MISSING:
        return None
    text = text.replace("\u2212", "-").replace("\u2013", "-")  # typographic minus signs
    if text.endswith("%"):
        text = text[:-1]
    multiplier = _MULTIPLIERS.get(text[-1:].upper())
    if multiplier is not None:
        text = text[:-1]
    if not text or not _NUMBER_RE.fullmatch(text) or not any(c.isdigit() for c in text):
        raise ParseError(f"not a number: {_short(value)}")
    number = _bounded(Decimal(text.replace(",", "")), value)
    return number if multiplier is None else _bounded(number * multiplier, value)


# -- internals ------------------------------------------------------------------------------------


def _next_data(text: str) -> Any:
    """The parsed `__NEXT_DATA__` JSON; one linear `str.find` pass, no regex over the page."""
    start = -1
    for marker in _SCRIPT_IDS:
        start = text.find(marker)
        if start != -1:
            break
    if start == -1:
        if _is_bot_wall(text):
            raise BotWallError('page is a PerimeterX bot wall ("not a robot"), not a quote')
        if "</html>" not in text[-4096:].lower():
            raise ParseError("page is truncated before its __NEXT_DATA__ script")
        raise ParseError("page has no __NEXT_DATA__ script")
    tag_open = text.rfind("<", 0, start)
    if tag_open == -1 or not text.startswith("<script", tag_open):
        raise ParseError("__NEXT_DATA__ is not the id of a <script> tag")
    body_start = text.find(">", start)
    body_end = text.find("</script>", body_start) if body_start != -1 else -1
    if body_end == -1:
        raise ParseError("page is truncated inside its __NEXT_DATA__ script")
    try:
        return json.loads(
            text[body_start + 1 : body_end],
            parse_float=Decimal,
            parse_int=Decimal,  # no int-digit limits, and ints compare as Decimals anyway
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ParseError(f"__NEXT_DATA__ is not valid JSON ({_short(reason)})") from exc


def _to_quote(data: dict[str, Any], symbol: Symbol, fetched_at: datetime) -> Quote:
    page_id = data.get("id")
    if isinstance(page_id, str) and page_id and page_id.upper() != symbol.canonical.upper():
        raise ParseError(f"page is for {_short(page_id)}, not {symbol.canonical}")
    try:
        price = parse_bloomberg_number(data.get("price"))
    except ParseError as exc:
        raise ParseError(f"price: {exc.message}") from exc
    if price is None:
        raise ParseError(f"quote for {symbol.canonical} has no price")

    day_range = data.get("dayRange")
    low_text = day_range[0] if isinstance(day_range, list) and len(day_range) == 2 else None
    high_text = day_range[1] if isinstance(day_range, list) and len(day_range) == 2 else None
    volume = _optional(data.get("volume"))
    currency = data.get("issuedCurrency")
    name = data.get("longName") or data.get("name")
    return Quote(
        symbol=symbol.canonical,
        price=price,
        source=SOURCE_NAME,
        currency=currency.strip() if isinstance(currency, str) and currency.strip() else None,
        change=_optional(data.get("priceChange1Day")),
        change_pct=_optional(data.get("percentChange1Day")),
        open=_optional(data.get("openPrice")),
        high=_optional(data.get("highPrice"), high_text),
        low=_optional(data.get("lowPrice"), low_text),
        previous_close=_optional(
            data.get("prevClose"), data.get("previousClosingPriceOneTradingDayAgo")
        ),
        volume=_whole(volume),
        as_of=_timestamp(data.get("lastUpdate")),
        fetched_at=fetched_at,
        asset_class=symbol.asset_class,
        name=name.strip() if isinstance(name, str) and name.strip() else None,
    )


def _optional(*candidates: object) -> Decimal | None:
    """The first candidate that parses. A malformed secondary field must not cost us a quote we
    already paid for, so garbage here reads as missing; only `price` is strict."""
    for candidate in candidates:
        try:
            number = parse_bloomberg_number(candidate)
        except ParseError:
            continue
        if number is not None:
            return number
    return None


def _whole(number: Decimal | None) -> int | None:
    """Bloomberg prints volume as "52,262,300.00"; a fractional or negative count is no volume."""
    if number is None or number < 0 or number != number.to_integral_value():
        return None
    return int(number)


def _timestamp(value: object) -> datetime | None:
    """`lastUpdate` ("2026-01-06T22:20:00.000Z") as a UTC-aware datetime; naive means UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # "0001-01-01T00:00:00+01:00" has no UTC equivalent
        return None


def _bounded(number: Decimal, original: object) -> Decimal:
    if not number.is_finite() or number.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise ParseError(f"number out of range: {_short(original)}")
    return number


def _is_bot_wall(text: str) -> bool:
    lowered = text[:200_000].lower()  # the wall is a few KB; a huge page is not a wall
    return any(marker in lowered for marker in _BOT_WALL_MARKERS)


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _no_constant(name: str) -> None:
    """NaN / Infinity literals in the payload read as missing, never as float('nan')."""
    return None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, str) else value
    text = " ".join(text.split())  # one line, whatever the page held
    return text if len(text) <= limit else text[: limit - 1] + "…"
