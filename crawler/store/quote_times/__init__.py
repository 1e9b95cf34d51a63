"""When each symbol last got a quote, and a paid one: the terms once (`terms.py`), the data
dir's store (`embedded.py`: `QuoteTimes`) and the cluster's (`redis.py`: `RedisQuoteTimes`,
with a local copy for outages)."""

from crawler.store.quote_times.embedded import QuoteTimes
from crawler.store.quote_times.terms import QUOTE_TIMES_SUBDIR, SymbolTimes

__all__ = ["QUOTE_TIMES_SUBDIR", "QuoteTimes", "SymbolTimes"]
