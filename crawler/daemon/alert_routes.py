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

from crawler.alerts.service import AlertService, parse_alert_id
from crawler.daemon.control_server import ControlServer, Request, Response
from crawler.daemon.fields import BadRequest, body_of, checked, strings, text

__all__ = ["register_alert_routes"]

_ADD_FIELDS = frozenset({"kind", "symbol", "threshold", "duration", "basis", "notify"})
_URLS = "URL strings"


def register_alert_routes(server: ControlServer, service: AlertService) -> None:
    """Register the alert routes on `server`."""

    def list_alerts(request: Request) -> Response:
        return Response(body=service.list())

    def add_alert(request: Request) -> Response:
        body = body_of(request, _ADD_FIELDS)
        kind = text(body, "kind")
        if kind is None:
            raise BadRequest("'kind' is required: above, below, move, stale or budget")
        answer = service.add(
            kind=kind,
            symbol=text(body, "symbol"),
            threshold=text(body, "threshold", number=True),
            duration=text(body, "duration", number=True),
            basis=text(body, "basis"),
            notify=strings(body, "notify", _URLS, optional=True),
        )
        return Response(status=201, body=answer)

    def remove_alert(request: Request) -> Response:
        rule_id = parse_alert_id(request.path_params["id"])
        answer = service.remove(rule_id)
        if not answer["removed"]:
            return Response.error(404, "UnknownAlert", f"there is no alert {rule_id}")
        return Response(body=answer)

    def test_alert(request: Request) -> Response:
        body = body_of(request, {"notify"})
        return Response(body=service.test(strings(body, "notify", _URLS, optional=True)))

    server.route("GET", "/alerts", checked(list_alerts))
    server.route("POST", "/alerts", checked(add_alert))
    server.route("DELETE", "/alerts/{id}", checked(remove_alert))
    server.route("POST", "/alerts/test", checked(test_alert))
