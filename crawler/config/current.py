"""Loading settings, and the one process-wide instance the rest of crawler reads.

Load once at start; everyone else reads the instance::

    settings = load_settings({"max_workers": 4}, config_file="config.toml")   # flags win
    set_settings(settings)       # the daemon, once its flags are parsed
    get_settings().max_workers   # everyone else (loaded on first use if nobody set it)
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crawler.config.settings import Settings
from crawler.utils.exceptions import ConfigError

__all__ = ["get_settings", "load_settings", "reset_settings", "set_settings"]


def load_settings(
    overrides: Mapping[str, Any] | None = None, *, config_file: Path | str | None = None
) -> Settings:
    """Defaults < config.toml < credential < environment < `overrides` (flat field names).

    Overrides whose value is None are ignored (a flag that was not given). `config_file`
    names the toml explicitly (a `--config` flag) and beats `$CRAWLER_CONFIG`.
    Raises ConfigError (one line) for any bad value.
    """
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    fields = list(Settings.model_fields)
    unknown = sorted(set(given) - set(fields) - {"config_file"})
    if unknown:
        known = ", ".join(name for name in fields if name != "config_file")
        raise ConfigError(f"config: unknown setting {unknown[0]!r}; known settings: {known}")
    if config_file is not None:
        given["config_file"] = config_file
    return Settings(**given)


_lock = threading.Lock()
_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, loaded on first use (ConfigError if they are invalid)."""
    global _current
    with _lock:
        if _current is None:
            _current = load_settings()
        return _current


def set_settings(settings: Settings) -> None:
    """Make `settings` the process-wide instance (the daemon after parsing its flags; tests)."""
    global _current
    with _lock:
        _current = settings


def reset_settings() -> None:
    """Forget the process-wide instance; the next `get_settings()` loads afresh."""
    global _current
    with _lock:
        _current = None
