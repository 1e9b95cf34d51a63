"""sd_notify by hand: tell systemd we are ready, what we are doing, that we are alive.

    notifier = SystemdNotifier()
    notifier.ready("watching 12 symbols")
    period_s = notifier.watchdog_interval_s()     # None when WatchdogSec= is off
    ...  every period_s: notifier.watchdog()
    notifier.stopping()

The protocol is one datagram of "KEY=value" lines to the AF_UNIX socket named by
$NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). Outside systemd the variable is
unset and every call is a no-op. A failed send is logged at debug and never raised: systemd's
opinion of us must not take the daemon down.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from crawler.logging import get_logger

__all__ = ["SystemdNotifier"]

logger = get_logger("crawler.notify")


class SystemdNotifier:
    """Sends sd_notify messages to $NOTIFY_SOCKET; does nothing when it is unset."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._env = env
        self._address = self._parse_address(env.get("NOTIFY_SOCKET", ""))

    @staticmethod
    def _parse_address(value: str) -> str | None:
        if value.startswith("/"):
            return value
        if value.startswith("@") and len(value) > 1:
            return "\0" + value[1:]  # Linux abstract namespace: a leading NUL, no file
        if value:
            # systemd also knows vsock: addresses; a VM guest daemon is not our case.
            logger.debug("NOTIFY_SOCKET is not a Unix socket address; not notifying", value=value)
        return None

    @property
    def enabled(self) -> bool:
        """Whether systemd is listening (NOTIFY_SOCKET is set to a Unix socket)."""
        return self._address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send `fields` as KEY=value lines (notify(READY=1, STATUS="up")); True if sent."""
        if self._address is None or not fields:
            return False
        # A newline inside a value would start a new (bogus) assignment.
        lines = [f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()]
        message = "\n".join(lines).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(1.0)  # a datagram send does not block for long, but be sure
                sock.sendto(message, self._address)
        except OSError as exc:
            logger.debug("sd_notify failed", fields=",".join(fields), error=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (systemd's Type=notify start-up is complete), with an optional STATUS."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """STATUS=text: the one line `systemctl status` shows."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """WATCHDOG=1: we are alive; send every `watchdog_interval_s()` seconds."""
        return self.notify(WATCHDOG=1)

    def stopping(self) -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.notify(STOPPING=1)

    def watchdog_interval_s(self) -> float | None:
        """How often to call `watchdog()`: half of WATCHDOG_USEC, or None if off or not ours.

        Half, as sd_watchdog_enabled(3) recommends, so one late ping does not get us killed.
        WATCHDOG_PID, when set, must be this process: a child inheriting the environment must
        not ping on its parent's behalf.
        """
        raw_usec = self._env.get("WATCHDOG_USEC", "").strip()
        if not raw_usec:
            return None
        raw_pid = self._env.get("WATCHDOG_PID", "").strip()
        if raw_pid and (not raw_pid.isdigit() or int(raw_pid) != os.getpid()):
            return None
        if not raw_usec.isdigit() or len(raw_usec) > 19 or int(raw_usec) == 0:
            logger.debug("ignoring WATCHDOG_USEC: not a positive integer", value=raw_usec)
            return None
        return int(raw_usec) / 1_000_000 / 2
