"""This node's own memory for the cluster ledger, kept in its data dir (`SpendRecord`).

Redis can forget (`crawler.store.ledger.recovery`); every node still knows what *it* paid.
Each keeps, in its local diskcache, a durable record of its own reservations, written before
the reservation is asked for (a crash in between over-counts: the safe side), the last
cluster total and clock it saw, the peers it saw alive, and its real-time instant (the
24-hour window's clock, `crawler.store.ledger.terms.advance_real`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import diskcache

from crawler.logging import get_logger
from crawler.store.datadir import CorruptRecordError, storage_errors
from crawler.store.ledger.terms import advance_real
from crawler.utils.exceptions import StorageError

__all__ = ["SpendRecord", "encode_report"]

log = get_logger("crawler.ledger")

#: Own-spend records older than this are dropped (the window is 24 h; a day is at most 26 h).
_KEEP_US: Final = 3 * 86_400 * 1_000_000
#: The record's keys.
_OWN, _EPOCH, _PEERS, _CLOCK, _SEEN, _REAL = "own", "epoch", "peers", "clock", "seen", "real"
_WHAT: Final = "local ledger record"


class SpendRecord:
    """This node's durable memory for the cluster ledger, in its local diskcache.

    - own spend: per day, micro-dollars and requests of its own reservations (granted and not
      released; settled ones stay), per-minute window buckets, and reservations asked for but
      not yet answered (pending: counted, in case Redis granted them just before a crash);
    - the epoch it last reported to or joined; the peers it last saw alive;
    - the highest cluster total and the cluster clock it saw (`seen`, `remember_seen`);
    - its real-time instant (`real`).

    Every change runs in one diskcache transaction, so the daemon and a CLI process sharing the
    directory both keep theirs.
    """

    def __init__(self, cache: diskcache.Cache, directory: Path) -> None:
        self._cache = cache
        self._directory = directory
        self._lock = threading.Lock()

    # -- own spend ------------------------------------------------------------------------

    def begin(
        self, reservation_id: str, amount_micro: int, minute: int, epoch: str, now_us: int
    ) -> None:
        """Before asking Redis (under `epoch`): the reservation counts as ours until answered
        (raises StorageError: a reservation we could not record must not be made)."""
        with self._transact() as own:
            own["pending"][reservation_id] = [amount_micro, minute, os.getpid(), epoch, now_us]
            _prune(own, now_us)

    def granted(self, reservation_id: str, day: str) -> None:
        """Redis granted it for `day`: counted in that day's own spend and the window."""
        with self._transact() as own:
            entry = own["pending"].pop(reservation_id, None)
            if entry is None:
                return
            amount, minute, created = int(entry[0]), int(entry[1]), int(entry[-1])
            totals = own["days"].setdefault(day, [0, 0])
            totals[0] += amount
            totals[1] += 1
            own["window"][str(minute)] = own["window"].get(str(minute), 0) + amount
            own["open"][reservation_id] = [amount, minute, day, created]

    def refused(self, reservation_id: str) -> None:
        """Redis refused it (or could not be asked and nothing was granted): not ours."""
        with self._transact() as own:
            own["pending"].pop(reservation_id, None)

    def released(self, reservation_id: str) -> None:
        """The request was not billed: its amount comes out of our own spend."""
        with self._transact() as own:
            entry = own["open"].pop(reservation_id, None)
            if entry is None:
                return
            amount, minute, day = int(entry[0]), str(entry[1]), str(entry[2])
            totals = own["days"].get(day)
            if totals is not None:
                totals[0] = max(0, totals[0] - amount)
                totals[1] = max(0, totals[1] - 1)
            left = own["window"].get(minute, 0) - amount
            if left > 0:
                own["window"][minute] = left
            else:
                own["window"].pop(minute, None)

    def settled(self, reservation_id: str) -> None:
        """The request was billed: it stays in our spend; only its release handle goes."""
        with self._transact() as own:
            own["open"].pop(reservation_id, None)

    def has_spend(self) -> bool:
        """Whether this node remembers any spend (own, or a cluster total) of the last days."""
        # Pending reservations are not memory: one in flight in another thread is not spend,
        # and none can have been granted before this node joined an epoch.
        own = self._get(_OWN)
        if isinstance(own, dict) and any(int(v[0]) for v in dict(own.get("days") or {}).values()):
            return True
        seen = self._get(_SEEN)
        return isinstance(seen, dict) and int(seen.get("used_micro", 0) or 0) > 0

    def report(self, peers: list[str], now_us: int) -> dict[str, Any]:
        """What this node tells a recovering cluster (JSON-able; see REPORT_LUA)."""
        own = _normalise(self._get(_OWN))
        _prune(own, now_us)
        seen = self.seen()
        clock = self._get(_CLOCK)
        clock = clock if isinstance(clock, dict) else {}
        days: dict[str, list[int]] = {d: [int(v[0]), int(v[1])] for d, v in own["days"].items()}
        window: dict[str, int] = {m: int(v) for m, v in own["window"].items() if int(v) > 0}
        # A dead process's pending reservations may have been granted before it died: count
        # them, on the latest day we know. A live process's are in flight: Redis answers them
        # (an answer lost with Redis is what "within what was in flight" allows). One asked
        # under no epoch was refused: no epoch, no grant.
        latest = max([*days, str(clock.get("day") or ""), str(seen.get("day") or "")])
        for amount, minute, pid, epoch, _ in own["pending"].values():
            if not epoch or _alive(int(pid)):
                continue
            if latest:
                totals = days.setdefault(latest, [0, 0])
                totals[0] += int(amount)
                totals[1] += 1
            window[str(minute)] = window.get(str(minute), 0) + int(amount)
        return {
            "days": {d: v for d, v in days.items() if v[0] or v[1]} or {},
            "window": window,
            "seen": {
                "day": str(seen.get("day") or ""),
                "micro": str(int(seen.get("used_micro", 0) or 0)),
                "count": str(int(seen.get("used_count", 0) or 0)),
            },
            "clock": {
                "day": str(clock.get("day") or ""),
                "day_ends_us": str(int(clock.get("day_ends_us", 0) or 0)),
                "high_water_us": str(int(clock.get("high_water_us", 0) or 0)),
            },
            "peers": sorted(set(peers)),
        }

    # -- epoch, peers, clock ----------------------------------------------------------------

    def epoch(self) -> str:
        """The epoch this node last reported to or joined ("" if none)."""
        value = self._get(_EPOCH)
        return value if isinstance(value, str) else ""

    def set_epoch(self, epoch: str) -> None:
        self._set(_EPOCH, epoch)

    def peers(self) -> list[str]:
        """The nodes this node last saw beating (able to report)."""
        value = self._get(_PEERS)
        return [str(p) for p in value] if isinstance(value, list) else []

    def set_peers(self, peers: list[str]) -> None:
        if sorted(peers) != sorted(self.peers()):
            self._set(_PEERS, sorted(peers))

    def clock(self) -> dict[str, Any]:
        """The cluster clock last seen under an epoch: day, day_ends_us, high_water_us, epoch."""
        value = self._get(_CLOCK)
        return value if isinstance(value, dict) else {}

    def remember_clock(self, epoch: str, stored: dict[str, str]) -> None:
        """Keep the cluster clock `stored` (Redis' clock hash) as seen under `epoch`."""
        if not stored.get("day"):
            return
        record = {
            "epoch": epoch,
            "day": stored["day"],
            "day_ends_us": int(stored.get("day_ends_us", 0) or 0),
            "high_water_us": int(stored.get("high_water_us", 0) or 0),
        }
        current = self.clock()
        if current.get("epoch") == epoch and (
            str(current.get("day", "")),
            int(current.get("high_water_us", 0) or 0),
        ) >= (record["day"], record["high_water_us"]):
            return
        self._set(_CLOCK, record)

    # -- the cluster total seen, and real time ----------------------------------------------

    def seen(self) -> dict[str, Any]:
        """The highest total of a day this node has seen ({} if none)."""
        raw = self._get(_SEEN)
        return raw if isinstance(raw, dict) else {}

    def remember_seen(self, day: str, epoch: str, used_micro: int, used_count: int) -> None:
        """Keep the highest total seen of `day` (under `epoch`, for noticing a lost day key).
        A loss never lowers it: a re-seeded day starts at least this high."""
        with self._lock:
            seen = self.seen()
            if seen.get("day") == day and int(seen.get("used_micro", 0)) >= used_micro:
                if seen.get("epoch") == epoch:
                    return
                used_micro = int(seen.get("used_micro", 0))
                used_count = max(used_count, int(seen.get("used_count", 0)))
            elif str(seen.get("day", "")) > day:
                return  # an older day's figure never replaces today's
            self._keep(
                _SEEN,
                {"day": day, "epoch": epoch, "used_micro": used_micro, "used_count": used_count},
            )

    def real(self, now: datetime, reading_s: float, boot: str, *, store: bool) -> datetime:
        """This node's real time: its stored instant advanced by the monotonic clock within one
        boot, else the later of the wall clock and the stored instant (`store`: keep it)."""
        with self._lock:
            raw = self._get(_REAL)
            real = now
            if isinstance(raw, dict):
                try:
                    stored = (datetime.fromisoformat(str(raw["real"])),
                              float(raw["monotonic_s"]), str(raw.get("boot")))  # fmt: skip
                    real = advance_real(now, reading_s, boot, stored)
                except (KeyError, TypeError, ValueError):
                    real = now  # a broken record: the wall clock is all we have
            if store:
                self._keep(
                    _REAL, {"real": real.isoformat(), "monotonic_s": reading_s, "boot": boot}
                )
        return real

    # -- storage --------------------------------------------------------------------------

    @contextmanager
    def _transact(self) -> Iterator[dict[str, Any]]:
        where = storage_errors(_WHAT, self._directory)
        with self._lock, where, self._cache.transact():
            own = _normalise(self._get(_OWN))
            yield own
            self._cache.set(_OWN, own)

    def _get(self, key: str) -> Any:
        try:
            with storage_errors(_WHAT, self._directory):
                return self._cache.get(key)
        except (CorruptRecordError, StorageError):
            return None

    def _set(self, key: str, value: Any) -> None:
        with storage_errors(_WHAT, self._directory):
            self._cache.set(key, value)

    def _keep(self, key: str, value: dict[str, Any]) -> None:
        try:
            self._set(key, value)
        except StorageError:
            # The record only helps after a Redis restart; losing one update is not worth
            # failing a request that Redis already accepted.
            log.warning("could not write the local ledger record", directory=str(self._directory))


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (ours always does; another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _normalise(raw: Any) -> dict[str, Any]:
    own = dict(raw) if isinstance(raw, dict) else {}
    for name in ("days", "window", "pending", "open"):
        value = own.get(name)
        own[name] = dict(value) if isinstance(value, dict) else {}
    return own


def _prune(own: dict[str, Any], now_us: int) -> None:
    """Forget what no recovery can need: days and buckets older than _KEEP_US."""
    oldest_minute = (now_us - _KEEP_US) // 60_000_000
    for minute in [m for m in own["window"] if int(m) < oldest_minute]:
        del own["window"][minute]
    for name in ("pending", "open"):
        for rid in [r for r, e in own[name].items() if int(e[-1]) < now_us - _KEEP_US]:
            del own[name][rid]
    if len(own["days"]) > 3:
        for day in sorted(own["days"])[:-3]:
            del own["days"][day]


def encode_report(report: dict[str, Any]) -> str:
    """The report as the Lua script reads it (empty tables as JSON objects, not arrays)."""
    return json.dumps(report, separators=(",", ":"))
