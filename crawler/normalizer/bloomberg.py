"""Bloomberg quote page → `Quote`, as a pure function of the page's bytes.

Bloomberg renders the quote on the client: the visible price spans are empty in the server HTML,
and the numbers live in the Next.js payload `<script id="__NEXT_DATA__">` under
`props.pageProps.quote`. The payload mixes types — `price`, `openPrice`, `prevClose`, `volume`
("52,262,300.00") and `marketCap` ("3.877T") are strings; `priceChange1Day`,
`percentChange1Day` (already in percent), `highPrice` and `lowPrice` are JSON numbers — so every
number goes through `parse_bloomberg_number`, and JSON is read with `parse_float=Decimal` so no
value ever round-trips through a float.

The page is read with a real HTML parser (libxml2's, through lxml), so a
`<!-- <script id="__NEXT_DATA__">… -->` inside a comment is a comment, not data, and a string
that merely looks like the tag inside another script is not the tag. When a page holds more
than one `__NEXT_DATA__` script, the ones that carry a quote for the symbol asked are compared:
if they agree on the price the first wins (as in a browser, whose `getElementById` returns the
first), and if they disagree the page is refused — neither can be trusted over the other.

A price is read strictly: "1.5T"-style abbreviations (which Bloomberg uses for market caps)
are never a price, open, close, high, low or change; only the volume may be abbreviated. The
quote then passes the shared plausibility rules (`crawler.normalizer.plausibility`): a stock
at "0" or "-12.5", a price of 1e30 or a `lastUpdate` of 9999-12-31 is refused.

Failures are `ParseError` with a one-line reason; a PerimeterX "not a robot" wall is the subclass
`BotWallError`, because it says something about the unlocker, not about the page format, and a
refused quote is the subclass `ImplausibleQuoteError`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn

from lxml import etree

from crawler.normalizer.plausibility import bounded, check_quote
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
_MAX_VOLUME = 2**63 - 1


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

    quote = _page_quote(page, text, symbol)
    return _to_quote(quote, symbol, fetched_at or utc_now())


def parse_bloomberg_number(value: object, *, abbreviated: bool = True) -> Decimal | None:
    """One Bloomberg number, exactly: JSON numbers as given, strings like "52,262,300.00",
    "3.877T", "-1.83%", "–4.90" (en dash) or "−4.90" (U+2212) too. "N/A", "--", "" and null
    mean missing (None). Anything else raises ParseError. With `abbreviated=False` (prices)
    a K/M/B/T suffix is refused: "1.5T" is a market cap, never a price.

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
        if not abbreviated:
            raise ParseError(f"abbreviated number {_short(value)} is not a price")
        text = text[:-1]
    if not text or not _NUMBER_RE.fullmatch(text) or not any(c.isdigit() for c in text):
        raise ParseError(f"not a number: {_short(value)}")
    number = _bounded(Decimal(text.replace(",", "")), value)
    return number if multiplier is None else _bounded(number * multiplier, value)


# -- internals ------------------------------------------------------------------------------------


def _page_quote(page: bytes, text: str, symbol: Symbol) -> dict[str, Any]:
    """`props.pageProps.quote` of the page's `__NEXT_DATA__` script(s); see the module doc for
    a page with more than one."""
    scripts = _next_data_scripts(page, text)
    quotes: list[dict[str, Any]] = []
    first_error: ParseError | None = None
    for body in scripts:
        try:
            payload = _json(body)
        except ParseError as exc:
            first_error = first_error or exc
            continue
        quote = _dig(payload, "props", "pageProps", "quote")
        if isinstance(quote, dict):
            quotes.append(quote)
    if not quotes:
        if first_error is not None:
            if text.find("</script", text.rfind("__NEXT_DATA__")) == -1:
                raise ParseError("page is truncated inside its __NEXT_DATA__ script")
            raise first_error
        raise ParseError(f"page has no quote for {symbol.canonical} (pageProps.quote is empty)")
    if len(quotes) == 1:
        return quotes[0]
    ours = [q for q in quotes if _is_for(q, symbol)] or quotes
    prices = {str(q.get("price")) for q in ours}
    if len(prices) > 1:
        shown = " vs ".join(_short(p, 20) for p in sorted(prices))
        raise ParseError(
            f"page has {len(ours)} __NEXT_DATA__ scripts whose quotes disagree (price {shown}); "
            "neither is trusted"
        )
    return ours[0]


def _next_data_scripts(page: bytes, text: str) -> list[str]:
    """The text of every `<script id="__NEXT_DATA__">` element, in document order, as an HTML
    parser sees the page (comments are comments)."""
    if "__NEXT_DATA__" not in text:
        _no_script(text)
    parser = etree.HTMLParser(
        encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True
    )
    try:
        root = etree.fromstring(page, parser)
    except (etree.LxmlError, ValueError) as exc:
        raise ParseError(f"page is not readable HTML ({_short(str(exc))})") from None
    scripts: list[str] = []
    if root is not None:
        for element in root.iter("script"):
            if element.get("id") == "__NEXT_DATA__":
                scripts.append(element.text or "")
    if not scripts:
        _no_script(text)
    return scripts


def _no_script(text: str) -> NoReturn:
    if _is_bot_wall(text):
        raise BotWallError('page is a PerimeterX bot wall ("not a robot"), not a quote')
    if "</html>" not in text[-4096:].lower():
        raise ParseError("page is truncated before its __NEXT_DATA__ script")
    raise ParseError("page has no __NEXT_DATA__ script")


def _json(body: str) -> Any:
    try:
        return json.loads(
            body,
            parse_float=Decimal,
            parse_int=Decimal,  # no int-digit limits, and ints compare as Decimals anyway
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ParseError(f"__NEXT_DATA__ is not valid JSON ({_short(reason)})") from exc


def _is_for(data: dict[str, Any], symbol: Symbol) -> bool:
    page_id = data.get("id")
    if not isinstance(page_id, str) or not page_id:
        return True
    return page_id.upper() == symbol.canonical.upper()


def _to_quote(data: dict[str, Any], symbol: Symbol, fetched_at: datetime) -> Quote:
    page_id = data.get("id")
    if isinstance(page_id, str) and page_id and page_id.upper() != symbol.canonical.upper():
        raise ParseError(f"page is for {_short(page_id)}, not {symbol.canonical}")
    try:
        price = parse_bloomberg_number(data.get("price"), abbreviated=False)
    except ParseError as exc:
        raise ParseError(f"price: {exc.message}") from exc
    if price is None:
        raise ParseError(f"quote for {symbol.canonical} has no price")

    day_range = data.get("dayRange")
    low_text = day_range[0] if isinstance(day_range, list) and len(day_range) == 2 else None
    high_text = day_range[1] if isinstance(day_range, list) and len(day_range) == 2 else None
    volume = _optional(data.get("volume"), abbreviated=True)
    currency = data.get("issuedCurrency")
    name = data.get("longName") or data.get("name")
    quote = Quote(
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
    return check_quote(quote, now=fetched_at)


def _optional(*candidates: object, abbreviated: bool = False) -> Decimal | None:
    """The first candidate that parses. A malformed secondary field must not cost us a quote we
    already paid for, so garbage (or an absurd number) here reads as missing; only `price` is
    strict. Only the volume may be abbreviated ("1.5M")."""
    for candidate in candidates:
        try:
            number = parse_bloomberg_number(candidate, abbreviated=abbreviated)
        except ParseError:
            continue
        if not abbreviated:
            number = bounded(number)
        if number is not None:
            return number
    return None


def _whole(number: Decimal | None) -> int | None:
    """Bloomberg prints volume as "52,262,300.00"; a fractional or negative count is no volume."""
    if number is None or number < 0 or number > _MAX_VOLUME:
        return None  # a volume must fit the history's integer column
    if number != number.to_integral_value():
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
