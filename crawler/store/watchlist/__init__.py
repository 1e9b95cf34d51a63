"""The watchlist: its terms once (`terms.py`: the canonical symbol, the size limit), the data
dir's list (`embedded.py`: `Watchlist`) and the cluster's (`redis.py`: `RedisWatchlist`, with
a local copy for outages and a rebuild after Redis lost the list)."""

from crawler.store.watchlist.embedded import Watchlist
from crawler.store.watchlist.terms import MAX_SYMBOLS, HasCanonical, canonical_symbol

__all__ = ["MAX_SYMBOLS", "HasCanonical", "Watchlist", "canonical_symbol"]
