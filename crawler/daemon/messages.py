"""What handlers see and return: `Request`, `Response`, `Handler`, and errors as statuses.

A handler raising a `CrawlerError` is answered with the status from `ERROR_STATUS` (the nearest
class in the MRO wins) and the JSON error shape every failure uses::

    {"error": {"type": "SymbolError", "message": "..."}}

BudgetExhaustedError maps to 429 (the caller asked for more than today's quota allows; the daemon
itself is healthy), CircuitBreakerError to 503 (a temporary refusal, retry later). Protocol
errors (`Problem`, raised while parsing) get the stable names of `ERROR_TYPE_BY_STATUS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from crawler.utils.exceptions import (
    APIError,
    BudgetExhaustedError,
    CircuitBreakerError,
    ConfigError,
    CrawlerError,
    DaemonError,
    SymbolError,
)

__all__ = [
    "API_PREFIX",
    "API_VERSION",
    "API_VERSION_HEADER",
    "ERROR_STATUS",
    "ERROR_TYPE_BY_STATUS",
    "INTERNAL_ERROR",
    "Handler",
    "Problem",
    "Request",
    "Response",
    "status_for_error",
]

API_VERSION = 1
"""The control API's version: routes live under `API_PREFIX`; an incompatible change bumps it."""
API_PREFIX = f"/v{API_VERSION}"
#: Every answer carries the API version (`GET /v1/ping` is the cheap way to read it).
API_VERSION_HEADER = "Crawler-Api-Version"

ERROR_STATUS: Mapping[type[CrawlerError], int] = MappingProxyType(
    {
        ConfigError: 400,
        SymbolError: 400,
        BudgetExhaustedError: 429,
        CircuitBreakerError: 503,
        APIError: 502,
        DaemonError: 503,
        CrawlerError: 500,
    }
)
"""HTTP status for each CrawlerError class; the nearest class in the MRO wins."""

# Protocol errors get stable type names (HTTPStatus phrases changed between Python versions).
ERROR_TYPE_BY_STATUS: Mapping[int, str] = MappingProxyType(
    {
        400: "BadRequest",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        408: "RequestTimeout",
        411: "LengthRequired",
        413: "PayloadTooLarge",
        414: "URITooLong",
        431: "HeaderFieldsTooLarge",
        500: "InternalError",
        501: "NotImplemented",
        503: "ServiceUnavailable",
        505: "HTTPVersionNotSupported",
    }
)


def status_for_error(error: CrawlerError) -> int:
    """The HTTP status a handler's `error` is answered with (see `ERROR_STATUS`)."""
    for cls in type(error).__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return int(status)
    return 500


@dataclass(frozen=True)
class Request:
    """One parsed request, as a handler sees it.

    `path` is the path as sent (still percent-encoded, without the query); `path_params` and
    `query` are decoded (first value wins for a repeated query key). `body` is the parsed JSON
    body, None when the request had none. `headers` has lower-cased names.
    """

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    peer_uid: int
    peer_pid: int
    path_params: dict[str, str] = field(default_factory=dict)
    raw_body: bytes = b""


@dataclass(frozen=True)
class Response:
    """What a handler returns: a JSON `body`, or `text`, or a `stream` of bytes.

    `content_type` defaults to application/json for `body`, text/plain; charset=utf-8 for `text`
    (the Prometheus exposition wants "text/plain; version=0.0.4; charset=utf-8") and
    application/octet-stream for `stream`. A stream is sent with chunked transfer coding (to
    HTTP/1.0 clients: raw, then the connection closes); if it raises half-way the connection is
    cut without the final chunk, so the client sees a truncated answer rather than a short one.
    """

    status: int = 200
    body: Any = None
    content_type: str | None = None
    text: str | None = None
    stream: Iterable[bytes] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = [name for name in ("text", "stream") if getattr(self, name) is not None]
        if len(given) > 1 or (given and self.body is not None):
            raise ValueError("a Response carries one of body, text or stream, not several")
        if not 100 <= self.status <= 599:
            raise ValueError(f"HTTP status must be 100-599, not {self.status}")

    @classmethod
    def error(cls, status: int, error_type: str, message: str) -> Response:
        """The JSON error shape every failure uses: {"error": {"type": ..., "message": ...}}."""
        return cls(status=status, body={"error": {"type": error_type, "message": message}})


Handler = Callable[[Request], Response]

INTERNAL_ERROR = Response.error(500, "InternalError", "internal error; see the daemon log")


class Problem(Exception):
    """A request we answer with an error before (or instead of) calling a handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        close: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = dict(headers or {})
