"""The daily Bright Data budget in the data dir: reservations and billed spend (diskcache).

The budget's terms (units, the rule, the day rule, the real-time window, the refusal,
`statistics()`) are `crawler.store.ledger.terms`'; this is where the embedded ledger keeps
them. Every read-modify-write runs in one diskcache transaction (SQLite ``BEGIN IMMEDIATE``),
so threads and processes (the daemon and a CLI ``crawler fetch``) sharing the directory never
overspend. A reservation left open by a crash stays counted as spent: overcounting a request
we may have paid for is the safe side.

    meta:clock     {"high_water", "day", "day_ends", "real", "monotonic_s", "boot"}: the day
                   rule's stored day and the real-time rule's stored instant
    meta:window    {str(epoch minute): micro-dollars reserved in that minute}, 24 hours only
    day:YYYY-MM-DD {"billed_micro", "billed_count", "open": {id: entry}, "by_hour",
                   "by_label"}
    meta:rollover  {"at", "day"}: the last midnight job, for status

    >>> import tempfile
    >>> ledger = BudgetLedger(Path(tempfile.mkdtemp()), Decimal("0.03"), Decimal("0.0015"))
    >>> r = ledger.reserve()
    >>> ledger.settle(r), ledger.settle(r)
    (True, False)
    >>> ledger.statistics()["requests_billed"], str(ledger.statistics()["total_cost"])
    (1, '0.0015')
"""

from __future__ import annotations

import math
import os
import time as _time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import diskcache

from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.store.ledger.draw import MAX_BLOCK, ROOM_SHARE, Close, Drawn, ReservationDraw
from crawler.store.ledger.terms import (
    DAYS_KEPT,
    WHAT,
    LedgerSnapshot,
    LedgerTerms,
    Reservation,
    StoredDay,
    advance_real,
    current_boot_id,
    fits,
    is_aware,
    minute_of,
    next_day,
    window_start,
)
from crawler.utils.clock import MonotonicClock, WallClock, utc_now
from crawler.utils.exceptions import BudgetExhaustedError, StorageError

__all__ = ["BudgetLedger"]

_DAY_PREFIX: Final = "day:"
_ROLLOVER_KEY: Final = "meta:rollover"
_CLOCK_KEY: Final = "meta:clock"
_WINDOW_KEY: Final = "meta:window"
#: {label: billed requests}: a day's label counts folded out of its `day:` record.
_LABELS_PREFIX: Final = "labels:"
#: Labels a day record holds before `_close` folds them into the day's `labels:` entry. Every
#: reservation and settlement reads and rewrites the day record: with every label in it, a
#: 1,000-symbol day decoded ~30 KB of JSON three times and encoded it twice per paid request.
_FOLD_AT: Final = 32
#: `can_reserve` answers yes from memory for `_HINT_S` (monotonic) seconds after a reservation
#: of this process that left room for at least `_HINT_ROOM` more requests: the hybrid asks it
#: before every paid request, and `reserve()` stays the atomic check of the money.
_HINT_ROOM: Final = 64
_HINT_S: Final = 1.0


@dataclass(slots=True)
class _DayRecord:
    """What one `day:YYYY-MM-DD` entry holds (as JSON)."""

    billed_micro: int
    billed_count: int
    open: dict[str, dict[str, Any]]
    # Billed requests per hour of the day ("00".."23", budget time zone) and per label (the
    # symbol): what `crawler budget` draws. Absent in records written before they existed.
    # `by_label` holds only the labels not yet folded into the day's `labels:` entry.
    by_hour: dict[str, int] = field(default_factory=dict)
    by_label: dict[str, int] = field(default_factory=dict)

    @property
    def reserved_micro(self) -> int:
        return sum(int(entry["amount_micro"]) for entry in self.open.values())

    @property
    def used_micro(self) -> int:
        return self.billed_micro + self.reserved_micro

    @property
    def used_count(self) -> int:
        return self.billed_count + len(self.open)

    def to_json(self) -> dict[str, Any]:
        return {
            "billed_micro": self.billed_micro,
            "billed_count": self.billed_count,
            "open": self.open,
            "by_hour": self.by_hour,
            "by_label": self.by_label,
        }


@dataclass(frozen=True, slots=True)
class _Clock:
    """The stored day (the calendar) and the real-time instant with the monotonic reading and
    boot it was taken at (the 24-hour window)."""

    day: StoredDay
    real: datetime
    monotonic_s: float
    boot: str

    def to_json(self) -> dict[str, Any]:
        return {
            "high_water": self.day.high_water.isoformat(),
            "day": self.day.day,
            "day_ends": self.day.day_ends.isoformat(),
            "real": self.real.isoformat(),
            "monotonic_s": self.monotonic_s,
            "boot": self.boot,
        }


class BudgetLedger(LedgerTerms):
    """The per-day budget, shared by threads and processes through `directory`."""

    def __init__(
        self,
        directory: Path,
        total_budget_usd: Decimal,
        cost_per_request_usd: Decimal,
        timezone: str = "UTC",
        now: WallClock = utc_now,
        clock: MonotonicClock = _time.monotonic,
        boot_id: Callable[[], str] = current_boot_id,
        max_block: int = MAX_BLOCK,
    ) -> None:
        super().__init__(total_budget_usd, cost_per_request_usd, timezone, now, clock, boot_id())
        self._directory = Path(directory)
        self._cache: diskcache.Cache = open_store(self._directory, WHAT)
        # Until when (our `clock`) `can_reserve` may answer yes without reading: see _HINT_S.
        self._roomy_until_s = -math.inf
        self._draws = ReservationDraw(self._draw, self._aware_now, max_block)

    # -- reserve / close ------------------------------------------------------------------

    def _reserve_one(self, label: str | None) -> Reservation:
        drawn = self._draw(1, (), label)
        if drawn.refusal is not None:
            raise drawn.refusal
        return drawn.reservations[0]

    def _draw(self, want: int, closes: Sequence[Close], label: str | None = None) -> Drawn:
        """One transaction: write `closes`, then hold up to `want` requests (`draw.py`): at
        least one when one fits, at most a `ROOM_SHARE`th of the room beyond the first; else
        the refusal, returned (the closes are written even so). `label` is the first
        reservation's (a single `reserve()`; a block's are named when they close). Settles
        alone read neither the clock nor the 24-hour window."""
        with storage_errors(WHAT, self._directory), self._cache.transact():
            windowed_work = want > 0 or not all(close.billed for close in closes)
            clock = self._resolve() if windowed_work else None
            window = {} if clock is None else self._load_window(clock.real)
            records: dict[str, tuple[_DayRecord, bool]] = {}
            closed = 0
            changed: set[str] = set()
            windowed = False
            for close in closes:
                day = close.reservation.day
                if day not in records:
                    records[day] = self._load_day(day)
                record, is_new = records[day]
                entry = None if is_new else record.open.pop(close.reservation.id, None)
                if entry is not None:
                    closed += 1
                    changed.add(day)
                    self._count_close(record, day, entry, close)
                    if not close.billed:
                        windowed |= _unwindow(window, entry)
            minute = 0 if clock is None else minute_of(clock.real)
            granted: list[Reservation] = []
            refusal = None
            if want and clock is not None:
                today = clock.day.day
                if today not in records:
                    records[today] = self._load_day(today)
                granted, refusal = self._hold(records[today][0], window, clock, minute, want, label)
                if granted:
                    changed.add(today)
                    windowed = True
            for day in changed:
                self._store_day(day, records[day][0])
            if windowed:
                self._cache.set(_WINDOW_KEY, window)
            if granted and clock is not None:
                self._cache.set(_CLOCK_KEY, clock.to_json())
                if records[clock.day.day][1]:
                    # The first reservation of a day is a natural moment to forget old days.
                    self._prune(date.fromisoformat(clock.day.day))
        return Drawn(granted, minute, refusal, closed)

    def _hold(
        self,
        record: _DayRecord,
        window: dict[str, int],
        clock: _Clock,
        minute: int,
        want: int,
        label: str | None,
    ) -> tuple[list[Reservation], BudgetExhaustedError | None]:
        """Up to `want` new open reservations in `record` and `window` (inside the caller's
        transaction), or none and the refusal."""
        window_micro = sum(window.values())
        if not fits(record.used_micro, window_micro, self._budget_micro, self._cost_micro):
            self._roomy_until_s = -math.inf
            return [], self._refusal(
                record.used_micro, record.used_count, window, clock.day.day_ends, clock.real
            )
        room = (self._budget_micro - max(record.used_micro, window_micro)) // self._cost_micro
        count = min(want, max(1, room // ROOM_SHARE))
        created = clock.day.high_water.isoformat()
        granted = []
        for _ in range(count):
            reservation = Reservation(uuid.uuid4().hex, clock.day.day, self._cost_micro)
            record.open[reservation.id] = {
                "amount_micro": reservation.amount_micro,
                "pid": os.getpid(),
                "created": created,
                "minute": minute,
            }
            granted.append(reservation)
        if label is not None:
            record.open[granted[0].id]["label"] = str(label)[:64]
        added = count * self._cost_micro
        window[str(minute)] = window.get(str(minute), 0) + added
        roomy = room - count >= _HINT_ROOM
        self._roomy_until_s = self._clock() + _HINT_S if roomy else -math.inf
        return granted, None

    def can_reserve(self) -> bool:
        """Whether one more request fits today and in the last 24 hours (a hint: `reserve()` is
        the atomic check); shortly after a roomy reservation of ours, from memory."""
        if self._clock() < self._roomy_until_s:
            return True
        return super().can_reserve()

    def set_limits(self, total_budget_usd: Decimal, cost_per_request_usd: Decimal) -> None:
        """New limits from a reloaded configuration, applied from the next reservation on."""
        super().set_limits(total_budget_usd, cost_per_request_usd)
        self._roomy_until_s = -math.inf

    def _close(self, reservation: Reservation, *, billed: bool) -> bool:
        close = Close(reservation, billed, label=None, made=None, minute=0)
        return self._draw(0, [close]).closed == 1

    def _count_close(
        self, record: _DayRecord, day: str, entry: dict[str, Any], close: Close
    ) -> None:
        """Count a settled reservation's `entry` (popped from `record.open`) as billed: its
        amount, its hour and its label (the close's, else the entry's). A release counts
        nothing here; it leaves the window instead (`_unwindow`)."""
        if not close.billed:
            return
        # The stored amount is what was held, even if the config changed since.
        record.billed_micro += int(entry["amount_micro"])
        record.billed_count += 1
        # Counted in the hour the request was made (the budget's zone).
        made = close.made or datetime.fromisoformat(str(entry["created"]))
        hour = f"{made.astimezone(self._zone).hour:02d}"
        record.by_hour[hour] = record.by_hour.get(hour, 0) + 1
        label = close.label if close.label is not None else entry.get("label")
        if isinstance(label, str):
            record.by_label[label] = record.by_label.get(label, 0) + 1
            if len(record.by_label) >= _FOLD_AT:
                self._fold_labels(day, record)

    # -- roll-over and status -------------------------------------------------------------

    def record_rollover(self) -> None:
        """Note that the midnight job ran (for status) and prune days older than DAYS_KEPT.

        The budget itself needs no reset: a new day key starts empty.
        """
        self.flush()  # a block drawn yesterday is not today's to spend
        with storage_errors(WHAT, self._directory), self._cache.transact():
            clock = self._resolve()
            self._cache.set(_CLOCK_KEY, clock.to_json())
            at = clock.day.high_water.isoformat()
            self._cache.set(_ROLLOVER_KEY, {"at": at, "day": clock.day.day})
            self._prune(date.fromisoformat(clock.day.day))

    def _stored_day(self) -> StoredDay | None:
        with storage_errors(WHAT, self._directory):
            stored = self._load_clock()
        return None if stored is None else stored.day

    def _spend_now(self) -> tuple[int, int]:
        with storage_errors(WHAT, self._directory):
            clock = self._resolve()
            record, _ = self._load_day(clock.day.day)
            window_micro = sum(self._load_window(clock.real).values())
        return record.used_micro, window_micro

    def _snapshot(self) -> LedgerSnapshot:
        with storage_errors(WHAT, self._directory):
            clock = self._resolve()
            record, _ = self._load_day(clock.day.day)
            window = self._load_window(clock.real)
            rollover = self._cache.get(_ROLLOVER_KEY)
        return LedgerSnapshot(
            day=clock.day,
            real=clock.real,
            billed_micro=record.billed_micro,
            billed_count=record.billed_count,
            reserved_micro=record.reserved_micro,
            open_count=len(record.open),
            window=window,
            rollover=rollover if isinstance(rollover, dict) else {},
        )

    def breakdown(self) -> dict[str, dict[str, int]]:
        """Today's billed requests by hour ("00".."23", budget time zone) and by label."""
        if self._draws is not None:
            self._draws.flush(keep_block=True)  # the queued settles count here too
        # One transaction: a fold between the two reads would count its labels twice or never.
        with storage_errors(WHAT, self._directory), self._cache.transact():
            day = self._resolve().day.day
            record, _ = self._load_day(day)
            by_label = self._load_labels(day)
        for label, count in record.by_label.items():
            by_label[label] = by_label.get(label, 0) + count
        return {"by_hour": dict(record.by_hour), "by_label": by_label}

    def days(self) -> list[str]:
        """The days with a record, oldest first (at most about DAYS_KEPT + 1)."""
        with storage_errors(WHAT, self._directory):
            keys = list(self._cache.iterkeys())
        return sorted(
            key[len(_DAY_PREFIX) :]
            for key in keys
            if isinstance(key, str) and key.startswith(_DAY_PREFIX)
        )

    def close(self) -> None:
        """Write what the draw holds back, then close this thread's database connection
        (others close when their thread ends)."""
        try:
            self.flush()
        finally:
            self._cache.close()

    # -- storage --------------------------------------------------------------------------

    def _resolve(self) -> _Clock:
        """The clock for now: the day rule and the real-time rule applied to the stored clock.
        Pure: the caller stores it inside its transaction when it changes money."""
        stored = self._load_clock()
        now = self._aware_now()
        reading = self._clock()
        day = next_day(now, None if stored is None else stored.day, self._zone)
        previous = None if stored is None else (stored.real, stored.monotonic_s, stored.boot)
        return _Clock(day, advance_real(now, reading, self._boot, previous), reading, self._boot)

    def _load_clock(self) -> _Clock | None:
        try:
            raw = self._cache.get(_CLOCK_KEY)
        except CorruptRecordError as exc:
            raise self._corrupt("the clock", exc) from exc
        if raw is None:
            return None
        try:
            state = _Clock(
                day=StoredDay(
                    day=date.fromisoformat(raw["day"]).isoformat(),
                    day_ends=datetime.fromisoformat(raw["day_ends"]),
                    high_water=datetime.fromisoformat(raw["high_water"]),
                ),
                real=datetime.fromisoformat(raw["real"]),
                monotonic_s=float(raw["monotonic_s"]),
                boot=str(raw["boot"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise self._corrupt("the clock", exc) from exc
        if not all(is_aware(t) for t in (state.day.high_water, state.day.day_ends, state.real)):
            raise self._corrupt("the clock", ValueError("naive instant"))
        return state

    def _load_window(self, real: datetime) -> dict[str, int]:
        """The per-minute reservations still inside the window that ends at `real`."""
        try:
            raw = self._cache.get(_WINDOW_KEY)
        except CorruptRecordError as exc:
            raise self._corrupt("the 24-hour window", exc) from exc
        if raw is None:
            return {}
        oldest = window_start(real)
        try:
            return {
                str(int(minute)): int(amount)
                for minute, amount in dict(raw).items()
                if int(minute) >= oldest and int(amount) > 0
            }
        except (TypeError, ValueError) as exc:
            raise self._corrupt("the 24-hour window", exc) from exc

    def _load_day(self, day: str) -> tuple[_DayRecord, bool]:
        """The day's record and whether it is new (absent). Corruption is a StorageError:
        guessing a budget from a broken record could overspend."""
        try:
            raw = self._cache.get(_DAY_PREFIX + day)
        except CorruptRecordError as exc:
            raise self._corrupt(day, exc) from exc
        if raw is None:
            return _DayRecord(billed_micro=0, billed_count=0, open={}), True
        try:
            record = _DayRecord(
                billed_micro=int(raw["billed_micro"]),
                billed_count=int(raw["billed_count"]),
                open=dict(raw["open"]),
                by_hour={str(k): int(v) for k, v in dict(raw.get("by_hour") or {}).items()},
                by_label={str(k): int(v) for k, v in dict(raw.get("by_label") or {}).items()},
            )
            _ = record.reserved_micro  # validates every open entry
        except (KeyError, TypeError, ValueError) as exc:
            raise self._corrupt(day, exc) from exc
        return record, False

    def _store_day(self, day: str, record: _DayRecord) -> None:
        self._cache.set(_DAY_PREFIX + day, record.to_json())

    def _load_labels(self, day: str) -> dict[str, int]:
        """The day's folded label counts (empty when none were folded yet)."""
        try:
            raw = self._cache.get(_LABELS_PREFIX + day)
            return {str(k): int(v) for k, v in dict(raw or {}).items()}
        except (CorruptRecordError, TypeError, ValueError) as exc:
            raise self._corrupt(f"{day} (its labels)", exc) from exc

    def _fold_labels(self, day: str, record: _DayRecord) -> None:
        """Move the record's label counts into the day's `labels:` entry (inside the caller's
        transaction, which stores the record): the record stays small whatever the day."""
        folded = self._load_labels(day)
        for label, count in record.by_label.items():
            folded[label] = folded.get(label, 0) + count
        self._cache.set(_LABELS_PREFIX + day, folded)
        record.by_label = {}

    def _corrupt(self, day: str, exc: Exception) -> StorageError:
        return StorageError(
            f"budget ledger at {self._directory} has a corrupt record for {day} ({exc}); "
            "move the directory aside to start a fresh ledger"
        )

    def _prune(self, today: date) -> None:
        """Delete day records (and their labels) older than DAYS_KEPT days before `today`
        (inside a transaction)."""
        oldest_kept = today - timedelta(days=DAYS_KEPT)
        for key in list(self._cache.iterkeys()):
            prefix = next(
                (
                    p
                    for p in (_DAY_PREFIX, _LABELS_PREFIX)
                    if isinstance(key, str) and key.startswith(p)
                ),
                None,
            )
            if prefix is None:
                continue
            try:
                day = date.fromisoformat(key[len(prefix) :])
            except ValueError:
                continue
            if day < oldest_kept:
                self._cache.delete(key)


def _unwindow(window: dict[str, int], entry: dict[str, Any]) -> bool:
    """Take a released reservation's hold back out of `window`; False if it was not there
    (written before the window existed, or already aged out)."""
    minute = entry.get("minute")
    key = str(minute)
    if not isinstance(minute, int) or key not in window:
        return False
    window[key] = max(0, window[key] - int(entry["amount_micro"]))
    if not window[key]:
        del window[key]
    return True
