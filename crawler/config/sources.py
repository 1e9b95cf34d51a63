"""Where settings come from: config.toml, the systemd credential, the environment.

Precedence, lowest first (a later source wins): the defaults on `Settings`, config.toml, the
systemd credential (the API key only), the environment, overrides (command-line flags).
`settings_sources` puts them in that order for pydantic-settings (which wants first-wins).

config.toml is sectioned for humans (`[scheduler] update_interval_seconds`); `TOML_KEYS` maps
each `section.key` to its flat field. Relative paths in the toml resolve against the toml's
directory. `find_config_file` says which toml is loaded; `default_data_dir` where data lives.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
)

from crawler.utils.exceptions import ConfigError

__all__ = [
    "CREDENTIAL_NAME",
    "TOML_KEYS",
    "credential_path",
    "default_data_dir",
    "env_dir",
    "find_config_file",
    "read_toml",
    "settings_sources",
]

#: config.toml's sections (for humans) → the flat field names (env name = field name upper-cased).
TOML_KEYS: dict[str, dict[str, str]] = {
    "budget": {
        "total_usd": "total_budget",
        "cost_per_request_usd": "cost_per_request",
        "timezone": "budget_timezone",
    },
    "cache": {"ttl_seconds": "cache_ttl_seconds"},
    "scheduler": {
        "update_interval_seconds": "update_interval_seconds",
        "auto_update_enabled": "auto_update_enabled",
        "jitter_seconds": "collection_jitter_seconds",
        "max_workers": "max_workers",
    },
    "bright_data": {
        "api_key": "bright_data_api_key",
        "zone": "bright_data_zone",
        "endpoint": "bright_data_endpoint",
        "request_timeout_seconds": "request_timeout_seconds",
        "quote_deadline_seconds": "quote_deadline_seconds",
    },
    "yfinance": {"endpoint": "yfinance_endpoint"},
    "sources": {"order": "sources_order"},
    "storage": {"data_dir": "data_dir"},
    "daemon": {
        "socket": "crawler_socket",
        "log_format": "log_format",
        "log_level": "log_level",
        "metrics_port": "metrics_port",
    },
    "history": {"retention_days": "history_retention_days"},
    "market_hours": {"enabled": "market_hours_enabled"},
}

#: The systemd credential file (in `$CREDENTIALS_DIRECTORY`) that holds the Bright Data key.
CREDENTIAL_NAME = "bright_data_api_key"

_PATH_FIELDS_IN_TOML = ("data_dir", "crawler_socket")


def settings_sources(
    settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource
) -> tuple[PydanticBaseSettingsSource, ...]:
    """First wins: overrides, environment, systemd credential, config.toml (no .env)."""
    explicit = None
    if isinstance(init_settings, InitSettingsSource):
        explicit = init_settings.init_kwargs.get("config_file")
    return (
        init_settings,
        _EnvSource(settings_cls),
        _CredentialSource(settings_cls),
        _TomlSource(settings_cls, find_config_file(explicit)),
    )


class _EnvSource(EnvSettingsSource):
    """The environment, minus `config_file` (it says which file was loaded; only we set it)."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        values.pop("config_file", None)
        return values


class _CredentialSource(PydanticBaseSettingsSource):
    """systemd's `LoadCredential=bright_data_api_key:...`: a root-only file, not the env."""

    def __call__(self) -> dict[str, Any]:
        path = credential_path()
        if path is None:
            return {}
        try:
            return {"bright_data_api_key": path.read_text(encoding="utf-8")}
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"config: cannot read the systemd credential {path}: {type(exc).__name__}"
            ) from None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` returns everything at once."""
        return None, field_name, False


class _TomlSource(PydanticBaseSettingsSource):
    """config.toml, flattened through `TOML_KEYS`; also records which file it was."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._values = read_toml(path)[0] if path is not None else {}

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` returns everything at once."""
        return self._values.get(field_name), field_name, False


def read_toml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(flat values incl. `config_file`, field → "section.key") of one config.toml."""
    shown = str(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}".replace("\n", " ")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot read it: {type(exc).__name__}") from None
    sections = ", ".join(TOML_KEYS)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for section, table in data.items():
        if section not in TOML_KEYS:
            raise ConfigError(f"{shown}: unknown section [{section}]; known sections: {sections}")
        if not isinstance(table, dict):
            raise ConfigError(f"{shown}: '{section}' must be a section; write [{section}] above it")
        known = TOML_KEYS[section]
        for key, value in table.items():
            if key not in known:
                raise ConfigError(
                    f"{shown}: unknown key '{section}.{key}'; "
                    f"known keys in [{section}]: {', '.join(known)}"
                )
            field = known[key]
            if field in _PATH_FIELDS_IN_TOML and isinstance(value, str):
                value = path.absolute().parent / Path(value).expanduser()
            values[field] = value
            origins[field] = f"{section}.{key}"
    values["config_file"] = path.absolute()
    return values, origins


# -- locations ------------------------------------------------------------------------------


def env_dir(name: str) -> Path | None:
    """The directory in environment variable `name`, if it is set and absolute."""
    # systemd may list several dirs separated by ':'; XDG says ignore relative values.
    first = os.environ.get(name, "").split(":")[0]
    return Path(first) if first and os.path.isabs(first) else None


def credential_path() -> Path | None:
    """The systemd credential file holding the API key, if there is one."""
    directory = env_dir("CREDENTIALS_DIRECTORY")
    if directory is None or not (directory / CREDENTIAL_NAME).is_file():
        return None
    return directory / CREDENTIAL_NAME


def find_config_file(explicit: Path | str | None = None) -> Path | None:
    """The config.toml to load: `explicit`, `$CRAWLER_CONFIG`, `./config.toml`, the user's.

    A file named explicitly or by CRAWLER_CONFIG must exist (ConfigError otherwise); the
    other two are used only if present. The path is returned as found (maybe relative).
    """
    named, where = (explicit, "config_file") if explicit else (None, "")
    if named is None and os.environ.get("CRAWLER_CONFIG"):
        named, where = os.environ["CRAWLER_CONFIG"], "CRAWLER_CONFIG"
    if named is not None:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"config: {where} = {json.dumps(str(named))} is not a file; "
                "point it at a config.toml or unset it"
            )
        return path
    local = Path("config.toml")
    if local.is_file():
        return local
    user = (env_dir("XDG_CONFIG_HOME") or Path.home() / ".config") / "crawler" / "config.toml"
    return user if user.is_file() else None


def default_data_dir() -> Path:
    """`$STATE_DIRECTORY` (systemd), else `$XDG_DATA_HOME/crawler`, else ~/.local/share/crawler."""
    state = env_dir("STATE_DIRECTORY")
    if state is not None:
        return state
    return (env_dir("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "crawler"
