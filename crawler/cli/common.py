"""What every command shares: the global options, loading the settings, reaching the daemon,
and the one rule for working on the data dir when no daemon answers (`via_daemon_or_offline`).

Imports only typer, the settings and the control client: this is on `crawler status`'s path
(the service layer, and pandas with it, is imported only when a command works offline).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar, cast

import typer

from crawler.cli.locate import Located, locate_daemon, location_is_explicit
from crawler.daemon.client import ControlClient
from crawler.utils.exceptions import DaemonNotRunningError
from crawler.utils.text import clean_data, clean_text

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.service.verbs import Operations

__all__ = [
    "CliState",
    "client_for",
    "daemon_location",
    "fail",
    "load",
    "no_data_dir",
    "note",
    "offline_operations",
    "state_of",
    "via_daemon_or_offline",
    "warn",
]  # fmt: skip

T = TypeVar("T")

#: Control requests that may run a fetch or a collection get this long before giving up.
SLOW_REQUEST_S = 300.0


@dataclass
class CliState:
    """The global options, kept on the Typer context."""

    debug: bool = False
    config: Path | None = None


def state_of(ctx: typer.Context) -> CliState:
    """The CliState of the root command (a fresh default one if there is none)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def load(
    ctx: typer.Context, overrides: dict[str, Any] | None = None, config: Path | None = None
) -> Settings:
    """The effective settings (ConfigError, exit 2, for a bad value)."""
    from crawler.config import load_settings, set_settings

    named = config or state_of(ctx).config
    settings = load_settings(overrides, config_file=named)
    set_settings(settings)
    _EXPLICIT[0] = named is not None
    _LOCATED.clear()
    return settings


#: Whether the last `load()` was given a config file by --config (then no other daemon is
#: looked for); and the daemon found for it, looked up once per command.
_EXPLICIT = [False]
_LOCATED: dict[Path, Located] = {}


def daemon_location(settings: Settings) -> Located:
    """Which socket the commands talk to (`crawler.cli.locate`): the configured one, or, when
    nothing named a place and nothing answers there, the one daemon running elsewhere; a
    note on stderr says so once."""
    configured = settings.socket_path
    if configured not in _LOCATED:
        found = locate_daemon(configured, location_is_explicit(_EXPLICIT[0]))
        _LOCATED[configured] = found
        if found.elsewhere:
            note(f"no daemon at {configured}; using the one running at {found.socket}")
    return _LOCATED[configured]


def client_for(
    settings: Settings, timeout_s: float = SLOW_REQUEST_S, *, locate: bool = True
) -> ControlClient:
    """A client for the daemon's control socket (the one found, unless `locate` is False:
    then exactly the configured one, as `crawler start` needs)."""
    path = daemon_location(settings).socket if locate else settings.socket_path
    return _CleanClient(path, timeout_s=timeout_s)


class _CleanClient(ControlClient):
    """A ControlClient whose answers hold no escape sequence or control character: whatever
    the daemon says (names, errors quoting upstream text) may be printed on a terminal."""

    def request(
        self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        status, answer = super().request(method, path, body, query)
        return status, clean_data(answer)


def warn(message: str) -> None:
    """One line on stderr, prefixed "error: "."""
    sys.stderr.write(f"error: {clean_text(message)}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """One line on stderr, prefixed "note: " (something the user should know, not an error)."""
    sys.stderr.write(f"note: {clean_text(message)}\n")
    sys.stderr.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    """One error line on stderr, then exit with `code`."""
    warn(message)
    raise typer.Exit(code)


def no_data_dir(settings: Settings, exc: DaemonNotRunningError) -> DaemonNotRunningError:
    """What a command that only reads says with no daemon and no data dir (exit 3): where it
    looked, instead of an empty answer from a directory it would have just created."""
    return DaemonNotRunningError(
        f"{exc.message.partition(';')[0]}, and there is no data dir at "
        f"{settings.data_dir}; start the daemon (`crawler start`), or point DATA_DIR "
        "or CRAWLER_SOCKET at yours"
    )


class Closable(Protocol):
    """What a command works on without a daemon (`Operations`, `AlertService`): closed after."""

    def close(self) -> None:
        """Release its stores."""


C = TypeVar("C", bound=Closable)


def via_daemon_or_offline(
    settings: Settings,
    remote: Callable[[], T],
    local: Callable[[C], T],
    offline: Callable[[Settings], C],
    *,
    creates: bool = True,
    redis_holds_data: bool = False,
    clean: bool = False,
) -> T:
    """`remote()` if a daemon answers, else `local(offline(settings))` on the data dir, closed
    after.

    A command that only reads or removes (`creates` False) never makes a data dir: with none
    there it says no daemon answers and where it looked (exit 3), instead of an empty answer
    from a directory it has just created; where `redis_holds_data`, a configured Redis (the
    cluster's store) is enough. With `clean`, the answer loses escape sequences and control
    characters (stored rows may predate the normalizers that clean them)."""
    tidy: Callable[[Any], Any] = clean_data if clean else _as_is
    try:
        return cast(T, tidy(remote()))
    except DaemonNotRunningError as exc:
        in_redis = redis_holds_data and settings.redis_url is not None
        if not creates and not in_redis and not Path(settings.data_dir).exists():
            raise no_data_dir(settings, exc) from None
    with contextlib.closing(offline(settings)) as backend:
        return cast(T, tidy(local(backend)))


def offline_operations(settings: Settings) -> Operations:
    """The verbs on the data dir, for when no daemon answers (imported only then: pandas)."""
    from crawler.service.verbs import Operations

    return Operations.offline(settings)


def _as_is(value: Any) -> Any:
    return value
