"""Which daemon the CLI talks to.

The order, first answer wins:

1. the socket the settings name: CRAWLER_SOCKET, `[daemon] socket` of the config file, else
   the default (`$XDG_RUNTIME_DIR/crawler/crawler.sock`, else `<data_dir>/crawler.sock`);
2. when the location was *not* named (no CRAWLER_SOCKET, DATA_DIR, CRAWLER_CONFIG or
   `--config`): a daemon this user started anywhere (each records itself,
   `crawler.daemon.registry`), when exactly one answers;
3. the same way, the systemd unit's socket, /run/crawler/crawler.sock.

So `crawler status` in any directory finds the daemon `make run` started in the checkout,
and root's CLI finds the system service, while a named socket or data dir is never swapped
for another. With nothing answering, the commands that work offline use the configured data
dir. Standard library only: `crawler status` runs this on its quick path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from crawler.daemon.registry import SYSTEM_SOCKET, running_daemons, socket_answers

__all__ = ["EXPLICIT_VARIABLES", "Located", "locate_daemon", "location_is_explicit"]

#: Environment variables that name where the daemon is: with one set, nothing else is tried.
EXPLICIT_VARIABLES = ("CRAWLER_SOCKET", "DATA_DIR", "CRAWLER_CONFIG")


@dataclass(frozen=True)
class Located:
    """The socket to use, and how it was found."""

    socket: Path
    #: "configured", "recorded" (a daemon this user started elsewhere) or "system".
    how: str
    #: The data dir of a recorded daemon (its log is there), else None.
    data_dir: Path | None = None

    @property
    def elsewhere(self) -> bool:
        """True when the daemon is not the configured one (the CLI says so on stderr)."""
        return self.how != "configured"


def location_is_explicit(config_given: bool = False) -> bool:
    """Whether the user named the daemon's place (then only that place is tried)."""
    return config_given or any(os.environ.get(name) for name in EXPLICIT_VARIABLES)


def locate_daemon(configured: Path, explicit: bool) -> Located:
    """Where to find the daemon (see the module's docstring); `configured` when none answers."""
    if explicit or socket_answers(configured):
        return Located(configured, "configured")
    records = [r for r in running_daemons() if r.socket != configured]
    if len(records) == 1:
        return Located(records[0].socket, "recorded", records[0].data_dir)
    if not records and configured != SYSTEM_SOCKET and socket_answers(SYSTEM_SOCKET):
        return Located(SYSTEM_SOCKET, "system")
    return Located(configured, "configured")
