"""The daily budget on Redis: one day key for the whole cluster, changed only by Lua scripts.

Same contract as `crawler.store.ledger.BudgetLedger` (the store contract suite runs both), the
same terms (`crawler.store.ledger.terms`):
`reserve()` before a paid request, then `settle()` (billed) or `release()` (not billed); a
reservation left open by a crash stays counted as spent. Each script runs atomically inside
Redis, so N daemons x M threads never push a day above the budget. The embedded ledger's two
clock rules hold for the cluster too:

- The day key never goes back: `crawler:ledger:clock` keeps the highest wall instant any node
  has shown and the day it is on; a node whose clock is behind, or whose BUDGET_TIMEZONE was
  changed, stays on the stored day until that day ends (the next boundary).
- Within any 24 hours of real time the spend never exceeds one day's budget: every reservation
  is also counted in per-minute buckets (dropped on release). Each node's real time is its own
  stored instant advanced by its monotonic clock within one boot (as the embedded ledger does),
  so a wall-clock step on a node moves nothing; nodes whose clocks disagree see windows shifted
  by that disagreement (NTP keeps it far below the one-minute bucket).

Keys (integer micro-dollars):

    crawler:ledger:clock                 hash high_water_us, day, day_ends_us
    crawler:ledger:window                hash epoch minute -> micro-dollars reserved then
    crawler:ledger:day:YYYY-MM-DD        hash billed_micro, billed_count, reserved_micro,
                                         open_count, seed_micro, seed_count (+ rep_* after a
                                         recovery: what the nodes reported)
    crawler:ledger:day:YYYY-MM-DD:open   hash reservation id -> "amount_micro|minute|HH|label"
    crawler:ledger:day:YYYY-MM-DD:labels hash label -> billed requests (the day key also holds
                                         hour:HH -> billed requests, by the hour made)
    crawler:ledger:rollover              hash at, day (the last midnight job, for status)
    crawler:ledger:epoch, :reports, :expected   the recovery gate (crawler.store.ledger.recovery)

Day keys expire after DAYS_KEPT days, so roll-over needs no job. Day keys are computed inside
the scripts: a single Redis (or a Sentinel-managed primary), not Redis Cluster.

Redis lost its data (FLUSHALL, a restart without persistence, eviction): the ledger fails
closed. Every node keeps its own spend in its data dir (`SpendRecord`, written before each
reservation is asked for); the reserve script refuses while the cluster's epoch is recovering,
and the day, the 24-hour window and the clock are rebuilt from every node's report (the sum of
what each paid itself, or the highest total any of them saw, whichever is higher) before any
node pays again. `crawler.store.ledger.recovery` has the rules.

Redis unreachable: `reserve()` and `can_reserve()` raise StoreUnavailableError, so no paid
request is made. `settle()`/`release()` log and return False: the reservation stays open in
Redis, counted as spent (the safe side). `statistics()` answers from the local record, marked
``"store_reachable": False``.
"""

from __future__ import annotations

import contextlib
import time as _time
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import diskcache

from crawler.logging import get_logger
from crawler.store.datadir import open_store
from crawler.store.ledger.recovery import (
    DAY_KEY_TTL_S,
    GATE_TRIES,
    RECOVERY_GRACE_S,
    RecoveryGate,
)
from crawler.store.ledger.scripts import CLOSE_LUA, RESERVE_LUA
from crawler.store.ledger.spend_record import SpendRecord
from crawler.store.ledger.terms import (
    WHAT,
    LedgerSnapshot,
    LedgerTerms,
    Reservation,
    StoredDay,
    current_boot_id,
    exhausted_error,
    midnight_after,
    minute_of,
    next_day,
    usd_from_micro,
    window_start,
)
from crawler.store.nodes import default_node_name
from crawler.store.redis_client import RedisConnection, text_map
from crawler.utils.clock import MonotonicClock, WallClock, utc_now
from crawler.utils.clock import epoch_us as _us
from crawler.utils.clock import from_epoch_us as _from_us
from crawler.utils.exceptions import BudgetExhaustedError, StorageError, StoreUnavailableError

__all__ = ["RedisLedger"]

log = get_logger("crawler.ledger")

_LOCAL: Final = "local ledger record"
#: Reads again after the day moved under a reservation (another node rolled it over).
_CLOCK_TRIES: Final = 4


class RedisLedger(LedgerTerms):
    """`BudgetLedger`'s contract on Redis; `local_dir` holds this node's record of spend seen
    and its real-time clock. `clock` and `boot_id` as in `BudgetLedger` (tests inject them)."""

    def __init__(
        self,
        redis: RedisConnection,
        local_dir: Path,
        total_budget_usd: Decimal,
        cost_per_request_usd: Decimal,
        timezone: str = "UTC",
        node: str = "",
        live_nodes: Callable[[], list[str]] = list,
        recovery_grace_s: float = RECOVERY_GRACE_S,
        now: WallClock = utc_now,
        clock: MonotonicClock = _time.monotonic,
        boot_id: Callable[[], str] = current_boot_id,
    ) -> None:
        super().__init__(total_budget_usd, cost_per_request_usd, timezone, now, clock, boot_id())
        self._redis = redis
        self._local_dir = Path(local_dir)
        self._local: diskcache.Cache = open_store(self._local_dir, _LOCAL)
        self._spend = SpendRecord(self._local, self._local_dir)
        self.node = node or default_node_name(self._local_dir)
        self._live_nodes = live_nodes
        self._gate = RecoveryGate(
            redis, self._spend, self.node, lambda: self._live_nodes(), recovery_grace_s,
            self._aware_now, lambda: minute_of(self._real(store=False)),
        )  # fmt: skip
        self._reserve_script = redis.script("ledger_reserve", RESERVE_LUA)
        self._close_script = redis.script("ledger_close", CLOSE_LUA)
        self._clock_key = redis.key("ledger", "clock")
        self._window_key = redis.key("ledger", "window")
        self._observe_failing = False

    # -- reserve / close ------------------------------------------------------------------

    def _reserve_one(self, label: str | None) -> Reservation:
        """Hold one request's cost on the cluster's budget for today; `label` (the symbol) is
        counted in `breakdown()` once the request is billed.

        Raises BudgetExhaustedError when it would not fit today or in the last 24 hours,
        StoreUnavailableError when Redis cannot be asked (then nothing may be spent).
        """
        for _ in range(GATE_TRIES + _CLOCK_TRIES):
            outcome = self._try_reserve(label)
            if isinstance(outcome, Reservation):
                return outcome
            code, found = outcome
            if code != -5:  # -5: another node moved the day since we read it; read again
                self._gate.enter(code, found)
        raise StoreUnavailableError(
            f"{WHAT}: the cluster's ledger epoch or day kept changing while reserving; no paid "
            "request until it settles (crawler status shows the recovery)"
        )

    def _try_reserve(self, label: str | None) -> Reservation | tuple[int, str]:
        """One reservation asked of the script: granted, refused (BudgetExhaustedError), or
        the gate's answer (code, epoch found)."""
        stored = self._read_clock()
        now = self._aware_now()
        day = next_day(now, _stored_day(stored), self._zone)
        real = self._real(store=True)
        epoch = self._spend.epoch()
        seen = self._spend.seen()
        lost_day = ""
        if seen.get("epoch") == epoch and int(seen.get("used_micro", 0) or 0) > 0:
            lost_day = str(seen.get("day", ""))
        knows_clock = epoch != "" and self._spend.clock().get("epoch") == epoch
        reservation_id = uuid.uuid4().hex
        args = [
            self._redis.key("ledger", "day", ""), _us(now), day.day, _us(day.day_ends),
            stored.get("day", ""), stored.get("day_ends_us", ""),
            minute_of(real), self._budget_micro, self._cost_micro, reservation_id,
            DAY_KEY_TTL_S, epoch, lost_day, "1" if knows_clock else "",
            f"{now.astimezone(self._zone).hour:02d}",
            "" if label is None else str(label).replace("|", "/")[:64],
        ]  # fmt: skip
        # Ours before Redis is asked: a crash after Redis granted it still counts it.
        self._spend.begin(reservation_id, self._cost_micro, minute_of(real), epoch, _us(now))
        with self._redis.errors(WHAT):
            reply = self._reserve_script(
                keys=[self._clock_key, self._window_key, self._gate.epoch_key], args=args
            )
        granted, used, count, found_epoch, resolved, window = reply
        if int(granted) > 0:
            self._spend.granted(reservation_id, str(resolved))
            self._spend.remember_seen(str(resolved), epoch, int(used), int(count))
            self._spend.remember_clock(epoch, stored)
            return Reservation(id=reservation_id, day=str(resolved), amount_micro=self._cost_micro)
        self._spend.refused(reservation_id)
        if int(granted) == 0:
            self._spend.remember_seen(str(resolved), epoch, int(used), int(count))
            raise self._exhausted(int(used), int(count), int(window), day, real)
        return int(granted), str(found_epoch)

    def _exhausted(
        self, used: int, count: int, window_micro: int, day: StoredDay, real: datetime
    ) -> BudgetExhaustedError:
        """The script refused: the shared rule's error, with when money frees up (from the
        window's buckets, or all of it at this minute if they cannot be read)."""
        try:
            _, buckets = self._current(day.day, real)
        except StorageError:
            buckets = {str(minute_of(real)): window_micro}
        frees = self._frees_at(used, buckets, day.day_ends, real)
        return exhausted_error(
            used, count, window_micro, self._budget_micro, self._cost_micro, frees
        )

    def _close(self, reservation: Reservation, *, billed: bool) -> bool:
        try:
            with self._redis.errors(WHAT):
                closed = self._close_script(
                    keys=self._keys(reservation.day), args=[reservation.id, int(billed)]
                )
        except StorageError as exc:
            # The hold stays open in Redis and keeps counting as spent: the safe side.
            log.warning(
                "could not close a reservation",
                action="settle" if billed else "release",
                error=str(exc),
            )
            return False
        # The cluster total remembered stays as seen (an upper bound: the safe side); our own
        # record drops a released amount, and forgets a settled one's release handle.
        with contextlib.suppress(StorageError):
            if billed:
                self._spend.settled(reservation.id)
            else:
                self._spend.released(reservation.id)
        return bool(int(closed))

    # -- the recovery gate (crawler.store.ledger.recovery) --------------------------------

    def observe(self, live: list[dict[str, Any]]) -> None:
        """After each heartbeat: notice a loss, report, complete a recovery, and keep this
        node's memory (cluster total and clock seen, peers beating) fresh. Never raises."""
        names = sorted(str(record.get("node")) for record in live if record.get("reports_spend"))
        try:
            code, found = self._gate.read()
            if code < 0:
                with contextlib.suppress(StoreUnavailableError):
                    self._gate.enter(code, found)
            else:
                stored = self._read_clock()
                today = next_day(self._aware_now(), _stored_day(stored), self._zone).day
                fields, _ = self._current(today, self._real(store=False))
                used = fields.get("billed_micro", 0) + fields.get("reserved_micro", 0)
                count = fields.get("billed_count", 0) + fields.get("open_count", 0)
                if fields:
                    self._spend.remember_seen(today, found, used, count)
                self._spend.remember_clock(found, stored)
            if self._observe_failing:
                log.info("ledger: the cluster record is readable again")
            self._observe_failing = False
        except StorageError as exc:
            if not self._observe_failing:
                log.warning("ledger: could not check the cluster record", error=exc.message)
            self._observe_failing = True
        with contextlib.suppress(StorageError):
            self._spend.set_peers(names)  # after any report: it carries the peers seen before

    def recovery_status(self) -> dict[str, Any]:
        """Whether the cluster's spend is known: {"state": "ok" | "recovering" | ..., "since",
        "reason", "noticed_by", "waiting_for", "reported", "waited_s", "timed_out"}. Raises
        StoreUnavailableError when Redis cannot be asked."""
        return self._gate.status()

    # -- roll-over and status -------------------------------------------------------------

    def record_rollover(self) -> None:
        """Note that the midnight job ran (day keys expire by themselves)."""
        day = self.day()
        with self._redis.errors(WHAT):
            self._redis.client.hset(
                self._redis.key("ledger", "rollover"),
                mapping={"at": self._aware_now().isoformat(), "day": day},
            )

    def _stored_day(self) -> StoredDay | None:
        return _stored_day(self._read_clock())

    def _spend_now(self) -> tuple[int, int]:
        self._gate.wait_open()
        today = next_day(self._aware_now(), self._stored_day(), self._zone).day
        fields, window = self._current(today, self._real(store=False))
        used = fields.get("billed_micro", 0) + fields.get("reserved_micro", 0)
        return used, sum(window.values())

    def _snapshot(self) -> LedgerSnapshot:
        """`statistics()`'s figures, plus `store` ("redis"), `store_reachable`,
        `reseeded_cost` (what re-seeds after Redis lost data added) and `recovering` (Redis
        lost the spend and not every node has reported: nothing may be spent;
        `recovery_status()` says who is missing). Redis away: what this node last saw, all
        of it counted as billed."""
        reachable, recovering = True, False
        now, real = self._aware_now(), self._real(store=False)
        try:
            recovering = self._gate.recovering()
            day = next_day(now, self._stored_day(), self._zone)
            fields, window = self._current(day.day, real)
            with self._redis.errors(WHAT):
                rollover = text_map(
                    self._redis.client.hgetall(self._redis.key("ledger", "rollover"))
                )
        except StorageError:
            reachable, rollover = False, {}
            seen = self._spend.seen()
            today = date.fromisoformat(str(seen.get("day") or now.astimezone(self._zone).date()))
            day = StoredDay(today.isoformat(), midnight_after(today, self._zone), now)
            fields = {
                "billed_micro": int(seen.get("used_micro", 0)),
                "billed_count": int(seen.get("used_count", 0)),
            }
            window = {str(minute_of(real)): fields["billed_micro"]}
        return LedgerSnapshot(
            day=day,
            real=real,
            billed_micro=fields.get("billed_micro", 0),
            billed_count=fields.get("billed_count", 0),
            reserved_micro=fields.get("reserved_micro", 0),
            open_count=fields.get("open_count", 0),
            window=window,
            rollover=rollover,
            recovering=recovering,
            extra={
                "store": "redis",
                "store_reachable": reachable,
                "reseeded_cost": usd_from_micro(fields.get("seed_micro", 0)),
                "recovering": recovering,
            },
        )

    def breakdown(self) -> dict[str, dict[str, int]]:
        """Today's billed requests by hour ("00".."23", budget time zone) and by label."""
        keys = self._keys(self.day())
        with self._redis.errors(WHAT):
            fields = text_map(self._redis.client.hgetall(keys[0]))
            labels = text_map(self._redis.client.hgetall(keys[3]))
        try:
            by_hour = {k[5:]: int(v) for k, v in fields.items() if k.startswith("hour:")}
            by_label = {k: int(v) for k, v in labels.items()}
        except ValueError as exc:
            raise StorageError(f"budget ledger: Redis key {keys[0]} is corrupt ({exc})") from exc
        return {"by_hour": by_hour, "by_label": by_label}

    def days(self) -> list[str]:
        """The days with a record in Redis, oldest first."""
        prefix = self._redis.key("ledger", "day", "")
        with self._redis.errors(WHAT):
            keys = list(self._redis.client.scan_iter(match=prefix + "*", count=500))
        return sorted({str(k)[len(prefix) :].split(":")[0] for k in keys})

    def close(self) -> None:
        """Close the local record's connection (the Redis connection belongs to the caller)."""
        self._local.close()

    # -- storage --------------------------------------------------------------------------

    def _read_clock(self) -> dict[str, str]:
        with self._redis.errors(WHAT):
            return text_map(self._redis.client.hgetall(self._clock_key))

    def _real(self, *, store: bool) -> datetime:
        """This node's real time (the 24-hour window's clock, kept in its local record)."""
        now = self._aware_now()
        return self._spend.real(now, self._clock(), self._boot, store=store)

    def _keys(self, day: str) -> list[str]:
        key = self._redis.key("ledger", "day", day)
        return [key, key + ":open", self._window_key, key + ":labels"]

    def _current(self, day: str, real: datetime) -> tuple[dict[str, int], dict[str, int]]:
        """The day's integer fields and the window's buckets within the last 24 hours (of
        our real time `real`)."""
        oldest = window_start(real)
        with self._redis.errors(WHAT):
            raw = text_map(self._redis.client.hgetall(self._keys(day)[0]))
            buckets = text_map(self._redis.client.hgetall(self._window_key))
        out: dict[str, int] = {}
        try:
            for name, value in raw.items():
                if name != "incarnation" and not name.startswith("hour:"):
                    out[name] = int(value)
            window = {k: int(v) for k, v in buckets.items() if int(k) >= oldest}
        except ValueError as exc:
            raise StorageError(
                f"budget ledger: Redis key {self._keys(day)[0]} or {self._window_key} holds a "
                "non-integer; delete them only if no money was spent today"
            ) from exc
        return out, window


def _stored_day(stored: dict[str, str]) -> StoredDay | None:
    """The day Redis' clock hash holds (None: none yet)."""
    if not stored.get("day"):
        return None
    return StoredDay(
        stored["day"],
        _from_us(int(stored.get("day_ends_us", 0) or 0)),
        _from_us(int(stored.get("high_water_us", 0) or 0)),
    )
