"""Where configuration lives on disk, read without pydantic: the config.toml to load, its
sections, and the default data and socket locations.

Kept free of pydantic so that `crawler status` can find the control socket without building
`Settings` (importing pydantic and pydantic-settings costs more than the rest of the command);
`socket_path_from_files` is that quick path, and a test holds it equal to `Settings.socket_path`.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from crawler.utils.exceptions import ConfigError

__all__ = [
    "CONFIG_CREDENTIAL_NAME",
    "CREDENTIAL_NAME",
    "TOML_KEYS",
    "credential_path",
    "default_data_dir",
    "empty_key_credential",
    "env_dir",
    "find_config_file",
    "major_units_from_files",
    "read_toml",
    "runtime_socket_path",
    "socket_path_from_files",
]

#: config.toml's sections (for humans) → the flat field names (env name = field name upper-cased).
TOML_KEYS: dict[str, dict[str, str]] = {
    "budget": {
        "total_usd": "total_budget",
        "cost_per_request_usd": "cost_per_request",
        "timezone": "budget_timezone",
        "pacing": "budget_pacing",
        "policy": "budget_policy",
        "max_quote_age_seconds": "budget_max_quote_age_seconds",
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
    "yfinance": {
        "endpoint": "yfinance_endpoint",
        "batch_size": "yfinance_batch_size",
        "max_requests_per_second": "yfinance_max_rps",
    },
    "sources": {"order": "sources_order"},
    "storage": {"data_dir": "data_dir"},
    "store": {"redis_url": "redis_url", "node_name": "node_name"},
    "daemon": {
        "socket": "crawler_socket",
        "log_format": "log_format",
        "log_level": "log_level",
        "metrics_port": "metrics_port",
    },
    "history": {"retention_days": "history_retention_days"},
    "display": {"major_units": "major_units"},
    "market_hours": {"enabled": "market_hours_enabled"},
    "stream": {
        "enabled": "stream_enabled",
        "endpoint": "yfinance_stream_endpoint",
        "history_interval_seconds": "stream_history_interval_seconds",
    },
    "alerts": {
        "check_interval_seconds": "alerts_check_interval_seconds",
        "notify_timeout_seconds": "alerts_notify_timeout_seconds",
        "rearm_band_pct": "alerts_rearm_band_pct",
    },
}

#: The systemd credential file (in `$CREDENTIALS_DIRECTORY`) that holds the Bright Data key.
CREDENTIAL_NAME = "bright_data_api_key"
#: The systemd credential that holds config.toml (`LoadCredential=config.toml:/etc/crawler/
#: config.toml`): the file stays root-only 0600 and only the service's own user reads the copy.
CONFIG_CREDENTIAL_NAME = "config.toml"

_PATH_FIELDS_IN_TOML = ("data_dir", "crawler_socket")


def read_toml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(flat values incl. `config_file`, field → "section.key") of one config.toml."""
    shown = str(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}".replace("\n", " ")) from None
    except PermissionError:
        raise ConfigError(
            f"{shown}: cannot read it as uid {os.geteuid()}: PermissionError; make it readable "
            f"by this user, or, under systemd, pass it as a credential "
            f"(LoadCredential={CONFIG_CREDENTIAL_NAME}:{shown})"
        ) from None
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
            if (section, key) == ("bright_data", "api_key"):
                # Documented as not read there: a config file is often readable by others or
                # checked in. Refused (never echoed) rather than used behind the docs' back.
                raise ConfigError(
                    f"{shown}: bright_data.api_key is not read from the config file (it is "
                    "often readable by others or checked in); remove the line and set "
                    "BRIGHT_DATA_API_KEY in the environment or a systemd credential named "
                    f"{CREDENTIAL_NAME}"
                )
            if key not in known:
                raise ConfigError(
                    f"{shown}: unknown key '{section}.{key}'; "
                    f"known keys in [{section}]: {', '.join(known)}"
                )
            field = known[key]
            if field in _PATH_FIELDS_IN_TOML and isinstance(value, str):
                if _is_credential(path) and not Path(value).expanduser().is_absolute():
                    # Relative to the credentials directory, a read-only copy: never meant.
                    raise ConfigError(
                        f"{shown}: {section}.{key} = {json.dumps(value)} is relative, and this "
                        "config.toml is a systemd credential (no directory of its own); remove "
                        "the line (the unit's StateDirectory/RuntimeDirectory are used) or "
                        "give an absolute path"
                    )
                value = path.absolute().parent / Path(value).expanduser()
            values[field] = value
            origins[field] = f"{section}.{key}"
    values["config_file"] = path.absolute()
    return values, origins


def env_dir(name: str) -> Path | None:
    """The directory in environment variable `name`, if it is set and absolute."""
    # systemd may list several dirs separated by ':'; XDG says ignore relative values.
    first = os.environ.get(name, "").split(":")[0]
    return Path(first) if first and os.path.isabs(first) else None


def credential_path(name: str = CREDENTIAL_NAME) -> Path | None:
    """The systemd credential file `name` (the API key by default), if there is one."""
    directory = env_dir("CREDENTIALS_DIRECTORY")
    if directory is None or not (directory / name).is_file():
        return None
    return directory / name


def _is_credential(path: Path) -> bool:
    directory = env_dir("CREDENTIALS_DIRECTORY")
    return directory is not None and path.absolute().parent == directory


def empty_key_credential() -> str | None:
    """What is wrong when the API key's credential exists but holds no key (a `printf` whose
    variable sudo dropped writes 0 bytes): the sentence status and the log say; else None."""
    path = credential_path()
    if path is None:
        return None
    try:
        text = path.read_bytes()
    except OSError:
        return None  # reading it fails loudly where the settings load it
    if text.strip():
        return None
    return (
        f"the systemd credential {CREDENTIAL_NAME} ({path}, from LoadCredential=) is empty "
        f"({len(text)} bytes): Bright Data is OFF and quotes come from yfinance only; write "
        "the key with `sudo crawler key set` and restart the service"
    )


def find_config_file(explicit: Path | str | None = None) -> Path | None:
    """The config.toml to load: `explicit`, `$CRAWLER_CONFIG`, the systemd credential
    `config.toml`, `./config.toml`, the user's.

    A file named explicitly or by CRAWLER_CONFIG must exist (ConfigError otherwise); the
    other two are used only if present. The path is returned as found (maybe relative).
    """
    named, where = (explicit, "config_file") if explicit else (None, "")
    if named is None and os.environ.get("CRAWLER_CONFIG"):
        named, where = os.environ["CRAWLER_CONFIG"], "CRAWLER_CONFIG"
    if named is not None:
        path = Path(named).expanduser()
        try:
            path.stat()
        except PermissionError:
            # A root-only /etc/crawler (0700) seen by the service user: not a missing file.
            raise ConfigError(
                f"config: {where} = {json.dumps(str(named))} cannot be read by this user "
                f"(uid {os.geteuid()}): PermissionError; make it readable, or, under systemd, "
                f"pass it as a credential (LoadCredential={CONFIG_CREDENTIAL_NAME}:{named})"
            ) from None
        except OSError:
            pass
        if not path.is_file():
            raise ConfigError(
                f"config: {where} = {json.dumps(str(named))} is not a file; "
                "point it at a config.toml or unset it"
            )
        return path
    credential = credential_path(CONFIG_CREDENTIAL_NAME)
    if credential is not None:  # the systemd unit's LoadCredential=config.toml:...
        return credential
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


def socket_path_from_files(config_file: Path | str | None = None) -> Path:
    """The control socket as `Settings.socket_path` resolves it, from the environment and
    config.toml alone, without validating anything else. Raises ConfigError where the files
    are unreadable; callers that need certainty use `load_settings()`."""
    toml: dict[str, Any] = {}
    found = find_config_file(config_file)
    if found is not None:
        toml, _ = read_toml(found)
    socket = os.environ.get("CRAWLER_SOCKET") or toml.get("crawler_socket")
    if socket:
        return Path(os.path.abspath(Path(socket).expanduser()))
    runtime = runtime_socket_path()
    if runtime is not None:
        return runtime
    data_dir = os.environ.get("DATA_DIR") or toml.get("data_dir") or default_data_dir()
    return Path(os.path.abspath(Path(data_dir).expanduser())) / "crawler.sock"


def runtime_socket_path() -> Path | None:
    """The control socket in a runtime directory when there is one, before `<data_dir>/`:
    `$RUNTIME_DIRECTORY/crawler.sock` (systemd), else `$XDG_RUNTIME_DIR/crawler/crawler.sock`
    (the one home of this rule: `Settings.socket_path` and `socket_path_from_files`)."""
    runtime = env_dir("RUNTIME_DIRECTORY")
    if runtime is not None:
        return runtime / "crawler.sock"
    xdg = env_dir("XDG_RUNTIME_DIR")
    if xdg is not None:
        return xdg / "crawler" / "crawler.sock"
    return None


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def major_units_from_files(config_file: Path | str | None = None) -> bool:
    """`Settings.major_units` from the environment (MAJOR_UNITS) and config.toml alone, for
    the quick `status` path; ConfigError for a value it cannot read (the full CLI words it)."""
    env = (os.environ.get("MAJOR_UNITS") or "").strip().lower()
    if env:
        if env in _TRUE or env in _FALSE:
            return env in _TRUE
        raise ConfigError(f"MAJOR_UNITS={env!r} is not a boolean")
    found = find_config_file(config_file)
    value = read_toml(found)[0].get("major_units", False) if found is not None else False
    if not isinstance(value, bool):
        raise ConfigError(f"display.major_units={value!r} is not a boolean")
    return value
