"""Progress on long work: a bar on stderr while the daemon (or this process) works.

    with progress_bar("fetching", total=300) as bar:   # None off a terminal
        bar.update(done=120)                           # "fetching ━━━━━━━━━━━━  120/300 0:00:04"

    for line in json_lines(client.stream("POST", "/fetch", body=...)):   # streamed answers
        ...

    with CollectionWatch(client) as watch:            # the daemon's collection_* events
        report = client.call("POST", "/collect")      # the bar moves meanwhile

The bar goes to stderr, and only when stderr is a terminal: stdout stays the answer (a table,
JSON, CSV), and a script or a pipe sees no control characters. Imports only rich and the
standard library.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from crawler.utils.exceptions import CrawlerError
from crawler.utils.sse import iter_sse

if TYPE_CHECKING:
    from crawler.daemon.client import ControlClient

__all__ = ["Bar", "CollectionWatch", "json_lines", "progress_bar", "wants_progress"]

#: The events a collection's progress is drawn from.
_COLLECTION_EVENTS = "collection_start,collection_progress,collection_end"


def wants_progress() -> bool:
    """Whether a bar can be drawn: stderr is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Bar:
    """One task on a rich Progress drawn on stderr; thread-safe (rich locks its own state)."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def update(self, done: int | None = None, total: int | None = None) -> None:
        """Move the bar to `done` of `total` (either may be left as it is)."""
        self._progress.update(self._task, completed=done, total=total)

    def advance(self) -> None:
        """One more done."""
        self._progress.advance(self._task)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Bar | None]:
    """A transient bar ("description ━━━ 120/300 elapsed") on stderr, or None off a terminal.

    `total` None draws a pulsing bar until `update(total=...)` says how much there is.
    """
    if not wants_progress():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield Bar(progress, progress.add_task(description, total=total))


def json_lines(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines stream, whatever its chunking."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)


def sse_events(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON `data:` payloads of a Server-Sent Events stream (comments skipped): the one
    reader, `crawler.utils.sse.iter_sse` (it also takes "data:" without its optional space)."""
    return iter_sse(chunks)


class CollectionWatch:
    """Draws the daemon's running collection from its events while the caller waits.

    The watch subscribes before the caller asks for the collection (so no event is missed)
    and gives up quietly if the daemon offers no events: progress is a courtesy, never a
    reason for the command to fail.
    """

    def __init__(self, client: ControlClient, description: str = "collecting") -> None:
        self._client = client
        self._description = description
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._chunks: Iterator[bytes] | None = None
        self._bar_cm: Any = None
        #: The last progress seen: (done, total), for the Ctrl-C message.
        self.last: tuple[int, int] | None = None

    def __enter__(self) -> CollectionWatch:
        if not wants_progress():
            return self
        try:
            self._chunks = self._client.stream("GET", "/v1/events", {"types": _COLLECTION_EVENTS})
        except CrawlerError:
            return self  # an older daemon, or every watcher slot taken: no bar
        self._bar_cm = progress_bar(self._description, None)
        bar = self._bar_cm.__enter__()
        self._thread = threading.Thread(
            target=self._follow, args=(bar,), name="collection-watch", daemon=True
        )
        self._thread.start()
        return self

    def _follow(self, bar: Bar | None) -> None:
        assert self._chunks is not None
        try:
            for event in sse_events(self._chunks):
                if self._stop.is_set():
                    return
                kind = event.get("type")
                if kind == "collection_start":
                    # The bar shows 0/N from here on, so the Ctrl-C line must say so too.
                    self.last = (0, int(event.get("fetching") or 0))
                    if bar is not None:
                        bar.update(done=0, total=self.last[1])
                elif kind == "collection_progress":
                    done, total = int(event.get("done") or 0), int(event.get("total") or 0)
                    self.last = (done, total)
                    if bar is not None:
                        bar.update(done=done, total=total)
        except (CrawlerError, ValueError, OSError):
            return  # the stream was closed under us (we are done) or cut: no more progress

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        close = getattr(self._chunks, "close", None)
        if callable(close):
            close()  # shuts the socket down: the watching thread's read ends at once
        if self._thread is not None:
            self._thread.join(1.0)
        if self._bar_cm is not None:
            self._bar_cm.__exit__(None, None, None)
