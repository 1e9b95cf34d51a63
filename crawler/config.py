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
Imports stay light (pydantic, stdlib): the CLI imports this before anything else.
"""

from __future__ import annotations

import json
import os
import threading
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from crawler.normalizer.schemas import SOURCE_NAMES
from crawler.utils.exceptions import ConfigError

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

_SECRET_FIELDS = ("bright_data_api_key",)
_PATH_FIELDS_IN_TOML = ("data_dir", "crawler_socket")
_NUMBER_FIELDS = (
    "total_budget",
    "cost_per_request",
    "cache_ttl_seconds",
    "update_interval_seconds",
    "collection_jitter_seconds",
    "max_workers",
    "request_timeout_seconds",
    "quote_deadline_seconds",
    "history_retention_days",
    "metrics_port",
)


def _unit(unit: str) -> dict[str, Any]:
    # Kept in the field's schema extras so error messages can say "(seconds)".
    return {"unit": unit}


class _Problem(ValueError):
    """A validator's complaint; `problem` reads after "key = value" ("is too small; use ...")."""

    def __init__(self, problem: str, field: str | None = None, value: object = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.field = field
        self.value = value


class Settings(BaseSettings):
    """The effective configuration. Frozen: replace it (`model_copy(update=...)`), never mutate.

    Build it with `load_settings()`; `Settings()` does the same without overrides.
    """

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_prefix="",
        env_ignore_empty=True,  # `FOO=` in a unit file means "not set", not "empty"
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    total_budget: Decimal = Field(
        Decimal("5.50"), gt=0, allow_inf_nan=False, json_schema_extra=_unit("USD per day"),
        description="Daily Bright Data budget; resets at midnight in budget_timezone.",
    )  # fmt: skip
    cost_per_request: Decimal = Field(
        Decimal("0.0015"), ge=0, allow_inf_nan=False, json_schema_extra=_unit("USD"),
        description="What one Bright Data request costs.",
    )  # fmt: skip
    budget_timezone: str = Field("UTC", description="IANA zone whose midnight resets the budget.")
    cache_ttl_seconds: int = Field(
        900, gt=0, json_schema_extra=_unit("seconds"), description="How long a quote is fresh."
    )
    data_dir: Path = Field(
        default_factory=lambda: default_data_dir(),
        description="Cache, ledger, history and watchlist live here.",
    )
    update_interval_seconds: int = Field(
        900, ge=60, le=86400, json_schema_extra=_unit("seconds"),
        description="Time between two collections of the watchlist.",
    )  # fmt: skip
    auto_update_enabled: bool = Field(True, description="Collect on a schedule.")
    collection_jitter_seconds: float = Field(
        10.0, ge=0, allow_inf_nan=False, json_schema_extra=_unit("seconds"),
        description="Random delay added to each collection so fleets do not stampede.",
    )  # fmt: skip
    max_workers: int = Field(16, ge=1, le=256, description="Quotes fetched at once.")
    market_hours_enabled: bool = Field(True, description="Skip symbols whose market is closed.")
    bright_data_api_key: SecretStr | None = Field(None, description="Never printed.")
    bright_data_zone: str = Field("web_unlocker1", description="Web Unlocker zone name.")
    bright_data_endpoint: str = Field("https://api.brightdata.com", description="API base URL.")
    request_timeout_seconds: float = Field(
        10.0, gt=0, le=300, allow_inf_nan=False, json_schema_extra=_unit("seconds"),
        description="Connect + read timeout of one HTTP request.",
    )  # fmt: skip
    quote_deadline_seconds: float = Field(
        30.0, gt=0, le=3600, allow_inf_nan=False, json_schema_extra=_unit("seconds"),
        description="Total time for one quote from one source, retries included.",
    )  # fmt: skip
    yfinance_endpoint: str = Field("", description="Yahoo base URL; empty = the real Yahoo.")
    sources_order: Annotated[tuple[str, ...], NoDecode] = Field(
        ("bright_data", "yfinance"), description="Sources tried after the cache, in order."
    )
    history_retention_days: int = Field(
        365, ge=1, json_schema_extra=_unit("days"), description="Quote history kept this long."
    )
    crawler_socket: Path | None = Field(None, description="Control socket; None = computed.")
    log_format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto = console on a terminal, json otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Loopback port for Prometheus metrics; 0 = off."
    )
    config_file: Path | None = Field(None, description="The config.toml loaded, if any.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
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

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # `from None`: the user gets our one line, never pydantic's traceback.
            raise _config_error(exc, values) from None
        except SettingsError as exc:
            message = f"config: cannot read the settings: {exc}".replace("\n", " ")
            raise ConfigError(_scrub(message, _secret_candidates(values))) from None

    # -- validators: each raises _Problem, worded to follow "key = value" ------------------

    @field_validator(*_NUMBER_FIELDS, mode="before")
    @classmethod
    def _reject_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads True as 1; `ttl_seconds = true` is a mistake, not one second.
        if isinstance(value, bool):
            raise _Problem(f"is not a number; use {_allowed(info.field_name or '')}")
        return value

    @field_validator("budget_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        name = value.strip()
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise _Problem(
                "is not a known time zone; use an IANA name such as UTC or Europe/London"
            ) from None
        return name

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("sources_order", mode="before")
    @classmethod
    def _split_sources(cls, value: Any) -> Any:
        # The environment gives text: accept "bright_data,yfinance" and a JSON list alike.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise _Problem(_sources_allowed("is not a list")) from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("sources_order")
    @classmethod
    def _check_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise _Problem(_sources_allowed("is empty"))
        for name in value:
            if name not in SOURCE_NAMES:
                raise _Problem(_sources_allowed(f"names an unknown source {name!r}"))
        if len(set(value)) != len(value):
            raise _Problem(_sources_allowed("names a source twice"))
        return value

    @field_validator("bright_data_endpoint", "yfinance_endpoint")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        url = value.strip()
        if url == "" and info.field_name == "yfinance_endpoint":
            return url  # empty = the real Yahoo
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _Problem("is not a URL; use http://host[:port] or https://host")
        return url.rstrip("/")

    @field_validator("bright_data_zone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        zone = value.strip()
        if not zone or any(ch.isspace() for ch in zone):
            raise _Problem("is not a zone name; use the zone's name, e.g. web_unlocker1")
        return zone

    @field_validator("bright_data_api_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: Any) -> Any:
        # Files and env values carry trailing newlines; an empty key means "not configured".
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("bright_data_api_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A control character would end up inside an HTTP header.
        text = "" if value is None else value.get_secret_value()
        if any(ch.isspace() or not ch.isprintable() for ch in text):
            raise _Problem("contains spaces or control characters; use the key as issued")
        return value

    @field_validator("data_dir", "crawler_socket", "config_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Absolute now, so a later chdir (daemonising) cannot move the data.
        return None if value is None else Path(os.path.abspath(value.expanduser()))

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        if self.quote_deadline_seconds < self.request_timeout_seconds:
            raise _Problem(
                f"is shorter than request_timeout_seconds = {_show(self.request_timeout_seconds)};"
                " use at least the request timeout (seconds)",
                "quote_deadline_seconds",
                self.quote_deadline_seconds,
            )
        if self.collection_jitter_seconds >= self.update_interval_seconds:
            raise _Problem(
                f"is not below update_interval_seconds = {self.update_interval_seconds};"
                " use less than the interval (seconds)",
                "collection_jitter_seconds",
                self.collection_jitter_seconds,
            )
        return self

    # -- derived values ---------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        """The control socket: see `resolve_socket_path`."""
        return resolve_socket_path(self)

    def public_dict(self) -> dict[str, Any]:
        """Every effective value, JSON-safe (Decimal as exact text), secrets masked."""
        out: dict[str, Any] = {name: _jsonable(getattr(self, name)) for name in _field_names()}
        for name in _SECRET_FIELDS:
            out[name] = mask_secret(getattr(self, name))
        out["socket_path"] = str(self.socket_path)
        return out


# -- sources --------------------------------------------------------------------------------


class _EnvSource(EnvSettingsSource):
    """The environment, minus `config_file` (it says which file was loaded; only we set it)."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        values.pop("config_file", None)
        return values


class _CredentialSource(PydanticBaseSettingsSource):
    """systemd's `LoadCredential=bright_data_api_key:...`: a root-only file, not the env."""

    def __call__(self) -> dict[str, Any]:
        path = _credential_path()
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
        self._values = _read_toml(path)[0] if path is not None else {}

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` returns everything at once."""
        return self._values.get(field_name), field_name, False


def _read_toml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
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


def _env_dir(name: str) -> Path | None:
    # systemd may list several dirs separated by ':'; XDG says ignore relative values.
    first = os.environ.get(name, "").split(":")[0]
    return Path(first) if first and os.path.isabs(first) else None


def _credential_path() -> Path | None:
    directory = _env_dir("CREDENTIALS_DIRECTORY")
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
    user = (_env_dir("XDG_CONFIG_HOME") or Path.home() / ".config") / "crawler" / "config.toml"
    return user if user.is_file() else None


def default_data_dir() -> Path:
    """`$STATE_DIRECTORY` (systemd), else `$XDG_DATA_HOME/crawler`, else ~/.local/share/crawler."""
    state = _env_dir("STATE_DIRECTORY")
    if state is not None:
        return state
    return (_env_dir("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "crawler"


def resolve_socket_path(settings: Settings) -> Path:
    """CRAWLER_SOCKET, else `$RUNTIME_DIRECTORY/crawler.sock` (systemd), else
    `$XDG_RUNTIME_DIR/crawler/crawler.sock`, else `<data_dir>/crawler.sock`."""
    if settings.crawler_socket is not None:
        return settings.crawler_socket
    runtime = _env_dir("RUNTIME_DIRECTORY")
    if runtime is not None:
        return runtime / "crawler.sock"
    xdg = _env_dir("XDG_RUNTIME_DIR")
    if xdg is not None:
        return xdg / "crawler" / "crawler.sock"
    return settings.data_dir / "crawler.sock"


# -- error messages -------------------------------------------------------------------------


def _field_names() -> list[str]:
    return list(Settings.model_fields)


def mask_secret(secret: SecretStr | str | None) -> str:
    """"(not set)", or "****" plus the last 4 characters (only for keys of 12+ characters,
    so a short key is never mostly revealed)."""
    if secret is None:
        return "(not set)"
    text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return "****" + text[-4:] if len(text) >= 12 else "****"


def _show(value: object) -> str:
    """A value as the user would write it, on one line, at most 80 characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float | Decimal):
        text = str(value)
    elif isinstance(value, str):
        try:
            Decimal(value.strip())
            text = value.strip()  # a number given as text (env): show it bare, like `= 30`
        except ArithmeticError:
            text = json.dumps(value, ensure_ascii=False)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _bounds(info: FieldInfo) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in info.metadata:
        for name in ("gt", "ge", "lt", "le"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _unit_of(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    return str(extra.get("unit", "")) if isinstance(extra, dict) else ""


def _allowed(name: str) -> str:
    """What a numeric field accepts: "a whole number from 60 to 86400 (seconds)"."""
    info = Settings.model_fields[name]
    kind = "a whole number" if info.annotation is int else "a number"
    b = _bounds(info)
    low = f"{b['ge']}" if "ge" in b else f"more than {b['gt']}" if "gt" in b else ""
    if low and "le" in b:
        text = f"{kind} from {low} to {b['le']}" if "ge" in b else f"{kind} {low} up to {b['le']}"
    elif low:
        text = f"{kind} {low} or more" if "ge" in b else f"{kind} {low}"
    else:
        text = kind
    unit = _unit_of(info)
    return f"{text} ({unit})" if unit else text


def _sources_allowed(problem: str) -> str:
    return f"{problem}; use a list of distinct names from: {', '.join(SOURCE_NAMES)}"


def _explain(name: str, error: Mapping[str, Any]) -> str:
    """The part after "key = value": what is wrong and what is allowed."""
    kind, ctx = str(error["type"]), error.get("ctx") or {}
    info = Settings.model_fields.get(name)
    unit = f" ({_unit_of(info)})" if info is not None and _unit_of(info) else ""
    if kind == "greater_than_equal":
        return f"is too small; use {ctx['ge']} or more{unit}"
    if kind == "greater_than":
        return f"is too small; use more than {ctx['gt']}{unit}"
    if kind == "less_than_equal":
        return f"is too large; use {ctx['le']} or less{unit}"
    if kind == "less_than":
        return f"is too large; use less than {ctx['lt']}{unit}"
    if kind.startswith(("int_", "decimal_", "float_", "finite_")):
        return f"is not a number; use {_allowed(name)}"
    if kind.startswith("bool_"):
        return "is not true or false; use true or false"
    if kind == "literal_error" and info is not None:
        return f"is not allowed; use one of: {', '.join(get_args(info.annotation))}"
    if kind in ("string_type", "path_type"):
        return "is not text; use a quoted string"
    if kind in ("tuple_type", "list_type"):
        return _sources_allowed("is not a list")
    return "is invalid: " + str(error.get("msg", kind)).replace("\n", " ")


def _origin(name: str, init_values: Mapping[str, Any]) -> str:
    """Where the winning value of `name` came from, for "; from ..." (empty: a default)."""
    if name in init_values:
        return "a command-line flag"
    for key, value in os.environ.items():
        if key.upper() == name.upper() and value != "":
            return f"env {key}"
    if name == "bright_data_api_key" and _credential_path() is not None:
        return f"the systemd credential {CREDENTIAL_NAME}"
    try:
        path = find_config_file(init_values.get("config_file"))
        origins = _read_toml(path)[1] if path is not None else {}
    except ConfigError:
        return ""
    return f"{path} {origins[name]}" if name in origins else ""


def _secret_candidates(init_values: Mapping[str, Any]) -> list[str]:
    """Every API key the sources could have supplied, to scrub from any message."""
    found: list[Any] = [init_values.get("bright_data_api_key")]
    found += [v for k, v in os.environ.items() if k.upper() == "BRIGHT_DATA_API_KEY"]
    try:
        credential = _credential_path()
        found.append(credential.read_text(encoding="utf-8") if credential else None)
        path = find_config_file(init_values.get("config_file"))
        found.append(_read_toml(path)[0].get("bright_data_api_key") if path else None)
    except (ConfigError, OSError, UnicodeDecodeError):
        pass
    texts = [v.get_secret_value() if isinstance(v, SecretStr) else v for v in found]
    return [t.strip() for t in texts if isinstance(t, str) and len(t.strip()) >= 4]


def _scrub(message: str, secrets: list[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, mask_secret(secret))
    return message


def _config_error(exc: ValidationError, init_values: Mapping[str, Any]) -> ConfigError:
    """The first problem as one line; the rest are counted (fix one, rerun)."""
    errors = exc.errors()
    first = errors[0]
    problem = first.get("ctx", {}).get("error")
    loc = first.get("loc") or ()
    name = str(loc[0]) if loc else ""
    value = first.get("input")
    if isinstance(problem, _Problem):
        name = problem.field or name
        value = problem.value if problem.field else value
        explanation = problem.problem
    elif first["type"] == "extra_forbidden":
        known = ", ".join(_field_names())
        return ConfigError(f"config: unknown setting {name!r}; known settings: {known}")
    else:
        explanation = _explain(name, first)
    shown = mask_secret(_plain(value)) if name in _SECRET_FIELDS else _show(value)
    message = f"config: {name} = {shown} {explanation}"
    origin = _origin(name, init_values)
    if origin:
        message += f"; from {origin}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return ConfigError(_scrub(message, _secret_candidates(init_values)))


def _plain(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value if isinstance(value, str) else str(value)


def _jsonable(value: object) -> Any:
    if isinstance(value, Decimal | Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value


# -- loading and the process-wide instance --------------------------------------------------


def load_settings(
    overrides: Mapping[str, Any] | None = None, *, config_file: Path | str | None = None
) -> Settings:
    """Defaults < config.toml < credential < environment < `overrides` (flat field names).

    Overrides whose value is None are ignored (a flag that was not given). `config_file`
    names the toml explicitly (a `--config` flag) and beats `$CRAWLER_CONFIG`.
    Raises ConfigError (one line) for any bad value.
    """
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - set(_field_names()) - {"config_file"})
    if unknown:
        known = ", ".join(name for name in _field_names() if name != "config_file")
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


# -- the seed's class-attribute API ---------------------------------------------------------


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
