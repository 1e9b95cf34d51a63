"""Names a package exports but imports only on first use (PEP 562's module `__getattr__`).

    _HOMES = {"Settings": "crawler.config.settings"}

    def __getattr__(name: str) -> Any:
        return lazy_attribute(__name__, _HOMES, name)

`crawler status` imports `crawler.config` and `crawler.orchestrator.circuit_breaker`; their
packages' heavier names (pydantic, requests, yfinance, APScheduler) wait until someone asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["by_name", "lazy_attribute"]


def lazy_attribute(package: str, homes: Mapping[str, str], name: str) -> Any:
    """`name` from its home module in `homes`, imported now; AttributeError, worded as Python's
    own, for a name `package` does not export."""
    home = homes.get(name)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(import_module(home), name)


def by_name(names_by_home: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """{name: home} from {home: its names}, for a package that exports several names a module."""
    return {name: home for home, names in names_by_home.items() for name in names}
