"""Settings: every knob of crawler in one validated object, loaded once at start.

Precedence, lowest first (a later source wins):

    1. the defaults on `Settings` (the only place defaults live)
    2. config.toml: `$CRAWLER_CONFIG`, else `./config.toml` if present, else
       `$XDG_CONFIG_HOME/crawler/config.toml` (`~/.config/crawler/config.toml`)
    3. the systemd credential `$CREDENTIALS_DIRECTORY/bright_data_api_key` (the API key only)
    4. the environment: the upper-case field name, no prefix (`UPDATE_INTERVAL_SECONDS=120`)
    5. overrides, i.e. command-line flags: `load_settings(overrides={"max_workers": 4})`

config.toml is sectioned for humans (`[scheduler] update_interval_seconds`); `TOML_KEYS` maps
each `section.key` to its flat field. Relative paths in the toml resolve against the toml's
directory; relative paths elsewhere against the current directory.

Any bad value raises `ConfigError` with one line naming the key, the value, what is allowed and
where the value came from; secrets are masked:

    >>> load_settings(overrides={"update_interval_seconds": 30})
    Traceback (most recent call last):
    crawler.utils.exceptions.ConfigError: config: update_interval_seconds = 30 is too small; \
use 60 or more (seconds); from a command-line flag

The seed's `CostConfig.TOTAL_BUDGET`, `CacheConfig.TTL_SECONDS`, ... read `get_settings()`.
Importing the package is stdlib-only; the names that need pydantic load on first use.

The package, one noun a module (import from `crawler.config`, not from these)::

    files.py      config.toml discovery and reading, default locations (no pydantic)
    sources.py    the pydantic-settings sources: toml, credential, env, precedence
    settings.py   the Settings model: defaults, bounds, validators, derived values
    messages.py   pydantic errors → one ConfigError line; secret masking
    current.py    load_settings and the process-wide instance (get/set/reset_settings)
    seed.py       CostConfig, CacheConfig, SchedulerConfig (the seed's class attributes)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crawler.config.files import CREDENTIAL_NAME, TOML_KEYS, default_data_dir, find_config_file
from crawler.utils.lazy import by_name, lazy_attribute

if TYPE_CHECKING:
    from crawler.config.current import get_settings, load_settings, reset_settings, set_settings
    from crawler.config.messages import mask_secret
    from crawler.config.seed import CacheConfig, CostConfig, SchedulerConfig
    from crawler.config.settings import Settings, resolve_socket_path

__all__ = [
    "CREDENTIAL_NAME",
    "TOML_KEYS",
    "CacheConfig",
    "CostConfig",
    "SchedulerConfig",
    "Settings",
    "default_data_dir",
    "find_config_file",
    "get_settings",
    "load_settings",
    "mask_secret",
    "reset_settings",
    "resolve_socket_path",
    "set_settings",
]

# Loaded on first use: these need pydantic, and `crawler status` only needs `files`.
_HOMES = by_name(
    {
        "crawler.config.current": (
            "get_settings",
            "load_settings",
            "reset_settings",
            "set_settings",
        ),
        "crawler.config.messages": ("mask_secret",),
        "crawler.config.seed": ("CacheConfig", "CostConfig", "SchedulerConfig"),
        "crawler.config.settings": ("Settings", "resolve_socket_path"),
    }
)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _HOMES, name)
