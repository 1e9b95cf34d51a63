"""yfinance's and curl_cffi's errors, and Yahoo's answers, as ours: the boundary of the
yfinance source (`crawler.sources.yfinance_source`), where nothing of theirs gets past.

    curl_errors()                    # curl_cffi's classes → ours, walked complete by a test
    translate(exc, chart_status, what)   # whatever yfinance or curl raised → APIError/StorageError
    status_error(429, what)          # a non-200 answer of a data request → RateLimitedError

Rate limits → `RateLimitedError`, network errors and 5xx → `TransientSourceError`, 404 / no
price → `UnknownSymbolError`, yfinance's own caches failing on our disk → `StorageError`,
anything else → `APIError`. Importing this module imports neither yfinance nor curl_cffi.
"""

from __future__ import annotations

import errno
import re
import sqlite3

from crawler.utils.error_map import ErrorTable, mapped_class
from crawler.utils.exceptions import (
    APIError,
    RateLimitedError,
    StorageError,
    TransientSourceError,
    UnknownSymbolError,
)

__all__ = ["after_colon", "curl_errors", "one_line", "status_error", "translate"]

_MESSAGE_CHARS = 240
_DISK_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EROFS))


def status_error(status: int, what: str) -> APIError:
    """Our error for a non-200 answer of a data request."""
    if status == 429:
        return RateLimitedError(f"yfinance: Yahoo rate-limited the request for {what}")
    if status >= 500:
        return TransientSourceError(f"yfinance: Yahoo answered {status} for {what}")
    if status == 401:
        return APIError(f"yfinance: Yahoo refused the crumb twice for {what} (HTTP 401)")
    return APIError(f"yfinance: Yahoo answered {status} for {what}")


def after_colon(message: str) -> str:
    """What follows the first ": " of a message (our parsers' reason without their prefix)."""
    return message.split(": ", 1)[1] if ": " in message else message


def curl_errors() -> ErrorTable:
    """curl_cffi's errors and ours (`crawler.utils.error_map`), by class alone: an answer that
    is not JSON is Yahoo's fault (APIError); any other request failure, or the socket's, is
    transient; curl's own errors outside a request (a WebSocket, fingerprints) are an APIError.
    `translate` decides before the table where an HTTP status or our disk says more (404, 429,
    5xx, a full disk) and after it for yfinance's own errors."""
    from curl_cffi.curl import CurlError
    from curl_cffi.requests.exceptions import InvalidJSONError, RequestException

    return (
        (InvalidJSONError, APIError),
        (RequestException, TransientSourceError),
        (OSError, TransientSourceError),
        (CurlError, APIError),
    )


def translate(exc: Exception, chart_status: int | None, what: str) -> APIError | StorageError:
    """Our error for whatever yfinance/curl_cffi raised (`chart_status`: the last chart
    answer's HTTP status on this thread, when there was one)."""
    detail = one_line(exc)
    # yfinance keeps its caches in SQLite through peewee, whose errors are not sqlite3's.
    peewee = type(exc).__module__.split(".")[0] == "peewee"
    if (
        isinstance(exc, sqlite3.Error)
        or (peewee and type(exc).__name__ in ("OperationalError", "DatabaseError"))
        or (isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS)
    ):
        # yfinance's own caches (time zones, cookies) live on our disk: a full or read-only
        # disk is our storage failing, not Yahoo, and must not count against yfinance.
        return StorageError(f"yfinance's cache could not be written ({what}): {detail}")
    # An HTTPError names the answer that failed; prefer its status to the last chart's.
    response_status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(response_status, int) and response_status >= 400:
        chart_status = response_status
        if response_status == 404:
            return UnknownSymbolError(f"yfinance: Yahoo does not know {what} (HTTP 404)")
    try:
        table = curl_errors()
        from curl_cffi.requests.exceptions import InvalidJSONError
        from yfinance import exceptions as yf_errors
    except ImportError:  # yfinance itself failed to load: nothing finer to say
        return APIError(f"yfinance: failed for {what}: {type(exc).__name__}: {detail}")
    by_class = mapped_class(table, exc)
    if isinstance(exc, yf_errors.YFRateLimitError) or chart_status == 429:
        return RateLimitedError(f"yfinance: Yahoo rate-limited the request for {what}")
    if chart_status is not None and chart_status >= 500:
        return TransientSourceError(f"yfinance: Yahoo answered {chart_status} for {what}")
    if isinstance(exc, InvalidJSONError | UnicodeDecodeError) or (
        isinstance(exc, ValueError) and "JSON" in type(exc).__name__
    ):
        return APIError(f"yfinance: Yahoo's chart answer for {what} is not JSON")
    if chart_status is not None and 400 <= chart_status < 500 and chart_status != 404:
        return APIError(f"yfinance: Yahoo answered {chart_status} for {what}")
    if by_class is TransientSourceError:
        unreachable = _unreachable(detail)
        if unreachable is not None:
            return TransientSourceError(
                f"yfinance: cannot reach Yahoo for {what}: {unreachable} (no network?)"
            )
        return TransientSourceError(f"yfinance: request for {what} failed: {detail}")
    if isinstance(exc, yf_errors.YFTickerMissingError):
        if chart_status in (None, 200, 404):
            reason = one_line(getattr(exc, "rationale", "") or detail)
            return UnknownSymbolError(f"yfinance: Yahoo does not know {what}: {reason}")
        return APIError(f"yfinance: Yahoo answered {chart_status} for {what}: {detail}")
    if isinstance(exc, yf_errors.YFDataException) and "DOWN" in str(exc).upper():
        return TransientSourceError(f"yfinance: Yahoo Finance is down ({what})")
    return APIError(f"yfinance: failed for {what}: {type(exc).__name__}: {detail}")


# curl's numbers for "could not get there at all": resolve (proxy or host), connect.
_CURL_UNREACHABLE = re.compile(r"curl: \((?:5|6|7)\) (?P<why>.*?)(?:\.? See https://\S+.*)?$")


def _unreachable(detail: str) -> str | None:
    """curl's own reason when a request never reached the server (DNS, refused), without the
    "Failed to perform" wrapper and the link to curl's error list; None for other failures."""
    match = _CURL_UNREACHABLE.search(detail)
    return match.group("why").rstrip(". ") if match else None


def one_line(value: object) -> str:
    """`value` as one line of at most 240 characters (an ellipsis where it was cut)."""
    text = " ".join(str(value).split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"
