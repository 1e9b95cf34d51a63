"""The node's heartbeat: "I am alive, and this is my last collection", every few seconds.

    heartbeat = Heartbeat(stores.nodes, describe=lambda: {...}, version=lambda: last_report)
    heartbeat.start()     # beats now, then every interval and whenever version() changes
    heartbeat.stop()      # withdraws the node at once

Each beat writes the node's record with an expiry of `MISSED_BEATS` intervals, so a node that
dies (even by kill -9) leaves `crawler status` within half a minute. A beat that fails (Redis
away) is logged once per outage and retried at the next interval: heartbeats never stop a node.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Final

from crawler.logging import get_logger
from crawler.store.nodes import NodeRegistry
from crawler.utils.exceptions import StorageError

__all__ = ["HEARTBEAT_S", "MISSED_BEATS", "Heartbeat"]

log = get_logger("crawler.daemon")

#: Seconds between two beats.
HEARTBEAT_S: Final = 10.0
#: A node is listed until it has missed this many beats.
MISSED_BEATS: Final = 3
#: How often `version()` is looked at: a finished collection shows in status this soon.
_CHECK_S: Final = 0.5


class Heartbeat:
    """Beats `registry` with `describe()`'s record on a daemon thread."""

    def __init__(
        self,
        registry: NodeRegistry,
        describe: Callable[[], dict[str, Any]],
        interval_s: float = HEARTBEAT_S,
        version: Callable[[], object] = lambda: None,
    ) -> None:
        self.registry = registry
        self._describe = describe
        self._version = version
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.beats = 0

    def beat(self) -> bool:
        """One beat now; False (logged once per outage) if the registry is unreachable."""
        try:
            self.registry.beat(self._describe(), ttl_s=self.interval_s * MISSED_BEATS)
        except StorageError as exc:
            if not self._failing:
                log.warning("heartbeat failed", retry_s=self.interval_s, error=exc.message)
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat restored")
        self._failing = False
        self.beats += 1
        return True

    def start(self) -> None:
        """Beat now, then every `interval_s` until `stop()`."""
        self.beat()
        self._thread = threading.Thread(target=self._run, name="crawler-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and withdraw the node (a clean stop is not a dead node)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(StorageError):  # it expires by itself
            self.registry.forget()

    def _run(self) -> None:
        seen = self._version()
        waited_s = 0.0
        while not self._stop.wait(_CHECK_S):
            waited_s += _CHECK_S
            current = self._version()
            if current is not seen or waited_s >= self.interval_s:
                seen, waited_s = current, 0.0
                self.beat()
