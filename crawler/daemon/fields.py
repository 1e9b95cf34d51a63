"""A request's fields, checked for the types a route needs (the control API and the alert
routes alike): a field of the wrong type is a 400 BadRequest naming it.

    server.route("POST", "/fetch", checked(fetch))      # BadRequest → 400
    body = body_of(request, {"symbols", "fresh"})        # a JSON object, no unknown field
    fresh = flag(body, "fresh")
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from crawler.daemon.messages import Handler, Request, Response

__all__ = [
    "BadRequest",
    "body_of",
    "checked",
    "flag",
    "int_query",
    "optional_str",
    "required_str",
    "strings",
    "text",
]

#: The largest whole number a query parameter takes (SQLite's integers are 64-bit).
MAX_INT_QUERY = 2**63 - 1
_MAX_INT_DIGITS = len(str(MAX_INT_QUERY))


class BadRequest(Exception):
    """A request whose fields do not have the types the route needs."""


def checked(handler: Callable[[Request], Response]) -> Handler:
    """`handler` with BadRequest answered as a 400 naming the field."""

    def run(request: Request) -> Response:
        try:
            return handler(request)
        except BadRequest as exc:
            return Response.error(400, "BadRequest", str(exc))

    return run


def body_of(request: Request, allowed: Collection[str]) -> dict[str, Any]:
    """The body: a JSON object (none: {}) whose fields are all in `allowed`."""
    body = request.body
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise BadRequest(f"unknown field '{extra[0]}'; allowed: {', '.join(sorted(allowed))}")
    return body


def optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string or null, not {type(value).__name__}")
    return value


def required_str(body: dict[str, Any], name: str) -> str:
    value = optional_str(body, name)
    if value is None:
        raise BadRequest(f"'{name}' is required (a string)")
    return value


def text(body: dict[str, Any], name: str, *, number: bool = False) -> Any:
    """A string or null (`number`: a number is taken too, as the CLI's text would be)."""
    value = body.get(name)
    kinds: tuple[type, ...] = (str, int, float) if number else (str,)
    if value is None or (isinstance(value, kinds) and not isinstance(value, bool)):
        return value
    raise BadRequest(f"'{name}' must be a {'number or ' if number else ''}string or null")


def flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false, not {type(value).__name__}")
    return value


def strings(body: dict[str, Any], name: str, what: str, *, optional: bool = False) -> list[str]:
    """A list of strings (`optional`: missing or null is []); `what` names them in the
    refusal."""
    value = (body.get(name) or []) if optional else body.get(name)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"'{name}' must be a list of {what}")
    return value


def int_query(request: Request, name: str) -> int | None:
    """A whole number from the query string (missing or empty: None)."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise BadRequest(f"'{name}' must be a whole number, not {value!r}")
    # 10**30 overflowed SQLite's 64-bit integers: a 500 instead of this 400.
    if len(value) > _MAX_INT_DIGITS or int(value) > MAX_INT_QUERY:
        raise BadRequest(f"'{name}' must be at most {MAX_INT_QUERY}, not {value}")
    return int(value)
