"""The cluster ledger fails closed when Redis loses its data, and is rebuilt from the nodes.

Redis can forget (FLUSHALL, a restart without persistence, eviction). The day's spend and the
24-hour window are then gone from Redis, but every node still knows what *it* paid: each keeps,
in its own data dir, a durable record of its own reservations (`SpendRecord`), written before
the reservation is asked for (a crash in between over-counts: the safe side), plus the last
cluster total and clock it saw and the peers it saw alive.

An *epoch* key marks data Redis still holds. It has no expiry and is created once per cluster:

    crawler:ledger:epoch      hash id, state ("ok" | "recovering"), since_us (Redis TIME),
                              by (the node that noticed), reason, adopted ("1": not a loss)
    crawler:ledger:reports    hash node -> its report (JSON), for the current epoch
    crawler:ledger:expected   set  the nodes whose report the epoch waits for

A node that finds the epoch gone while it remembers one (or remembers spend), or finds today's
day key or the clock key gone while it remembers them under the current epoch, starts a new
epoch in state "recovering". While an epoch recovers, the reserve script refuses every paid
request. Each node reports once per epoch, before its first reservation under it (and from
its heartbeat, so an idle node reports within one beat): its own spend per day, its own
per-minute window buckets, the highest cluster total it saw and the cluster clock it saw. The
report script re-seeds each day as max(sum of the nodes' own spends, highest total any node
saw), restores the window as the sum of the nodes' buckets (plus any part of the seed no node
claimed, at the current minute), and restores the clock (the latest day any node saw, so a
changed BUDGET_TIMEZONE cannot open a fresh day). The epoch turns "ok" once every expected
node has reported: the reporters, every peer a reporter saw alive before the loss, and every
node beating now; and not before RECOVERY_GRACE_S (two heartbeats: the heartbeat keys went
with the loss, and a live node must have had the time to beat again). Until then no node
pays; a node that never reports keeps the cluster on free sources (status says who is
missing; start it, or give it up with `SREM` if its data is lost).

A cluster with no epoch and no clock key is new (nothing to recover) when the node remembers
nothing; an existing clock without an epoch is a cluster from before epochs (adopted: reports
are kept but add nothing).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import diskcache

from crawler.store.datadir import CorruptRecordError, storage_errors
from crawler.utils.exceptions import StorageError

__all__ = [
    "ADOPT_LUA",
    "BEGIN_LUA",
    "COMPLETE_LUA",
    "RECOVERY_GRACE_S",
    "RECOVERY_WAIT_S",
    "REPORT_LUA",
    "SpendRecord",
]

#: After this long, a recovery still waiting for a node says so loudly in status.
RECOVERY_WAIT_S: Final = 60.0
#: A recovery lasts at least this long: Redis lost the heartbeats too, and every live node
#: beats (HEARTBEAT_S, 10 s) within it, so the recovery knows whom to wait for.
RECOVERY_GRACE_S: Final = 20.0
#: Own-spend records older than this are dropped (the window is 24 h; a day is at most 26 h).
_KEEP_US: Final = 3 * 86_400 * 1_000_000
_OWN: Final = "own"
_EPOCH: Final = "epoch"
_PEERS: Final = "peers"
_CLOCK: Final = "clock"

# KEYS: epoch, clock. ARGV: new id, node. Creates an "ok" epoch for a cluster that has none:
# new (no clock) or from before epochs (a clock: adopted). Returns the epoch's id.
ADOPT_LUA: Final = """
local ep = redis.call('HGET', KEYS[1], 'id')
if ep then return ep end
local t = redis.call('TIME')
local adopted = redis.call('EXISTS', KEYS[2])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'state', 'ok', 'by', ARGV[2],
           'since_us', string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])),
           'reason', adopted == 1 and 'adopted' or 'new cluster', 'adopted', adopted)
return ARGV[1]
"""

# KEYS: epoch, reports, expected, clock, window. ARGV: new id, node, reason, the id found
# lost ('' = the epoch key itself is gone), the node's now (us), the day key prefix. Starts a
# recovering epoch unless another node already did. What is left of the ledger (a partial
# loss: eviction) goes too: the reports rebuild all of it, and must not add to a remainder.
BEGIN_LUA: Final = """
local ep = redis.call('HGET', KEYS[1], 'id')
if ep and ep ~= ARGV[4] then return ep end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
for _, key in ipairs(redis.call('KEYS', ARGV[6] .. '*')) do redis.call('DEL', key) end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'state', 'recovering', 'by', ARGV[2],
           'since_us', ARGV[5], 'reason', ARGV[3], 'adopted', 0)
return ARGV[1]
"""

# KEYS: epoch, reports, expected, clock, window. ARGV: epoch id, node, report JSON, day key
# prefix, the reporter's real minute, ttl_s of day keys, window minutes.
# Returns 1 applied, 2 already reported, 0 the epoch is another (re-read it).
REPORT_LUA: Final = """
local ep = redis.call('HGET', KEYS[1], 'id')
if ep ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 2 end
local r = cjson.decode(ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
for _, peer in ipairs(r.peers) do redis.call('SADD', KEYS[3], peer) end
if redis.call('HGET', KEYS[1], 'adopted') == '1' then return 1 end
local prefix, now_min, ttl = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local c = r.clock
if c.day ~= '' then
  local sd = redis.call('HGET', KEYS[4], 'day')
  local shw = tonumber(redis.call('HGET', KEYS[4], 'high_water_us') or '0')
  local hw = tonumber(c.high_water_us)
  if (not sd) or c.day > sd then
    redis.call('HSET', KEYS[4], 'day', c.day, 'day_ends_us', c.day_ends_us,
               'high_water_us', hw > shw and c.high_water_us or string.format('%d', shw))
  elseif hw > shw then
    redis.call('HSET', KEYS[4], 'high_water_us', c.high_water_us)
  end
end
local current = redis.call('HGET', KEYS[4], 'day') or ''
local function day_key(day)
  local key = prefix .. day
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'billed_micro', 0, 'billed_count', 0, 'reserved_micro', 0,
               'open_count', 0, 'seed_micro', 0, 'seed_count', 0)
  end
  redis.call('EXPIRE', key, ttl)
  return key
end
local function num(key, field) return tonumber(redis.call('HGET', key, field) or '0') end
local function reseed(day)
  local key = day_key(day)
  local own_m, own_c = num(key, 'rep_own_micro'), num(key, 'rep_own_count')
  local want_m = math.max(own_m, num(key, 'rep_seen_micro'))
  local want_c = math.max(own_c, num(key, 'rep_seen_count'))
  local seed_m, seed_c = num(key, 'seed_micro'), num(key, 'seed_count')
  if want_m > seed_m then
    redis.call('HINCRBY', key, 'billed_micro', want_m - seed_m)
    redis.call('HSET', key, 'seed_micro', string.format('%d', want_m))
  end
  if want_c > seed_c then
    redis.call('HINCRBY', key, 'billed_count', want_c - seed_c)
    redis.call('HSET', key, 'seed_count', string.format('%d', want_c))
  end
  if day == current then
    -- spend no node claims as its own: counted in the window from now (the safe side)
    local unclaimed = math.max(want_m - own_m, 0)
    local windowed = num(key, 'seed_windowed')
    if unclaimed > windowed then
      redis.call('HINCRBY', KEYS[5], now_min, unclaimed - windowed)
      redis.call('HSET', key, 'seed_windowed', string.format('%d', unclaimed))
    end
  end
end
for day, v in pairs(r.days) do
  local key = day_key(day)
  redis.call('HINCRBY', key, 'rep_own_micro', v[1])
  redis.call('HINCRBY', key, 'rep_own_count', v[2])
  reseed(day)
end
local s = r.seen
if s.day ~= '' then
  local key = day_key(s.day)
  if tonumber(s.micro) > num(key, 'rep_seen_micro') then
    redis.call('HSET', key, 'rep_seen_micro', s.micro)
  end
  if tonumber(s.count) > num(key, 'rep_seen_count') then
    redis.call('HSET', key, 'rep_seen_count', s.count)
  end
  reseed(s.day)
end
local oldest = now_min - tonumber(ARGV[7])
for minute, amount in pairs(r.window) do
  if tonumber(minute) >= oldest then redis.call('HINCRBY', KEYS[5], minute, amount) end
end
redis.call('EXPIRE', KEYS[5], ttl)
return 1
"""

# KEYS: epoch, reports, expected. ARGV: epoch id, the caller's now (us), the grace (us), then
# the nodes beating now. Returns {state, since_us, reason, by, missing...} after adding the
# live nodes to the expected set and turning the epoch "ok" when none is missing and the grace
# has passed (every live node has beaten since the loss); {"gone"} when the epoch is another.
COMPLETE_LUA: Final = """
local ep = redis.call('HGET', KEYS[1], 'id')
if ep ~= ARGV[1] then return {'gone'} end
local state = redis.call('HGET', KEYS[1], 'state')
local head = {'', redis.call('HGET', KEYS[1], 'since_us') or '0',
              redis.call('HGET', KEYS[1], 'reason') or '', redis.call('HGET', KEYS[1], 'by') or ''}
if state == 'ok' then head[1] = 'ok' return head end
for i = 4, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
local out = head
for _, node in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('HEXISTS', KEYS[2], node) == 0 then out[#out + 1] = node end
end
local waited = tonumber(ARGV[2]) - tonumber(head[2])
if #out == 4 and waited >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'ok', 'completed_us', ARGV[2])
  head[1] = 'ok'
  return head
end
out[1] = 'recovering'
return out
"""


class SpendRecord:
    """This node's durable memory for the cluster ledger, in its local diskcache.

    - own spend: per day, micro-dollars and requests of its own reservations (granted and not
      released; settled ones stay), per-minute window buckets, and reservations asked for but
      not yet answered (pending: counted, in case Redis granted them just before a crash);
    - the epoch it last reported to or joined; the peers it last saw alive;
    - the highest cluster total and the cluster clock it saw (with `remember_seen`).

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
        seen = self._get("seen")
        return isinstance(seen, dict) and int(seen.get("used_micro", 0) or 0) > 0

    def report(self, peers: list[str], now_us: int) -> dict[str, Any]:
        """What this node tells a recovering cluster (JSON-able; see REPORT_LUA)."""
        own = _normalise(self._get(_OWN))
        _prune(own, now_us)
        seen = self._get("seen")
        seen = seen if isinstance(seen, dict) else {}
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

    # -- storage --------------------------------------------------------------------------

    @contextmanager
    def _transact(self) -> Iterator[dict[str, Any]]:
        where = storage_errors("local ledger record", self._directory)
        with self._lock, where, self._cache.transact():
            own = _normalise(self._get(_OWN))
            yield own
            self._cache.set(_OWN, own)

    def _get(self, key: str) -> Any:
        try:
            with storage_errors("local ledger record", self._directory):
                return self._cache.get(key)
        except (CorruptRecordError, StorageError):
            return None

    def _set(self, key: str, value: Any) -> None:
        with storage_errors("local ledger record", self._directory):
            self._cache.set(key, value)


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
