"""Symbols Yahoo does not know, remembered so they are not asked again every collection.

    unknowns = YahooUnknowns(data_dir / "yahoo_unknown.json", now=utc_now)
    unknowns.note_unknown("HOLD9:US")     # Yahoo left it out, answered 404, or no price
    unknowns.skip("HOLD9:US")             # True: do not ask Yahoo about it until the retry
    unknowns.note_served("HOLD9:US")      # listed after all: forgotten

A symbol Yahoo did not know is asked again after `first_retry_s` (1 h), then after twice as
long each time it is still unknown, up to `max_retry_s` (1 day): a newly listed symbol comes
back within a day, and a symbol that never will costs Yahoo one question a day.

Kept in one small JSON file in the data dir (written whole, atomically, when it changes), so a
restart does not ask Yahoo about 280 unknown symbols again. With `redis` (a cluster), the
entries are also kept in one Redis hash that every node reads (at most every `SHARED_READ_S`)
and writes: one node's answer from Yahoo spares the others the question. Redis away: the
local copy answers, and the node carries on.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawler.logging import get_logger
from crawler.utils.clock import WallClock, utc_now
from crawler.utils.exceptions import StorageError

if TYPE_CHECKING:
    from crawler.store.redis_client import RedisConnection

__all__ = ["FIRST_RETRY_S", "MAX_RETRY_S", "YAHOO_UNKNOWNS_FILE", "UnknownEntry", "YahooUnknowns"]

#: The file in the data dir.
YAHOO_UNKNOWNS_FILE = "yahoo_unknown.json"

log = get_logger("crawler.store")

#: The first wait before Yahoo is asked again about a symbol it did not know.
FIRST_RETRY_S = 3600.0
#: The longest wait: a newly listed symbol is found within a day.
MAX_RETRY_S = 86400.0
#: How stale the copy of the cluster's shared entries may get before it is read again.
SHARED_READ_S = 10.0
_WHAT = "yahoo unknown-symbol memory"


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
        redis: RedisConnection | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < first_retry_s <= max_retry_s:
            raise ValueError("need 0 < first_retry_s <= max_retry_s")
        self._path = path
        self._now = now
        self._first_s = float(first_retry_s)
        self._max_s = float(max_retry_s)
        self._lock = threading.Lock()
        self._entries: dict[str, UnknownEntry] = self._load()
        self._redis = redis
        self._key = redis.key("yahoo_unknown") if redis is not None else ""
        self._clock = clock
        self._read_at_s: float | None = None

    def skip(self, canonical: str) -> bool:
        """Whether Yahoo is not to be asked about `canonical` now (unknown, retry not due)."""
        self._refresh()
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
            entry = self._entries[canonical] = UnknownEntry(
                since=now, retry_at=now + timedelta(seconds=backoff_s), backoff_s=backoff_s
            )
            self._save_locked()
        self._share(canonical, entry)

    def note_served(self, canonical: str) -> None:
        """Yahoo served `canonical`: forget it."""
        with self._lock:
            known = self._entries.pop(canonical, None) is not None
            if known:
                self._save_locked()
        if known:
            self._share(canonical, None)

    def forget(self, canonical: str) -> None:
        """A symbol no longer tracked."""
        self.note_served(canonical)

    def statistics(self) -> dict[str, Any]:
        """How many are remembered, and how many of them Yahoo is not asked about now."""
        now = self._now()
        with self._lock:
            waiting = sum(1 for e in self._entries.values() if now < e.retry_at)
            return {"remembered": len(self._entries), "not_asked_now": waiting}

    # -- the cluster's copy (Redis) --------------------------------------------------------------
    def _refresh(self) -> None:
        """Take the cluster's entries (one HGETALL, at most every SHARED_READ_S)."""
        redis = self._redis
        now_s = self._clock()
        if redis is None or (
            self._read_at_s is not None and now_s - self._read_at_s < SHARED_READ_S
        ):
            return
        self._read_at_s = now_s
        try:
            with redis.errors(_WHAT):
                raw = redis.client.hgetall(self._key)
        except StorageError as exc:
            log.debug("unknown-symbol memory: the local copy answers", error=exc.message)
            return
        # Redis answered: its entries are the memory (one noted while it was away is asked
        # again once, at worst).
        shared: dict[str, UnknownEntry] = {}
        for name, text in raw.items():
            try:
                shared[_text(name)] = _entry(json.loads(_text(text)))
            except (ValueError, KeyError, TypeError):
                continue  # one damaged entry costs one question to Yahoo
        with self._lock:
            if shared != self._entries:
                self._entries = shared
                self._save_locked()

    def _share(self, canonical: str, entry: UnknownEntry | None) -> None:
        redis = self._redis
        if redis is None:
            return
        try:
            with redis.errors(_WHAT):
                if entry is None:
                    redis.client.hdel(self._key, canonical)
                else:
                    redis.client.hset(self._key, canonical, json.dumps(entry.to_json()))
        except StorageError as exc:  # the local copy still spares this node the question
            log.debug("unknown-symbol memory kept locally only", error=exc.message)

    # -- the file ---------------------------------------------------------------------------
    def _load(self) -> dict[str, UnknownEntry]:
        if self._path is None or not self._path.exists():
            return {}
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            return {str(name): _entry(item) for name, item in dict(raw).items()}
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


def _entry(item: Any) -> UnknownEntry:
    return UnknownEntry(
        since=datetime.fromisoformat(item["since"]),
        retry_at=datetime.fromisoformat(item["retry_at"]),
        backoff_s=float(item["backoff_s"]),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
