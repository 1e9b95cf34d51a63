"""The shared watchlist's Lua (`crawler.store.watchlist.redis`): only what must be atomic, the
duplicate and size checks of an add, a removal's tombstone, and the merge of a node's copy into
a list Redis lost (`EPOCH_FIELD`, " epoch", marks a list Redis still holds).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ADD_LUA", "MERGE_LUA", "REMOVE_LUA"]

# KEYS: hash, seq, removed. ARGV: symbol, asset, max. Returns its version (> 0) when added,
# 0 present, -1 full, -2 the list has no epoch (lost or new: the caller syncs first).
ADD_LUA: Final = """
if redis.call('HEXISTS', KEYS[1], ' epoch') == 0 then return -2 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) - 1 >= tonumber(ARGV[3]) then return -1 end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], seq .. ':' .. ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[1])
return seq
"""

# KEYS: hash, seq, removed. ARGV: symbol. Returns its tombstone's version (> 0) when removed,
# 0 absent, -2 no epoch.
REMOVE_LUA: Final = """
if redis.call('HEXISTS', KEYS[1], ' epoch') == 0 then return -2 end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], seq)
return seq
"""

# KEYS: hash, seq, removed, rebuilt. ARGV: 1 a new epoch id, 2 node, 3 now (ISO), 4 mode
# ("rebuild": this node was in the cluster, merge its copy; "seed": only fill a list that does
# not exist), 5 entries JSON [[symbol, version, asset], ...], 6 tombstones JSON
# [[symbol, version], ...], 7 max symbols.
# Returns {epoch, created (1/0), added, removed}.
MERGE_LUA: Final = """
local ep = redis.call('HGET', KEYS[1], ' epoch')
local created = 0
local existed = redis.call('EXISTS', KEYS[1]) == 1
local rebuild = ARGV[4] == 'rebuild'
if not ep then
  ep = ARGV[1]
  created = 1
  redis.call('HSET', KEYS[1], ' epoch', ep)
  if rebuild then
    redis.call('DEL', KEYS[4])
    redis.call('HSET', KEYS[4], 'at', ARGV[3], 'by', ARGV[2], 'merged', '[]')
  end
end
if not rebuild and (existed or created == 0) then return {ep, created, 0, 0} end
local entries, dead = cjson.decode(ARGV[5]), cjson.decode(ARGV[6])
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
for _, t in ipairs(dead) do top = math.max(top, tonumber(t[2])) end
for _, e in ipairs(entries) do top = math.max(top, tonumber(e[2])) end
local removed, added = 0, 0
for _, t in ipairs(dead) do
  local sym, ver = t[1], tonumber(t[2])
  local cur = redis.call('HGET', KEYS[1], sym)
  if cur and tonumber(string.match(cur, '^(%d+)')) <= ver then
    redis.call('HDEL', KEYS[1], sym)
    removed = removed + 1
  end
  if ver > tonumber(redis.call('HGET', KEYS[3], sym) or '-1') then
    redis.call('HSET', KEYS[3], sym, string.format('%d', ver))
  end
end
local limit = tonumber(ARGV[7]) + 1
for _, e in ipairs(entries) do
  local sym, ver, asset = e[1], tonumber(e[2]), e[3]
  if redis.call('HEXISTS', KEYS[1], sym) == 0
     and ver > tonumber(redis.call('HGET', KEYS[3], sym) or '-1')
     and redis.call('HLEN', KEYS[1]) < limit then
    if ver <= 0 then
      top = top + 1
      ver = top
    end
    redis.call('HSET', KEYS[1], sym, string.format('%d', ver) .. ':' .. asset)
    added = added + 1
  end
end
redis.call('SET', KEYS[2], string.format('%d', top))
if rebuild and redis.call('EXISTS', KEYS[4]) == 1 then
  local merged = cjson.decode(redis.call('HGET', KEYS[4], 'merged') or '[]')
  merged[#merged + 1] = ARGV[2]
  redis.call('HSET', KEYS[4], 'merged', cjson.encode(merged),
             'symbols', redis.call('HLEN', KEYS[1]) - 1,
             'removals', redis.call('HLEN', KEYS[3]))
end
return {ep, created, added, removed}
"""
