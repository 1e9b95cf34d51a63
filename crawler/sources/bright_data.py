"""Bloomberg quotes through Bright Data's Web Unlocker (Direct API), paid per request.

One `fetch` is up to `max_attempts` POSTs to `{endpoint}/request`, all inside `deadline_s`. Each
attempt first reserves its cost in the `BudgetLedger` (a retry reserves again), then settles or
releases that reservation — in a `finally`, so no path leaks one. How each answer is classed:

    outer 401 / 400 / other 4xx      SourceConfigError     released, not retried
    outer 429                        RateLimitedError      released, retried with backoff
    x-brd-error / x-brd-error-code   TransientSourceError  released, retried
      (any outer status)               (RateLimitedError for sr_rate_limit)
    refused connection, connect      TransientSourceError  released, retried
      timeout (nothing was sent)
    read timeout, reset after        TransientSourceError  SETTLED (outcome unknown), retried
      sending, 5xx without x-brd-error, 200 without x-brd-status-code
    x-brd-status-code 404            UnknownSymbolError    settled, not retried
    x-brd-status-code other ≠ 200    BilledFailureError    settled, not retried
    200 with a bot wall / no quote   BilledFailureError    settled, logged at ERROR
    200 with a quote                 the Quote             settled

Bright Data bills when its unlocker reached the target, and keeps going when we stop waiting: a
request slower than our timeout still completes and is billed. So an attempt whose outcome we
cannot know counts as spent; only an answer that proves no charge (Bright Data's own refusal or
`x-brd-error`, or a connection that never carried the request) gives the money back. Counting
a request we were not billed for is the safe side: the budget is a ceiling, not an invoice.

The API key is only ever put in the Authorization header: never in a message, a log line or a
repr (the tests grep for it).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
import urllib3

from crawler.logging import get_logger
from crawler.normalizer.bloomberg import (
    MAX_PAGE_BYTES,
    BotWallError,
    parse_bloomberg_page,
)
from crawler.normalizer.schemas import Quote, utc_now
from crawler.normalizer.symbols import Symbol, bloomberg_url
from crawler.sources.requests_http import (
    REQUESTS_ERRORS,
    UNBUILDABLE,
    connection_reason,
    head_text,
    never_connected,
    parse_retry_after,
    pooled_session,
)
from crawler.store.backend import LedgerStore
from crawler.utils.error_map import caught
from crawler.utils.exceptions import (
    BilledFailureError,
    ConfigError,
    ParseError,
    RateLimitedError,
    SourceConfigError,
    TransientSourceError,
    UnknownSymbolError,
)

__all__ = ["REQUESTS_ERRORS", "BrightDataSource"]

logger = get_logger("crawler.sources.bright_data")

_CHUNK_BYTES = 64 * 1024

_RATE_LIMIT_CODES = frozenset(("sr_rate_limit",))


@dataclass
class _Billing:
    """Whether the current attempt costs money: False (proved free), True (billed) or None
    (sent, outcome unknown: counted as spent)."""

    billed: bool | None = False


class _PageTooLargeError(Exception):
    """Internal: the body passed MAX_PAGE_BYTES; we stopped reading."""


class _DeadlineError(Exception):
    """Internal: the body was still arriving when the deadline passed."""


class BrightDataSource:
    """A `QuoteSource` for Bloomberg pages fetched through Bright Data's Web Unlocker.

    `endpoint` is the API base ("https://api.brightdata.com" in production, the fake market's
    URL in tests). `sleep`, `clock` and `rng` are injected so tests can record backoff waits.
    """

    name = "bright_data"

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        zone: str,
        ledger: LedgerStore,
        *,
        session: requests.Session | None = None,
        connect_timeout_s: float = 5,
        read_timeout_s: float = 20,
        deadline_s: float = 30,
        max_attempts: int = 3,
        backoff_base_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        pool_size: int = 10,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._now = now
        if not api_key:
            raise ConfigError("Bright Data API key is empty; set it or disable Bright Data")
        if not zone:
            raise ConfigError("Bright Data zone is empty; set it to your Web Unlocker zone name")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        for label, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("read_timeout_s", read_timeout_s),
            ("deadline_s", deadline_s),
        ):
            if value <= 0:
                raise ConfigError(f"{label} must be positive, got {value}")
        self._request_url = endpoint.rstrip("/") + "/request"
        self._api_key = api_key
        self._zone = zone
        self._ledger = ledger
        self._own_session = session is None
        self._session = (
            session if session is not None else pooled_session(pool_size, self._request_url)
        )
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._deadline_s = deadline_s
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "fetches",
                "successes",
                "failures",
                "requests",
                "billed",
                "unbilled",
                "unknown_outcome",
                "retries",
                "billed_failures",
                "bot_walls",
            ),
            0,
        )
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"BrightDataSource(endpoint={self._request_url!r}, zone={self._zone!r})"

    # -- public -----------------------------------------------------------------------------
    def fetch(self, symbol: Symbol) -> Quote:
        """The current quote for `symbol`. Raises APIError subclasses (and BudgetExhaustedError
        from the ledger, before anything is sent)."""
        return self.fetch_paid(symbol, reason=None)

    def fetch_paid(self, symbol: Symbol, reason: str | None) -> Quote:
        """`fetch`, with why it is paid for (`crawler.orchestrator.spending.PAID_REASONS`):
        kept on the ledger's label as "SYMBOL#reason", so `crawler budget` counts by reason."""
        self._bump("fetches")
        try:
            quote = self._fetch_with_retries(symbol, reason)
        except Exception as exc:
            self._bump("failures")
            with self._lock:
                self._last_error = self._clean(str(exc))
            raise
        self._bump("successes")
        return quote

    def close(self) -> None:
        """Close the HTTP session if this source created it (an injected one is the caller's)."""
        if self._own_session:
            self._session.close()

    def statistics(self) -> dict[str, Any]:
        """Counters since start: fetches, successes, failures, requests (attempts sent), billed
        (settled, unknown outcomes included), unbilled, unknown_outcome, retries,
        billed_failures, bot_walls, and last_error (one line or None)."""
        with self._lock:
            return {**self._stats, "last_error": self._last_error}

    # -- the retry loop -------------------------------------------------------------------------
    def _fetch_with_retries(self, symbol: Symbol, reason: str | None = None) -> Quote:
        deadline = self._clock() + self._deadline_s
        last: TransientSourceError | None = None
        attempts = 0
        while attempts < self._max_attempts:
            if last is not None:
                delay_s = self._delay_s(attempts, last)
                # No attempt may start after the deadline, so a wait past it is pointless.
                if self._clock() + delay_s >= deadline:
                    break
                self._bump("retries")
                self._sleep(delay_s)
            remaining_s = deadline - self._clock()
            if remaining_s <= 0:
                break
            attempts += 1
            try:
                return self._attempt(symbol, remaining_s, deadline, reason)
            except TransientSourceError as exc:
                last = exc
                logger.warning(
                    "bright_data attempt failed",
                    attempt=attempts,
                    max_attempts=self._max_attempts,
                    symbol=symbol.canonical,
                    error=exc.message,
                )
        if last is None:
            raise TransientSourceError(
                f"no Bright Data attempt for {symbol.canonical} "
                f"fit in the {self._deadline_s}s deadline"
            )
        message = f"Bright Data gave up on {symbol.canonical} after {attempts} attempt(s): {last}"
        if isinstance(last, RateLimitedError):
            raise RateLimitedError(message, last.retry_after_s) from last
        raise TransientSourceError(message) from last

    def _delay_s(self, attempts_done: int, last: TransientSourceError) -> float:
        """Retry-After when the server gave one; else exponential backoff with full jitter."""
        if isinstance(last, RateLimitedError) and last.retry_after_s is not None:
            return last.retry_after_s
        return self._rng() * self._backoff_base_s * 2.0 ** (attempts_done - 1)

    # -- one attempt ----------------------------------------------------------------------------
    def _attempt(
        self, symbol: Symbol, remaining_s: float, deadline: float, reason: str | None = None
    ) -> Quote:
        # BudgetExhaustedError: nothing is sent. The label feeds `crawler budget`'s top symbols
        # and its spend by reason.
        label = symbol.canonical if reason is None else f"{symbol.canonical}#{reason}"
        reservation = self._ledger.reserve(label=label)
        billing = _Billing()
        try:
            return self._send(symbol, remaining_s, deadline, billing)
        finally:
            # Our own bugs land here too: the reservation is settled or released, never leaked.
            if billing.billed is False:
                self._ledger.release(reservation)
                self._bump("unbilled")
            else:
                self._ledger.settle(reservation)
                self._bump("billed")
                if billing.billed is None:
                    self._bump("unknown_outcome")

    def _send(
        self, symbol: Symbol, remaining_s: float, deadline: float, billing: _Billing
    ) -> Quote:
        payload = {"zone": self._zone, "url": bloomberg_url(symbol), "format": "raw"}
        timeout = (
            min(self._connect_timeout_s, remaining_s),
            min(self._read_timeout_s, remaining_s),
        )
        self._bump("requests")
        billing.billed = None  # from here on the request may reach Bright Data
        try:
            response = self._session.post(
                self._request_url,
                json=payload,
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=timeout,
                stream=True,  # so an oversized page can be refused without reading it all
                allow_redirects=False,
            )
        except requests.ConnectTimeout as exc:
            billing.billed = False  # no connection, nothing sent
            raise TransientSourceError(
                f"Bright Data did not accept a connection within {timeout[0]:g}s"
            ) from exc
        except requests.ReadTimeout as exc:
            # Bright Data carries on without us and bills if it reaches the target.
            raise TransientSourceError(
                f"Bright Data did not answer within {timeout[1]:g}s (counted as spent)"
            ) from exc
        except UNBUILDABLE as exc:
            billing.billed = False  # refused before anything was sent
            raise SourceConfigError(
                f"Bright Data request could not be built: {self._clean(str(exc))}"
            ) from exc
        except requests.ConnectionError as exc:
            if not never_connected(exc):
                # A reset after sending: Bright Data may have run (and billed) the request.
                raise TransientSourceError(
                    f"Bright Data connection lost after sending (counted as spent): "
                    f"{self._clean(str(exc))}"
                ) from exc
            # Refused or unresolvable: nothing was sent, so nothing can be billed.
            billing.billed = False
            host = urllib3.util.parse_url(self._request_url).host or "it"
            raise TransientSourceError(
                f"Bright Data: cannot reach {host} ({connection_reason(exc)}; no network?)"
            ) from exc
        except caught(REQUESTS_ERRORS) as exc:
            if never_connected(exc):
                billing.billed = False
                outcome = "not sent"
            else:
                outcome = "counted as spent"
            raise TransientSourceError(
                f"Bright Data request failed ({outcome}): {type(exc).__name__}: "
                f"{self._clean(str(exc))}"
            ) from exc
        with response:
            return self._handle(response, symbol, deadline, billing)

    def _handle(
        self, response: requests.Response, symbol: Symbol, deadline: float, billing: _Billing
    ) -> Quote:
        status = response.status_code
        headers = response.headers
        brd_error = self._clean(headers.get("x-brd-error", ""))
        retry_after_s = parse_retry_after(headers.get("Retry-After"))

        code = headers.get("x-brd-error-code") or headers.get("x-brd-err-code") or ""
        target_status = headers.get("x-brd-status-code", "")
        if brd_error or code or 400 <= status < 500:
            # Bright Data's own refusal or an unlocker failure: the target was not reached.
            billing.billed = False
        if status == 401:
            raise self._config_error("Bright Data rejected the API key (HTTP 401); check the key")
        if status == 400:
            detail = brd_error or self._clean(head_text(response))
            raise self._config_error(
                f"Bright Data rejected the request (HTTP 400: {detail}); "
                f"check the zone name {self._zone!r}"
            )
        if status == 429 or (status >= 500 and retry_after_s is not None):
            raise RateLimitedError(f"Bright Data answered HTTP {status}", retry_after_s)
        if status >= 500 and billing.billed is None:
            raise TransientSourceError(
                f"Bright Data answered HTTP {status} without x-brd-error (counted as spent)"
            )
        if status >= 500:
            raise TransientSourceError(f"Bright Data answered HTTP {status}: {brd_error or '-'}")
        if status != 200:
            raise self._config_error(
                f"Bright Data answered HTTP {status} at {self._request_url}; check the endpoint"
            )

        if brd_error or code:
            # An unlocker failure: the target was not (successfully) reached, nothing is billed.
            message = f"Bright Data unlocker error {self._clean(code) or '?'}: {brd_error or '-'}"
            if code in _RATE_LIMIT_CODES or target_status == "429":
                raise RateLimitedError(message, retry_after_s)
            raise TransientSourceError(message)
        if not target_status.isdigit():
            raise TransientSourceError(
                "Bright Data answer has no x-brd-status-code (counted as spent)"
            )

        billing.billed = True  # the unlocker reached Bloomberg: this attempt is paid for
        target = int(target_status)
        if target == 404:
            raise UnknownSymbolError(f"Bloomberg has no page for {symbol.canonical} (HTTP 404)")
        if target != 200:
            raise self._billed_failure(symbol, f"Bloomberg answered HTTP {target}")
        try:
            page = self._read_body(response, deadline)
        except _PageTooLargeError:
            raise self._billed_failure(
                symbol, f"page is over the {MAX_PAGE_BYTES}-byte limit; stopped reading"
            ) from None
        except _DeadlineError:
            raise self._billed_failure(symbol, "page still arriving at the deadline") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise self._billed_failure(
                symbol, f"page did not arrive whole ({type(exc).__name__})"
            ) from exc
        try:
            return parse_bloomberg_page(page, symbol, fetched_at=self._now())
        except BotWallError as exc:
            self._bump("bot_walls")
            raise self._billed_failure(symbol, f"BOT WALL: {exc.message}") from exc
        except ParseError as exc:
            raise self._billed_failure(symbol, exc.message) from exc

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        """The body, refusing past MAX_PAGE_BYTES (declared or actual) and past the deadline."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_PAGE_BYTES:
            raise _PageTooLargeError
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
            size += len(chunk)
            if size > MAX_PAGE_BYTES:
                raise _PageTooLargeError
            if self._clock() > deadline:
                raise _DeadlineError
            chunks.append(chunk)
        return b"".join(chunks)

    # -- helpers -------------------------------------------------------------------------------
    def _billed_failure(self, symbol: Symbol, reason: str) -> BilledFailureError:
        self._bump("billed_failures")
        message = f"paid for {symbol.canonical} but got no quote: {reason}"
        # Loud on purpose: every one of these is money spent for nothing.
        logger.error(f"bright_data {message}")
        return BilledFailureError(message)

    def _config_error(self, message: str) -> SourceConfigError:
        logger.error(f"bright_data {message}")
        return SourceConfigError(message)

    def _clean(self, text: str, limit: int = 200) -> str:
        """One line, bounded, and never the key (a server or library may echo it back)."""
        line = " ".join(text.split()).replace(self._api_key, "***")
        return line if len(line) <= limit else line[: limit - 1] + "…"

    def _bump(self, counter: str) -> None:
        with self._lock:
            self._stats[counter] += 1
