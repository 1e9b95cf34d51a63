"""The control API's route table: `(method, path)` → handler, each route served under the API
version prefix (`/v1/status`) and at its old unversioned path (`/status`, answered with a
`Deprecation: true` header); `GET /v1/ping` is built in.

    routes = RouteTable()
    routes.add("DELETE", "/symbols/{symbol}", remove_symbol)   # request.path_params["symbol"]
    handler, params = routes.match("DELETE", ["v1", "symbols", "AAPL:US"])   # or Problem 404/405
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from crawler.daemon.messages import API_PREFIX, API_VERSION, Handler, Problem, Request, Response

__all__ = ["RouteTable"]


class RouteTable:
    """The routes of one control server (see the module docstring)."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self.add("GET", "/ping", _ping)

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Answer `method` on `/v1{path}` (and `path`) with `handler`; `{name}` segments become
        path_params. A `path` given with the `/v1` prefix means the same route.

        A literal segment wins over a parameter, so "/symbols/count" and "/symbols/{symbol}"
        can coexist.
        """
        method = method.upper()
        if not method.isalpha():
            raise ValueError(f"bad HTTP method: {method!r}")
        if path.startswith(API_PREFIX + "/"):
            path = path.removeprefix(API_PREFIX)
        versioned = _compile_path(API_PREFIX + path)
        if any(r.method == method and r.segments == versioned for r in self._routes):
            raise ValueError(f"route {method} {path} is already registered")
        self._routes.append(_Route(method, versioned, handler))
        self._routes.append(_Route(method, _compile_path(path), _deprecated(handler)))

    def match(self, method: str, segments: list[str]) -> tuple[Handler, dict[str, str]]:
        """The handler for `method` on the decoded `segments`, or a 404/405 problem."""
        matches = [
            (route, params)
            for route in self._routes
            if (params := route.match(segments)) is not None
        ]
        if not matches:
            raise Problem(404, "no such path: /" + "/".join(segments))
        for_method = [(r, p) for r, p in matches if r.method == method]
        if not for_method:
            allowed = ", ".join(sorted({r.method for r, _ in matches}))
            raise Problem(
                405, f"{method} is not allowed here; use {allowed}", headers={"Allow": allowed}
            )
        route, params = min(for_method, key=lambda pair: pair[0].param_count)
        return route.handler, params


class _Route(NamedTuple):
    method: str
    segments: tuple[str, ...]  # a literal, or "{name}" for a parameter
    handler: Handler

    @property
    def param_count(self) -> int:
        return sum(1 for segment in self.segments if _is_param(segment))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for pattern, value in zip(self.segments, segments, strict=True):
            if _is_param(pattern):
                if not value:
                    return None
                params[pattern[1:-1]] = value
            elif pattern != value:
                return None
        return params


def _is_param(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _compile_path(path: str) -> tuple[str, ...]:
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/': {path!r}")
    segments = tuple(path.split("/")[1:])
    for segment in segments:
        if _is_param(segment):
            if not segment[1:-1].isidentifier():
                raise ValueError(f"route parameter must be {{identifier}}: {segment!r} in {path!r}")
        elif "{" in segment or "}" in segment:
            raise ValueError(f"a parameter must be a whole segment: {segment!r} in {path!r}")
    return segments


def _ping(request: Request) -> Response:
    return Response(body={"pong": True, "api_version": API_VERSION})


def _deprecated(handler: Handler) -> Handler:
    """`handler` for an unversioned alias: the same answer, marked deprecated (RFC 9745)."""

    def alias(request: Request) -> Response:
        response = handler(request)
        return replace(response, headers={**response.headers, "Deprecation": "true"})

    return alias
