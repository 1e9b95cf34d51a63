"""The daily Bright Data budget: reservations and billed spend, in integer micro-dollars.

Every paid request is bracketed: `reserve()` before it (refused with BudgetExhaustedError when
it would not fit), then `settle()` if the source billed us or `release()` if it did not. Each
read-modify-write runs in one diskcache transaction (SQLite ``BEGIN IMMEDIATE``), so threads and
processes (the daemon and a CLI ``crawler fetch``) sharing the directory never overspend.

A reservation left open by a crash stays counted as spent: overcounting a request we may have
paid for is the safe side. Money is keyed by the calendar day in `timezone`, computed from the
injected `now()`, so a new day key starts whether or not the midnight job ran.

Two rules keep a clock or configuration change from opening a fresh budget:

- The day key never goes back. The ledger stores the highest `now()` it has seen and the day it
  is on (with the instant that day ends); a clock stepped back keeps the stored day, and a
  `timezone` change takes effect at the stored day's end (the next boundary), never mid-day.
- Within any 24 hours of real time the spend never exceeds one day's budget. Every reservation
  is also counted in a rolling window of per-minute buckets (by the reservation's minute,
  dropped on release), and `reserve()` refuses when the last 24 hours (plus the partial minute,
  so the window errs on the safe side) hold a day's budget. A new day therefore frees money as
  the spend of 24 hours before ages out, not all at once at midnight. The window's time is real
  time, not the wall clock: the stored instant advanced by the system-wide monotonic clock
  while the boot is the same (``/proc/sys/kernel/random/boot_id``), so wall-clock steps either
  way move nothing; after a reboot it continues from the later of the wall clock and the
  stored instant (the monotonic clock stops during suspend, which only makes the window err on
  the safe side).

    >>> import tempfile
    >>> ledger = BudgetLedger(Path(tempfile.mkdtemp()), Decimal("0.03"), Decimal("0.0015"))
    >>> r = ledger.reserve()
    >>> ledger.settle(r), ledger.settle(r)
    (True, False)
    >>> ledger.statistics()["requests_billed"], str(ledger.statistics()["total_cost"])
    (1, '0.0015')
"""

from __future__ import annotations

import os
import time as _time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import diskcache

from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.utils.clock import MonotonicClock, WallClock, utc_now
from crawler.utils.exceptions import BudgetExhaustedError, ConfigError, StorageError

__all__ = [
    "DAYS_KEPT",
    "WINDOW_S",
    "BudgetLedger",
    "Reservation",
    "budget_terms",
    "current_boot_id",
    "exhausted_error",
    "fits",
    "micro_from_usd",
    "usd_from_micro",
]

MICRO_PER_USD: Final = 1_000_000
_ONE_MICRO_USD: Final = Decimal("0.000001")
#: Days of records kept; older days are pruned when a new day starts or on roll-over.
DAYS_KEPT: Final = 31
_DAY_PREFIX: Final = "day:"
_ROLLOVER_KEY: Final = "meta:rollover"
#: {"high_water": ISO instant, "day": ISO date, "day_ends": ISO instant}: see the module doc.
_CLOCK_KEY: Final = "meta:clock"
#: {str(epoch minute): micro-dollars reserved in that minute}, the last 24 hours only.
_WINDOW_KEY: Final = "meta:window"
#: {label: billed requests}: a day's label counts folded out of its `day:` record.
_LABELS_PREFIX: Final = "labels:"
#: Labels a day record holds before `_close` folds them into the day's `labels:` entry. Every
#: reservation and settlement reads and rewrites the day record: with every label in it, a
#: 1,000-symbol day decoded ~30 KB of JSON three times and encoded it twice per paid request.
_FOLD_AT: Final = 32
#: The rolling window: one day's budget at most per this many seconds of spend.
WINDOW_S: Final = 86_400
_BUCKET_S: Final = 60
_BOOT_ID_FILE: Final = Path("/proc/sys/kernel/random/boot_id")


def current_boot_id() -> str:
    """This boot's id ("" when the system does not say): the monotonic clock's scope."""
    try:
        return _BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


_WHAT: Final = "budget ledger"


def micro_from_usd(amount_usd: Decimal, name: str = "amount") -> int:
    """Exact integer micro-dollars of a non-negative USD amount; sub-micro amounts are refused.

    >>> micro_from_usd(Decimal("0.0015"))
    1500
    """
    if not isinstance(amount_usd, Decimal):
        raise ConfigError(f"{name} {amount_usd!r} must be a Decimal USD amount")
    if not amount_usd.is_finite() or amount_usd < 0:
        raise ConfigError(f"{name} {amount_usd} must be a finite amount >= 0 USD")
    try:
        exact = amount_usd.quantize(_ONE_MICRO_USD)
    except InvalidOperation as exc:
        raise ConfigError(f"{name} {amount_usd} is too large") from exc
    if exact != amount_usd:
        raise ConfigError(f"{name} {amount_usd} is finer than a micro-dollar; round to 6 places")
    return int(exact * MICRO_PER_USD)


def budget_terms(
    total_budget_usd: Decimal, cost_per_request_usd: Decimal, timezone: str
) -> tuple[int, int, ZoneInfo]:
    """(budget, cost per request) in micro-dollars and the budget day's zone, validated once
    for every ledger backend; ConfigError names the setting and how to fix it."""
    budget_micro = micro_from_usd(total_budget_usd, "TOTAL_BUDGET")
    cost_micro = micro_from_usd(cost_per_request_usd, "COST_PER_REQUEST")
    if cost_micro <= 0:
        raise ConfigError(f"COST_PER_REQUEST {cost_per_request_usd} must be above 0 USD")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"BUDGET_TIMEZONE {timezone!r} is not a known time zone; use e.g. UTC or "
            "America/New_York"
        ) from exc
    return budget_micro, cost_micro, zone


def fits(used_micro: int, window_micro: int, budget_micro: int, cost_micro: int) -> bool:
    """The budget's rule, written once for every ledger backend (the Redis script applies the
    same inequalities atomically): one more request of `cost_micro` fits when today's spend
    (billed + open reservations) and the last 24 hours' both stay within the budget."""
    return max(used_micro, window_micro) + cost_micro <= budget_micro


def exhausted_error(
    used_micro: int,
    used_count: int,
    window_micro: int,
    budget_micro: int,
    cost_micro: int,
    frees_at: datetime,
) -> BudgetExhaustedError:
    """The error of a request that does not `fit`, for every ledger backend: today's spend
    (a new budget day frees money) or the 24-hour window (money frees as spend ages out),
    with when money really frees up."""
    allowed = budget_micro // cost_micro if cost_micro else 0
    when = _at(frees_at)
    if used_micro + cost_micro > budget_micro:
        return BudgetExhaustedError(
            current_usage=used_count,
            budget_limit=allowed,
            cost_spent=usd_from_micro(used_micro),
            message=(
                f"daily budget exhausted: {used_count}/{allowed} requests, "
                f"${usd_from_micro(used_micro)} spent; money frees up {when} (a new budget day, "
                "once the spend of the 24 hours before it has aged out), or raise TOTAL_BUDGET"
            ),
        )
    return BudgetExhaustedError(
        current_usage=used_count,
        budget_limit=allowed,
        cost_spent=usd_from_micro(window_micro),
        message=(
            f"daily budget exhausted: the last 24 hours hold "
            f"${usd_from_micro(window_micro)} of ${usd_from_micro(budget_micro)}"
            f"; money frees up {when}, as that spend turns 24 hours old, or raise TOTAL_BUDGET"
        ),
    )


def usd_from_micro(amount_micro: int) -> Decimal:
    """USD of integer micro-dollars, exact and without trailing zeros beyond the value.

    >>> str(usd_from_micro(1_500)), str(usd_from_micro(100_000_000))
    ('0.0015', '100')
    """
    return Decimal(amount_micro) / MICRO_PER_USD


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slice of one day's budget held for one request. Settle or release it exactly once."""

    id: str
    day: str
    amount_micro: int

    @property
    def amount_usd(self) -> Decimal:
        """The reserved amount in USD."""
        return usd_from_micro(self.amount_micro)


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
class _ClockState:
    """Where the ledger's time stands: the highest wall instant seen and the current day key
    (the calendar), and the real-time instant with the monotonic reading and boot it was
    taken at (the 24-hour window)."""

    high_water: datetime
    day: str
    day_ends: datetime
    real: datetime
    monotonic_s: float
    boot: str

    def to_json(self) -> dict[str, Any]:
        return {
            "high_water": self.high_water.isoformat(),
            "day": self.day,
            "day_ends": self.day_ends.isoformat(),
            "real": self.real.isoformat(),
            "monotonic_s": self.monotonic_s,
            "boot": self.boot,
        }


class BudgetLedger:
    """The per-day budget, shared by threads and processes through `directory`.

    `total_budget_usd` and `cost_per_request_usd` come from the config and may change between
    restarts: stored spend is in micro-dollars and the limit is applied at reserve time.
    """

    def __init__(
        self,
        directory: Path,
        total_budget_usd: Decimal,
        cost_per_request_usd: Decimal,
        timezone: str = "UTC",
        now: WallClock = utc_now,
        clock: MonotonicClock = _time.monotonic,
        boot_id: Callable[[], str] = current_boot_id,
    ) -> None:
        self._budget_micro, self._cost_micro, self._zone = budget_terms(
            total_budget_usd, cost_per_request_usd, timezone
        )
        self._timezone = timezone
        self._now = now
        self._clock = clock
        self._boot = boot_id()
        self._directory = Path(directory)
        self._cache: diskcache.Cache = open_store(self._directory, _WHAT)

    # -- the day --------------------------------------------------------------------------

    def day(self) -> str:
        """Today's day key (ISO date): the budget's time zone's date of `now()`, except that it
        never goes back and a time-zone change waits for the current day's end."""
        with storage_errors(_WHAT, self._directory):
            return self._resolve(self._load_clock())[0].day

    def _aware_now(self) -> datetime:
        current = self._now()
        if not _is_aware(current):
            raise ValueError("now() must return a timezone-aware datetime")
        return current

    def _midnight_after(self, day: date) -> datetime:
        """The instant `day` ends in the budget's zone (its next local midnight)."""
        return datetime.combine(day + timedelta(days=1), time(0), tzinfo=self._zone)

    def _resolve(self, stored: _ClockState | None) -> tuple[_ClockState, datetime]:
        """The clock state for now, and the real-time instant for the 24-hour window.

        Pure: the caller stores the state inside its transaction when it changes money.
        """
        now = self._aware_now()
        reading = self._clock()
        if stored is None:
            local = now.astimezone(self._zone).date()
            state = _ClockState(
                now, local.isoformat(), self._midnight_after(local), now, reading, self._boot
            )
            return state, now
        if self._boot and stored.boot == self._boot and reading >= stored.monotonic_s:
            real = stored.real + timedelta(seconds=reading - stored.monotonic_s)
        else:
            real = max(now, stored.real)  # another boot: the wall clock is all we have
        effective = max(now, stored.high_water)
        if effective < stored.day_ends:
            day, day_ends = stored.day, stored.day_ends
        else:
            local = effective.astimezone(self._zone).date()
            current = date.fromisoformat(stored.day)
            if local <= current:
                # The zone changed westwards: hold the stored day until it ends in the new zone.
                day, day_ends = stored.day, self._midnight_after(current)
            else:
                day, day_ends = local.isoformat(), self._midnight_after(local)
        return _ClockState(effective, day, day_ends, real, reading, self._boot), real

    def _load_clock(self) -> _ClockState | None:
        try:
            raw = self._cache.get(_CLOCK_KEY)
        except CorruptRecordError as exc:
            raise self._corrupt("the clock", exc) from exc
        if raw is None:
            return None
        try:
            state = _ClockState(
                high_water=datetime.fromisoformat(raw["high_water"]),
                day=date.fromisoformat(raw["day"]).isoformat(),
                day_ends=datetime.fromisoformat(raw["day_ends"]),
                real=datetime.fromisoformat(raw["real"]),
                monotonic_s=float(raw["monotonic_s"]),
                boot=str(raw["boot"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise self._corrupt("the clock", exc) from exc
        if not all(_is_aware(t) for t in (state.high_water, state.day_ends, state.real)):
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
        oldest = _minute(real) - WINDOW_S // _BUCKET_S
        try:
            return {
                str(int(minute)): int(amount)
                for minute, amount in dict(raw).items()
                if int(minute) >= oldest and int(amount) > 0
            }
        except (TypeError, ValueError) as exc:
            raise self._corrupt("the 24-hour window", exc) from exc

    # -- reserve / settle / release -------------------------------------------------------

    def reserve(self, label: str | None = None) -> Reservation:
        """Hold one request's cost on today's budget, or raise BudgetExhaustedError.

        The hold counts as spent until `settle()` (billed) or `release()` (not billed).
        `label` (the symbol) is counted in `breakdown()` once the request is billed.
        """
        with storage_errors(_WHAT, self._directory), self._cache.transact():
            clock, real = self._resolve(self._load_clock())
            today = clock.day
            record, is_new = self._load_day(today)
            window = self._load_window(real)
            window_micro = sum(window.values())
            if not fits(record.used_micro, window_micro, self._budget_micro, self._cost_micro):
                raise exhausted_error(
                    record.used_micro, record.used_count, window_micro,
                    self._budget_micro, self._cost_micro,
                    self._frees_at(record.used_micro, window, clock, real),
                )  # fmt: skip
            reservation = Reservation(id=uuid.uuid4().hex, day=today, amount_micro=self._cost_micro)
            minute = _minute(real)
            record.open[reservation.id] = {
                "amount_micro": reservation.amount_micro,
                "pid": os.getpid(),
                "created": clock.high_water.isoformat(),
                "minute": minute,
            }
            window[str(minute)] = window.get(str(minute), 0) + reservation.amount_micro
            if label is not None:
                record.open[reservation.id]["label"] = str(label)[:64]
            self._store_day(today, record)
            self._cache.set(_WINDOW_KEY, window)
            self._cache.set(_CLOCK_KEY, clock.to_json())
            if is_new:
                # The first reservation of a day is a natural moment to forget old days.
                self._prune(date.fromisoformat(today))
        return reservation

    def settle(self, reservation: Reservation) -> bool:
        """The request was billed: move its hold into billed spend.

        Returns False (and changes nothing) for an unknown or already closed reservation, so a
        retry after an error never bills twice.
        """
        return self._close(reservation, billed=True)

    def release(self, reservation: Reservation) -> bool:
        """The request was not billed: drop its hold, the money comes back.

        Returns False (and changes nothing) for an unknown or already closed reservation.
        """
        return self._close(reservation, billed=False)

    def _close(self, reservation: Reservation, *, billed: bool) -> bool:
        with storage_errors(_WHAT, self._directory), self._cache.transact():
            record, is_new = self._load_day(reservation.day)
            entry = None if is_new else record.open.pop(reservation.id, None)
            if entry is None:
                return False
            if billed:
                # The stored amount is what was held, even if the config changed since.
                record.billed_micro += int(entry["amount_micro"])
                record.billed_count += 1
                # Counted in the hour the request was made (the budget's zone).
                made = datetime.fromisoformat(str(entry["created"])).astimezone(self._zone)
                hour = f"{made.hour:02d}"
                record.by_hour[hour] = record.by_hour.get(hour, 0) + 1
                label = entry.get("label")
                if isinstance(label, str):
                    record.by_label[label] = record.by_label.get(label, 0) + 1
                    if len(record.by_label) >= _FOLD_AT:
                        self._fold_labels(reservation.day, record)
            else:
                self._unwindow(entry)
            self._store_day(reservation.day, record)
        return True

    def _unwindow(self, entry: dict[str, Any]) -> None:
        """Take a released reservation back out of the 24-hour window (inside a transaction)."""
        minute = entry.get("minute")
        if not isinstance(minute, int):
            return  # written before the window existed: nothing was added
        _, real = self._resolve(self._load_clock())
        window = self._load_window(real)
        key = str(minute)
        if key in window:
            window[key] = max(0, window[key] - int(entry["amount_micro"]))
            if not window[key]:
                del window[key]
            self._cache.set(_WINDOW_KEY, window)

    def can_reserve(self) -> bool:
        """Whether one more request fits today and in the last 24 hours (a hint: `reserve()` is
        the atomic check)."""
        with storage_errors(_WHAT, self._directory):
            clock, real = self._resolve(self._load_clock())
            record, _ = self._load_day(clock.day)
            window_micro = sum(self._load_window(real).values())
        return fits(record.used_micro, window_micro, self._budget_micro, self._cost_micro)

    # -- roll-over and status -------------------------------------------------------------

    def record_rollover(self) -> None:
        """Note that the midnight job ran (for status) and prune days older than DAYS_KEPT.

        The budget itself needs no reset: a new day key starts empty.
        """
        with storage_errors(_WHAT, self._directory), self._cache.transact():
            clock, _ = self._resolve(self._load_clock())
            self._cache.set(_CLOCK_KEY, clock.to_json())
            self._cache.set(_ROLLOVER_KEY, {"at": clock.high_water.isoformat(), "day": clock.day})
            self._prune(date.fromisoformat(clock.day))

    @property
    def cost_per_request_usd(self) -> Decimal:
        """What one paid request costs, in USD."""
        return usd_from_micro(self._cost_micro)

    @property
    def requests_allowed(self) -> int:
        """Requests a full day's budget buys at the current cost."""
        return self._budget_micro // self._cost_micro

    def set_limits(self, total_budget_usd: Decimal, cost_per_request_usd: Decimal) -> None:
        """New limits from a reloaded configuration, applied from the next reservation on.
        Spend already counted stays counted: a lower budget only stops new paid requests."""
        self._budget_micro, self._cost_micro, _ = budget_terms(
            total_budget_usd, cost_per_request_usd, self._timezone
        )

    def statistics(self) -> dict[str, Any]:
        """Today's spend. Money fields are Decimal USD (``str()`` them for JSON).

        `total_cost` is billed spend plus open reservations (what counts against the budget);
        `billed_cost` and `reserved_cost` are its two parts. `requests_used` likewise counts
        billed requests plus open reservations; `requests_billed` only the former.
        `window_cost` is what the last 24 hours hold; `budget_remaining` is the smaller of what
        is left today and what is left in that window.
        """
        with storage_errors(_WHAT, self._directory):
            clock, real = self._resolve(self._load_clock())
            today = clock.day
            record, _ = self._load_day(today)
            window = self._load_window(real)
            window_micro = sum(window.values())
            rollover = self._cache.get(_ROLLOVER_KEY)
        used_micro = record.used_micro
        # A zero budget counts as fully used from the start.
        budget = self._budget_micro
        used_pct = round(used_micro * 100 / budget, 2) if budget else 100.0
        return {
            "day": today,
            "timezone": self._timezone,
            "total_cost": usd_from_micro(used_micro),
            "billed_cost": usd_from_micro(record.billed_micro),
            "reserved_cost": usd_from_micro(record.reserved_micro),
            "budget_total": usd_from_micro(self._budget_micro),
            "budget_used_pct": used_pct,
            "budget_remaining": usd_from_micro(
                max(0, self._budget_micro - max(used_micro, window_micro))
            ),
            "window_cost": usd_from_micro(window_micro),
            "day_ends": clock.day_ends.isoformat(),
            # When a request can be paid again if the budget is spent now (the rolling
            # 24-hour rule, not only midnight); None while there is room.
            "money_frees_at": (
                self._frees_at(used_micro, window, clock, real).isoformat()
                if max(used_micro, sum(window.values())) + self._cost_micro > self._budget_micro
                else None
            ),
            "cost_per_request": usd_from_micro(self._cost_micro),
            "requests_used": record.used_count,
            "requests_allowed": self.requests_allowed,
            "requests_billed": record.billed_count,
            "open_reservations": len(record.open),
            "last_rollover": rollover.get("at") if isinstance(rollover, dict) else None,
            "last_rollover_day": rollover.get("day") if isinstance(rollover, dict) else None,
        }

    def _frees_at(
        self, used_micro: int, window: Mapping[str, int], clock: _ClockState, real: datetime
    ) -> datetime:
        """When the next request can be reserved, if nothing else is spent: the day's spend
        must leave room (else the budget day's end) and so must the 24-hour window (else the
        minute its oldest spend has aged out far enough). Real time, as an aware instant."""
        now = self._aware_now()
        free_at = now
        if used_micro + self._cost_micro > self._budget_micro:
            free_at = max(free_at, clock.day_ends)
        held = sum(window.values())
        if held + self._cost_micro > self._budget_micro:
            for minute in sorted(window, key=int):
                held -= window[minute]
                if held + self._cost_micro <= self._budget_micro:
                    # `_load_window` keeps a bucket while its minute >= now's - WINDOW_S/60.
                    gone_s = (int(minute) + WINDOW_S // _BUCKET_S + 1) * _BUCKET_S
                    ages_out = now + timedelta(seconds=gone_s - real.timestamp())
                    # Up to the whole minute: the window drops whole minutes, and a promise a
                    # fraction early would be broken.
                    spare = ages_out.second * 1_000_000 + ages_out.microsecond
                    if spare:
                        ages_out += timedelta(microseconds=60_000_000 - spare)
                    free_at = max(free_at, ages_out)
                    break
        return free_at

    def breakdown(self) -> dict[str, dict[str, int]]:
        """Today's billed requests by hour ("00".."23", budget time zone) and by label."""
        # One transaction: a fold between the two reads would count its labels twice or never.
        with storage_errors(_WHAT, self._directory), self._cache.transact():
            clock, _ = self._resolve(self._load_clock())
            record, _ = self._load_day(clock.day)
            by_label = self._load_labels(clock.day)
        for label, count in record.by_label.items():
            by_label[label] = by_label.get(label, 0) + count
        return {"by_hour": dict(record.by_hour), "by_label": by_label}

    def days(self) -> list[str]:
        """The days with a record, oldest first (at most about DAYS_KEPT + 1)."""
        with storage_errors(_WHAT, self._directory):
            keys = list(self._cache.iterkeys())
        return sorted(
            key[len(_DAY_PREFIX) :]
            for key in keys
            if isinstance(key, str) and key.startswith(_DAY_PREFIX)
        )

    def close(self) -> None:
        """Close this thread's database connection (others close when their thread ends)."""
        self._cache.close()

    # -- storage --------------------------------------------------------------------------

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
        """Delete day records (and their labels) older than DAYS_KEPT days before `today` (inside
        a transaction)."""
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


def _at(instant: datetime) -> str:
    """An instant for an error line: "at 2026-12-08 09:14 UTC"."""
    return "at " + instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _minute(instant: datetime) -> int:
    """The epoch minute of an aware instant (the window's bucket)."""
    return int(instant.timestamp()) // _BUCKET_S


def _is_aware(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() is not None
