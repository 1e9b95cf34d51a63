"""The closed-market memory on Redis: when each symbol last got a quote, and a paid one.

Same contract and terms as `crawler.store.quote_times.QuoteTimes` (the contract suite runs both),
shared by the cluster, so a market's closing quote fetched by one node is not paid for again
by another, and paid requests rotate over the whole cluster's watchlist. Two hashes of epoch
microseconds, raised (never lowered: `terms.later`'s rule, atomic) by one Lua script:

    crawler:quote_times:quote   symbol -> last quote (any source)
    crawler:quote_times:paid    symbol -> last paid quote

Every `record` also goes to `local` (the node's embedded store, `crawler.store.local_copy`),
read when Redis is away:
losing this memory costs at most one more fetch per symbol, never money beyond the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final

from crawler.store.local_copy import LocalCopy
from crawler.store.quote_times.embedded import QuoteTimes
from crawler.store.quote_times.terms import WHAT, SymbolTimes
from crawler.store.redis_client import RedisConnection, text_map
from crawler.utils.clock import epoch_us, from_epoch_us

__all__ = ["RedisQuoteTimes"]

# KEYS: quote, paid. ARGV: pairs of (symbol, epoch_us, paid 1/0). Times never move backwards.
_RECORD_LUA: Final = """
for i = 1, #ARGV, 3 do
  local at = tonumber(ARGV[i + 1])
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if at > cur then redis.call('HSET', KEYS[1], ARGV[i], at) end
  if ARGV[i + 2] == '1' then
    cur = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
    if at > cur then redis.call('HSET', KEYS[2], ARGV[i], at) end
  end
end
return 1
"""


class RedisQuoteTimes:
    """Per-symbol quote times shared by the cluster; `local` answers when Redis is away."""

    def __init__(self, redis: RedisConnection, local: QuoteTimes) -> None:
        self._redis = redis
        self._copy = LocalCopy(redis, local, WHAT)
        self.local = local
        self._quote_key = redis.key("quote_times", "quote")
        self._paid_key = redis.key("quote_times", "paid")
        self._record = redis.script("quote_times_record", _RECORD_LUA)

    def snapshot(self) -> dict[str, SymbolTimes]:
        """Every symbol's times (two HGETALLs), or the local copy's when Redis is away."""
        return self._copy.read(self._shared_snapshot, lambda local: local.snapshot())

    def _shared_snapshot(self) -> dict[str, SymbolTimes]:
        quoted = text_map(self._redis.client.hgetall(self._quote_key))
        paid = text_map(self._redis.client.hgetall(self._paid_key))
        return {
            name: SymbolTimes(_time(quoted.get(name)), _time(paid.get(name)))
            for name in quoted.keys() | paid.keys()
        }

    def record(self, quoted: Mapping[str, datetime], paid: Iterable[str] = ()) -> None:
        """Note the quotes' times (and which were paid), here and in the local copy."""
        if not quoted:
            return
        paid_set = set(paid)
        args: list[str | int] = []
        for name, at in quoted.items():
            args += [name, epoch_us(at), int(name in paid_set)]
        self._copy.write(
            lambda local: local.record(quoted, paid_set),
            lambda: self._record(keys=[self._quote_key, self._paid_key], args=args),
        )

    def forget(self, symbol: str) -> None:
        """Drop a symbol no longer tracked, everywhere."""
        self.local.forget(symbol)
        with self._redis.errors(WHAT):
            self._redis.client.hdel(self._quote_key, symbol)
            self._redis.client.hdel(self._paid_key, symbol)

    def close(self) -> None:
        """Close the local copy (the Redis connection belongs to the caller)."""
        self._copy.close()


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return from_epoch_us(int(value))
    except (ValueError, OverflowError, OSError):
        return None
