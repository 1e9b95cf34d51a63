"""The daemon: a node (`crawler.node.build_node`: the stores, the sources, the scheduler, the
live feed, the alerts) behind the control socket, and the process lifecycle around it.

    daemon = Daemon(load_settings())
    exit_code = daemon.run_foreground()   # blocks until SIGTERM / SIGINT / POST /stop
    report = Daemon(settings).run_once()  # burst: each job once, then return

Start-up order: take the pidfile (refuse a second daemon), build everything, open the control
socket, start the scheduler, and only then tell systemd READY=1 with a one-line STATUS.

Reload (SIGHUP, `crawler reload`, `POST /v1/reload`) re-reads the configuration: the signal
handler sets a flag, the main thread reopens the detached daemon's log file (logrotate) and
applies what can change live (see `crawler.daemon.reload`).

Shutdown has one path whatever asked for it (SIGTERM, SIGINT, POST /stop): the signal handler
sets a flag, the route an Event (huey style); the main thread, polling both every 0.1 s, then
sends STOPPING=1, closes the control socket, stops the heartbeat, closes the node (its
scheduler gives a running collection `crawler.node.SCHEDULER_STOP_S` to finish, releasing the
sources is bounded too) and removes the pidfile: well within systemd's stop timeout and our own
10 s promise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from crawler.daemon.notify import SystemdNotifier
from crawler.daemon.process import PIDFILE_NAME, PidFile
from crawler.logging import get_logger
from crawler.store.datadir import ensure_data_dir
from crawler.utils.exceptions import DaemonAlreadyRunningError, DaemonError

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.daemon.control_server import ControlServer
    from crawler.daemon.heartbeat import Heartbeat
    from crawler.daemon.metrics_port import MetricsHTTPServer
    from crawler.daemon.reload import ReloadPlan
    from crawler.node import DaemonParts, Node
    from crawler.orchestrator.scheduler import DataScheduler
    from crawler.service.metrics import MetricsRecorder
    from crawler.service.verbs import Operations
    from crawler.store.nodes import NodeRegistry

__all__ = ["GROUND_CHECK_S", "Daemon"]

log = get_logger("crawler.daemon")

#: Seconds between checks that the data dir, pidfile and socket are still ours.
GROUND_CHECK_S = 2.0
#: Signals that mean nothing to the daemon: ignored on purpose (logged), never fatal.
_IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
_CONTROL_STOP_S = 2.0
#: How often STATUS= is refreshed while running.
_STATUS_REFRESH_S = 30.0
#: How often the main loop looks at the signal flag: the latency of a SIGTERM.
_TICK_S = 0.1


class Daemon:
    """One crawler daemon over `settings`. Build it, then `run_foreground()` or `run_once()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        notifier: SystemdNotifier | None = None,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        """`reload_settings` reads the configuration again for a reload (the CLI passes one
        that keeps its command-line flags); by default the same config file is re-read."""
        self.settings = settings
        self._reload_settings = reload_settings or (lambda: _reread(settings))
        self._reload_requested = False
        self._reload_lock = threading.Lock()
        self.data_dir = ensure_data_dir(Path(settings.data_dir))
        self.socket_path: Path = settings.socket_path
        self.pidfile = PidFile(self.data_dir / PIDFILE_NAME)
        self.notifier = notifier or SystemdNotifier()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._signal_name: str | None = None
        self._ignored_signal: str | None = None
        self._exit_code = 0
        self._ground: dict[str, tuple[int, int]] = {}
        self.started_at: datetime | None = None
        #: What `crawler.node.build_node` built (it owns and closes it); None until started.
        self.node: Node | None = None
        self.operations: Operations | None = None
        self.metrics: MetricsRecorder | None = None
        # What the daemon itself starts around the node, and stops before closing it.
        self.server: ControlServer | None = None
        self.metrics_server: MetricsHTTPServer | None = None
        self.heartbeat: Heartbeat | None = None

    # -- wiring ------------------------------------------------------------------------------

    def _build(self, *, with_heartbeat: bool) -> DaemonParts:
        """The node (`crawler.node`: it owns and closes what it builds) and the verbs over it."""
        from crawler.node import Hooks, build_node
        from crawler.service.metrics import MetricsRecorder
        from crawler.service.verbs import Operations

        self.started_at = datetime.now(UTC)
        metrics = self.metrics = MetricsRecorder()
        watchdog_s = self.notifier.watchdog_interval_s() if with_heartbeat else None
        hooks = Hooks(metrics, watchdog=self._watchdog, watchdog_interval_s=watchdog_s)
        node = self.node = build_node(self.settings, daemon=hooks)
        parts = node.daemon
        assert parts is not None
        self.operations = Operations(
            self.settings,
            hybrid=node.hybrid,
            watchlist=node.watchlist,
            history=node.history,
            scheduler=parts.scheduler,
            market_hours=node.market_hours,
            started_at=self.started_at,
            socket_path=self.socket_path,
            metrics=metrics,
        )
        return parts

    def _preload_calendars(self) -> None:
        """Build the watchlist's exchange calendars and load the last-known quotes off the
        main thread, so the first `status` and the first collection do not pay for them."""
        if self.node is None:
            return
        hours, cache = self.node.market_hours, self.node.hybrid.cache
        markets = sorted(
            {hours.market_of(name, asset) for name, asset in self.node.watchlist.items()}
        )

        def preload() -> None:
            try:
                hours.preload(markets)
            except Exception:  # a calendar problem shows up per symbol in status instead
                log.exception("preloading market calendars failed")
            # The last-known quotes status draws from memory: read them from disk now.
            warm = getattr(cache, "last_known_many", None)
            if callable(warm):
                try:
                    warm(())
                except Exception:  # status reads them itself, and reports a storage error
                    log.exception("loading the last-known quotes failed")

        threading.Thread(target=preload, name="crawler-calendars", daemon=True).start()

    def _node_record(self) -> dict[str, Any]:
        """What this node's heartbeat says about it (for `crawler status` on every node)."""
        parts = self.node.daemon if self.node is not None else None
        report = parts.scheduler.last_report if parts is not None else None
        last = report.as_dict() if report is not None else None
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "last_collection": _collection_summary(last),
        }

    def _start_heartbeat(self, nodes: NodeRegistry, scheduler: DataScheduler) -> None:
        from crawler.daemon.heartbeat import Heartbeat

        self.heartbeat = Heartbeat(nodes, self._node_record, version=lambda: scheduler.last_report)
        self.heartbeat.start()

    def _watchdog(self) -> None:
        self.notifier.watchdog()

    # -- lifecycle ---------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Begin the shutdown (from a route or another thread). Only sets an Event."""
        if not self._stop.is_set():
            self._stop_reason = reason
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """Whether a shutdown has been requested (by a signal, a route or a test)."""
        return self._stop.is_set() or self._signal_name is not None

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        # A plain assignment, like `_on_signal`: the main loop does the reload.
        self._reload_requested = True

    def reload(self) -> ReloadPlan:
        """Re-read the configuration and apply what can change live; ConfigError (nothing
        changed) when it does not validate. What needs a restart is named in one log line."""
        from crawler.daemon.reload import plan_reload
        from crawler.logging import set_log_level

        with self._reload_lock:
            new = self._reload_settings()
            plan = plan_reload(self.settings, new)
            node = self.node
            if plan.live and node is not None and node.daemon is not None:
                effective = self.settings.model_copy(
                    update={name: getattr(new, name) for name in plan.live}
                )
                node.apply_settings(effective, plan.live)
                if self.operations is not None:
                    self.operations.settings = effective
                if "log_level" in plan.live:
                    set_log_level(effective.log_level)
                self.settings = effective
            log.info("configuration reloaded", applied=plan.live, restart_needed=plan.restart)
            if plan.restart_line is not None:
                log.warning(f"reload: {plan.restart_line}")  # the one line an operator reads
            return plan

    def _reload_on_signal(self) -> None:
        from crawler.daemon.process import reopen_log_file
        from crawler.utils.exceptions import CrawlerError

        try:
            reopened = reopen_log_file()
        except OSError as exc:
            log.error("SIGHUP: cannot reopen the log file", error=str(exc.strerror or exc))
        else:
            if reopened is not None:
                log.info("SIGHUP: log file reopened", path=str(reopened))
        try:
            self.reload()
        except CrawlerError as exc:
            log.error("reload refused, still running on the previous settings", error=exc.message)

    def _on_ignored_signal(self, signum: int, frame: FrameType | None) -> None:
        # A plain assignment, like `_on_signal`: the main loop logs it.
        self._ignored_signal = signal.Signals(signum).name

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only a plain assignment: Event.set() here could deadlock on the Event's own lock if
        # the signal lands while the main thread is inside Event.wait(). The loop polls it.
        self._signal_name = signal.Signals(signum).name

    def run_foreground(self) -> int:
        """Serve until asked to stop; returns the exit code (0 on a clean stop).

        Raises DaemonAlreadyRunningError when another daemon holds the pidfile or answers on
        the socket, DaemonError / StorageError / ConfigError when start-up fails.
        """
        from crawler.daemon.malloc import tune_malloc
        from crawler.daemon.registry import register as register_daemon
        from crawler.daemon.registry import unregister as unregister_daemon

        # Before any thread of ours starts: only malloc arenas created later obey the cap.
        tune_malloc()
        try:
            self.pidfile.acquire()
        except DaemonAlreadyRunningError as exc:
            raise self._already_running(exc.pid) from None
        try:
            previous = self._install_signal_handlers()
            record: Path | None = None
            try:
                self._start()
                # So that `crawler status` in another directory finds this daemon.
                record = register_daemon(self.socket_path, self.data_dir, os.getpid())
                self._announce()
                self._serve()
                log.info("stopping", reason=self._signal_name or self._stop_reason or "requested")
            finally:
                unregister_daemon(record)
                self.notifier.stopping()
                self._shutdown()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        finally:
            self.pidfile.release()
        log.info("crawler stopped")
        return self._exit_code

    def _install_signal_handlers(self) -> dict[signal.Signals, Any]:
        """Ours in place; returns the previous handlers, to put back."""
        previous: dict[signal.Signals, Any] = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        # SIGQUIT stops cleanly like SIGTERM; SIGUSR1/2 and SIGALRM mean nothing to us and
        # are ignored on purpose (logged): by default each killed the daemon without its
        # clean-up (socket and pidfile left behind, reservations held).
        previous[signal.SIGQUIT] = signal.signal(signal.SIGQUIT, self._on_signal)
        for ignored in _IGNORED_SIGNALS:
            previous[ignored] = signal.signal(ignored, self._on_ignored_signal)
        return previous

    def _start(self) -> None:
        """Build the node, open the control socket, then start the jobs and the heartbeat."""
        from crawler.daemon.control_server import socket_is_live

        parts = self._build(with_heartbeat=True)
        self._open_control_socket(parts)
        self._start_metrics_port()
        assert self.node is not None
        self.node.start()
        self._start_heartbeat(self.node.stores.nodes, parts.scheduler)
        if not socket_is_live(self.socket_path):
            raise DaemonError(f"the control socket {self.socket_path} does not answer")

    def _open_control_socket(self, parts: DaemonParts) -> None:
        """The control socket with every route on it, listening."""
        from crawler.daemon.alert_routes import register_alert_routes
        from crawler.daemon.control_server import ControlServer
        from crawler.daemon.reload import register_reload_route
        from crawler.daemon.routes import register_routes
        from crawler.daemon.sse import register_event_routes

        assert self.operations is not None
        self.server = ControlServer(self.socket_path)
        register_routes(self.server, self.operations, self.request_stop)
        self._ground = self._ground_marks()
        register_event_routes(self.server, parts.events)
        register_alert_routes(self.server, parts.alerts.service)
        register_reload_route(self.server, self.reload)
        try:
            self.server.start()
        except DaemonAlreadyRunningError:
            raise self._already_running(0) from None
        self._ground = self._ground_marks()

    def _announce(self) -> None:
        """READY=1 with the status line to systemd, and the start in the log."""
        from crawler.config.files import empty_key_credential

        key_problem = empty_key_credential()
        if key_problem:
            log.error("the Bright Data key is empty", problem=key_problem)
        summary = self.status_line()
        self.notifier.ready(summary)
        self._preload_calendars()
        log.info("crawler started", pid=os.getpid(), socket=str(self.socket_path), summary=summary)

    def _already_running(self, pid: int) -> DaemonAlreadyRunningError:
        """The refusal to start, naming the running daemon's pid, socket and data dir."""
        from crawler.daemon.client import ControlClient

        socket_text = f"socket {self.socket_path} not answering"
        data_dir = self.data_dir
        try:
            status, body = ControlClient(self.socket_path, timeout_s=2).get("/health")
        except Exception:  # only detail for the message; the refusal stands either way
            status, body = 0, None
        if status == 200 and isinstance(body, dict):
            pid = int(body.get("pid") or pid)
            socket_text = f"socket {self.socket_path}"
            data_dir = Path(str(body.get("data_dir") or data_dir))
        return DaemonAlreadyRunningError(
            pid,
            f"crawler is already running (pid {pid or '?'}, {socket_text}, data dir {data_dir});"
            " stop it first with `crawler stop`",
        )

    def _ground_marks(self) -> dict[str, tuple[int, int]]:
        """The identity (device, inode) of the data dir and the control socket now."""
        marks: dict[str, tuple[int, int]] = {}
        for name, path in (("data dir", self.data_dir), ("control socket", self.socket_path)):
            with contextlib.suppress(OSError):
                info = os.stat(path)
                marks[name] = (info.st_dev, info.st_ino)
        return marks

    def _lost_ground(self) -> str | None:
        """Why the daemon can no longer be found or kept single (its data dir, pidfile or
        socket removed or replaced under it), or None. With any of them gone, `status` says
        "not running", `stop` cannot reach it and a second daemon would start beside it with
        a ledger of its own: both would spend."""
        paths = {"data dir": self.data_dir, "control socket": self.socket_path}
        for name, mark in self._ground.items():
            try:
                info = os.stat(paths[name])
            except FileNotFoundError:
                return f"{name} {paths[name]} was removed"
            except OSError as exc:
                return f"{name} {paths[name]} cannot be reached ({exc.strerror or exc})"
            if (info.st_dev, info.st_ino) != mark:
                return f"{name} {paths[name]} was replaced"
        return self.pidfile.lost()

    def _serve(self) -> None:
        # The scheduler pings the watchdog from its own thread (it proves the jobs run); when
        # collections are off, the main thread does, so systemd still sees us alive.
        interval_s = self.notifier.watchdog_interval_s()
        main_pings_s = None if self.settings.auto_update_enabled else interval_s
        next_ping_s = next_status_s = time.monotonic()
        next_status_s += _STATUS_REFRESH_S
        next_ground_s = time.monotonic() + GROUND_CHECK_S
        while not self._stop.wait(_TICK_S):
            if self._signal_name is not None:
                self._stop_reason = self._signal_name
                return
            if time.monotonic() >= next_ground_s:
                next_ground_s = time.monotonic() + GROUND_CHECK_S
                lost = self._lost_ground()
                if lost is not None:
                    log.error(
                        "%s under the running daemon; stopping (start it again to recreate it)",
                        lost,
                    )
                    self._stop_reason = lost
                    self._exit_code = 1
                    return
            if self._reload_requested:
                self._reload_requested = False
                self._reload_on_signal()
            if self._ignored_signal is not None:
                log.info(
                    "signal received and ignored (SIGTERM or SIGINT stops)",
                    signal=self._ignored_signal,
                )
                self._ignored_signal = None
            now_s = time.monotonic()
            if main_pings_s is not None and now_s >= next_ping_s:
                self.notifier.watchdog()
                next_ping_s = now_s + main_pings_s
            if now_s >= next_status_s:
                self.notifier.status(self.status_line())
                next_status_s = now_s + _STATUS_REFRESH_S

    def _start_metrics_port(self) -> None:
        if not self.settings.metrics_port:
            return
        from crawler.daemon.metrics_port import MetricsHTTPServer

        assert self.operations is not None
        registry = self.operations.metrics_registry
        self.metrics_server = MetricsHTTPServer(registry, self.settings.metrics_port)
        self.metrics_server.start()

    def _shutdown(self) -> None:
        node = self.node
        if node is not None:
            # First: a collection in progress stops fetching now and records what landed
            # (a /collect handler too, which the control server's stop would wait for).
            node.hybrid.abort()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if node is not None and node.daemon is not None:
            node.daemon.events.close()  # watchers' streams end, so their connections close at once
        if self.server is not None:
            self.server.stop(_CONTROL_STOP_S)
        if self.heartbeat is not None:
            self.heartbeat.stop()  # started last, stopped first: the node is withdrawn
        if node is not None:
            node.close()  # the live feed, the scheduler, the alerts, the sources, the stores

    def run_once(self) -> dict[str, Any]:
        """Burst mode: each scheduler job once, in this thread; returns {job: report}.

        Refused (DaemonAlreadyRunningError, exit 1) while a daemon runs on the same data dir:
        its collection would be paid a second time beside the daemon's own.
        """
        try:
            self.pidfile.acquire()
        except DaemonAlreadyRunningError as exc:
            raise DaemonAlreadyRunningError(
                exc.pid,
                f"crawler is already running on {self.data_dir} (pid {exc.pid}, socket "
                f"{self.socket_path}); use `crawler collect` instead of a second --once run",
            ) from None
        try:
            parts = self._build(with_heartbeat=False)
            parts.alerts.start()
            try:
                return parts.scheduler.run_once()
            finally:
                self._shutdown()
        finally:
            self.pidfile.release()

    # -- reporting ---------------------------------------------------------------------------

    def status_line(self) -> str:
        """The systemd STATUS line: "tracking 12 symbols; budget $5.49 left; next ..."."""
        parts: list[str] = []
        node = self.node
        if node is not None:
            count = len(node.watchlist)
            parts.append(f"tracking {count} symbol{'' if count == 1 else 's'}")
            try:
                left = node.hybrid.ledger.statistics()["budget_remaining"]
                parts.append(f"budget ${float(left):.2f} left")
            except Exception:  # a status line must never fail
                parts.append("budget unknown")
        scheduler = node.daemon.scheduler if node is not None and node.daemon else None
        if scheduler is not None and scheduler.is_running:
            jobs = scheduler.get_statistics().get("scheduled_jobs", [])
            nxt = next((j.get("next_run") for j in jobs if j.get("id") == "collection"), None)
            if nxt:
                at = datetime.fromisoformat(nxt).astimezone(UTC)
                parts.append(f"next collection {at:%H:%M} UTC")
        elif not self.settings.auto_update_enabled:
            parts.append("scheduled collection off")
        return "; ".join(parts)


def _collection_summary(report: Any) -> dict[str, Any] | None:
    """The few fields of a collection report a heartbeat carries (not the per-symbol errors)."""
    if not isinstance(report, dict):
        return None
    keys = ("started_at", "duration_s", "symbols", "quotes", "sources", "stale", "succeeded")
    summary = {key: report.get(key) for key in keys}
    summary["errors"] = len(report.get("errors") or {})
    return summary


def _reread(settings: Settings) -> Settings:
    """The configuration read again from the file `settings` came from (and the environment)."""
    from crawler.config import load_settings

    return load_settings(config_file=settings.config_file)
