"""Plausibility: the rules every quote passes before it is served, cached or stored, whatever
its source (Bloomberg page, Yahoo batch or chart, Yahoo stream).

A parser reads what a source says; these rules decide whether it can be true. A refused quote
raises `ImplausibleQuoteError` (a `ParseError`) with one line saying which rule and why: it is
an error for that symbol only, and the caller falls back as for any failure of that source
(the rest of a Yahoo batch is served, the chart is asked for the refused symbol, the stream
skips the tick).

The rules, per quote (`check_quote`, pure: `now` is passed in):

1. **Finite and bounded.** The price is a finite number of magnitude at most `MAX_PRICE`
   (10^12 units of its currency: above bitcoin in Indonesian rupiah, above any index level
   ever printed; 1e30 and 3e38 are not prices). A positive price is at least `MIN_PRICE`
   (10^-8), or `MIN_CRYPTO_PRICE` (10^-12) for crypto, whose smallest tokens trade at
   fractions of a nanodollar; 9.99995e-41 is a float32 artefact, not a price.
2. **Signed where real instruments go negative.** Stocks (funds and ETFs are stocks here),
   FX and crypto must be above zero: "0" and "-12.5" on a stock are refused. Bonds (yields),
   commodities (futures: WTI settled at -37.63 USD on 2020-04-20, and spreads) and yield
   indices (`USGG10YR:IND`, `GDBR10:IND`, ...: `is_signed`) may be zero or negative.
3. **Its own time is believable.** `as_of` may be at most `MAX_CLOCK_SKEW` (10 minutes) after
   `now` (a 9999-12-31 `lastUpdate`, a 2036 tick, an `as_of` in 3270 are refused), and never
   before `EARLIEST_AS_OF` (1990-01-01). A live tick (`live=True`: the stream, which only
   sends what trades now) is also refused when older than `MAX_LIVE_AGE` (7 days: a 2001
   tick); a polled quote may be old (a suspended share's last price is still its price, and
   is shown as `source_stale`).
4. **Within a sane band of the symbol's last good quote** (`reference`). "Sane" is a factor:
   the new price must lie within ×1000 and ÷1000 of the last good one (`BAND_FACTOR`). A
   real crash of 90 % (÷10) or even 99.9 % (÷1000) passes, and so does a ten-bagger; what is
   refused is the glitch of a misplaced decimal point by three or more places, a price read
   from the wrong field ("1.5T" market cap as a price), or a unit mix-up of that size.
   Pence against pounds (×100) passes. For signed instruments only the upper side applies:
   |new| ≤ 1000 × max(|last|, 1). A reference older than `MAX_REFERENCE_AGE` (30 days) or
   itself outside rules 1–2 is not used. A genuine move beyond the band (a 1-for-1000
   reverse split, a redenomination) is refused at first and accepted once it persists:
   `QuoteGate` remembers when each symbol's refused level was first seen, and a quote
   within the band of that level at least `CONFIRM_AFTER` (60 s) later is taken as the new
   level (a one-off glitch does not repeat itself a minute later; the batch answer and the
   chart asked right after it are one observation, not two).

Secondary numbers (open, high, low, previous close, change) never cost a quote: a parser
passes them through `bounded`, which turns a non-finite or out-of-range one into "missing".

    check_quote(quote, now=fetched_at)                      # rules 1-3; raises
    gate = QuoteGate()
    gate.check(quote, now=now, reference=cache.get_last_known(quote.symbol))   # 1-4
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from crawler.normalizer.schemas import AssetClass, Quote
from crawler.utils.exceptions import ImplausibleQuoteError

__all__ = [
    "BAND_FACTOR",
    "CONFIRM_AFTER",
    "EARLIEST_AS_OF",
    "MAX_CLOCK_SKEW",
    "MAX_LIVE_AGE",
    "MAX_PRICE",
    "MAX_REFERENCE_AGE",
    "MIN_CRYPTO_PRICE",
    "MIN_PRICE",
    "ImplausibleQuoteError",
    "QuoteGate",
    "bounded",
    "check_price",
    "check_quote",
    "is_signed",
]

MAX_PRICE: Final = Decimal(10) ** 12
MIN_PRICE: Final = Decimal(10) ** -8
MIN_CRYPTO_PRICE: Final = Decimal(10) ** -12
MAX_CLOCK_SKEW: Final = timedelta(minutes=10)
EARLIEST_AS_OF: Final = datetime(1990, 1, 1, tzinfo=UTC)
MAX_LIVE_AGE: Final = timedelta(days=7)
BAND_FACTOR: Final = Decimal(1000)
MAX_REFERENCE_AGE: Final = timedelta(days=30)
CONFIRM_AFTER: Final = timedelta(seconds=60)

_SIGNED_CLASSES: Final = frozenset((AssetClass.BONDS, AssetClass.COMMODITIES))
# Bloomberg's generic government yield indices (US, Germany, UK, Japan, France, Italy, Spain,
# Canada, ...): yields, so they may go negative although filed under :IND.
_YIELD_INDEX: Final = re.compile(r"(?:USGG|GDBR|GUKG|GJGB|GFRN|GBTPGR|GSPG|GCAN|GTDEM|GTJPY)")


def is_signed(symbol: str, asset_class: AssetClass | None) -> bool:
    """Whether the instrument may be quoted at zero or below (yields, futures, spreads)."""
    if asset_class in _SIGNED_CLASSES:
        return True
    if asset_class is AssetClass.INDICES:
        return _YIELD_INDEX.match(symbol.upper()) is not None
    return False


def bounded(value: Decimal | None) -> Decimal | None:
    """A secondary number as-is when finite and within ±MAX_PRICE, else None (missing)."""
    if value is None:
        return None
    try:
        if not value.is_finite() or abs(value) > MAX_PRICE:
            return None
    except InvalidOperation:
        return None
    return value


def check_price(price: Decimal, symbol: str, asset_class: AssetClass | None) -> None:
    """Rules 1 and 2 for one price; raises ImplausibleQuoteError."""
    try:
        finite = price.is_finite()
    except InvalidOperation:
        finite = False
    if not finite:
        raise ImplausibleQuoteError(f"{symbol}: price {_show(price)} refused: not a finite number")
    if abs(price) > MAX_PRICE:
        raise ImplausibleQuoteError(
            f"{symbol}: price {_show(price)} refused: above {_show(MAX_PRICE)}, no instrument "
            "trades there"
        )
    if is_signed(symbol, asset_class):
        return
    kind = (asset_class.value if asset_class is not None else "instrument").rstrip("s")
    if price <= 0:
        raise ImplausibleQuoteError(
            f"{symbol}: price {_show(price)} refused: a {kind} price must be above zero"
        )
    floor = MIN_CRYPTO_PRICE if asset_class is AssetClass.CRYPTO else MIN_PRICE
    if price < floor:
        raise ImplausibleQuoteError(
            f"{symbol}: price {_show(price)} refused: below {_show(floor)}, not a {kind} price"
        )


def check_quote(quote: Quote, *, now: datetime, live: bool = False) -> Quote:
    """Rules 1–3 (see the module doc); returns `quote`, or raises ImplausibleQuoteError."""
    check_price(quote.price, quote.symbol, quote.asset_class)
    as_of = quote.as_of
    if as_of is not None:
        if as_of > now + MAX_CLOCK_SKEW:
            raise ImplausibleQuoteError(
                f"{quote.symbol}: quote time {_when(as_of)} refused: later than now "
                f"({_when(now)}) by more than {_minutes(MAX_CLOCK_SKEW)}"
            )
        if as_of < EARLIEST_AS_OF:
            raise ImplausibleQuoteError(
                f"{quote.symbol}: quote time {_when(as_of)} refused: before "
                f"{EARLIEST_AS_OF.date().isoformat()}"
            )
        if live and as_of < now - MAX_LIVE_AGE:
            raise ImplausibleQuoteError(
                f"{quote.symbol}: live tick dated {_when(as_of)} refused: more than "
                f"{MAX_LIVE_AGE.days} days old"
            )
    return quote


@dataclass(frozen=True, slots=True)
class _Refusal:
    price: Decimal
    at: datetime


class QuoteGate:
    """Rules 1–4: `check_quote` plus the band around the symbol's last good quote, with a
    memory of the last refused price per symbol so that a real move beyond the band is
    accepted on its second sighting. Thread-safe."""

    def __init__(self, *, band_factor: Decimal = BAND_FACTOR) -> None:
        self.band_factor = band_factor
        self._lock = threading.Lock()
        self._refused: dict[str, _Refusal] = {}
        # The last quote each symbol passed with: the next one's reference without a store read.
        self._good: dict[str, Quote] = {}
        self.refusals = 0

    def last_good(self, symbol: str) -> Quote | None:
        """The last quote of `symbol` this gate let through, or None."""
        with self._lock:
            return self._good.get(symbol)

    def check(
        self, quote: Quote, *, now: datetime, reference: Quote | None, live: bool = False
    ) -> Quote:
        """`quote` when plausible against `reference` (the symbol's last good quote, or
        None); raises ImplausibleQuoteError, counting it."""
        try:
            check_quote(quote, now=now, live=live)
            self._check_band(quote, now, reference)
        except ImplausibleQuoteError:
            with self._lock:
                self.refusals += 1
            raise
        with self._lock:
            self._good[quote.symbol] = quote
        return quote

    def _check_band(self, quote: Quote, now: datetime, reference: Quote | None) -> None:
        last = self._usable(reference, quote, now)
        if last is None or self._within(quote, last):
            with self._lock:
                self._refused.pop(quote.symbol, None)
            return
        with self._lock:
            first = self._refused.get(quote.symbol)
            if (
                first is not None
                and self._within(quote, first.price)
                and timedelta(0) <= now - first.at <= MAX_REFERENCE_AGE
            ):
                if now - first.at >= CONFIRM_AFTER:
                    del self._refused[quote.symbol]
                    return  # the same new level a minute on: a real move, not a glitch
            else:
                self._refused[quote.symbol] = _Refusal(quote.price, now)
        raise ImplausibleQuoteError(
            f"{quote.symbol}: price {_show(quote.price)} refused: more than "
            f"×{_show(self.band_factor)} away from its last good quote {_show(last)} "
            f"(taken as the new level if it is still there in {_seconds(CONFIRM_AFTER)})"
        )

    def _usable(self, reference: Quote | None, quote: Quote, now: datetime) -> Decimal | None:
        if reference is None or reference.symbol != quote.symbol:
            return None
        seen = reference.as_of or reference.fetched_at
        if now - seen > MAX_REFERENCE_AGE:
            return None
        try:
            check_price(reference.price, reference.symbol, quote.asset_class)
        except ImplausibleQuoteError:
            return None  # an old bad quote must not lock the symbol out
        return reference.price

    def _within(self, quote: Quote, last: Decimal) -> bool:
        price, factor = quote.price, self.band_factor
        if is_signed(quote.symbol, quote.asset_class) or last <= 0 or price <= 0:
            return abs(price) <= factor * max(abs(last), Decimal(1))
        return last / factor <= price <= last * factor


def _show(number: Decimal) -> str:
    """A number for a message, short whatever its size (1E+300, not 300 digits)."""
    try:
        if number.is_finite() and abs(number.adjusted()) > 15:
            return f"{number:.6E}"
    except (InvalidOperation, ValueError):
        pass
    text = str(number)
    return text if len(text) <= 40 else text[:39] + "…"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(span: timedelta) -> str:
    return f"{int(span.total_seconds())} s"


def _minutes(span: timedelta) -> str:
    return f"{int(span.total_seconds() // 60)} minutes"
