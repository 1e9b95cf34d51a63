"""The `Settings` model: every knob of crawler, its default, its bounds and its checks.

The defaults on `Settings` are the only place defaults live. A validator that rejects a value
raises `Problem` worded to follow "key = value"; `Settings()` turns any failure into one
ConfigError line (see `crawler.config.messages`). Where values come from: `crawler.config.sources`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
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
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from crawler.config.files import runtime_socket_path
from crawler.config.messages import (
    SECRET_FIELDS,
    Problem,
    allowed,
    config_error,
    mask_secret,
    scrub,
    secret_candidates,
    show,
    sources_allowed,
)
from crawler.config.sources import default_data_dir, settings_sources
from crawler.normalizer.schemas import SOURCE_NAMES
from crawler.utils.exceptions import ConfigError
from crawler.utils.urls import redact_url, url_secrets

__all__ = ["Settings", "resolve_socket_path"]

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
    "stream_history_interval_seconds",
    "yfinance_batch_size",
    "yfinance_max_rps",
    "alerts_check_interval_seconds",
    "alerts_notify_timeout_seconds",
    "alerts_rearm_band_pct",
    "budget_max_quote_age_seconds",
)


def _unit(unit: str) -> dict[str, Any]:
    # Kept in the field's schema extras so error messages can say "(seconds)".
    return {"unit": unit}


#: What a name field takes (once stripped), and the problem said when it does not fit.
_NAME_RULES: dict[str, tuple[Callable[[str], bool], str]] = {
    "bright_data_zone": (
        lambda zone: bool(zone) and not any(ch.isspace() for ch in zone),
        "is not a zone name; use the zone's name, e.g. web_unlocker1",
    ),
    "node_name": (
        lambda name: (
            len(name) <= 64 and not any(ch.isspace() or not ch.isprintable() for ch in name)
        ),
        "is not a node name; use up to 64 characters without spaces",
    ),
}


def _seconds(default: float, most: float, description: str) -> Any:
    """A field of a positive, finite number of seconds up to `most` (timeouts, intervals)."""
    return Field(
        default, gt=0, le=most, allow_inf_nan=False, json_schema_extra=_unit("seconds"),
        description=description,
    )  # fmt: skip


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
    budget_pacing: Literal["even", "off"] = Field(
        "even",
        description="even = spread the day's budget over its collections; off = first come.",
    )
    budget_policy: Literal["needed", "paced", "seed"] = Field(
        "needed",
        description="needed = pay only for what the free path cannot give; paced = spend the "
        "allowance on a rotation; seed = the seed's order for everything, unpaced.",
    )
    budget_max_quote_age_seconds: int = Field(
        1200, gt=0, json_schema_extra=_unit("seconds"),
        description="Freshness asked: an open market's free quote older than this is paid "
        "for where Bright Data has been measurably fresher.",
    )  # fmt: skip
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
    request_timeout_seconds: float = _seconds(
        10.0, 300, "Connect + read timeout of one HTTP request."
    )
    quote_deadline_seconds: float = _seconds(
        30.0, 3600, "Total time for one quote from one source, retries included."
    )
    yfinance_endpoint: str = Field("", description="Yahoo base URL; empty = the real Yahoo.")
    yfinance_batch_size: int = Field(
        50, ge=1, le=200, description="Symbols per Yahoo batch quote request."
    )
    yfinance_max_rps: float = Field(
        2.0, gt=0, le=1000, allow_inf_nan=False, json_schema_extra=_unit("requests per second"),
        description="All Yahoo requests of the process, at most this many per second.",
    )  # fmt: skip
    sources_order: Annotated[tuple[str, ...], NoDecode] = Field(
        ("bright_data", "yfinance"), description="Sources tried after the cache, in order."
    )
    history_retention_days: int = Field(
        365,
        ge=1,
        # 99999999 days reaches before year 1: the prune job failed every run.
        le=36_500,
        json_schema_extra=_unit("days"),
        description="Quote history kept this long.",
    )
    major_units: bool = Field(
        False,
        description="Show GBp/GBX, ZAc and ILA prices in GBP, ZAR and ILS (display only).",
    )
    crawler_socket: Path | None = Field(None, description="Control socket; None = computed.")
    log_format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto = console on a terminal, json otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Loopback port for Prometheus metrics; 0 = off."
    )
    redis_url: SecretStr | None = Field(
        None, description="Shared Redis for a cluster (redis://host:6379/0); None = embedded."
    )
    node_name: str = Field("", description="This node's name in a cluster; empty = host-datadir.")
    stream_enabled: bool = Field(
        True, description="Keep open-market symbols subscribed on Yahoo's free price stream."
    )
    yfinance_stream_endpoint: str = Field(
        "wss://streamer.finance.yahoo.com/?version=2",
        description="Yahoo's websocket streamer (the fake market's ws:// URL offline).",
    )
    stream_history_interval_seconds: int = Field(
        60, ge=1, le=86400, json_schema_extra=_unit("seconds"),
        description="A streamed symbol is written to the history at most this often.",
    )  # fmt: skip
    alerts_check_interval_seconds: float = _seconds(
        10.0, 3600, "How often stale and budget alerts are looked at (and edits picked up)."
    )
    alerts_notify_timeout_seconds: float = _seconds(
        10.0, 300, "Connect and read timeout of one alert notice to one target."
    )
    alerts_rearm_band_pct: Decimal = Field(
        Decimal("0.5"), ge=0, le=50, allow_inf_nan=False, json_schema_extra=_unit("percent"),
        description="A fired price alert re-arms once the price is back this far past its line.",
    )  # fmt: skip
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
        return settings_sources(settings_cls, init_settings)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # `from None`: the user gets our one line, never pydantic's traceback.
            raise config_error(exc, values, Settings.model_fields) from None
        except SettingsError as exc:
            message = f"config: cannot read the settings: {exc}".replace("\n", " ")
            raise ConfigError(scrub(message, secret_candidates(values))) from None

    # -- validators: each raises Problem, worded to follow "key = value" -------------------

    @field_validator(*_NUMBER_FIELDS, mode="before")
    @classmethod
    def _reject_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads True as 1; `ttl_seconds = true` is a mistake, not one second.
        if isinstance(value, bool):
            field = Settings.model_fields[info.field_name or ""]
            raise Problem(f"is not a number; use {allowed(field)}")
        return value

    @field_validator("budget_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        name = value.strip()
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise Problem(
                "is not a known time zone; use an IANA name such as UTC or Europe/London"
            ) from None
        return name

    @field_validator("log_format", "log_level", "budget_pacing", "budget_policy", mode="before")
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
                    raise Problem(sources_allowed("is not a list")) from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("sources_order")
    @classmethod
    def _check_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise Problem(sources_allowed("is empty"))
        for name in value:
            if name not in SOURCE_NAMES:
                raise Problem(sources_allowed(f"names an unknown source {name!r}"))
        if len(set(value)) != len(value):
            raise Problem(sources_allowed("names a source twice"))
        return value

    @field_validator("bright_data_endpoint", "yfinance_endpoint")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        url = value.strip()
        if url == "" and info.field_name == "yfinance_endpoint":
            return url  # empty = the real Yahoo
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Problem("is not a URL; use http://host[:port] or https://host")
        return url.rstrip("/")

    @field_validator("yfinance_stream_endpoint")
    @classmethod
    def _check_ws_url(cls, value: str) -> str:
        url = value.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise Problem("is not a websocket URL; use ws://host[:port]/ or wss://host/")
        return url

    @field_validator("bright_data_zone", "node_name")
    @classmethod
    def _check_name(cls, value: str, info: ValidationInfo) -> str:
        name = value.strip()
        fits, problem = _NAME_RULES[info.field_name or ""]
        if not fits(name):
            raise Problem(problem)
        return name

    @field_validator("bright_data_api_key", "redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # Files and env values carry trailing newlines; an empty key or URL means "not
        # configured".
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("bright_data_api_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A control character would end up inside an HTTP header.
        text = "" if value is None else value.get_secret_value()
        if any(ch.isspace() or not ch.isprintable() for ch in text):
            raise Problem("contains spaces or control characters; use the key as issued")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value.get_secret_value())
            _ = parts.port  # a port that is not a number raises here, not at the first use
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("redis", "rediss", "unix")
            or not (parts.netloc or parts.path)
        ):
            raise Problem("is not a Redis URL; use redis://host:6379/0 (or rediss://, unix://)")
        return value

    @field_validator("data_dir", "crawler_socket", "config_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Absolute now, so a later chdir (daemonising) cannot move the data.
        return None if value is None else Path(os.path.abspath(value.expanduser()))

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        if self.quote_deadline_seconds < self.request_timeout_seconds:
            raise Problem(
                f"is shorter than request_timeout_seconds = {show(self.request_timeout_seconds)};"
                " use at least the request timeout (seconds)",
                "quote_deadline_seconds",
                self.quote_deadline_seconds,
            )
        if self.collection_jitter_seconds >= self.update_interval_seconds:
            raise Problem(
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

    def secret_values(self) -> list[str]:
        """The secrets these settings hold, for the log redactor: the API key and the Redis
        URL's credentials."""
        key = self.bright_data_api_key
        secrets = [key.get_secret_value()] if key is not None else []
        if self.redis_url is not None:
            secrets += url_secrets(self.redis_url.get_secret_value())
        return secrets

    def public_dict(self) -> dict[str, Any]:
        """Every effective value, JSON-safe (Decimal as exact text), secrets masked."""
        names = Settings.model_fields
        out: dict[str, Any] = {name: _jsonable(getattr(self, name)) for name in names}
        for name in SECRET_FIELDS:
            out[name] = mask_secret(getattr(self, name))
        out["redis_url"] = None if self.redis_url is None else _shown_url(self.redis_url)
        out["socket_path"] = str(self.socket_path)
        return out


def resolve_socket_path(settings: Settings) -> Path:
    """CRAWLER_SOCKET, else `$RUNTIME_DIRECTORY/crawler.sock` (systemd), else
    `$XDG_RUNTIME_DIR/crawler/crawler.sock`, else `<data_dir>/crawler.sock`."""
    if settings.crawler_socket is not None:
        return settings.crawler_socket
    return runtime_socket_path() or settings.data_dir / "crawler.sock"


def _shown_url(url: SecretStr) -> str:
    return redact_url(url.get_secret_value())


def _jsonable(value: object) -> Any:
    if isinstance(value, Decimal | Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value
