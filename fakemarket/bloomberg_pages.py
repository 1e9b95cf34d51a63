"""Hand-written pages in the shape of Bloomberg's quote pages, as Bright Data returns them.

The real page is a Next.js document: the visible price spans are empty in the server HTML and the
quote lives in `<script id="__NEXT_DATA__" type="application/json">` under
`props.pageProps.quote`, with mixed types — `price`, `openPrice`, `prevClose` and `volume`
("52,262,300.00") and `marketCap` ("3.877T") are strings, `priceChange1Day`,
`percentChange1Day` (already in percent), `highPrice` and `lowPrice` are numbers. These builders
reproduce that shape (not the real page's 450 KB of menus) for any symbol and asset class:

    >>> from decimal import Decimal
    >>> page = quote_page(PageQuote(symbol="AAPL:US", price=Decimal("262.36")))
    >>> b'"price":"262.36"' in page
    True

Also here: the PerimeterX "not a robot" wall, a Bloomberg page without a quote, a truncated page
and the target's own 404 / 500 pages. Nothing in here imports `crawler`: the fake is the outside
world and must not share code with the parser it tests.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = [
    "PageQuote",
    "bot_wall_page",
    "decoy_page",
    "default_currency",
    "generated_quote",
    "no_quote_page",
    "quote_page",
    "target_404_page",
    "target_500_page",
    "truncated_page",
    "with_values",
]

# Currency by Bloomberg exchange suffix; "CUR" (FX) takes the quote currency from the pair.
_CURRENCY_BY_SUFFIX = {
    "US": "USD",
    "LN": "GBp",  # London prices are in pence, and Bloomberg says so with "GBp"
    "JP": "JPY",
    "JT": "JPY",
    "GY": "EUR",
    "GR": "EUR",
    "FP": "EUR",
    "NA": "EUR",
    "IM": "EUR",
    "SM": "EUR",
    "SW": "CHF",
    "HK": "HKD",
    "CN": "CAD",
    "AU": "AUD",
    "COM": "USD",
    "GOV": "USD",
}
_INDEX_CURRENCY = {"UKX": "GBP", "NKY": "JPY", "DAX": "EUR", "SX5E": "EUR", "CAC": "EUR"}

# Bloomberg's `type` field per suffix family.
_TYPE_BY_SUFFIX = {"CUR": "CROSS", "COM": "COMDTY", "IND": "INDEX", "GOV": "GOVT"}

_TWO_PLACES = Decimal("0.01")
_FOUR_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class PageQuote:
    """The values one Bloomberg quote page shows. `None` renders as JSON null (a missing field).

    `currency` None means "derive from the suffix"; `decimals` is how many places the page prints
    (2 for stocks, 4 for FX). `extra` is merged last into the quote object, so a test can plant
    any raw value (`{"price": "N/A"}`, `{"volume": 12}`) exactly as a page would carry it.
    """

    symbol: str
    price: Decimal | None
    currency: str | None = None
    change: Decimal | None = None
    change_pct: Decimal | None = None
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    previous_close: Decimal | None = None
    volume: int | None = None
    market_cap: str | None = None
    name: str | None = None
    last_update: datetime | None = None
    decimals: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


def default_currency(symbol: str) -> str:
    """The currency a page for `symbol` shows: by suffix, the quote currency of an FX pair."""
    ticker, _, suffix = symbol.upper().rpartition(":")
    if suffix == "CUR" and len(ticker) == 6:
        return ticker[3:]
    if suffix == "IND":
        return _INDEX_CURRENCY.get(ticker, "USD")
    return _CURRENCY_BY_SUFFIX.get(suffix, "USD")


def generated_quote(symbol: str, last_update: datetime | None = None) -> PageQuote:
    """A deterministic quote for any symbol: the same symbol always gets the same numbers.

    Values come from a SHA-256 of the symbol, scaled to the asset class (FX near 1 or 100,
    indices in the thousands), so tests can run against symbols nobody configured.
    """
    ticker, _, suffix = symbol.upper().rpartition(":")
    digest = hashlib.sha256(symbol.upper().encode("utf-8")).digest()
    unit = Decimal(int.from_bytes(digest[:8], "big")) / Decimal(2**64)  # in [0, 1)
    swing = Decimal(int.from_bytes(digest[8:12], "big")) / Decimal(2**32) - Decimal("0.5")
    decimals = 2
    crypto = _crypto_twin(ticker) if suffix == "CUR" else None
    if crypto is not None:
        # The same number the fake Yahoo gives the pair (BTC-USD for XBTUSD:CUR): one
        # instrument, one price level, whichever source is asked.
        from fakemarket.yahoo import generated_yahoo_quote

        price = Decimal(str(generated_yahoo_quote(crypto, datetime(2026, 1, 1, tzinfo=UTC)).price))
    elif suffix == "CUR":
        decimals = 4
        base = Decimal(100) if ticker.endswith("JPY") else Decimal(1)
        price = base * (Decimal("0.5") + unit * Decimal("1.5"))
    elif suffix == "IND":
        price = Decimal(1000) + unit * Decimal(39000)
    elif suffix == "COM":
        price = Decimal(20) + unit * Decimal(3000)
    else:
        price = Decimal(5) + unit * Decimal(995)
    places = _FOUR_PLACES if decimals == 4 else _TWO_PLACES
    price = price.quantize(places, ROUND_HALF_UP)
    previous_close = (price / (1 + swing / 10)).quantize(places, ROUND_HALF_UP)
    change = price - previous_close
    change_pct = (change / previous_close * 100).quantize(Decimal("0.000001"), ROUND_HALF_UP)
    open_ = ((price + previous_close) / 2).quantize(places, ROUND_HALF_UP)
    spread = (abs(change) / 2 + price / 500).quantize(places, ROUND_HALF_UP)
    volume = None if suffix in ("CUR", "IND") else int.from_bytes(digest[12:16], "big") % 10**8
    return PageQuote(
        symbol=symbol.upper(),
        price=price,
        change=change,
        change_pct=change_pct,
        open=open_,
        high=max(price, open_, previous_close) + spread,
        low=min(price, open_, previous_close) - spread,
        previous_close=previous_close,
        volume=volume,
        market_cap=None if volume is None else f"{Decimal(volume) * price / 10**9:.3f}B",
        name=f"{ticker} FAKE CORP" if not suffix or suffix not in _TYPE_BY_SUFFIX else ticker,
        last_update=last_update,
        decimals=decimals,
    )


#: Bloomberg's crypto codes whose Yahoo form differs (XBT is BTC); the others are the same.
_CRYPTO_CODES = {"XBT": "BTC", "XET": "ETH"}
_CRYPTO_BASES = {"XRP", "LTC", "BCH", "ADA", "SOL", "DOT", "XLM", "DOGE"}
_CRYPTO_QUOTES = ("USD", "EUR", "GBP", "USDT")


def _crypto_twin(ticker: str) -> str | None:
    """The fake Yahoo's symbol of a Bloomberg crypto pair ("XBTUSD" -> "BTC-USD"); None for
    anything else (FX pairs)."""
    for quote in _CRYPTO_QUOTES:
        if ticker.endswith(quote) and len(ticker) > len(quote):
            base = ticker[: -len(quote)]
            base = _CRYPTO_CODES.get(base, base)
            if base in _CRYPTO_BASES or base in _CRYPTO_CODES.values():
                return f"{base}-{quote}"
    return None


def quote_page(quote: PageQuote) -> bytes:
    """A full Bloomberg-shaped quote page for `quote` (UTF-8 bytes)."""
    return _page(quote.symbol, _title(quote), _next_data(quote.symbol, _quote_object(quote)))


def no_quote_page(symbol: str) -> bytes:
    """A real-looking Bloomberg page whose `pageProps.quote` is null (delisted, unknown, ...)."""
    return _page(symbol, "Bloomberg - Quote not available", _next_data(symbol, None))


def truncated_page(quote: PageQuote, keep_fraction: float = 0.5) -> bytes:
    """A quote page cut off inside its `__NEXT_DATA__` script (a dropped connection)."""
    page = quote_page(quote)
    start = page.find(b'id="__NEXT_DATA__"')
    end = page.find(b"</script>", start)
    cut = start + int((end - start) * keep_fraction)
    return page[:cut]


def bot_wall_page(reference_id: str = "0b4c2e5a-1f6e-11f0-a1b2-6d4f7a6b7c8d") -> bytes:
    """PerimeterX's "Are you a robot?" wall, as Bloomberg serves it instead of the quote."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Bloomberg - Are you a robot?</title>
<meta name="robots" content="noindex, nofollow">
<script>window._pxAppId = 'PX8FCGYgk4'; window._pxJsClientSrc = '/8FCGYgk4/init.js';
window._pxHostUrl = '/8FCGYgk4/xhr'; window._pxreCaptchaTheme = 'light';</script>
</head><body><div class="container"><section class="box">
<h2 class="main__heading">We've detected unusual activity from your computer network</h2>
<p>To continue, please click the box below to let us know you're not a robot.</p>
<div id="px-captcha"></div>
<h3>Why did this happen?</h3>
<p>Please make sure your browser supports JavaScript and cookies and that you are not blocking
them from loading. For more information you can review our
<a href="https://www.bloomberg.com/tosv2.html">Terms of Service</a> and
<a href="https://www.bloomberg.com/notices/tos">Cookie Policy</a>.</p>
<h3>Need Help?</h3><p>For inquiries related to this message please contact our support team
and provide the reference ID below.</p><p>Block reference ID: {reference_id}</p>
</section></div>
<script src="/8FCGYgk4/captcha/captcha.js?a=c&amp;m=0"></script></body></html>
""".encode()


def target_404_page(symbol: str) -> bytes:
    """Bloomberg's own "page not found" answer (the target said 404)."""
    return (
        "<!DOCTYPE html><html><head><title>Bloomberg - Page Not Found</title></head><body>"
        f"<h1>Sorry, we couldn't find the page you were looking for.</h1><p>{_html(symbol)}</p>"
        "</body></html>"
    ).encode()


def target_500_page() -> bytes:
    """Bloomberg's own server error page (the target said 500)."""
    return (
        b"<!DOCTYPE html><html><head><title>Bloomberg - Error</title></head><body>"
        b"<h1>Something went wrong. Please try again later.</h1></body></html>"
    )


# -- rendering ---------------------------------------------------------------------------------


def _quote_object(quote: PageQuote) -> dict[str, Any]:
    """The `props.pageProps.quote` object, with the real page's names and mixed types."""
    ticker, _, suffix = quote.symbol.rpartition(":")
    places = Decimal(1).scaleb(-quote.decimals)
    currency = quote.currency if quote.currency is not None else default_currency(quote.symbol)

    def text(value: Decimal | None) -> str | None:  # the page's "267.00" strings
        return None if value is None else f"{value.quantize(places, ROUND_HALF_UP):,}"

    last_update = quote.last_update or datetime(2026, 1, 6, 22, 20, tzinfo=UTC)
    obj: dict[str, Any] = {
        "isAfterHours": False,
        "isOpen": True,
        "lastUpdate": last_update.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "exchangeDelay": "15 Minutes",
        "isExchangeDelayed": True,
        "price": text(quote.price),
        "percentChange1Day": quote.change_pct,
        "priceChange1Day": quote.change,
        "name": quote.name,
        "primaryExchange": None if suffix in _TYPE_BY_SUFFIX else "FAKE EXCHANGE",
        "type": _TYPE_BY_SUFFIX.get(suffix, "EQT"),
        "longName": None if quote.name is None else quote.name.title(),
        "shortName": quote.name,
        "id": quote.symbol,
        "issuedCurrency": currency,
        "openPrice": text(quote.open),
        "previousClosingPriceOneTradingDayAgo": quote.previous_close,
        "prevClose": text(quote.previous_close),
        "volume": None if quote.volume is None else f"{quote.volume:,}.00",
        "marketCap": quote.market_cap,
        "dayRange": [text(quote.low), text(quote.high)],
        "lowPrice": quote.low,
        "highPrice": quote.high,
        "realTimeTickerDescription": f"{ticker} {suffix}",
    }
    obj.update(quote.extra)
    return obj


def _next_data(symbol: str, quote: dict[str, Any] | None) -> str:
    data = {
        "props": {
            "pageProps": {
                "errors": [],
                "menuItems": {
                    "menuItemsDesktop": {"markets": {"id": "markets", "text": "Markets"}}
                },
                "quote": quote,
                "tickerId": symbol,
                "pageType": "quote-bazaar",
                "partial": False,
            },
            "__N_SSP": True,
        },
        "page": "/quote/[...ticker]",
        "query": {"ticker": [symbol]},
        "buildId": "fakemarket",
        "isFallback": False,
        "gssp": True,
    }
    # Next.js escapes "<" so nothing inside a string can close the script tag; so do we.
    return _dumps(data).replace("<", "\\u003c")


def _page(symbol: str, title: str, next_data: str) -> bytes:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charSet="utf-8"/>'
        f"<title>{_html(title)}</title>"
        f'<link rel="canonical" href="https://www.bloomberg.com/quote/{_html(symbol)}"/>'
        '<script id="gtm_analytics">window.dataLayer=window.dataLayer||[];</script></head>'
        '<body><div id="__next"><main><h1 class="company"></h1>'
        '<div class="price"><span class="priceText"></span></div></main>'
        "<footer><span>©2026 Bloomberg L.P. All Rights Reserved.</span></footer></div>"
        '<script id="__NEXT_DATA__" type="application/json" crossorigin="anonymous">'
        f"{next_data}</script></body></html>"
    ).encode()


def _title(quote: PageQuote) -> str:
    ticker = quote.symbol.partition(":")[0]
    return f"{ticker}: {quote.name or ticker} Stock Price Quote - Bloomberg"


def _html(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _dumps(value: Any) -> str:
    """JSON text with Decimals written exactly as JSON numbers (json.dumps would refuse them)."""
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else "null"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def decoy_page(quote: PageQuote, decoy_price: str = "0.01", *, commented: bool = True) -> bytes:
    """`quote`'s page with a second `__NEXT_DATA__` script before the real one, whose quote has
    price `decoy_price`: inside an HTML comment (`commented`, a leftover a browser ignores) or
    as a live script (two payloads that disagree)."""
    decoy = _next_data(quote.symbol, {**_quote_object(quote), "price": decoy_price})
    script = f'<script id="__NEXT_DATA__" type="application/json">{decoy}</script>'
    planted = f"<!-- {script} -->" if commented else script
    return quote_page(quote).replace(b"<body>", b"<body>" + planted.encode(), 1)


def with_values(quote: PageQuote, **changes: Any) -> PageQuote:
    """`quote` with some fields replaced (a thin `dataclasses.replace` for the fake's setters)."""
    return replace(quote, **changes)
