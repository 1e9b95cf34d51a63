"""The control API of alerts (under `/v1`), each route one `AlertService` call:

    GET    /alerts                      {"alerts": [...]}: rules, states, notify URLs masked
    POST   /alerts       {"kind": "above", "symbol": "AAPL:US", "threshold": "200",
                          "duration": null, "basis": null, "notify": ["ntfy://..."]}
                                        201 {"alert": {...}, "notices"?: [...]}
    DELETE /alerts/{id}                 200 {"id", "removed": true}; 404 UnknownAlert
    POST   /alerts/test  {"notify": [...]}   a test notice now: {"targets": [...], "event"}

A field of the wrong type is a 400 BadRequest naming it; a bad value (kind, price, duration,
notify URL) a 400 UsageError or SymbolError with the same one line the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crawler.alerts.service import AlertService, parse_alert_id
from crawler.daemon.control_server import ControlServer, Request, Response

__all__ = ["register_alert_routes"]

_ADD_FIELDS = frozenset({"kind", "symbol", "threshold", "duration", "basis", "notify"})


class _BadRequest(Exception):
    """A body whose fields do not have the types the route needs."""


def _body(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    body = request.body
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    extra = sorted(set(body) - allowed)
    if extra:
        raise _BadRequest(f"unknown field '{extra[0]}'; allowed: {', '.join(sorted(allowed))}")
    return body


def _text(body: dict[str, Any], name: str, *, number: bool = False) -> Any:
    value = body.get(name)
    kinds: tuple[type, ...] = (str, int, float) if number else (str,)
    if value is None or (isinstance(value, kinds) and not isinstance(value, bool)):
        return value
    raise _BadRequest(f"'{name}' must be a {'number or ' if number else ''}string or null")


def _urls(body: dict[str, Any]) -> list[str]:
    value = body.get("notify") or []
    if not isinstance(value, list) or not all(isinstance(url, str) for url in value):
        raise _BadRequest("'notify' must be a list of URL strings")
    return value


def _checked(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
    def run(request: Request) -> Response:
        try:
            return handler(request)
        except _BadRequest as exc:
            return Response.error(400, "BadRequest", str(exc))

    return run


def register_alert_routes(server: ControlServer, service: AlertService) -> None:
    """Register the alert routes on `server`."""

    def list_alerts(request: Request) -> Response:
        return Response(body=service.list())

    def add_alert(request: Request) -> Response:
        body = _body(request, _ADD_FIELDS)
        kind = _text(body, "kind")
        if kind is None:
            raise _BadRequest("'kind' is required: above, below, move, stale or budget")
        answer = service.add(
            kind=kind,
            symbol=_text(body, "symbol"),
            threshold=_text(body, "threshold", number=True),
            duration=_text(body, "duration", number=True),
            basis=_text(body, "basis"),
            notify=_urls(body),
        )
        return Response(status=201, body=answer)

    def remove_alert(request: Request) -> Response:
        rule_id = parse_alert_id(request.path_params["id"])
        answer = service.remove(rule_id)
        if not answer["removed"]:
            return Response.error(404, "UnknownAlert", f"there is no alert {rule_id}")
        return Response(body=answer)

    def test_alert(request: Request) -> Response:
        body = _body(request, frozenset({"notify"}))
        return Response(body=service.test(_urls(body)))

    server.route("GET", "/alerts", _checked(list_alerts))
    server.route("POST", "/alerts", _checked(add_alert))
    server.route("DELETE", "/alerts/{id}", _checked(remove_alert))
    server.route("POST", "/alerts/test", _checked(test_alert))
