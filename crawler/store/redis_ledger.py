"""The daily budget on Redis: one day key for the whole cluster, changed only by Lua scripts.

Same contract as `crawler.store.ledger.BudgetLedger` (the store contract suite runs both):
`reserve()` before a paid request, then `settle()` (billed) or `release()` (not billed); a
reservation left open by a crash stays counted as spent. Each script runs atomically inside
Redis, so N daemons x M threads never push a day above the budget.

Keys (integer micro-dollars, day in the budget's time zone):

    crawler:ledger:day:YYYY-MM-DD        hash billed_micro, billed_count, reserved_micro,
                                         open_count, incarnation, seed_micro, seed_count
    crawler:ledger:day:YYYY-MM-DD:open   hash reservation id -> amount_micro
    crawler:ledger:rollover              hash at, day (the last midnight job, for status)

Day keys expire after DAYS_KEPT days, so roll-over needs no job: a new day is a new key.

Redis restarted empty mid-day: every node keeps, in its own data dir, what it last saw of
today's total and under which `incarnation` (a random id written when a day key is created).
A node that reserves and finds the day key gone, or re-created under another incarnation,
passes what it saw; the script raises the day's billed total to the highest such figure any
node has offered (never lower, never counted twice). What nobody saw (requests made after a
node's last look) cannot be known: the README says so.

Redis unreachable: `reserve()` and `can_reserve()` raise StoreUnavailableError, so no paid
request is made. `settle()`/`release()` log and return False: the reservation stays open in
Redis, counted as spent (the safe side). `statistics()` answers from the local record, marked
``"store_reachable": False``.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import diskcache

from crawler.logging import get_logger
from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.store.ledger import DAYS_KEPT, Reservation, micro_from_usd, usd_from_micro
from crawler.store.redis_client import RedisConnection, text_map
from crawler.utils.clock import WallClock, utc_now
from crawler.utils.exceptions import BudgetExhaustedError, ConfigError, StorageError

__all__ = ["RedisLedger"]

log = get_logger("crawler.ledger")

_WHAT: Final = "budget ledger"
_SEEN_KEY: Final = "seen"
_KEEP_S: Final = (DAYS_KEPT + 1) * 86_400

# Shared by reserve: re-seed a day key that Redis lost, from what the caller last saw.
# ARGV: seen_incarnation, seen_micro, seen_count, new_incarnation (for a missing key).
_SEED_LUA: Final = """
local day = KEYS[1]
local seen_inc, seen_micro, seen_count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', day) == 0 then
  redis.call('HSET', day, 'billed_micro', 0, 'billed_count', 0, 'reserved_micro', 0,
             'open_count', 0, 'incarnation', ARGV[4], 'seed_micro', 0, 'seed_count', 0)
end
local inc = redis.call('HGET', day, 'incarnation')
if seen_inc ~= '' and seen_inc ~= inc and seen_micro > 0 then
  local known = tonumber(redis.call('HGET', day, 'seed_micro') or '0')
  if seen_micro > known then
    local known_count = tonumber(redis.call('HGET', day, 'seed_count') or '0')
    redis.call('HINCRBY', day, 'billed_micro', seen_micro - known)
    redis.call('HINCRBY', day, 'billed_count', math.max(0, seen_count - known_count))
    redis.call('HSET', day, 'seed_micro', seen_micro,
               'seed_count', math.max(seen_count, known_count))
  end
end
"""

# KEYS: day, open. ARGV: 1-4 as _SEED_LUA, 5 budget, 6 cost, 7 id, 8 ttl_s.
# Returns {granted, used_micro, used_count, incarnation}.
_RESERVE_LUA: Final = (
    _SEED_LUA
    + """
local billed = tonumber(redis.call('HGET', day, 'billed_micro'))
local reserved = tonumber(redis.call('HGET', day, 'reserved_micro'))
local count = tonumber(redis.call('HGET', day, 'billed_count'))
  + tonumber(redis.call('HGET', day, 'open_count'))
local budget, cost = tonumber(ARGV[5]), tonumber(ARGV[6])
if billed + reserved + cost > budget then
  return {0, billed + reserved, count, inc}
end
redis.call('HINCRBY', day, 'reserved_micro', cost)
redis.call('HINCRBY', day, 'open_count', 1)
redis.call('HSET', KEYS[2], ARGV[7], cost)
redis.call('EXPIRE', day, ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[8])
return {1, billed + reserved + cost, count + 1, inc}
"""
)

# KEYS: day, open. ARGV: id, billed (1/0). Returns {closed, used_micro, used_count, incarnation}.
_CLOSE_LUA: Final = """
local day = KEYS[1]
if redis.call('EXISTS', day) == 0 then return {0, 0, 0, ''} end
local amount = redis.call('HGET', KEYS[2], ARGV[1])
local inc = redis.call('HGET', day, 'incarnation')
if amount then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', day, 'reserved_micro', -tonumber(amount))
  redis.call('HINCRBY', day, 'open_count', -1)
  if ARGV[2] == '1' then
    redis.call('HINCRBY', day, 'billed_micro', tonumber(amount))
    redis.call('HINCRBY', day, 'billed_count', 1)
  end
end
local used = tonumber(redis.call('HGET', day, 'billed_micro'))
  + tonumber(redis.call('HGET', day, 'reserved_micro'))
local count = tonumber(redis.call('HGET', day, 'billed_count'))
  + tonumber(redis.call('HGET', day, 'open_count'))
return {amount and 1 or 0, used, count, inc}
"""


class RedisLedger:
    """`BudgetLedger`'s contract on Redis; `local_dir` holds this node's record of spend seen."""

    def __init__(
        self,
        redis: RedisConnection,
        local_dir: Path,
        total_budget_usd: Decimal,
        cost_per_request_usd: Decimal,
        timezone: str = "UTC",
        now: WallClock = utc_now,
    ) -> None:
        self._budget_micro = micro_from_usd(total_budget_usd, "TOTAL_BUDGET")
        self._cost_micro = micro_from_usd(cost_per_request_usd, "COST_PER_REQUEST")
        if self._cost_micro <= 0:
            raise ConfigError(f"COST_PER_REQUEST {cost_per_request_usd} must be above 0 USD")
        try:
            self._zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"BUDGET_TIMEZONE {timezone!r} is not a known time zone; use e.g. UTC or "
                "America/New_York"
            ) from exc
        self._timezone = timezone
        self._now = now
        self._redis = redis
        self._local_dir = Path(local_dir)
        self._local: diskcache.Cache = open_store(self._local_dir, "local ledger record")
        self._reserve = redis.script("ledger_reserve", _RESERVE_LUA)
        self._close_script = redis.script("ledger_close", _CLOSE_LUA)

    # -- the day --------------------------------------------------------------------------

    def day(self) -> str:
        """Today's date (ISO) in the budget's time zone, from the injected `now()`."""
        current = self._now()
        if current.tzinfo is None or current.utcoffset() is None:
            raise ValueError("now() must return a timezone-aware datetime")
        return current.astimezone(self._zone).date().isoformat()

    def _keys(self, day: str) -> list[str]:
        key = self._redis.key("ledger", "day", day)
        return [key, key + ":open"]

    # -- reserve / settle / release -------------------------------------------------------

    def reserve(self) -> Reservation:
        """Hold one request's cost on the cluster's budget for today.

        Raises BudgetExhaustedError when it would not fit, StoreUnavailableError when Redis
        cannot be asked (then nothing may be spent).
        """
        today = self.day()
        reservation = Reservation(id=uuid.uuid4().hex, day=today, amount_micro=self._cost_micro)
        seen = self._seen(today)
        args = [
            seen.get("incarnation", ""),
            int(seen.get("used_micro", 0)),
            int(seen.get("used_count", 0)),
            uuid.uuid4().hex,
            self._budget_micro,
            self._cost_micro,
            reservation.id,
            _KEEP_S,
        ]
        with self._redis.errors(_WHAT):
            granted, used, count, incarnation = self._reserve(keys=self._keys(today), args=args)
        self._remember(today, str(incarnation), int(used), int(count))
        if not int(granted):
            raise BudgetExhaustedError(
                current_usage=int(count),
                budget_limit=self.requests_allowed,
                cost_spent=usd_from_micro(int(used)),
            )
        return reservation

    def settle(self, reservation: Reservation) -> bool:
        """The request was billed: move its hold into billed spend (False if unknown/closed)."""
        return self._close(reservation, billed=True)

    def release(self, reservation: Reservation) -> bool:
        """The request was not billed: drop its hold (False if unknown/closed)."""
        return self._close(reservation, billed=False)

    def _close(self, reservation: Reservation, *, billed: bool) -> bool:
        try:
            with self._redis.errors(_WHAT):
                closed, used, count, incarnation = self._close_script(
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
        if incarnation:
            self._remember(reservation.day, str(incarnation), int(used), int(count))
        return bool(int(closed))

    def can_reserve(self) -> bool:
        """Whether one more request fits today (a hint; raises StoreUnavailableError)."""
        fields = self._day_fields(self.day())
        used = fields.get("billed_micro", 0) + fields.get("reserved_micro", 0)
        return used + self._cost_micro <= self._budget_micro

    # -- roll-over and status -------------------------------------------------------------

    def record_rollover(self) -> None:
        """Note that the midnight job ran (day keys expire by themselves)."""
        with self._redis.errors(_WHAT):
            self._redis.client.hset(
                self._redis.key("ledger", "rollover"),
                mapping={"at": self._now().isoformat(), "day": self.day()},
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
        budget_micro = micro_from_usd(total_budget_usd, "TOTAL_BUDGET")
        cost_micro = micro_from_usd(cost_per_request_usd, "COST_PER_REQUEST")
        if cost_micro <= 0:
            raise ConfigError(f"COST_PER_REQUEST {cost_per_request_usd} must be above 0 USD")
        self._budget_micro, self._cost_micro = budget_micro, cost_micro

    def statistics(self) -> dict[str, Any]:
        """`BudgetLedger.statistics()`'s keys for the cluster, plus `store` ("redis"),
        `store_reachable` and `reseeded_cost` (what a re-seed after a Redis restart added)."""
        today = self.day()
        reachable = True
        rollover: dict[str, str] = {}
        try:
            fields = self._day_fields(today)
            with self._redis.errors(_WHAT):
                rollover = text_map(
                    self._redis.client.hgetall(self._redis.key("ledger", "rollover"))
                )
        except StorageError:
            # Unreachable: what this node last saw, all of it counted as billed.
            reachable = False
            seen = self._seen(today)
            fields = {
                "billed_micro": int(seen.get("used_micro", 0)),
                "billed_count": int(seen.get("used_count", 0)),
            }
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
            "budget_remaining": usd_from_micro(max(0, budget - used_micro)),
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
        }

    def days(self) -> list[str]:
        """The days with a record in Redis, oldest first."""
        prefix = self._redis.key("ledger", "day", "")
        with self._redis.errors(_WHAT):
            keys = list(self._redis.client.scan_iter(match=prefix + "*", count=500))
        return sorted({k[len(prefix) :] for k in keys if not k.endswith(":open")})

    def close(self) -> None:
        """Close the local record's connection (the Redis connection belongs to the caller)."""
        self._local.close()

    # -- storage --------------------------------------------------------------------------

    def _day_fields(self, day: str) -> dict[str, int]:
        with self._redis.errors(_WHAT):
            raw = text_map(self._redis.client.hgetall(self._keys(day)[0]))
        out: dict[str, int] = {}
        for name, value in raw.items():
            if name == "incarnation":
                continue
            try:
                out[name] = int(value)
            except ValueError as exc:
                raise StorageError(
                    f"budget ledger: Redis key {self._keys(day)[0]} holds a non-integer "
                    f"{name}; delete the key only if no money was spent today"
                ) from exc
        return out

    def _seen(self, day: str) -> dict[str, Any]:
        """What this node last saw of `day`'s total ({} if nothing, or another day)."""
        try:
            with storage_errors("local ledger record", self._local_dir):
                raw = self._local.get(_SEEN_KEY)
        except (CorruptRecordError, StorageError):
            return {}
        if not isinstance(raw, dict) or raw.get("day") != day:
            return {}
        return raw

    def _remember(self, day: str, incarnation: str, used_micro: int, used_count: int) -> None:
        record = {
            "day": day,
            "incarnation": incarnation,
            "used_micro": used_micro,
            "used_count": used_count,
            "pid": os.getpid(),
            "at": datetime.now(self._zone).isoformat(),
        }
        try:
            with storage_errors("local ledger record", self._local_dir):
                self._local.set(_SEEN_KEY, record)
        except StorageError:
            # The record only helps after a Redis restart; losing one update is not worth
            # failing a request that Redis already accepted.
            log.warning("could not write the local ledger record", directory=str(self._local_dir))

