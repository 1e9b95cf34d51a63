"""Delivering alerts to notification targets through Apprise (ntfy, e-mail, Slack, Telegram,
webhooks, `json://host/` ...), without ever holding a collection up or printing a secret.

    notifier = Notifier(timeout_s=10)
    notifier.start()
    notifier.enqueue(Notice(("ntfy://ntfy.sh/topic",), "title", "body"))   # never blocks
    notifier.stop(2.0)
    send(("json://127.0.0.1:8080/",), "title", "body", timeout_s=5)   # now, in this thread

The queue is bounded (`QUEUE_SIZE`): when a slow target lets it fill, further notices are
dropped and logged, never waited for. Notices for the same targets that are waiting together
(a burst: a market gapping past many lines at its open) go out as one message of up to
`BATCH_MAX` alerts, one line each. One worker thread sends them, each target with Apprise's
connect and read timeouts set to `timeout_s`, so a target that hangs costs that thread at most
two timeouts per notice.

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
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from crawler.logging import get_logger
from crawler.utils.exceptions import UsageError

__all__ = [
    "BATCH_MAX",
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

#: Notices waiting for the worker at most; more are dropped (logged).
QUEUE_SIZE: Final = 256
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


class Notifier:
    """A bounded queue of notices and one worker thread sending them (see the module)."""

    def __init__(self, *, timeout_s: float = 10.0, queue_size: int = QUEUE_SIZE) -> None:
        self.timeout_s = timeout_s
        self._queue: queue.Queue[Notice | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        """Start the worker (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="crawler-notify", daemon=True)
            self._thread.start()

    def enqueue(self, notice: Notice) -> bool:
        """Queue `notice` without blocking; False (dropped, logged) when the queue is full."""
        if not notice.urls:
            return True
        try:
            self._queue.put_nowait(notice)
            return True
        except queue.Full:
            self.dropped += 1
            log.warning(
                "alert notice dropped: the notify queue is full (a slow or failing target)",
                rule=notice.rule_id,
                queued=self._queue.maxsize,
                dropped=self.dropped,
            )
            return False

    def pending(self) -> int:
        """Notices waiting for the worker."""
        return self._queue.qsize()

    def _run(self) -> None:
        carried: list[Notice | None] = []  # taken while batching, for other targets
        while True:
            notice = carried.pop(0) if carried else self._queue.get()
            if notice is None or self._stopping.is_set():
                return
            batch = [notice]
            while len(batch) < BATCH_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is not None and more.urls == notice.urls:
                    batch.append(more)
                else:
                    carried.append(more)
                    if more is None:
                        break
            self._deliver(batch)

    def _deliver(self, batch: list[Notice]) -> None:
        """Send `batch` (notices for the same targets) as one message to each target."""
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
        except Exception:  # the worker must outlive any one notice
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
        """Stop the worker; a notice being sent gets `timeout_s` (then it is abandoned)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            # After what is queued: it is still sent, within `timeout_s`.
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            self._stopping.set()  # the worker quits after its current notice
        thread.join(timeout_s)

    def statistics(self) -> dict[str, int]:
        """sent and failed (alerts times targets), dropped, pending (notices queued)."""
        return {
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "pending": self.pending(),
        }
