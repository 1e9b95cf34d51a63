"""The quote sources a node's settings ask for, built once (the wiring calls it; so does
`HybridDataSource` when it is given no `sources=`).

    stores = open_stores(settings)
    sources = build_sources(settings, stores.ledger)
    hybrid = HybridDataSource(settings, stores=stores, sources=sources)

The only place that turns source names (`SOURCES_ORDER`) into source objects: past here the
hybrid asks a source what it can do (paid, batch), never its name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from crawler.orchestrator.hybrid.health import BRIGHT_DATA, YFINANCE
from crawler.sources.base import QuoteSource

if TYPE_CHECKING:
    from crawler.config import Settings
    from crawler.store.backend import LedgerStore, Stores

__all__ = ["build_sources", "open_node_stores"]


def build_sources(
    settings: Settings, ledger: LedgerStore, *, data_dir: Path | None = None
) -> list[QuoteSource]:
    """The sources `settings.sources_order` names, in that order: Bright Data only with an API
    key (it reserves each request on `ledger`), yfinance with its caches under `data_dir`
    (default: the settings' data dir, made 0700 if missing)."""
    from crawler.store.datadir import ensure_data_dir

    if data_dir is None:
        data_dir = ensure_data_dir(Path(settings.data_dir))
    sources: list[QuoteSource] = []
    for name in settings.sources_order:
        if name == BRIGHT_DATA and settings.bright_data_api_key is not None:
            sources.append(_bright_data(settings, ledger))
        elif name == YFINANCE:
            # Made here, 0700 like the rest of the data dir: yfinance would make it 0755 (its
            # time-zone and cookie caches).
            sources.append(_yfinance(settings, ensure_data_dir(data_dir / "yfinance")))
    return sources


def _bright_data(settings: Settings, ledger: LedgerStore) -> QuoteSource:
    from crawler.sources.bright_data import BrightDataSource

    assert settings.bright_data_api_key is not None
    return BrightDataSource(
        endpoint=settings.bright_data_endpoint,
        api_key=settings.bright_data_api_key.get_secret_value(),
        zone=settings.bright_data_zone,
        ledger=ledger,
        read_timeout_s=float(settings.request_timeout_seconds),
        deadline_s=float(settings.quote_deadline_seconds),
        pool_size=settings.max_workers,
    )


def _yfinance(settings: Settings, cache_dir: Path) -> QuoteSource:
    from crawler.sources.yahoo_throttle import shared_throttle
    from crawler.sources.yfinance_source import YFinanceSource

    return YFinanceSource(
        endpoint=settings.yfinance_endpoint,
        cache_dir=cache_dir,
        timeout_s=float(settings.request_timeout_seconds),
        deadline_s=float(settings.quote_deadline_seconds),
        # As wide as the hybrid's own pool, or it would be the bottleneck.
        max_workers=settings.max_workers,
        batch_size=settings.yfinance_batch_size,
        # One bucket for the whole process, whoever builds a source.
        throttle=shared_throttle(settings.yfinance_max_rps),
    )


def open_node_stores(settings: Settings | None) -> Stores:
    """The stores the settings name (the data dir made 0700 first); for a hybrid built
    without `stores=`, which then closes them."""
    from crawler.store.backend import open_stores
    from crawler.store.datadir import ensure_data_dir

    if settings is None:
        raise ValueError("pass stores=, or both ledger= and cache=, or settings")
    ensure_data_dir(Path(settings.data_dir))
    return open_stores(settings)
