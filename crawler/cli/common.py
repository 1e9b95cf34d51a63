"""What every command shares: the global options, loading the settings, reaching the daemon.

Imports only typer, the settings and the control client: this is on `crawler status`'s path.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from crawler.daemon.client import ControlClient

if TYPE_CHECKING:
    from crawler.config import Settings

__all__ = ["CliState", "client_for", "fail", "load", "note", "state_of", "warn"]

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

    settings = load_settings(overrides, config_file=config or state_of(ctx).config)
    set_settings(settings)
    return settings


def client_for(settings: Settings, timeout_s: float = SLOW_REQUEST_S) -> ControlClient:
    """A client for the daemon's control socket."""
    return ControlClient(settings.socket_path, timeout_s=timeout_s)


def warn(message: str) -> None:
    """One line on stderr, prefixed "error: "."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """One line on stderr, prefixed "note: " (something the user should know, not an error)."""
    sys.stderr.write(f"note: {message}\n")
    sys.stderr.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    """One error line on stderr, then exit with `code`."""
    warn(message)
    raise typer.Exit(code)
