"""Symbols Yahoo does not know, remembered so they are not asked again every collection.

    unknowns = YahooUnknowns(data_dir / "yahoo_unknown.json", now=utc_now)
    unknowns.note_unknown("HOLD9:US")     # Yahoo left it out, answered 404, or no price
    unknowns.skip("HOLD9:US")             # True: do not ask Yahoo about it until the retry
    unknowns.note_served("HOLD9:US")      # listed after all: forgotten

A symbol Yahoo did not know is asked again after `first_retry_s` (1 h), then after twice as
long each time it is still unknown, up to `max_retry_s` (1 day): a newly listed symbol comes
back within a day, and a symbol that never will costs Yahoo one question a day.

Kept in one small JSON file in the data dir (written whole, atomically, when it changes), so a
restart does not ask Yahoo about 280 unknown symbols again. Each node of a cluster keeps its
own (the cost of not sharing it: one question per node and retry period).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from crawler.logging import get_logger
from crawler.utils.clock import WallClock, utc_now

__all__ = ["FIRST_RETRY_S", "MAX_RETRY_S", "YAHOO_UNKNOWNS_FILE", "UnknownEntry", "YahooUnknowns"]

#: The file in the data dir.
YAHOO_UNKNOWNS_FILE = "yahoo_unknown.json"

log = get_logger("crawler.store")

#: The first wait before Yahoo is asked again about a symbol it did not know.
FIRST_RETRY_S = 3600.0
#: The longest wait: a newly listed symbol is found within a day.
MAX_RETRY_S = 86400.0


@dataclass(frozen=True, slots=True)
class UnknownEntry:
    """When Yahoo last did not know the symbol, and when it may be asked again."""

    since: datetime
    retry_at: datetime
    backoff_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "retry_at": self.retry_at.isoformat(),
            "backoff_s": self.backoff_s,
        }


class YahooUnknowns:
    """See the module docstring. `path` None keeps the memory in this process only."""

    def __init__(
        self,
        path: Path | None,
        *,
        now: WallClock = utc_now,
        first_retry_s: float = FIRST_RETRY_S,
        max_retry_s: float = MAX_RETRY_S,
    ) -> None:
        if not 0 < first_retry_s <= max_retry_s:
            raise ValueError("need 0 < first_retry_s <= max_retry_s")
        self._path = path
        self._now = now
        self._first_s = float(first_retry_s)
        self._max_s = float(max_retry_s)
        self._lock = threading.Lock()
        self._entries: dict[str, UnknownEntry] = self._load()

    def skip(self, canonical: str) -> bool:
        """Whether Yahoo is not to be asked about `canonical` now (unknown, retry not due)."""
        with self._lock:
            entry = self._entries.get(canonical)
        return entry is not None and self._now() < entry.retry_at

    def entry(self, canonical: str) -> UnknownEntry | None:
        """The remembered entry of `canonical`, if any."""
        with self._lock:
            return self._entries.get(canonical)

    def note_unknown(self, canonical: str) -> None:
        """Yahoo did not know `canonical`: wait `first_retry_s`, or twice the last wait when
        it was asked again after one (at most `max_retry_s`)."""
        now = self._now()
        with self._lock:
            old = self._entries.get(canonical)
            if old is not None and now < old.retry_at:
                return  # told twice in one period (a batch and a chart): one backoff step
            backoff_s = self._first_s if old is None else min(old.backoff_s * 2, self._max_s)
            self._entries[canonical] = UnknownEntry(
                since=now, retry_at=now + timedelta(seconds=backoff_s), backoff_s=backoff_s
            )
            self._save_locked()

    def note_served(self, canonical: str) -> None:
        """Yahoo served `canonical`: forget it."""
        with self._lock:
            if self._entries.pop(canonical, None) is not None:
                self._save_locked()

    def forget(self, canonical: str) -> None:
        """A symbol no longer tracked."""
        self.note_served(canonical)

    def statistics(self) -> dict[str, Any]:
        """How many are remembered, and how many of them Yahoo is not asked about now."""
        now = self._now()
        with self._lock:
            waiting = sum(1 for e in self._entries.values() if now < e.retry_at)
            return {"remembered": len(self._entries), "not_asked_now": waiting}

    # -- the file ---------------------------------------------------------------------------
    def _load(self) -> dict[str, UnknownEntry]:
        if self._path is None or not self._path.exists():
            return {}
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            return {
                str(name): UnknownEntry(
                    since=datetime.fromisoformat(item["since"]),
                    retry_at=datetime.fromisoformat(item["retry_at"]),
                    backoff_s=float(item["backoff_s"]),
                )
                for name, item in dict(raw).items()
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A lost memory costs one question per symbol to Yahoo: start afresh, say so.
            log.warning("unknown-symbol memory unreadable; starting afresh", error=str(exc))
            return {}

    def _save_locked(self) -> None:
        if self._path is None:
            return
        body = json.dumps({k: v.to_json() for k, v in self._entries.items()}, sort_keys=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(body)
            os.replace(tmp, self._path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            # Not fatal: the memory lives on in this process; the next change tries again.
            log.warning("could not keep the unknown-symbol memory", error=str(exc))
