"""The seed's class-attribute API: `CostConfig.TOTAL_BUDGET`, `CacheConfig.TTL_SECONDS`, ...

Each attribute reads `get_settings()` when it is used, so it always shows the live settings.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from crawler.config.current import get_settings

__all__ = ["CacheConfig", "CostConfig", "SchedulerConfig"]


class _CostConfigType(type):
    @property
    def TOTAL_BUDGET(cls) -> Decimal:
        """Daily budget in USD."""
        return get_settings().total_budget

    @property
    def COST_PER_REQUEST(cls) -> Decimal:
        """USD per Bright Data request."""
        return get_settings().cost_per_request


class _CacheConfigType(type):
    @property
    def TTL_SECONDS(cls) -> int:
        """Cache freshness in seconds."""
        return get_settings().cache_ttl_seconds

    @property
    def DATA_DIR(cls) -> Path:
        """The data directory."""
        return get_settings().data_dir


class _SchedulerConfigType(type):
    @property
    def UPDATE_INTERVAL_SECONDS(cls) -> int:
        """Seconds between collections."""
        return get_settings().update_interval_seconds

    @property
    def AUTO_UPDATE_ENABLED(cls) -> bool:
        """Whether collections run on a schedule."""
        return get_settings().auto_update_enabled


class CostConfig(metaclass=_CostConfigType):
    """Seed API: `CostConfig.TOTAL_BUDGET`, `CostConfig.COST_PER_REQUEST` (live settings)."""


class CacheConfig(metaclass=_CacheConfigType):
    """Seed API: `CacheConfig.TTL_SECONDS`, `CacheConfig.DATA_DIR` (live settings)."""


class SchedulerConfig(metaclass=_SchedulerConfigType):
    """Seed API: `SchedulerConfig.UPDATE_INTERVAL_SECONDS`, `.AUTO_UPDATE_ENABLED`."""
