"""Reloading the configuration in a running daemon: `crawler reload`, SIGHUP, `POST /v1/reload`.

    plan = plan_reload(old_settings, new_settings)
    plan.live       # ["total_budget", "update_interval_seconds"]: applied without a restart
    plan.restart    # ["metrics_port"]: changed in the file, applied at the next start

What changes live (`LIVE_SETTINGS`): the collection interval and its jitter, the daily budget
and the cost per request, market-hours skipping, the log level and the sources' order. Anything
else (data dir, socket, metrics port, Redis, Bright Data key/zone/endpoint, Yahoo endpoint,
workers, timeouts, cache TTL, budget time zone, log format) needs a restart, and a reload that
finds one of those changed says so in one line. A configuration that does not validate is
refused as a whole: the daemon keeps running on the settings it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crawler.daemon.control_server import ControlServer, Request, Response

if TYPE_CHECKING:
    from crawler.config import Settings

__all__ = ["LIVE_SETTINGS", "ReloadPlan", "plan_reload", "register_reload_route"]

#: The settings a reload applies to the running daemon.
LIVE_SETTINGS: tuple[str, ...] = (
    "update_interval_seconds",
    "collection_jitter_seconds",
    "total_budget",
    "cost_per_request",
    "market_hours_enabled",
    "log_level",
    "sources_order",
)
#: Not configuration: where the settings came from.
# major_units is the CLI's (each command reads it): nothing in the daemon to apply or restart.
_IGNORED = frozenset({"config_file", "major_units"})


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload changes: `live` is applied now, `restart` only at the next start."""

    live: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    shown: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {old, new}, masked

    @property
    def restart_line(self) -> str | None:
        """One line naming what cannot change live, or None when nothing like that changed."""
        if not self.restart:
            return None
        return (
            f"changed but not applied until a restart: {', '.join(self.restart)} "
            "(crawler stop && crawler start, or systemctl restart crawler)"
        )

    def as_dict(self) -> dict[str, Any]:
        """The answer of `POST /v1/reload` (secrets masked)."""
        return {
            "applied": self.live,
            "restart_needed": self.restart,
            "changed": self.shown,
            "message": self.restart_line,
        }


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    """Which settings differ between `old` and `new`, split into live and restart-only."""
    old_values, new_values = old.model_dump(), new.model_dump()
    old_public, new_public = old.public_dict(), new.public_dict()
    changed = [
        name
        for name in new_values
        if name not in _IGNORED and old_values.get(name) != new_values[name]
    ]
    shown = {
        name: {"old": _jsonable(old_public.get(name)), "new": _jsonable(new_public.get(name))}
        for name in changed
    }
    return ReloadPlan(
        live=[name for name in changed if name in LIVE_SETTINGS],
        restart=[name for name in changed if name not in LIVE_SETTINGS],
        shown=shown,
    )


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return str(value)


def register_reload_route(server: ControlServer, reload: Callable[[], ReloadPlan]) -> None:
    """`POST /v1/reload`: re-read the configuration; 200 with the plan, 400 ConfigError if
    the new configuration does not validate (nothing is changed then)."""

    def answer(request: Request) -> Response:
        return Response(body=reload().as_dict())

    server.route("POST", "/reload", answer)
