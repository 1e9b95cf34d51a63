"""Everything persisted under the data dir: budget ledger, quote cache, watchlist, history."""
