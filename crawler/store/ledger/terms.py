"""The budget's terms, written once for both ledgers (`BudgetLedger`, `RedisLedger`).

Units: integer micro-dollars (`micro_from_usd`, `usd_from_micro`). A `Reservation` holds one
request's cost until it is settled (billed) or released (not billed). Three rules:

- One more request `fits` when today's spend (billed + open reservations) and the last 24
  hours' both stay within the budget; else `exhausted_error` says which, and when money
  really frees up (`frees_at`).
- The day rule (`next_day`): the day key is the budget zone's date of the highest instant
  seen; it never goes back, and a time-zone change takes effect at the stored day's end.
- The real-time rule (`advance_real`): the 24-hour window runs on the stored instant advanced
  by the monotonic clock within one boot, so wall-clock steps move nothing; after a reboot it
  continues from the later of the wall clock and the stored instant.

`LedgerTerms` is the base both backends subclass (huey's `BaseStorage` seam): the limits,
`settle`/`release`, `day`, `can_reserve` and `statistics()` are written here once, above a few
primitives each backend implements (`_reserve_one`, `_stored_day`, `_close`, `_spend_now`,
`_snapshot`). A backend that can reserve a block in one go sets `_draws` (`draw.py`): then
`reserve`, `settle` and `release` go through it, and `statistics()` reads through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crawler.utils.clock import MonotonicClock, WallClock
from crawler.utils.exceptions import BudgetExhaustedError, ConfigError

__all__ = [
    "BUCKET_S",
    "DAYS_KEPT",
    "MICRO_PER_USD",
    "WINDOW_MINUTES",
    "WINDOW_S",
    "LedgerSnapshot",
    "LedgerTerms",
    "Reservation",
    "StoredDay",
    "advance_real",
    "budget_terms",
    "current_boot_id",
    "exhausted_error",
    "fits",
    "frees_at",
    "micro_from_usd",
    "minute_of",
    "next_day",
    "usd_from_micro",
    "window_start",
]

MICRO_PER_USD: Final = 1_000_000
_ONE_MICRO_USD: Final = Decimal("0.000001")
#: Days of records kept; older days are pruned (embedded) or expire (Redis).
DAYS_KEPT: Final = 31
#: The rolling window: one day's budget at most per this many seconds of spend.
WINDOW_S: Final = 86_400
#: The window's buckets: one per epoch minute.
BUCKET_S: Final = 60
WINDOW_MINUTES: Final = WINDOW_S // BUCKET_S
_BOOT_ID_FILE: Final = Path("/proc/sys/kernel/random/boot_id")
WHAT: Final = "budget ledger"


def current_boot_id() -> str:
    """This boot's id ("" when the system does not say): the monotonic clock's scope."""
    try:
        return _BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


# -- units ------------------------------------------------------------------------------------


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


def usd_from_micro(amount_micro: int) -> Decimal:
    """USD of integer micro-dollars, exact and without trailing zeros beyond the value.

    >>> str(usd_from_micro(1_500)), str(usd_from_micro(100_000_000))
    ('0.0015', '100')
    """
    return Decimal(amount_micro) / MICRO_PER_USD


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


# -- the rule and its refusal -----------------------------------------------------------------


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
    when = "at " + frees_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
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


def frees_at(
    now: datetime,
    real: datetime,
    used_micro: int,
    window: Mapping[str, int],
    day_ends: datetime,
    budget_micro: int,
    cost_micro: int,
) -> datetime:
    """When the next request can be reserved, if nothing else is spent: the day's spend must
    leave room (else the budget day's end) and so must the 24-hour window (`window`: epoch
    minute -> micro-dollars, in real time; else the minute its oldest spend has aged out far
    enough). An aware instant."""
    free_at = now
    if used_micro + cost_micro > budget_micro:
        free_at = max(free_at, day_ends)
    held = sum(window.values())
    if held + cost_micro <= budget_micro:
        return free_at
    for minute in sorted(window, key=int):
        held -= window[minute]
        if held + cost_micro <= budget_micro:
            # A bucket stays in the window while its minute >= now's - WINDOW_S/60.
            gone_s = (int(minute) + WINDOW_MINUTES + 1) * BUCKET_S
            ages_out = now + timedelta(seconds=gone_s - real.timestamp())
            # Up to the whole minute: the window drops whole minutes, and a promise a
            # fraction early would be broken.
            spare = ages_out.second * 1_000_000 + ages_out.microsecond
            if spare:
                ages_out += timedelta(microseconds=60_000_000 - spare)
            return max(free_at, ages_out)
    return free_at


# -- the day rule and the real-time rule ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredDay:
    """The day a ledger is on, as stored: its key, the instant it ends and the highest wall
    instant any writer has shown."""

    day: str
    day_ends: datetime
    high_water: datetime


def midnight_after(day: date, zone: ZoneInfo) -> datetime:
    """The instant `day` ends in `zone` (its next local midnight)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)


def next_day(now: datetime, stored: StoredDay | None, zone: ZoneInfo) -> StoredDay:
    """The day a ledger is on at `now`: the zone's date of the highest instant seen; it never
    goes back, and a zone change takes effect at the stored day's end (the next boundary)."""
    effective = now if stored is None else max(now, stored.high_water)
    if stored is not None and effective < stored.day_ends:
        return StoredDay(stored.day, stored.day_ends, effective)
    local = effective.astimezone(zone).date()
    if stored is not None:
        current = date.fromisoformat(stored.day)
        if local <= current:
            # The zone changed westwards: hold the stored day until it ends in the new zone.
            return StoredDay(stored.day, midnight_after(current, zone), effective)
    return StoredDay(local.isoformat(), midnight_after(local, zone), effective)


def advance_real(
    now: datetime, reading_s: float, boot: str, stored: tuple[datetime, float, str] | None
) -> datetime:
    """Real time for the 24-hour window: `stored` (instant, monotonic reading, boot) advanced
    by the monotonic clock within the same boot; else the later of the wall clock and it."""
    if stored is None:
        return now
    real, monotonic_s, stored_boot = stored
    if boot and stored_boot == boot and reading_s >= monotonic_s:
        return real + timedelta(seconds=reading_s - monotonic_s)
    return max(now, real)  # another boot: the wall clock is all we have


def minute_of(instant: datetime) -> int:
    """The epoch minute of an aware instant (the window's bucket)."""
    return int(instant.timestamp()) // BUCKET_S


def window_start(real: datetime) -> int:
    """The oldest minute still inside the 24-hour window that ends at `real`."""
    return minute_of(real) - WINDOW_MINUTES


def is_aware(value: datetime) -> bool:
    """Whether `value` carries a time zone."""
    return value.tzinfo is not None and value.utcoffset() is not None


# -- the base both backends subclass ----------------------------------------------------------


@dataclass(slots=True)
class LedgerSnapshot:
    """What `statistics()` needs from a backend, read at one moment."""

    day: StoredDay
    real: datetime
    billed_micro: int
    billed_count: int
    reserved_micro: int
    open_count: int
    #: epoch minute -> micro-dollars, the last 24 hours of real time only
    window: dict[str, int]
    rollover: Mapping[str, Any]
    #: Nothing may be spent (a cluster recovering its spend): nothing remains.
    recovering: bool = False
    #: The backend's own keys (Redis: store, store_reachable, reseeded_cost, recovering).
    extra: dict[str, Any] = field(default_factory=dict)


class Draws(Protocol):
    """What `LedgerTerms` asks of a backend's block of reservations (`draw.ReservationDraw`)."""

    def take(self, label: str | None) -> Reservation: ...
    def close(self, reservation: Reservation, *, billed: bool) -> bool | None: ...
    def holds(self) -> bool: ...
    def flush(self, *, keep_block: bool = False) -> None: ...
    def steady(self, read: Callable[[], LedgerSnapshot]) -> LedgerSnapshot: ...


class LedgerTerms:
    """The per-day budget's terms and the operations written once above the storage seam.

    `total_budget_usd` and `cost_per_request_usd` come from the config and may change between
    restarts: stored spend is in micro-dollars and the limit is applied at reserve time.
    """

    def __init__(
        self,
        budget_usd: Decimal,
        cost_usd: Decimal,
        timezone: str,
        now: WallClock,
        clock: MonotonicClock,
        boot: str,
    ) -> None:
        self._budget_micro, self._cost_micro, self._zone = budget_terms(
            budget_usd, cost_usd, timezone
        )
        self._timezone = timezone
        self._now = now
        self._clock = clock
        self._boot = boot
        #: Set by a backend that reserves a block at a time (`crawler.store.ledger.draw`).
        self._draws: Draws | None = None

    # -- primitives each backend implements -----------------------------------------------

    def _reserve_one(self, label: str | None) -> Reservation:
        """Hold one request's cost (one transaction), or raise BudgetExhaustedError."""
        raise NotImplementedError

    def _stored_day(self) -> StoredDay | None:
        """The stored day (None: none yet), read without changing it."""
        raise NotImplementedError

    def _close(self, reservation: Reservation, *, billed: bool) -> bool:
        """Settle (`billed`) or release one reservation; False if unknown or closed."""
        raise NotImplementedError

    def _spend_now(self) -> tuple[int, int]:
        """(today's spend, the last 24 hours') in micro-dollars, for `can_reserve`."""
        raise NotImplementedError

    def _snapshot(self) -> LedgerSnapshot:
        """Today's figures, for `statistics`."""
        raise NotImplementedError

    # -- written once -----------------------------------------------------------------------

    def day(self) -> str:
        """Today's day key (ISO date): the budget's time zone's date of `now()`, except that it
        never goes back and a time-zone change waits for the current day's end."""
        return next_day(self._aware_now(), self._stored_day(), self._zone).day

    def reserve(self, label: str | None = None) -> Reservation:
        """Hold one request's cost on today's budget, or raise BudgetExhaustedError.

        The hold counts as spent until `settle()` (billed) or `release()` (not billed).
        `label` (the symbol) is counted in `breakdown()` once the request is billed.
        """
        draws = self._draws
        return self._reserve_one(label) if draws is None else draws.take(label)

    def settle(self, reservation: Reservation) -> bool:
        """The request was billed: move its hold into billed spend.

        Returns False (and changes nothing) for an unknown or already closed reservation, so a
        retry after an error never bills twice.
        """
        return self._close_any(reservation, billed=True)

    def release(self, reservation: Reservation) -> bool:
        """The request was not billed: drop its hold (and its share of the 24-hour window),
        the money comes back. False (and nothing changes) for an unknown or closed one."""
        return self._close_any(reservation, billed=False)

    def _close_any(self, reservation: Reservation, *, billed: bool) -> bool:
        draws = self._draws
        queued = None if draws is None else draws.close(reservation, billed=billed)
        return self._close(reservation, billed=billed) if queued is None else queued

    def flush(self) -> None:
        """Write what the draw holds back (queued closes, the unused block): see `draw`."""
        if self._draws is not None:
            self._draws.flush()

    def can_reserve(self) -> bool:
        """Whether one more request fits today and in the last 24 hours (a hint: `reserve()` is
        the atomic check)."""
        if self._draws is not None and self._draws.holds():
            return True
        used_micro, window_micro = self._spend_now()
        return fits(used_micro, window_micro, self._budget_micro, self._cost_micro)

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
        self.flush()  # a block held under the old limits is not spent under the new ones

    def statistics(self) -> dict[str, Any]:
        """Today's spend. Money fields are Decimal USD (``str()`` them for JSON).

        `total_cost` is billed spend plus open reservations (what counts against the budget);
        `billed_cost` and `reserved_cost` are its two parts. `requests_used` likewise counts
        billed requests plus open reservations; `requests_billed` only the former.
        `window_cost` is what the last 24 hours hold; `budget_remaining` is the smaller of what
        is left today and what is left in that window (0 while a cluster recovers its spend).
        `money_frees_at` says when a request can be paid again if the budget is spent now (the
        rolling 24-hour rule, not only midnight); None while there is room.
        """
        draws = self._draws
        snap = self._snapshot() if draws is None else draws.steady(self._snapshot)
        used_micro = snap.billed_micro + snap.reserved_micro
        window_micro = sum(snap.window.values())
        budget, cost = self._budget_micro, self._cost_micro
        used_pct = round(used_micro * 100 / budget, 2) if budget else 100.0  # 0 budget: all used
        left = 0 if snap.recovering else max(0, budget - max(used_micro, window_micro))
        free = None
        if not fits(used_micro, window_micro, budget, cost):
            free = self._frees_at(used_micro, snap.window, snap.day.day_ends, snap.real)
        return {
            "day": snap.day.day,
            "timezone": self._timezone,
            "total_cost": usd_from_micro(used_micro),
            "billed_cost": usd_from_micro(snap.billed_micro),
            "reserved_cost": usd_from_micro(snap.reserved_micro),
            "budget_total": usd_from_micro(budget),
            "budget_used_pct": used_pct,
            "budget_remaining": usd_from_micro(left),
            "window_cost": usd_from_micro(window_micro),
            "day_ends": snap.day.day_ends.astimezone(self._zone).isoformat(),
            "money_frees_at": None if free is None else free.astimezone(self._zone).isoformat(),
            "cost_per_request": usd_from_micro(cost),
            "requests_used": snap.billed_count + snap.open_count,
            "requests_allowed": self.requests_allowed,
            "requests_billed": snap.billed_count,
            "open_reservations": snap.open_count,
            "last_rollover": snap.rollover.get("at"),
            "last_rollover_day": snap.rollover.get("day"),
            **snap.extra,
        }

    # -- helpers for the backends -----------------------------------------------------------

    def _aware_now(self) -> datetime:
        current = self._now()
        if not is_aware(current):
            raise ValueError("now() must return a timezone-aware datetime")
        return current

    def _frees_at(
        self, used_micro: int, window: Mapping[str, int], day_ends: datetime, real: datetime
    ) -> datetime:
        return frees_at(
            self._aware_now(), real, used_micro, window, day_ends,
            self._budget_micro, self._cost_micro,
        )  # fmt: skip

    def _refusal(
        self,
        used_micro: int,
        used_count: int,
        window: Mapping[str, int],
        day_ends: datetime,
        real: datetime,
    ) -> BudgetExhaustedError:
        """The rule's error for a request that did not fit, with when money frees up."""
        return exhausted_error(
            used_micro, used_count, sum(window.values()), self._budget_micro, self._cost_micro,
            self._frees_at(used_micro, window, day_ends, real),
        )  # fmt: skip
