"""Every error `crawler` raises, in one tree.

    CrawlerError                      base of everything below; `.message` is one line
    ├── ConfigError                   a configuration value is invalid (exit 2)
    ├── UsageError                    a request's arguments are invalid (exit 2)
    ├── SymbolError                   a symbol is malformed or unknown to us (exit 2)
    │   └── UnmappableSymbolError     valid, but has no Yahoo equivalent (yfinance skipped)
    ├── StorageError                  the data dir is unwritable, full or corrupt
    │   ├── DataDirError              the data dir cannot be used at all (exit 2)
    │   ├── WatchlistFullError        the watchlist holds its maximum; nothing more is added
    │   └── StoreUnavailableError     the shared store (Redis) cannot be reached right now
    ├── ParseError                    a page or payload did not hold a quote
    │   └── ImplausibleQuoteError     it held one that cannot be true (normalizer.plausibility)
    ├── APIError                      a source could not serve a quote (seed: `.message`)
    │   ├── SourceConfigError         the source rejected our credentials/zone (not retried)
    │   ├── TransientSourceError      timeout, 5xx, unlocker error: retryable, not billed
    │   │   └── RateLimitedError      429 / rate-limit, with `.retry_after_s`
    │   ├── BilledFailureError        the request was paid for but yielded no quote
    │   ├── UnknownSymbolError        the source says the symbol does not exist
    │   └── NoSourceAvailableError    every source failed; `.reasons` names each one
    ├── BudgetExhaustedError          the daily Bright Data budget is spent (seed fields)
    ├── CircuitBreakerError           a breaker refused the call (seed: `.state`, `.message`)
    └── DaemonError                   talking to / running the daemon failed
        ├── DaemonNotRunningError     no daemon answers on the socket (exit 3)
        └── DaemonAlreadyRunningError a daemon already runs (`.pid`)

Third-party errors (requests, curl_cffi, yfinance, diskcache, sqlite3, redis) are translated at
the boundary with ``raise OurError(...) from exc``; none escapes a public call untranslated.
"""

from __future__ import annotations

from decimal import Decimal

from crawler.utils.text import clean_text

__all__ = [
    "APIError",
    "BilledFailureError",
    "BudgetExhaustedError",
    "CircuitBreakerError",
    "ConfigError",
    "CrawlerError",
    "DaemonAlreadyRunningError",
    "DaemonError",
    "DaemonNotRunningError",
    "DataDirError",
    "ImplausibleQuoteError",
    "NoSourceAvailableError",
    "ParseError",
    "RateLimitedError",
    "SourceConfigError",
    "StorageError",
    "StoreUnavailableError",
    "SymbolError",
    "TransientSourceError",
    "UnknownSymbolError",
    "UnmappableSymbolError",
    "UsageError",
    "WatchlistFullError",
]


class CrawlerError(Exception):
    """Base of every error raised by crawler. `message` is a single human-readable line."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        # Messages often quote upstream text, and they end up on terminals: one line, no
        # escape sequences or control characters.
        message = clean_text(message) if isinstance(message, str) else message
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(CrawlerError):
    """A configuration value is invalid; the message names the key, the value and the fix."""

    exit_code = 2


class UsageError(CrawlerError):
    """A request's arguments are invalid (a bad limit, a wrong field type): fix the call."""

    exit_code = 2


class SymbolError(CrawlerError):
    """A symbol is malformed (empty, too long, bad characters, unknown suffix)."""

    exit_code = 2


class UnmappableSymbolError(SymbolError):
    """A valid Bloomberg symbol with no Yahoo equivalent: yfinance is skipped, not guessed."""


class StorageError(CrawlerError):
    """The data directory or one of its stores cannot be used."""


class DataDirError(StorageError):
    """The data directory cannot be created or written: a setup problem, fixed by DATA_DIR."""

    exit_code = 2


class WatchlistFullError(StorageError):
    """The watchlist already holds its maximum number of symbols; the one asked is not added."""


class StoreUnavailableError(StorageError):
    """The shared store (Redis) does not answer; the client reconnects on its next call.

    No paid request is made while the budget cannot be checked; free sources and the local
    last-known quotes keep serving.
    """


class ParseError(CrawlerError):
    """A page or payload did not contain a usable quote."""


class ImplausibleQuoteError(ParseError):
    """A quote a source really sent, refused by the plausibility rules (a price that cannot be
    true, a time in the future): an error for that symbol only; see
    `crawler.normalizer.plausibility`."""


class APIError(CrawlerError):
    """A data source failed to provide a quote."""


class SourceConfigError(APIError):
    """The source rejected our configuration (bad key, unknown zone). Not retried, not billed."""


class TransientSourceError(APIError):
    """A failure worth retrying: timeout, connection error, 5xx, unlocker error. Not billed."""


class RateLimitedError(TransientSourceError):
    """The source asked us to slow down; `retry_after_s` is its hint, if it gave one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BilledFailureError(APIError):
    """We paid for the request but got no quote (bot wall, target error, page without quote)."""


class UnknownSymbolError(APIError):
    """The source says the symbol does not exist. Says nothing about the source's health."""


class NoSourceAvailableError(APIError):
    """No source could serve the quote; `reasons` maps each source to why it did not."""

    def __init__(self, symbol: str, reasons: dict[str, str]) -> None:
        # A source's own message often starts with its name already ("yfinance: ..."): say it once.
        detail = (
            "; ".join(
                why if why.startswith(f"{name}: ") else f"{name}: {why}"
                for name, why in reasons.items()
            )
            or "no sources"
        )
        super().__init__(f"no source could serve {symbol} ({detail})")
        self.symbol = symbol
        self.reasons = reasons


class BudgetExhaustedError(CrawlerError):
    """The daily budget is spent. Fields as the seed: requests used, allowed, USD spent."""

    def __init__(
        self,
        current_usage: int,
        budget_limit: int,
        cost_spent: Decimal,
        message: str | None = None,
    ) -> None:
        super().__init__(
            message
            or f"daily budget exhausted: {current_usage}/{budget_limit} requests, "
            f"${cost_spent} spent; money frees up as the spend turns 24 hours old (after "
            "the budget day's midnight at the earliest; `crawler budget` says when), or raise "
            "TOTAL_BUDGET"
        )
        self.current_usage = current_usage
        self.budget_limit = budget_limit
        self.cost_spent = cost_spent


class CircuitBreakerError(CrawlerError):
    """A circuit breaker refused the call. `state` is the breaker's state when it refused."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state


class DaemonError(CrawlerError):
    """Starting, stopping or talking to the daemon failed."""


class DaemonNotRunningError(DaemonError):
    """No daemon answers on the control socket."""

    exit_code = 3


class DaemonAlreadyRunningError(DaemonError):
    """A daemon is already running; `pid` is its process id."""

    def __init__(self, pid: int, message: str | None = None) -> None:
        super().__init__(message or f"crawler is already running (pid {pid}); stop it first")
        self.pid = pid
