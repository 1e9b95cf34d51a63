"""crawler: a market-data collection daemon.

Quotes come from the cache (free), Bright Data's Web Unlocker fetching Bloomberg pages (paid,
under a daily budget) and yfinance (free fallback), each source behind its own circuit breaker.
Import the pieces from their homes: `crawler.orchestrator`, `crawler.config`,
`crawler.normalizer.schemas`, `crawler.utils.exceptions`. This module stays import-light so the
CLI starts fast.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
