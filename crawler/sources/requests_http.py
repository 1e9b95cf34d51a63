"""requests (and urllib3) at Bright Data's boundary: one pooled session, their errors as ours,
and what a failure proves.

    session = pooled_session(16)             # as many kept connections as threads fetch at once
    mapped_class(REQUESTS_ERRORS, exc)       # the table, walked complete by test_error_tables
    never_connected(exc)                     # True: never sent, so Bright Data billed nothing
    connection_reason(exc)                   # "name not resolved", "connection refused", ...

Whether a failed request was ever sent decides the money (`crawler.sources.bright_data`): only
a connection that never carried the request gives its reservation back.
"""

from __future__ import annotations

import os

import requests
import requests.adapters
import requests.utils
import urllib3

from crawler.utils.error_map import ErrorTable, caught
from crawler.utils.exceptions import SourceConfigError, TransientSourceError

__all__ = [
    "REQUESTS_ERRORS",
    "UNBUILDABLE",
    "connection_reason",
    "head_text",
    "never_connected",
    "parse_retry_after",
    "pooled_session",
]

#: requests' (and urllib3's) errors and ours (`crawler.utils.error_map`), most specific first:
#: a request that cannot be built is our configuration; anything else is transient. The source
#: adds what a table cannot say: whether Bright Data may have billed it, and why it failed.
REQUESTS_ERRORS: ErrorTable = (
    (requests.ConnectTimeout, TransientSourceError),
    (requests.ReadTimeout, TransientSourceError),
    (requests.exceptions.MissingSchema, SourceConfigError),
    (requests.exceptions.InvalidSchema, SourceConfigError),
    (requests.exceptions.InvalidURL, SourceConfigError),
    (requests.exceptions.InvalidHeader, SourceConfigError),
    (requests.ConnectionError, TransientSourceError),
    (requests.RequestException, TransientSourceError),
    (urllib3.exceptions.HTTPError, TransientSourceError),
)
#: The errors of a request that cannot be built (our configuration, not Bright Data's).
UNBUILDABLE = caught(REQUESTS_ERRORS, SourceConfigError)


def never_connected(exc: BaseException) -> bool:
    """Whether a requests/urllib3 error proves the request was never sent: the connection was
    refused or not established (DNS, connect timeout). Anything else may have been sent."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            urllib3.exceptions.NewConnectionError
            | urllib3.exceptions.ConnectTimeoutError
            | urllib3.exceptions.NameResolutionError
            | ConnectionRefusedError,
        ):
            return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and id(reason) not in seen:
            current = reason
            continue
        nested = current.args[0] if current.args else None
        if isinstance(nested, BaseException) and id(nested) not in seen:
            current = nested
            continue
        current = current.__cause__ or current.__context__
    return False


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (Bright Data sends seconds)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86_400 else None


def head_text(response: requests.Response, limit_bytes: int = 512) -> str:
    """The start of a small error body (plain text from Bright Data), for the message."""
    try:
        raw = response.raw.read(limit_bytes, decode_content=True)
    except Exception:  # only a hint for a message; a broken body must not mask the real error
        return ""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""


def pooled_session(pool_size: int, url: str | None = None) -> requests.Session:
    """A Session keeping up to `pool_size` connections: as many as threads fetch at once, so
    none is thrown away after each request ("Connection pool is full, discarding connection"
    with requests' default of 10 under 16 workers).

    With `url` (the one address the session asks), the environment is read once, here: the
    proxy for that URL (`HTTPS_PROXY`, `NO_PROXY`, ...) and the CA bundle
    (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`). requests otherwise reads them, and ~/.netrc, on
    every request: a tenth of a paid quote's CPU. (A netrc entry would also have replaced our
    Authorization header with its own.)"""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if url is not None:
        session.proxies.update(requests.utils.get_environ_proxies(url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        session.verify = bundle or True
        session.trust_env = False
    return session


def connection_reason(exc: requests.ConnectionError) -> str:
    """Why a connection failed, in a few words, from urllib3's nested reasons."""
    text = str(exc)
    if "NameResolutionError" in text or "Name or service not known" in text:
        return "name not resolved"
    if "Connection refused" in text:
        return "connection refused"
    if "Network is unreachable" in text:
        return "network unreachable"
    return "connection failed"
