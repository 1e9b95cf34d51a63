"""The curl_cffi session yfinance runs on: optionally redirected to `YFINANCE_ENDPOINT`.

yfinance hard-codes its hosts (fc.yahoo.com for the cookie, query1/query2.finance.yahoo.com for
the crumb and the chart, guce/consent.yahoo.com for the consent flow). To run its real code
unchanged against the fake market, the session rewrites `https://HOST/path` to
`http://HOST:PORT/path` and pins HOST to the endpoint's address with `CURLOPT_RESOLVE`, so the
request still carries `Host: HOST:PORT` and cookies still match `.yahoo.com`:

    session = RedirectingSession("http://127.0.0.1:8802", max_timeout_s=5)
    yf.Ticker("AAPL", session=session).history(period="1d")   # served by the fake

With an empty endpoint it is a plain browser-impersonating session that talks to Yahoo itself.
Either way it caps every request's timeout (yfinance asks for 30 s on its cookie calls),
remembers, per thread, the status of the last chart answer, so errors yfinance raises without
a status can be classified by the caller, and, given a `YahooThrottle`, sends every request
(cookie, crumb and data alike) through the process's one token bucket: a request waits for its
token, a 429 pauses every worker. `time_limit(seconds)` bounds that wait for the calling thread.

Importing this module imports curl_cffi (the session is a subclass), so import it lazily.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from curl_cffi import CurlOpt
from curl_cffi import requests as curl_requests
from curl_cffi.requests.exceptions import InvalidURL

from crawler.utils.exceptions import TransientSourceError

if TYPE_CHECKING:
    from crawler.sources.yahoo_throttle import YahooThrottle

__all__ = ["MAX_ANSWER_BYTES", "YAHOO_HOSTS", "RedirectingSession", "is_yahoo_host"]

#: The most curl receives of any one Yahoo answer (as sent, before decompression).
MAX_ANSWER_BYTES = 16 * 1024 * 1024

#: The hosts yfinance 1.7 talks to; each one gets a CURLOPT_RESOLVE entry when redirecting.
YAHOO_HOSTS: frozenset[str] = frozenset(
    {
        "fc.yahoo.com",
        "query1.finance.yahoo.com",
        "query2.finance.yahoo.com",
        "finance.yahoo.com",
        "guce.yahoo.com",
        "consent.yahoo.com",
        "login.yahoo.com",
        "www.yahoo.com",
        "yahoo.com",
    }
)

_CHART_PATH = "/v8/finance/chart/"


def is_yahoo_host(host: str) -> bool:
    """True for yahoo.com and its subdomains."""
    host = host.lower().rstrip(".")
    return host == "yahoo.com" or host.endswith(".yahoo.com")


class RedirectingSession(curl_requests.Session[curl_requests.Response]):
    """A curl_cffi session for yfinance; `endpoint` ("" = real Yahoo) receives all its traffic.

    Thread-safe as curl_cffi's Session is (one curl handle per thread, a shared cookie jar).
    When redirecting, a request for a host outside `YAHOO_HOSTS` is refused with `InvalidURL`
    instead of leaving for the real internet.
    """

    def __init__(
        self,
        endpoint: str = "",
        *,
        max_timeout_s: float = 10.0,
        throttle: YahooThrottle | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.max_timeout_s = max_timeout_s
        self.throttle = throttle
        self._target: tuple[str, int] | None = None
        self._status_local = threading.local()
        # A backstop for every answer, yfinance's own cookie, crumb and consent calls included
        # (our data requests have their own, smaller cap on the decompressed body): curl stops
        # a transfer past it, declared or not.
        curl_options: dict[Any, Any] = {CurlOpt.MAXFILESIZE_LARGE: MAX_ANSWER_BYTES}
        if self.endpoint:
            scheme, host, port = _parse_endpoint(self.endpoint)
            self._target = (scheme, port)
            address = _address_of(host)
            curl_options[CurlOpt.RESOLVE] = [f"{name}:{port}:{address}" for name in YAHOO_HOSTS]
        # trust_env=False when redirecting: a proxy from the environment must not swallow the
        # traffic meant for the endpoint. Against real Yahoo the environment's proxy applies.
        super().__init__(
            impersonate="chrome",
            trust_env=not self.endpoint,
            curl_options=curl_options,
        )

    def rewrite(self, url: str) -> str:
        """The URL actually requested: Yahoo URLs moved onto the endpoint's scheme and port."""
        if self._target is None:
            return url
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host not in YAHOO_HOSTS:
            raise InvalidURL(f"refusing to send {host or url!r} to the redirect endpoint")
        scheme, port = self._target
        return urlunsplit((scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))

    def request(self, method: Any, url: str, *args: Any, **kwargs: Any) -> curl_requests.Response:
        """Send one request (rewritten, timeout capped) and remember a chart answer's status."""
        target = self.rewrite(url)
        timeout = kwargs.get("timeout")
        if isinstance(timeout, int | float):
            kwargs["timeout"] = min(float(timeout), self.max_timeout_s)
        elif timeout is None:
            kwargs["timeout"] = self.max_timeout_s
        is_chart = _CHART_PATH in urlsplit(target).path
        if is_chart:
            self._status_local.chart_status = None
        throttle = self.throttle
        if throttle is not None:
            deadline_at_s = getattr(self._status_local, "deadline_at_s", None)
            if not throttle.acquire(deadline_at_s):
                raise TransientSourceError(
                    "yfinance: Yahoo's rate limit "
                    f"({throttle.rate_per_s:g} requests/s) leaves no room before the deadline"
                    + (" (Yahoo asked us to pause)" if throttle.paused_for_s() > 0 else "")
                )
        response = super().request(method, target, *args, **kwargs)
        if throttle is not None:
            if response.status_code == 429:
                throttle.on_rate_limited(response.headers.get("Retry-After"))
            else:
                throttle.on_answer()
        if is_chart:
            self._status_local.chart_status = int(response.status_code)
        return response

    @contextmanager
    def time_limit(self, seconds: float | None) -> Iterator[None]:
        """Within the block, this thread waits for a token at most `seconds` from now."""
        previous = getattr(self._status_local, "deadline_at_s", None)
        throttle = self.throttle
        at_s = None
        if seconds is not None and throttle is not None:
            at_s = throttle.now_s() + max(0.0, seconds)  # in the throttle's own clock
        self._status_local.deadline_at_s = at_s
        try:
            yield
        finally:
            self._status_local.deadline_at_s = previous

    def last_chart_status(self) -> int | None:
        """The HTTP status of this thread's last chart answer (None: none since the reset)."""
        status: int | None = getattr(self._status_local, "chart_status", None)
        return status

    def reset_chart_status(self) -> None:
        """Forget this thread's last chart status (call before each fetch)."""
        self._status_local.chart_status = None


def _parse_endpoint(endpoint: str) -> tuple[str, str, int]:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"YFINANCE_ENDPOINT {endpoint!r} is not an http(s) URL; use e.g. http://127.0.0.1:8802"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port


def _address_of(host: str) -> str:
    """CURLOPT_RESOLVE wants an address, not a name: resolve the endpoint's host once."""
    try:
        info = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"YFINANCE_ENDPOINT host {host!r} does not resolve: {exc}") from exc
    address = str(info[0][4][0])
    return f"[{address}]" if ":" in address else address
