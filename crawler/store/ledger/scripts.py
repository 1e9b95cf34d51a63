"""The budget's Lua: only what must be atomic inside Redis, every script of the ledger in one
place. `crawler.store.ledger.redis` runs the reservation's two (`RESERVE_LUA`, `CLOSE_LUA`),
`crawler.store.ledger.recovery` the epoch's four (adopt, begin, report, complete). The rules
they apply atomically are written in Python once (`crawler.store.ledger.terms`); a script
takes the caller's reading of them as arguments where it can.
"""

from __future__ import annotations

from typing import Final

from crawler.store.ledger.terms import WINDOW_MINUTES

__all__ = [
    "ADOPT_LUA",
    "BEGIN_LUA",
    "CLOSE_LUA",
    "COMPLETE_LUA",
    "REPORT_LUA",
    "RESERVE_LUA",
]

# Only what must be atomic: the gate, the day moving under the caller, the rule (`fits`'
# inequalities) and the hold. The day rule is the caller's (`terms.next_day`, on the clock it
# read); the script refuses (-5) when another node moved the stored day since that read.
# KEYS: clock, window, epoch. ARGV: 1 day prefix, 2 now_us, 3 the day, 4 its end (us), 5 the
# clock's day as the caller read it ('' if none), 6 its day_ends_us as read, 7 real minute,
# 8 budget, 9 cost, 10 id, 11 ttl_s, 12 the epoch this node is on, 13 a day this node saw
# spend on under that epoch ('' if none), 14 "1" if it saw the clock under that epoch,
# 15 the hour (HH, budget zone), 16 the label.
# Returns {granted, used_micro, used_count, epoch, day, window_micro}. granted < 0 is the
# recovery gate (see crawler.store.ledger.recovery): -1 no epoch, -2 another epoch than the
# caller's, -3 the epoch is recovering, -4 this epoch lost its day or clock key; -5 the day
# moved since the caller read it (read again).
RESERVE_LUA: Final = """
local ep = redis.call('HGET', KEYS[3], 'id')
if not ep then return {-1, 0, 0, '', '', 0} end
if ep ~= ARGV[12] then return {-2, 0, 0, ep, '', 0} end
if redis.call('HGET', KEYS[3], 'state') ~= 'ok' then return {-3, 0, 0, ep, '', 0} end
local clock, window = KEYS[1], KEYS[2]
local sd = redis.call('HGET', clock, 'day')
if not sd and ARGV[14] == '1' then return {-4, 0, 0, ep, '', 0} end
if (sd or '') ~= ARGV[5] or (redis.call('HGET', clock, 'day_ends_us') or '') ~= ARGV[6] then
  return {-5, 0, 0, ep, '', 0}
end
local dday = ARGV[3]
local day = ARGV[1] .. dday
local open = day .. ':open'
if redis.call('EXISTS', day) == 0 then
  if ARGV[13] == dday then return {-4, 0, 0, ep, dday, 0} end
  redis.call('HSET', day, 'billed_micro', 0, 'billed_count', 0, 'reserved_micro', 0,
             'open_count', 0, 'seed_micro', 0, 'seed_count', 0)
end
local hw = tonumber(redis.call('HGET', clock, 'high_water_us') or '0')
redis.call('HSET', clock, 'day', dday, 'day_ends_us', ARGV[4],
           'high_water_us', string.format('%d', math.max(tonumber(ARGV[2]), hw)))
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
""".replace("WINDOW_MINUTES", str(WINDOW_MINUTES))

# KEYS: day, open, window, labels. ARGV: id, billed (1/0). Returns 1 closed, 0 unknown/closed.
CLOSE_LUA: Final = """
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
