"""`crawler logs [-n N] [-f]`: the detached daemon's log, read as text.

A detached daemon writes JSON lines to `<data_dir>/crawler.log` (its output is not a terminal,
and JSON is what log shippers want). This turns each line back into what a terminal shows:

    2026-11-29 19:50:02Z warning  crawler.hybrid  serving stale AAPL:US: ...  key=value ...

Lines that are not JSON (a traceback printed before logging was set up) pass through as they
are. Imports only the standard library.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from crawler.utils.text import clean_text

__all__ = ["follow", "open_log_text", "render_line", "tail"]

# Keys every line has, shown in fixed places rather than as key=value.
_FIXED = ("timestamp", "level", "logger", "event")
_POLL_S = 0.25


def render_line(line: str) -> str:
    """One log line as text: time, level, logger, message, then the other fields; without
    escape sequences or control characters (the log quotes upstream text)."""
    return clean_text(_render(line.rstrip("\n")), keep_newlines=True)


def _render(text: str) -> str:
    try:
        record = json.loads(text)
    except ValueError:
        return text
    if not isinstance(record, dict):
        return text
    stamp = str(record.get("timestamp", ""))
    if stamp.endswith("+00:00"):
        stamp = stamp[: -len("+00:00")] + "Z"
    stamp = stamp.replace("T", " ")
    if "." in stamp:  # milliseconds are noise when reading
        head, _, tail_part = stamp.partition(".")
        stamp = head + ("Z" if tail_part.endswith("Z") else "")
    parts = [
        stamp,
        f"{record.get('level', '')!s:<8}",
        str(record.get("logger", "")),
        str(record.get("event", "")),
    ]
    extra = [f"{key}={_value(value)}" for key, value in record.items() if key not in _FIXED]
    rendered = "  ".join(part for part in parts if part) + ("  " + " ".join(extra) if extra else "")
    return rendered


def _value(value: Any) -> str:
    if isinstance(value, str):
        if "\n" in value:  # a traceback: keep it readable, on its own lines
            return "\n" + value
        return value if value and " " not in value else json.dumps(value)
    return json.dumps(value)


def open_log_text(path: Path) -> IO[str]:
    """`path` opened for reading as text: a regular file of the daemon's user only (a FIFO
    planted there would hang us, a link could point anywhere). FileNotFoundError when missing;
    DaemonError (one line) when refused."""
    from crawler.daemon.process import open_log
    from crawler.utils.exceptions import DaemonError

    try:
        fd = open_log(path, append=False)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DaemonError(
            f"cannot read the daemon log {path} ({exc.strerror or exc}); remove it and check "
            "who can write the data dir"
        ) from exc
    return open(fd, encoding="utf-8", errors="replace")


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of `path` (all of them for 0), read once from the start."""
    with open_log_text(path) as handle:
        if lines == 0:
            return handle.readlines()
        return list(deque(handle, maxlen=lines))


def follow(
    path: Path,
    write: Callable[[str], None],
    *,
    keep_going: Callable[[], bool] = lambda: True,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write each line added to `path` from now on, rendered, until `keep_going()` is False;
    starts over when the file is replaced or truncated (a restart with a new log)."""
    handle: IO[str] | None = None
    inode = -1
    try:
        while keep_going():
            if handle is None:
                try:
                    handle = open_log_text(path)
                except FileNotFoundError:
                    sleep(_POLL_S)
                    continue
                inode = os.fstat(handle.fileno()).st_ino
                handle.seek(0, os.SEEK_END)
            for line in _new_lines(handle):
                write(render_line(line))
            try:
                stat = path.stat()
                replaced = stat.st_ino != inode or stat.st_size < handle.tell()
            except FileNotFoundError:
                replaced = True
            if replaced:
                handle.close()
                handle = None
                inode = -1
                # A new file is read from its start: everything in it is new to us.
                try:
                    handle = open_log_text(path)
                    inode = os.fstat(handle.fileno()).st_ino
                except FileNotFoundError:
                    pass
                continue
            sleep(_POLL_S)
    finally:
        if handle is not None:
            handle.close()


def _new_lines(handle: IO[str]) -> Iterator[str]:
    """Whole lines added since the last read (a half-written last line waits)."""
    while True:
        position = handle.tell()
        line = handle.readline()
        if not line:
            return
        if not line.endswith("\n"):
            handle.seek(position)
            return
        yield line
