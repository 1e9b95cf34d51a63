"""The quote cache: its terms once (`terms.py`: the entry, the TTL, hit/miss counts), the
data dir's cache (`embedded.py`: `QuoteCache`) and the cluster's (`redis.py`:
`RedisQuoteCache`, with a local copy for outages)."""

from crawler.store.cache.embedded import QuoteCache

__all__ = ["QuoteCache"]
