"""Where settings come from: config.toml, the systemd credential, the environment.

Precedence, lowest first (a later source wins): the defaults on `Settings`, config.toml, the
systemd credential (the API key only), the environment, overrides (command-line flags).
`settings_sources` puts them in that order for pydantic-settings (which wants first-wins).

Reading the files themselves (`TOML_KEYS`, `read_toml`, `find_config_file`, the default
locations) lives in `crawler.config.files`, which needs no pydantic; it is re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
)

from crawler.config.files import (
    CREDENTIAL_NAME,
    TOML_KEYS,
    credential_path,
    default_data_dir,
    env_dir,
    find_config_file,
    read_toml,
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
