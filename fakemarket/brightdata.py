"""A fake Bright Data Web Unlocker (Direct API) in front of fake Bloomberg quote pages.

Wire protocol, as Bright Data documents it for `POST https://api.brightdata.com/request`:

- `Authorization: Bearer KEY` and a JSON body `{"zone": ..., "url": ..., "format": "raw"}`.
- A bad key is refused before unlocking: outer 401, plain-text body, no `x-brd-*` headers.
- An unknown zone or a malformed body is refused before unlocking: outer 400 (with `x-brd-error`).
- Once the unlocker took the request the outer status is always 200 and the target's status is in
  `x-brd-status-code`. An unlocker failure adds `x-brd-error` (text) and `x-brd-error-code`
  (`reject_block` with status 502, `sr_rate_limit` with status 429, ...) and has an empty body;
  a response without `x-brd-error` is the target's own answer (its 404 and 500 pages included).

Billing: a request is billed when the target was reached (any `x-brd-status-code` answer without
`x-brd-error`: quote pages, bot walls, 404s, pages without a quote). Rejections, unlocker errors
and the base class's forced faults are not. Each logged request's `outcome` says which
("billed:quote", "unbilled:unlocker_error", ...); `billed_count` / `unbilled_count` sum them.

    fake = BrightDataFake(api_key="test-key", zone="web_unlocker1").start()
    fake.set_page("AAPL:US", "bot_wall")
    fake.set_quote("MSFT:US", price=Decimal("411.20"), currency="USD")
    fake.unlocker_error("*", code="sr_rate_limit", times=2)   # the next two requests fail
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from fakemarket.bloomberg_pages import (
    PageQuote,
    bot_wall_page,
    decoy_page,
    generated_quote,
    no_quote_page,
    quote_page,
    target_404_page,
    target_500_page,
    truncated_page,
    with_values,
)
from fakemarket.core import GLOBAL, FakeRequest, FakeResponse, FakeService

__all__ = ["UNLOCKER_ERRORS", "BrightDataFake", "PageKind"]

PageKind = Literal[
    "quote", "bot_wall", "no_quote", "truncated", "target_404", "target_500",
    "decoy_comment", "two_scripts",
]  # fmt: skip
#: "decoy_comment": a commented-out `__NEXT_DATA__` with price 0.01 before the real one;
#: "two_scripts": the same decoy as a live script (two payloads that disagree).
_PAGE_KINDS: frozenset[str] = frozenset(
    ("quote", "bot_wall", "no_quote", "truncated", "target_404", "target_500",
     "decoy_comment", "two_scripts")
)  # fmt: skip

#: Unlocker error codes the fake knows: code → (x-brd-status-code, x-brd-error text).
UNLOCKER_ERRORS: dict[str, tuple[int, str]] = {
    "reject_block": (502, "Request was blocked by the target site"),
    "sr_rate_limit": (429, "Too many requests to this domain, slow down"),
    "domcontentloaded_event_timeout": (502, "Page did not reach domcontentloaded in time"),
    "document_load_failed": (502, "Document failed to load"),
}

_QUOTE_PREFIX = "https://www.bloomberg.com/quote/"


@dataclass
class _UnlockerError:
    code: str
    times: int | None  # None: forever; otherwise how many more requests fail
    retry_after_s: float | None


class BrightDataFake(FakeService):
    """Bright Data's Web Unlocker over real HTTP on 127.0.0.1, serving Bloomberg-shaped pages.

    Per-symbol knobs (the symbol is read from the JSON body's `url`; "*" means every symbol):
    `set_page(symbol, kind)`, `set_quote(symbol, price=..., ...)`, `unlocker_error(symbol, code)`;
    plus the shared `faults` table of `FakeService` (latency, hang, forced statuses, garbage).
    """

    name = "bright_data"

    def __init__(
        self,
        api_key: str = "test-key",
        zone: str = "web_unlocker1",
        *,
        port: int = 0,
        seed: int = 0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(port=port, seed=seed)
        self.api_key = api_key
        self.zone = zone
        self._now = now
        self._scenario_lock = threading.Lock()
        self._pages: dict[str, str] = {}
        self._quotes: dict[str, dict[str, Any]] = {}
        self._unlocker_errors: dict[str, _UnlockerError] = {}
        self._lag_min: dict[str, int] = {}

    def __repr__(self) -> str:
        # The key stays out of reprs here too, so a failing test never prints it.
        return f"BrightDataFake(url={self.url!r}, zone={self.zone!r})"

    # -- scenario setters ------------------------------------------------------------------
    def set_page(self, symbol: str, kind: PageKind) -> None:
        """Serve `kind` for `symbol` ("*": every symbol without its own setting)."""
        if kind not in _PAGE_KINDS:
            raise ValueError(f"unknown page kind {kind!r}; use one of {sorted(_PAGE_KINDS)}")
        with self._scenario_lock:
            self._pages[_key(symbol)] = kind

    def set_quote(self, symbol: str, **values: Any) -> None:
        """Override the generated quote's fields for `symbol`: any `PageQuote` field (price,
        currency, change, change_pct, open, high, low, previous_close, volume, market_cap, name,
        last_update, decimals, extra). Numbers may be given as str/int/Decimal."""
        allowed = set(PageQuote.__dataclass_fields__) - {"symbol"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown quote fields {sorted(unknown)}; use {sorted(allowed)}")
        decimal_fields = {"price", "change", "change_pct", "open", "high", "low", "previous_close"}
        converted = {
            k: (Decimal(str(v)) if k in decimal_fields and v is not None else v)
            for k, v in values.items()
        }
        with self._scenario_lock:
            self._quotes.setdefault(_key(symbol), {}).update(converted)

    def set_lag(self, suffix: str, minutes: int) -> None:
        """Bloomberg's pages for symbols ending `:SUFFIX` ("LN", "JP", ..., "*" for all) show a
        `lastUpdate` `minutes` behind now (0, the default: real time)."""
        with self._scenario_lock:
            self._lag_min[suffix.upper()] = int(minutes)

    def set_clock(self, now: Callable[[], datetime]) -> None:
        """Serve quotes as of `now()` from here on (a simulated day)."""
        self._now = now

    def unlocker_error(
        self,
        symbol: str = GLOBAL,
        code: str | None = "sr_rate_limit",
        *,
        times: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """Make the unlocker fail for `symbol` with `code` (None clears it). `times`: only the
        next N requests fail. `retry_after_s` adds a Retry-After header to the failure."""
        with self._scenario_lock:
            if code is None:
                self._unlocker_errors.pop(_key(symbol), None)
            else:
                if code not in UNLOCKER_ERRORS:
                    raise ValueError(f"unknown unlocker error code {code!r}")
                self._unlocker_errors[_key(symbol)] = _UnlockerError(code, times, retry_after_s)

    def clear_scenarios(self) -> None:
        """Forget every set_page / set_quote / unlocker_error setting."""
        with self._scenario_lock:
            self._pages.clear()
            self._quotes.clear()
            self._unlocker_errors.clear()
            self._lag_min.clear()

    def reset(self) -> None:
        """Clear faults, the request log and the scenario settings."""
        super().reset()
        self.clear_scenarios()

    # -- accounting ------------------------------------------------------------------------
    @property
    def billed_count(self) -> int:
        """Requests Bright Data would bill: the target was reached."""
        return sum(1 for r in self.log_requests() if r.outcome.startswith("billed"))

    @property
    def unbilled_count(self) -> int:
        """Requests that cost nothing: rejected, unlocker errors, forced faults."""
        return sum(1 for r in self.log_requests() if not r.outcome.startswith("billed"))

    # -- FakeService hooks -------------------------------------------------------------------
    def symbol_of(self, request: FakeRequest) -> str | None:
        url = _target_url(request)
        if url is None or not url.startswith(_QUOTE_PREFIX):
            return None
        path = urlsplit(url).path
        return unquote(path[len("/quote/") :]).upper() or None

    def route(self, request: FakeRequest) -> FakeResponse:
        if request.method != "POST" or request.path.split("?")[0] != "/request":
            request.outcome = "unbilled:not_found"
            return _plain(404, "Not Found")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            request.outcome = "unbilled:bad_key"
            return _plain(401, "Invalid authentication credentials")
        try:
            payload = json.loads(request.body)
        except ValueError:
            request.outcome = "unbilled:bad_request"
            return _plain(400, "Request body must be JSON", error="invalid JSON body")
        if not isinstance(payload, dict) or not isinstance(payload.get("url"), str):
            request.outcome = "unbilled:bad_request"
            return _plain(400, "url is required", error="url is required")
        if payload.get("zone") != self.zone:
            request.outcome = "unbilled:bad_zone"
            zone = str(payload.get("zone"))[:64]
            return _plain(400, f"zone '{zone}' not found", error=f"zone '{zone}' not found")

        symbol = request.symbol
        failure = self._take_unlocker_error(symbol)
        if failure is not None:
            request.outcome = f"unbilled:unlocker_error:{failure.code}"
            status, text = UNLOCKER_ERRORS[failure.code]
            headers = {
                "x-brd-status-code": str(status),
                "x-brd-error": text,
                "x-brd-error-code": failure.code,
            }
            if failure.retry_after_s is not None:
                headers["Retry-After"] = f"{failure.retry_after_s:g}"
            return FakeResponse(200, b"", headers, content_type="text/plain")

        if symbol is None:  # any other URL: the target (Bloomberg) says "no such page"
            request.outcome = "billed:target_404"
            return _target(404, target_404_page(str(payload.get("url"))[:200]))
        kind = self._page_kind(symbol)
        request.outcome = f"billed:{kind}"
        if kind == "bot_wall":
            return _target(200, bot_wall_page())
        if kind == "no_quote":
            return _target(200, no_quote_page(symbol))
        if kind == "target_404":
            return _target(404, target_404_page(symbol))
        if kind == "target_500":
            return _target(500, target_500_page())
        quote = self.quote_for(symbol)
        if kind in ("decoy_comment", "two_scripts"):
            return _target(200, decoy_page(quote, commented=kind == "decoy_comment"))
        return _target(200, truncated_page(quote) if kind == "truncated" else quote_page(quote))

    def error_response(self, request: FakeRequest) -> FakeResponse:
        """A random failure (`error_rate`) is an unlocker `reject_block`, unbilled."""
        request.outcome = "unbilled:unlocker_error:reject_block"
        status, text = UNLOCKER_ERRORS["reject_block"]
        headers = {
            "x-brd-status-code": str(status),
            "x-brd-error": text,
            "x-brd-error-code": "reject_block",
        }
        return FakeResponse(200, b"", headers, content_type="text/plain")

    def forced_response(
        self, request: FakeRequest, status: int, headers: dict[str, str]
    ) -> FakeResponse:
        """A forced outer status (429 storm, 503 outage): plain text, unbilled."""
        request.outcome = f"unbilled:forced_{status}"
        return FakeResponse(status, f"forced {status}".encode(), headers, "text/plain")

    # -- helpers ----------------------------------------------------------------------------
    def quote_for(self, symbol: str) -> PageQuote:
        """The quote the fake serves for `symbol`: generated, then the set_quote overrides."""
        minute = self._now().astimezone(UTC).replace(second=0, microsecond=0)
        suffix = symbol.upper().rpartition(":")[2]
        with self._scenario_lock:
            lag_min = self._lag_min.get(suffix, self._lag_min.get(GLOBAL, 0))
        quote = generated_quote(symbol, last_update=minute - timedelta(minutes=lag_min))
        with self._scenario_lock:
            overrides = {**self._quotes.get(GLOBAL, {}), **self._quotes.get(_key(symbol), {})}
        return with_values(quote, **overrides) if overrides else quote

    def _page_kind(self, symbol: str) -> str:
        with self._scenario_lock:
            return self._pages.get(_key(symbol), self._pages.get(GLOBAL, "quote"))

    def _take_unlocker_error(self, symbol: str | None) -> _UnlockerError | None:
        with self._scenario_lock:
            key = _key(symbol) if symbol is not None else GLOBAL
            if key not in self._unlocker_errors:
                key = GLOBAL
            failure = self._unlocker_errors.get(key)
            if failure is None:
                return None
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    del self._unlocker_errors[key]
            return failure


def _key(symbol: str) -> str:
    return GLOBAL if symbol == GLOBAL else symbol.upper()


def _target_url(request: FakeRequest) -> str | None:
    try:
        payload = json.loads(request.body)
    except ValueError:
        return None
    url = payload.get("url") if isinstance(payload, dict) else None
    return url if isinstance(url, str) else None


def _plain(status: int, text: str, *, error: str | None = None) -> FakeResponse:
    headers = {"x-brd-error": error} if error is not None else {}
    return FakeResponse(status, text.encode("utf-8"), headers, content_type="text/plain")


def _target(status: int, body: bytes) -> FakeResponse:
    return FakeResponse(
        200, body, {"x-brd-status-code": str(status)}, content_type="text/html; charset=utf-8"
    )
