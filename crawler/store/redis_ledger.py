"""The daily budget on Redis: one day key for the whole cluster, changed only by Lua scripts.

Same contract as `crawler.store.ledger.BudgetLedger` (the store contract suite runs both):
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
    crawler:ledger:epoch, :reports, :expected   the recovery gate (crawler.store.redis_epoch)

Day keys expire after DAYS_KEPT days, so roll-over needs no job. Day keys are computed inside
the scripts: a single Redis (or a Sentinel-managed primary), not Redis Cluster.

Redis lost its data (FLUSHALL, a restart without persistence, eviction): the ledger fails
closed. Every node keeps its own spend in its data dir (`SpendRecord`, written before each
reservation is asked for); the reserve script refuses while the cluster's epoch is recovering,
and the day, the 24-hour window and the clock are rebuilt from every node's report (the sum of
what each paid itself, or the highest total any of them saw, whichever is higher) before any
node pays again. `crawler.store.redis_epoch` has the rules.

Redis unreachable: `reserve()` and `can_reserve()` raise StoreUnavailableError, so no paid
request is made. `settle()`/`release()` log and return False: the reservation stays open in
Redis, counted as spent (the safe side). `statistics()` answers from the local record, marked
``"store_reachable": False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time as _time
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import diskcache

from crawler.logging import get_logger
from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.store.ledger import (
    DAYS_KEPT,
    WINDOW_S,
    Reservation,
    budget_terms,
    current_boot_id,
    exhausted_error,
    fits,
    usd_from_micro,
)
from crawler.store.redis_client import RedisConnection, text_map
from crawler.store.redis_epoch import (
    ADOPT_LUA,
    BEGIN_LUA,
    COMPLETE_LUA,
    RECOVERY_GRACE_S,
    RECOVERY_WAIT_S,
    REPORT_LUA,
    SpendRecord,
    encode_report,
)
from crawler.utils.clock import MonotonicClock, WallClock, utc_now
from crawler.utils.clock import epoch_us as _us
from crawler.utils.clock import from_epoch_us as _from_us
from crawler.utils.exceptions import BudgetExhaustedError, StorageError, StoreUnavailableError

__all__ = ["RedisLedger"]

log = get_logger("crawler.ledger")

_WHAT: Final = "budget ledger"
_LOCAL: Final = "local ledger record"
_SEEN_KEY: Final = "seen"
_REAL_KEY: Final = "real"
_KEEP_S: Final = (DAYS_KEPT + 1) * 86_400
_WINDOW_MINUTES: Final = WINDOW_S // 60
#: Gate answers acted on per call before giving up (each is one epoch change met).
_GATE_TRIES: Final = 4

# KEYS: clock, window, epoch. ARGV: 1 day prefix, 2 now_us, 3 proposed day, 4 its end (us),
# 5 the stored day the caller read, 6 that day's end in the caller's zone (us), 7 real minute,
# 8 budget, 9 cost, 10 id, 11 ttl_s, 12 the epoch this node is on, 13 a day this node saw
# spend on under that epoch ('' if none), 14 "1" if it saw the clock under that epoch,
# 15 the hour (HH, budget zone), 16 the label.
# Returns {granted, used_micro, used_count, epoch, day, window_micro}. granted < 0 is the
# recovery gate (see crawler.store.redis_epoch): -1 no epoch, -2 another epoch than the
# caller's, -3 the epoch is recovering, -4 this epoch lost its day or clock key.
_RESERVE_LUA: Final = """
local ep = redis.call('HGET', KEYS[3], 'id')
if not ep then return {-1, 0, 0, '', '', 0} end
if ep ~= ARGV[12] then return {-2, 0, 0, ep, '', 0} end
if redis.call('HGET', KEYS[3], 'state') ~= 'ok' then return {-3, 0, 0, ep, '', 0} end
local clock, window = KEYS[1], KEYS[2]
local now = tonumber(ARGV[2])
local sd = redis.call('HGET', clock, 'day')
if not sd and ARGV[14] == '1' then return {-4, 0, 0, ep, '', 0} end
local se = tonumber(redis.call('HGET', clock, 'day_ends_us') or '0')
local hw = tonumber(redis.call('HGET', clock, 'high_water_us') or '0')
local eff = math.max(now, hw)
local dday, ends = ARGV[3], tonumber(ARGV[4])
if sd then
  if eff < se then
    dday, ends = sd, se
  elseif ARGV[3] <= sd then
    -- the zone moved westwards: hold the stored day until it ends in the new zone
    dday = sd
    if ARGV[5] == sd then ends = tonumber(ARGV[6]) else ends = se end
  end
end
local day = ARGV[1] .. dday
local open = day .. ':open'
if redis.call('EXISTS', day) == 0 then
  if ARGV[13] == dday then return {-4, 0, 0, ep, dday, 0} end
  redis.call('HSET', day, 'billed_micro', 0, 'billed_count', 0, 'reserved_micro', 0,
             'open_count', 0, 'seed_micro', 0, 'seed_count', 0)
end
redis.call('HSET', clock, 'day', dday, 'day_ends_us', string.format('%d', ends),
           'high_water_us', string.format('%d', eff))
local real_min = tonumber(ARGV[7])
local oldest = real_min - WINDOW_MINUTES
local wsum = 0
local buckets = redis.call('HGETALL', window)
for i = 1, #buckets, 2 do
  if tonumber(buckets[i]) < oldest then
    redis.call('HDEL', window, buckets[i])
  else
    wsum = wsum + tonumber(buckets[i + 1])
  end
end
local billed = tonumber(redis.call('HGET', day, 'billed_micro'))
local reserved = tonumber(redis.call('HGET', day, 'reserved_micro'))
local count = tonumber(redis.call('HGET', day, 'billed_count'))
  + tonumber(redis.call('HGET', day, 'open_count'))
local budget, cost = tonumber(ARGV[8]), tonumber(ARGV[9])
if billed + reserved + cost > budget or wsum + cost > budget then
  return {0, billed + reserved, count, ep, dday, wsum}
end
redis.call('HINCRBY', day, 'reserved_micro', cost)
redis.call('HINCRBY', day, 'open_count', 1)
redis.call('HSET', open, ARGV[10], cost .. '|' .. real_min .. '|' .. ARGV[15] .. '|' .. ARGV[16])
redis.call('HINCRBY', window, real_min, cost)
redis.call('EXPIRE', day, ARGV[11])
redis.call('EXPIRE', open, ARGV[11])
redis.call('EXPIRE', window, ARGV[11])
return {1, billed + reserved + cost, count + 1, ep, dday, wsum + cost}
""".replace("WINDOW_MINUTES", str(_WINDOW_MINUTES))

# KEYS: day, open, window, labels. ARGV: id, billed (1/0). Returns 1 closed, 0 unknown/closed.
_CLOSE_LUA: Final = """
local entry = redis.call('HGET', KEYS[2], ARGV[1])
if not entry or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local parts = {}
for part in string.gmatch(entry .. '|', '([^|]*)|') do parts[#parts + 1] = part end
local amount = tonumber(parts[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'reserved_micro', -amount)
redis.call('HINCRBY', KEYS[1], 'open_count', -1)
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[1], 'billed_micro', amount)
  redis.call('HINCRBY', KEYS[1], 'billed_count', 1)
  if parts[3] and parts[3] ~= '' then redis.call('HINCRBY', KEYS[1], 'hour:' .. parts[3], 1) end
  if parts[4] and parts[4] ~= '' then
    redis.call('HINCRBY', KEYS[4], parts[4], 1)
    redis.call('EXPIRE', KEYS[4], redis.call('TTL', KEYS[1]))
  end
elseif parts[2] then
  local left = tonumber(redis.call('HGET', KEYS[3], parts[2]) or '0')
  if left > 0 then
    if left <= amount then redis.call('HDEL', KEYS[3], parts[2])
    else redis.call('HINCRBY', KEYS[3], parts[2], -amount) end
  end
end
return 1
"""


class RedisLedger:
    """`BudgetLedger`'s contract on Redis; `local_dir` holds this node's record of spend seen
    and its real-time clock. `clock` and `boot_id` as in `BudgetLedger` (tests inject them)."""

    def __init__(
        self,
        redis: RedisConnection,
        local_dir: Path,
        total_budget_usd: Decimal,
        cost_per_request_usd: Decimal,
        timezone: str = "UTC",
        now: WallClock = utc_now,
        clock: MonotonicClock = _time.monotonic,
        boot_id: Callable[[], str] = current_boot_id,
        node: str = "",
        live_nodes: Callable[[], list[str]] = list,
        recovery_grace_s: float = RECOVERY_GRACE_S,
    ) -> None:
        self._budget_micro, self._cost_micro, self._zone = budget_terms(
            total_budget_usd, cost_per_request_usd, timezone
        )
        self._timezone = timezone
        self._now = now
        self._clock = clock
        self._boot = boot_id()
        self._redis = redis
        self._local_dir = Path(local_dir)
        self._local: diskcache.Cache = open_store(self._local_dir, _LOCAL)
        self._local_lock = threading.Lock()
        self._spend = SpendRecord(self._local, self._local_dir)
        self.node = node or _default_node(self._local_dir)
        self._live_nodes = live_nodes
        self._grace_us = int(recovery_grace_s * 1_000_000)
        self._reserve_script = redis.script("ledger_reserve", _RESERVE_LUA)
        self._close_script = redis.script("ledger_close", _CLOSE_LUA)
        self._adopt_script = redis.script("ledger_epoch_adopt", ADOPT_LUA)
        self._begin_script = redis.script("ledger_epoch_begin", BEGIN_LUA)
        self._report_script = redis.script("ledger_epoch_report", REPORT_LUA)
        self._complete_script = redis.script("ledger_epoch_complete", COMPLETE_LUA)
        self._clock_key = redis.key("ledger", "clock")
        self._window_key = redis.key("ledger", "window")
        self._epoch_key = redis.key("ledger", "epoch")
        self._reports_key = redis.key("ledger", "reports")
        self._expected_key = redis.key("ledger", "expected")
        self._observe_failing = False

    # -- the day and real time ------------------------------------------------------------

    def day(self) -> str:
        """The cluster's day key (ISO date): never goes back, and a time-zone change waits
        for the stored day's end. Raises StoreUnavailableError when Redis is away."""
        return self._resolve(self._read_clock())[0]

    def _aware_now(self) -> datetime:
        current = self._now()
        if current.tzinfo is None or current.utcoffset() is None:
            raise ValueError("now() must return a timezone-aware datetime")
        return current

    def _midnight_after(self, day: date) -> datetime:
        return datetime.combine(day + timedelta(days=1), time(0), tzinfo=self._zone)

    def _read_clock(self) -> dict[str, str]:
        with self._redis.errors(_WHAT):
            return text_map(self._redis.client.hgetall(self._clock_key))

    def _proposal(self, stored: dict[str, str]) -> tuple[int, str, int, str, int]:
        """(now_us, proposed day, its end, stored day, the stored day's end in our zone)."""
        now = self._aware_now()
        now_us = _us(now)
        high_water_us = int(stored.get("high_water_us", 0) or 0)
        effective = _from_us(max(now_us, high_water_us))
        local = effective.astimezone(self._zone).date()
        stored_day = stored.get("day", "")
        held_ends = 0
        if stored_day:
            held_ends = _us(self._midnight_after(date.fromisoformat(stored_day)))
        return now_us, local.isoformat(), _us(self._midnight_after(local)), stored_day, held_ends

    def _resolve(self, stored: dict[str, str]) -> tuple[str, int]:
        """(day, day_ends_us) as the reserve script would resolve them now (read-only)."""
        now_us, day, ends, stored_day, held_ends = self._proposal(stored)
        if not stored_day:
            return day, ends
        stored_ends = int(stored.get("day_ends_us", 0) or 0)
        effective = max(now_us, int(stored.get("high_water_us", 0) or 0))
        if effective < stored_ends:
            return stored_day, stored_ends
        if day <= stored_day:
            return stored_day, held_ends
        return day, ends

    def _real_minute(self, *, store: bool) -> int:
        """This node's real-time minute: its stored instant advanced by the monotonic clock
        within one boot, else the later of the wall clock and the stored instant."""
        now = self._aware_now()
        reading = self._clock()
        with self._local_lock:
            raw = self._local_get(_REAL_KEY)
            real = now
            if isinstance(raw, dict):
                try:
                    stored = datetime.fromisoformat(str(raw["real"]))
                    mono = float(raw["monotonic_s"])
                    same_boot = bool(self._boot) and raw.get("boot") == self._boot
                    if same_boot and reading >= mono:
                        real = stored + timedelta(seconds=reading - mono)
                    else:
                        real = max(now, stored)
                except (KeyError, TypeError, ValueError):
                    real = now  # a broken record: the wall clock is all we have
            if store:
                self._local_set(
                    _REAL_KEY,
                    {"real": real.isoformat(), "monotonic_s": reading, "boot": self._boot},
                )
        return int(real.timestamp()) // 60

    def _keys(self, day: str) -> list[str]:
        key = self._redis.key("ledger", "day", day)
        return [key, key + ":open", self._window_key, key + ":labels"]

    # -- reserve / settle / release -------------------------------------------------------

    def reserve(self, label: str | None = None) -> Reservation:
        """Hold one request's cost on the cluster's budget for today; `label` (the symbol) is
        counted in `breakdown()` once the request is billed.

        Raises BudgetExhaustedError when it would not fit today or in the last 24 hours,
        StoreUnavailableError when Redis cannot be asked (then nothing may be spent).
        """
        for _ in range(_GATE_TRIES):
            stored = self._read_clock()
            now_us, day, ends, stored_day, held_ends = self._proposal(stored)
            real_minute = self._real_minute(store=True)
            epoch = self._spend.epoch()
            seen = self._seen()
            lost_day = ""
            if seen.get("epoch") == epoch and int(seen.get("used_micro", 0) or 0) > 0:
                lost_day = str(seen.get("day", ""))
            knows_clock = epoch != "" and self._spend.clock().get("epoch") == epoch
            reservation_id = uuid.uuid4().hex
            args = [
                self._redis.key("ledger", "day", ""),
                now_us,
                day,
                ends,
                stored_day,
                held_ends,
                real_minute,
                self._budget_micro,
                self._cost_micro,
                reservation_id,
                _KEEP_S,
                epoch,
                lost_day,
                "1" if knows_clock else "",
                f"{_from_us(now_us).astimezone(self._zone).hour:02d}",
                "" if label is None else str(label).replace("|", "/")[:64],
            ]
            # Ours before Redis is asked: a crash after Redis granted it still counts it.
            self._spend.begin(reservation_id, self._cost_micro, real_minute, epoch, now_us)
            with self._redis.errors(_WHAT):
                reply = self._reserve_script(
                    keys=[self._clock_key, self._window_key, self._epoch_key], args=args
                )
            granted, used, count, found_epoch, resolved, window = reply
            if int(granted) > 0:
                self._spend.granted(reservation_id, str(resolved))
                self._remember(str(resolved), epoch, int(used), int(count))
                self._spend.remember_clock(epoch, stored)
                return Reservation(
                    id=reservation_id, day=str(resolved), amount_micro=self._cost_micro
                )
            self._spend.refused(reservation_id)
            if int(granted) == 0:
                self._remember(str(resolved), epoch, int(used), int(count))
                raise self._exhausted(int(used), int(count), int(window))
            self._pass_gate(int(granted), str(found_epoch))
        raise StoreUnavailableError(
            f"{_WHAT}: the cluster's ledger epoch kept changing while reserving; no paid "
            "request until it settles (crawler status shows the recovery)"
        )

    def _exhausted(self, used: int, count: int, window: int) -> BudgetExhaustedError:
        """The script refused: the shared rule's error, with when money frees up."""
        try:
            ends_us = self._resolve(self._read_clock())[1]
        except StorageError:
            ends_us = _us(self._aware_now() + timedelta(days=1))
        frees_at = self._frees_at(used, window, ends_us) or self._aware_now().isoformat()
        return exhausted_error(
            used, count, window, self._budget_micro, self._cost_micro,
            datetime.fromisoformat(frees_at),
        )  # fmt: skip

    # -- the recovery gate (crawler.store.redis_epoch) ------------------------------------

    def _read_epoch(self) -> tuple[int, str]:
        """The gate's code for this node now (as the reserve script would answer) and the
        epoch id Redis holds."""
        with self._redis.errors(_WHAT):
            epoch = text_map(self._redis.client.hgetall(self._epoch_key))
        found = epoch.get("id", "")
        if not found:
            return -1, ""
        if found != self._spend.epoch():
            return -2, found
        if epoch.get("state") != "ok":
            return -3, found
        return 1, found

    def _pass_gate(self, code: int, found: str) -> None:
        """Act on the gate's answer: adopt or begin an epoch, report to it, try to complete
        it. Returns when a reservation may be tried again; raises StoreUnavailableError while
        the cluster's spend is not known."""
        if code == -1:
            if self._spend.epoch() or self._spend.has_spend():
                found = self._begin("Redis holds no ledger epoch (flushed or restarted empty)", "")
            else:
                mine = uuid.uuid4().hex
                found = str(self._call(self._adopt_script, [self._epoch_key, self._clock_key],
                                       [mine, self.node]))  # fmt: skip
                if found == mine:  # a new cluster (or one from before epochs): ours, and ok
                    self._spend.set_epoch(found)
                return  # another node's epoch: the next try meets it (-2) and reports
        elif code == -4:
            found = self._begin("Redis lost today's ledger keys (evicted?)", found)
        if code in (-1, -2, -3, -4):
            self._report(found)
        state = self._complete(found)
        if state["state"] == "recovering":
            raise StoreUnavailableError(_recovering_message(state))

    def _begin(self, reason: str, lost: str) -> str:
        found = str(self._call(
            self._begin_script,
            [self._epoch_key, self._reports_key, self._expected_key, self._clock_key,
             self._window_key],
            [uuid.uuid4().hex, self.node, reason, lost, _us(self._aware_now()),
             self._redis.key("ledger", "day", "")],
        ))  # fmt: skip
        log.warning("ledger recovery: Redis lost the cluster's spend; no paid request until "
                    "every node has reported its own", reason=reason, epoch=found)  # fmt: skip
        return found

    def _report(self, epoch: str) -> None:
        """Tell `epoch` what this node paid (once per epoch), then remember it."""
        now_us = _us(self._aware_now())
        report = self._spend.report(self._spend.peers(), now_us)
        applied = int(self._call(
            self._report_script,
            [self._epoch_key, self._reports_key, self._expected_key, self._clock_key,
             self._window_key],
            [epoch, self.node, encode_report(report), self._redis.key("ledger", "day", ""),
             self._real_minute(store=False), _KEEP_S, _WINDOW_MINUTES],
        ))  # fmt: skip
        if applied == 0:
            return  # another epoch began meanwhile: the next try reports to it
        self._spend.set_epoch(epoch)
        if applied == 1:
            log.info("ledger recovery: reported this node's spend", epoch=epoch,
                     days=report["days"], seen=report["seen"])  # fmt: skip

    def _complete(self, epoch: str) -> dict[str, Any]:
        """Add the nodes beating now to the epoch's expected set; turn it "ok" once every
        expected node has reported. Returns recovery_status()'s shape."""
        try:
            live = list(self._live_nodes())
        except StorageError:
            live = []
        reply = self._call(self._complete_script,
                           [self._epoch_key, self._reports_key, self._expected_key],
                           [epoch, _us(self._aware_now()), self._grace_us, *live])  # fmt: skip
        parts = [str(part) for part in reply]
        if parts[0] == "gone":
            return {"state": "changing", "epoch": epoch, "waiting_for": []}
        since = _from_us(int(parts[1] or 0))
        return {
            "state": parts[0],
            "epoch": epoch,
            "since": since.isoformat(),
            "reason": parts[2],
            "noticed_by": parts[3],
            "waiting_for": sorted(parts[4:]),
            "waited_s": max(0.0, (self._aware_now() - since).total_seconds()),
        }

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        with self._redis.errors(_WHAT):
            return script(keys=keys, args=args)

    def observe(self, live: list[dict[str, Any]]) -> None:
        """After each heartbeat: notice a loss, report, complete a recovery, and keep this
        node's memory (cluster total and clock seen, peers beating) fresh. Never raises."""
        names = sorted(str(record.get("node")) for record in live if record.get("reports_spend"))
        try:
            code, found = self._read_epoch()
            if code < 0:
                with contextlib.suppress(StoreUnavailableError):
                    self._pass_gate(code, found)
            else:
                stored = self._read_clock()
                today = self._resolve(stored)[0]
                fields, _ = self._current(today)
                used = fields.get("billed_micro", 0) + fields.get("reserved_micro", 0)
                count = fields.get("billed_count", 0) + fields.get("open_count", 0)
                if fields:
                    self._remember(today, found, used, count)
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
        with self._redis.errors(_WHAT):
            epoch = text_map(self._redis.client.hgetall(self._epoch_key))
            reported = sorted(str(n) for n in self._redis.client.hkeys(self._reports_key))
        found = epoch.get("id", "")
        if not found:
            return {"state": "no epoch", "waiting_for": [], "reported": [], "timed_out": False}
        if epoch.get("state") == "ok":
            out: dict[str, Any] = {
                "state": "ok",
                "epoch": found,
                "reason": epoch.get("reason"),
                # whom a recovery would wait for, as this node last saw them beating
                "peers": self._spend.peers(),
            }
            if epoch.get("completed_us"):
                out["recovered_at"] = _from_us(int(epoch["completed_us"])).isoformat()
                out["reported"] = reported
            return out
        state = self._complete(found)
        state["reported"] = reported
        state["timed_out"] = float(state.get("waited_s", 0)) >= RECOVERY_WAIT_S
        state["message"] = _recovering_message(state)
        return state

    def settle(self, reservation: Reservation) -> bool:
        """The request was billed: move its hold into billed spend (False if unknown/closed)."""
        return self._close(reservation, billed=True)

    def release(self, reservation: Reservation) -> bool:
        """The request was not billed: drop its hold and its window share (False if
        unknown/closed)."""
        return self._close(reservation, billed=False)

    def _close(self, reservation: Reservation, *, billed: bool) -> bool:
        try:
            with self._redis.errors(_WHAT):
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

    def can_reserve(self) -> bool:
        """Whether one more request fits today and in the last 24 hours (a hint; raises
        StoreUnavailableError, also while the cluster's spend is being recovered)."""
        for _ in range(_GATE_TRIES):
            code, found = self._read_epoch()
            if code > 0:
                break
            self._pass_gate(code, found)
        fields, window = self._current()
        used = fields.get("billed_micro", 0) + fields.get("reserved_micro", 0)
        return fits(used, window, self._budget_micro, self._cost_micro)

    # -- roll-over and status -------------------------------------------------------------

    def record_rollover(self) -> None:
        """Note that the midnight job ran (day keys expire by themselves)."""
        day = self.day()
        with self._redis.errors(_WHAT):
            self._redis.client.hset(
                self._redis.key("ledger", "rollover"),
                mapping={"at": self._aware_now().isoformat(), "day": day},
            )

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
        """`BudgetLedger.statistics()`'s keys for the cluster, plus `store` ("redis"),
        `store_reachable`, `reseeded_cost` (what re-seeds after Redis lost data added) and
        `recovering` (Redis lost the spend and not every node has reported: nothing may be
        spent, so `budget_remaining` is 0; `recovery_status()` says who is missing)."""
        reachable = True
        recovering = False
        rollover: dict[str, str] = {}
        try:
            with self._redis.errors(_WHAT):
                epoch = text_map(self._redis.client.hgetall(self._epoch_key))
            if epoch:
                recovering = epoch.get("state") != "ok"
            else:
                recovering = bool(self._spend.epoch() or self._spend.has_spend())
            stored = self._read_clock()
            today, ends_us = self._resolve(stored)
            fields, window = self._current(today)
            with self._redis.errors(_WHAT):
                rollover = text_map(
                    self._redis.client.hgetall(self._redis.key("ledger", "rollover"))
                )
        except StorageError:
            # Unreachable: what this node last saw, all of it counted as billed.
            reachable = False
            seen = self._seen()
            today = str(seen.get("day") or self._aware_now().astimezone(self._zone).date())
            ends_us = _us(self._midnight_after(date.fromisoformat(today)))
            fields = {
                "billed_micro": int(seen.get("used_micro", 0)),
                "billed_count": int(seen.get("used_count", 0)),
            }
            window = fields["billed_micro"]
        billed = fields.get("billed_micro", 0)
        reserved = fields.get("reserved_micro", 0)
        used_micro = billed + reserved
        budget = self._budget_micro
        used_pct = round(used_micro * 100 / budget, 2) if budget else 100.0
        open_count = fields.get("open_count", 0)
        return {
            "day": today,
            "timezone": self._timezone,
            "total_cost": usd_from_micro(used_micro),
            "billed_cost": usd_from_micro(billed),
            "reserved_cost": usd_from_micro(reserved),
            "budget_total": usd_from_micro(budget),
            "budget_used_pct": used_pct,
            # Nothing may be spent while the cluster's spend is unknown.
            "budget_remaining": usd_from_micro(
                0 if recovering else max(0, budget - max(used_micro, window))
            ),
            "window_cost": usd_from_micro(window),
            "day_ends": _from_us(ends_us).astimezone(self._zone).isoformat(),
            "money_frees_at": self._frees_at(used_micro, window, ends_us),
            "cost_per_request": usd_from_micro(self._cost_micro),
            "requests_used": fields.get("billed_count", 0) + open_count,
            "requests_allowed": self.requests_allowed,
            "requests_billed": fields.get("billed_count", 0),
            "open_reservations": open_count,
            "last_rollover": rollover.get("at"),
            "last_rollover_day": rollover.get("day"),
            "store": "redis",
            "store_reachable": reachable,
            "reseeded_cost": usd_from_micro(fields.get("seed_micro", 0)),
            "recovering": recovering,
        }

    def _frees_at(self, used_micro: int, window_micro: int, ends_us: int) -> str | None:
        """When a request can be paid again, if the budget is spent now (None while there is
        room). The day key frees at the budget day's end; the 24-hour window is kept here as a
        sum, not by minute, so a full window is said at its latest: 24 hours from now."""
        cost, budget = self._cost_micro, self._budget_micro
        if fits(used_micro, window_micro, budget, cost):
            return None
        now = self._aware_now()
        free_at = _from_us(ends_us) if used_micro + cost > budget else now
        if window_micro + cost > budget:
            free_at = max(free_at, now + timedelta(days=1))
        return free_at.astimezone(self._zone).isoformat()

    def breakdown(self) -> dict[str, dict[str, int]]:
        """Today's billed requests by hour ("00".."23", budget time zone) and by label."""
        keys = self._keys(self.day())
        with self._redis.errors(_WHAT):
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
        with self._redis.errors(_WHAT):
            keys = list(self._redis.client.scan_iter(match=prefix + "*", count=500))
        return sorted({str(k)[len(prefix) :].split(":")[0] for k in keys})

    def close(self) -> None:
        """Close the local record's connection (the Redis connection belongs to the caller)."""
        self._local.close()

    # -- storage --------------------------------------------------------------------------

    def _current(self, day: str | None = None) -> tuple[dict[str, int], int]:
        """The day's integer fields and what the last 24 hours (of our real time) hold."""
        if day is None:
            day = self._resolve(self._read_clock())[0]
        oldest = self._real_minute(store=False) - _WINDOW_MINUTES
        with self._redis.errors(_WHAT):
            raw = text_map(self._redis.client.hgetall(self._keys(day)[0]))
            buckets = text_map(self._redis.client.hgetall(self._window_key))
        out: dict[str, int] = {}
        try:
            for name, value in raw.items():
                if name != "incarnation" and not name.startswith("hour:"):
                    out[name] = int(value)
            window = sum(int(v) for k, v in buckets.items() if int(k) >= oldest)
        except ValueError as exc:
            raise StorageError(
                f"budget ledger: Redis key {self._keys(day)[0]} or {self._window_key} holds a "
                "non-integer; delete them only if no money was spent today"
            ) from exc
        return out, window

    def _local_get(self, key: str) -> Any:
        try:
            with storage_errors(_LOCAL, self._local_dir):
                return self._local.get(key)
        except (CorruptRecordError, StorageError):
            return None

    def _local_set(self, key: str, value: dict[str, Any]) -> None:
        try:
            with storage_errors(_LOCAL, self._local_dir):
                self._local.set(key, value)
        except StorageError:
            # The record only helps after a Redis restart; losing one update is not worth
            # failing a request that Redis already accepted.
            log.warning("could not write the local ledger record", directory=str(self._local_dir))

    def _seen(self) -> dict[str, Any]:
        """The highest total of a day this node has seen ({} if none)."""
        raw = self._local_get(_SEEN_KEY)
        return raw if isinstance(raw, dict) else {}

    def _remember(self, day: str, epoch: str, used_micro: int, used_count: int) -> None:
        """Keep the highest total seen of `day` (under `epoch`, for noticing a lost day key).
        A loss never lowers it: a re-seeded day starts at least this high."""
        with self._local_lock:
            seen = self._seen()
            if seen.get("day") == day and int(seen.get("used_micro", 0)) >= used_micro:
                if seen.get("epoch") == epoch:
                    return
                used_micro = int(seen.get("used_micro", 0))
                used_count = max(used_count, int(seen.get("used_count", 0)))
            elif str(seen.get("day", "")) > day:
                return  # an older day's figure never replaces today's
            self._local_set(
                _SEEN_KEY,
                {"day": day, "epoch": epoch, "used_micro": used_micro, "used_count": used_count},
            )


def _default_node(local_dir: Path) -> str:
    digest = hashlib.sha256(str(local_dir).encode()).hexdigest()[:6]
    return f"{socket.gethostname()}-{digest}"


def _recovering_message(state: dict[str, Any]) -> str:
    waiting = ", ".join(state.get("waiting_for") or []) or "(none)"
    text = (
        f"{_WHAT}: Redis lost the cluster's spend ({state.get('reason') or 'data lost'}); no "
        f"paid request until every node has reported its own: waiting for {waiting}"
    )
    if float(state.get("waited_s", 0)) >= RECOVERY_WAIT_S:
        text += (
            f" for {int(float(state['waited_s']))} s; start that node (it reports from its data "
            "dir), or if its data is lost for good give up on it with "
            "`redis-cli SREM crawler:ledger:expected NODE` (its spend today is then unknown)"
        )
    return text
