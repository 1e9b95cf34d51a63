"""Delivering alerts to notification targets through Apprise (ntfy, e-mail, Slack, Telegram,
webhooks, `json://host/` ...), without ever holding a collection up or printing a secret.

    notifier = Notifier(timeout_s=10)
    notifier.start()
    notifier.enqueue(Notice(("ntfy://ntfy.sh/topic",), "title", "body"))   # never blocks
    notifier.stop(2.0)
    send(("json://127.0.0.1:8080/",), "title", "body", timeout_s=5)   # now, in this thread

Each target has its own bounded queue (`QUEUE_SIZE`) and its own thread (up to `LANES`
targets; more share them): a target that hangs holds up only its own notices, and when it lets
its queue fill, further notices for it are dropped and logged, never waited for. Each send has
Apprise's connect and read timeouts set to `timeout_s`. Notices for one target that are waiting
together (a burst: a market gapping past many lines at its open) go out as one message of up
to `BATCH_MAX` alerts, one line each.

Secrets: a notify URL holds tokens and passwords (`tgram://BOTTOKEN/CHAT`,
`mailto://user:PASSWORD@host`). Only `shown_url(url)` is ever printed (Apprise's own privacy
form, without its query), and every piece Apprise masks there is also scrubbed from Apprise's
log records (`SecretFilter`), which otherwise name hosts and paths.

Apprise (and its plugins) is imported only when a URL is checked or a notice sent: `crawler
status` and a daemon without notify targets never load it.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import urlsplit

from crawler.logging import get_logger
from crawler.utils.exceptions import UsageError

__all__ = [
    "BATCH_MAX",
    "LANES",
    "QUEUE_SIZE",
    "Notice",
    "Notifier",
    "SecretFilter",
    "check_url",
    "secret_parts",
    "send",
    "shown_url",
]

log = get_logger("crawler.alerts")

#: Notices waiting for one target at most; more are dropped (logged).
QUEUE_SIZE: Final = 256
#: Targets with a queue and a thread of their own; more share them.
LANES: Final = 8
#: Notices for the same targets waiting together go out as one message of at most this many
#: (a burst of alerts is one e-mail or push, not dozens).
BATCH_MAX: Final = 20
_TITLE_PREFIX: Final = "crawler alert: "
_MASK: Final = "****"
_SPLIT: Final = re.compile(r"[/:@?&=#,+]+")
#: Pieces of a URL shorter than this are not treated as secrets (ports, "v1", "json").
_MIN_SECRET_CHARS: Final = 4


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme if "://" in url else ""
    return scheme if re.fullmatch(r"[a-z][a-z0-9+.-]{0,31}", scheme or "") else "?"


def _instantiate(url: str) -> Any:
    _load_apprise()
    import apprise

    return apprise.Apprise.instantiate(url, suppress_exceptions=True)


_loaded = False


def _load_apprise() -> None:
    """Import Apprise and its plugins once, quietly: on Python 3.11 and 3.12 its plugin loading
    imports `imghdr`, whose DeprecationWarning is Apprise's business, not our users' (and an
    error under `-W error`)."""
    global _loaded
    if _loaded:
        return
    with _install_lock:
        if _loaded:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise

            apprise.Apprise.instantiate("json://localhost/", suppress_exceptions=True)
        _loaded = True


def check_url(url: str) -> str:
    """`url`'s shown form when Apprise can send to it; UsageError naming only its scheme (the
    rest may be a secret) when it cannot."""
    if not isinstance(url, str) or "://" not in url:
        raise UsageError(
            "--notify: not an Apprise URL (scheme://...); e.g. ntfy://ntfy.sh/TOPIC or "
            "json://host:port/path (see https://github.com/caronc/apprise/wiki)"
        )
    if _instantiate(url) is None:
        raise UsageError(
            f"--notify: Apprise cannot use this {_scheme(url)}:// URL (unknown service or "
            "malformed; the URL is not shown, it may hold a secret)"
        )
    return shown_url(url)


def shown_url(url: str) -> str:
    """`url` safe to print: Apprise's privacy form without its query, or just the scheme."""
    try:
        plugin = _instantiate(url)
        private = plugin.url(privacy=True) if plugin is not None else None
    except Exception:  # whatever Apprise raises, the answer is the safe fallback
        private = None
    if not isinstance(private, str):
        return f"{_scheme(url)}://{_MASK}"
    return private.split("?", 1)[0]


def secret_parts(url: str) -> set[str]:
    """The pieces of `url` that its shown form hides (tokens, passwords, user names)."""
    shown = shown_url(url)
    parts = urlsplit(url) if "://" in url else None
    found = {
        piece
        for piece in _SPLIT.split(url.split("://", 1)[-1])
        if len(piece) >= _MIN_SECRET_CHARS and piece not in shown
    }
    if parts is not None and parts.password:
        found.add(parts.password)
    return found


class SecretFilter(logging.Filter):
    """Scrubs the secret pieces of the notify URLs in use from Apprise's log records."""

    def __init__(self) -> None:
        super().__init__("apprise")
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def learn(self, urls: Iterable[str]) -> None:
        """Also hide the secret pieces of `urls` from now on."""
        found: set[str] = set()
        for url in urls:
            found |= secret_parts(url)
        with self._lock:
            self._secrets = self._secrets | found

    def scrub(self, text: str) -> str:
        """`text` with every known secret replaced by ****."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, _MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = self.scrub(record.getMessage())
            record.msg, record.args = message, None
        return True


#: One filter for the process, on Apprise's logger (installed by the first Notifier or send).
SECRETS: Final = SecretFilter()
_installed = False
_install_lock = threading.Lock()


def _install_filter() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            logging.getLogger("apprise").addFilter(SECRETS)
            _installed = True


@dataclass(frozen=True)
class Notice:
    """One alert for `urls`: a title and a body (plain text)."""

    urls: tuple[str, ...]
    title: str
    body: str
    rule_id: int | None = None


def send(urls: Iterable[str], title: str, body: str, *, timeout_s: float) -> list[dict[str, Any]]:
    """Send now, in this thread, to each of `urls`: [{"target": shown URL, "ok": bool,
    "error": str | None}]. Never raises for a target's failure; it is in the answer."""
    _install_filter()
    url_list = list(urls)
    SECRETS.learn(url_list)
    results: list[dict[str, Any]] = []
    for url in url_list:
        target = shown_url(url)
        try:
            plugin = _instantiate(url)
            if plugin is None:
                results.append(
                    {"target": target, "ok": False, "error": "Apprise cannot use this URL"}
                )
                continue
            plugin.socket_connect_timeout = timeout_s
            plugin.socket_read_timeout = timeout_s
            ok = bool(plugin.notify(body=body, title=title))
        except Exception as exc:  # a plugin's own bug must not stop the other targets
            results.append(
                {"target": target, "ok": False, "error": SECRETS.scrub(type(exc).__name__)}
            )
            continue
        error = None if ok else "the target refused or did not answer (see the log)"
        results.append({"target": target, "ok": ok, "error": error})
    return results


class _Lane:
    """One target's (or a few targets') bounded queue and the thread that sends from it."""

    def __init__(self, owner: Notifier, index: int, queue_size: int) -> None:
        self.owner = owner
        self.queue: queue.Queue[Notice | None] = queue.Queue(maxsize=queue_size)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"crawler-notify-{index}", daemon=True)
        self.thread.start()

    def run(self) -> None:
        carried: list[Notice | None] = []  # taken while batching, for other targets
        while True:
            notice = carried.pop(0) if carried else self.queue.get()
            if notice is None or self.stopping.is_set():
                return
            batch = [notice]
            while len(batch) < BATCH_MAX:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is not None and more.urls == notice.urls:
                    batch.append(more)
                else:
                    carried.append(more)
                    if more is None:
                        break
            self.owner._deliver(batch)


class Notifier:
    """Bounded queues of notices, one per target up to `lanes` (then shared), each with its
    own thread: a target that hangs holds up only the notices for itself (see the module)."""

    def __init__(
        self, *, timeout_s: float = 10.0, queue_size: int = QUEUE_SIZE, lanes: int = LANES
    ) -> None:
        self.timeout_s = timeout_s
        self._queue_size = queue_size
        self._max_lanes = lanes
        self._lanes: list[_Lane] = []
        self._lane_of: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._started = False
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        """Accept notices (the lanes' threads start with their first notice)."""
        self._started = True

    def _lane(self, url: str) -> _Lane:
        with self._lock:
            lane = self._lane_of.get(url)
            if lane is None:
                if len(self._lanes) < self._max_lanes:
                    lane = _Lane(self, len(self._lanes), self._queue_size)
                    self._lanes.append(lane)
                else:  # more targets than lanes: they share, by a stable pick
                    lane = self._lanes[zlib.crc32(url.encode()) % len(self._lanes)]
                self._lane_of[url] = lane
            return lane

    def enqueue(self, notice: Notice) -> bool:
        """Queue `notice` for each of its targets without blocking; False when a target's
        queue was full (that copy dropped, logged)."""
        if not self._started:
            return False
        queued = True
        for url in notice.urls:
            lane = self._lane(url)
            try:
                lane.queue.put_nowait(replace(notice, urls=(url,)))
            except queue.Full:
                queued = False
                self.dropped += 1
                log.warning(
                    "alert notice dropped: the notify queue is full (a slow or failing target)",
                    rule=notice.rule_id,
                    target=shown_url(url),
                    queued=lane.queue.maxsize,
                    dropped=self.dropped,
                )
        return queued

    def pending(self) -> int:
        """Notices waiting to be sent, over every target."""
        with self._lock:
            lanes = list(self._lanes)
        return sum(lane.queue.qsize() for lane in lanes)

    def _deliver(self, batch: list[Notice]) -> None:
        """Send `batch` (notices for the same target) as one message."""
        first = batch[0]
        rules = [notice.rule_id for notice in batch]
        if len(batch) == 1:
            title, body = first.title, first.body
        else:
            title = f"crawler: {len(batch)} alerts"
            body = "\n".join(
                f"{notice.title.removeprefix(_TITLE_PREFIX)}: {notice.body}" for notice in batch
            )
        try:
            results = send(first.urls, title, body, timeout_s=self.timeout_s)
        except Exception:  # the lane must outlive any one notice
            log.exception("sending an alert notice failed", rules=rules)
            self.failed += len(batch)
            return
        for result in results:
            if result["ok"]:
                self.sent += len(batch)
                log.info("alert notice sent", rules=rules, target=result["target"])
            else:
                self.failed += len(batch)
                log.warning(
                    "alert notice failed", rules=rules, target=result["target"],
                    error=result["error"],
                )  # fmt: skip

    def stop(self, timeout_s: float) -> None:
        """Stop every lane: what is queued is still sent within `timeout_s` in all (a notice
        still being sent then is abandoned: the threads are daemon threads)."""
        self._started = False
        with self._lock:
            lanes, self._lanes, self._lane_of = self._lanes, [], {}
        deadline = time.monotonic() + timeout_s
        for lane in lanes:
            try:
                lane.queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                lane.stopping.set()  # it quits after its current notice
        for lane in lanes:
            lane.thread.join(max(0.0, deadline - time.monotonic()))

    def statistics(self) -> dict[str, int]:
        """sent and failed (alerts times targets), dropped, pending (notices queued), lanes."""
        with self._lock:
            lanes = len(self._lanes)
        return {
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "pending": self.pending(),
            "lanes": lanes,
        }
