"""One-line ConfigError messages: the key, the value, what is allowed, where it came from.

    config: update_interval_seconds = 30 is too small; use 60 or more (seconds); from env \
UPDATE_INTERVAL_SECONDS

`config_error` turns pydantic's ValidationError into that line (the first problem; the rest are
counted). Validators raise `Problem` with their own wording. Secrets never appear: the API key is
shown by `mask_secret`, and every key any source could supply is scrubbed from the message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, get_args

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from crawler.config.sources import CREDENTIAL_NAME, credential_path, find_config_file, read_toml
from crawler.normalizer.schemas import SOURCE_NAMES
from crawler.utils.exceptions import ConfigError

__all__ = [
    "SECRET_FIELDS",
    "Problem",
    "allowed",
    "config_error",
    "mask_secret",
    "scrub",
    "secret_candidates",
    "show",
    "sources_allowed",
]

#: Fields whose values are masked wherever they are shown.
SECRET_FIELDS = ("bright_data_api_key", "redis_url")


class Problem(ValueError):
    """A validator's complaint; `problem` reads after "key = value" ("is too small; use ...")."""

    def __init__(self, problem: str, field: str | None = None, value: object = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.field = field
        self.value = value


def mask_secret(secret: SecretStr | str | None) -> str:
    """ "(not set)", or "****" plus the last 4 characters (only for keys of 12+ characters,
    so a short key is never mostly revealed)."""
    if secret is None:
        return "(not set)"
    text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return "****" + text[-4:] if len(text) >= 12 else "****"


def show(value: object) -> str:
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


def allowed(info: FieldInfo) -> str:
    """What a numeric field accepts: "a whole number from 60 to 86400 (seconds)"."""
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


def sources_allowed(problem: str) -> str:
    """`problem` with what sources_order accepts appended."""
    return f"{problem}; use a list of distinct names from: {', '.join(SOURCE_NAMES)}"


def _explain(name: str, error: Mapping[str, Any], fields: Mapping[str, FieldInfo]) -> str:
    """The part after "key = value": what is wrong and what is allowed."""
    kind, ctx = str(error["type"]), error.get("ctx") or {}
    info = fields.get(name)
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
        return f"is not a number; use {allowed(fields[name])}"
    if kind.startswith("bool_"):
        return "is not true or false; use true or false"
    if kind == "literal_error" and info is not None:
        return f"is not allowed; use one of: {', '.join(get_args(info.annotation))}"
    if kind in ("string_type", "path_type"):
        return "is not text; use a quoted string"
    if kind in ("tuple_type", "list_type"):
        return sources_allowed("is not a list")
    return "is invalid: " + str(error.get("msg", kind)).replace("\n", " ")


def _origin(name: str, init_values: Mapping[str, Any]) -> str:
    """Where the winning value of `name` came from, for "; from ..." (empty: a default)."""
    if name in init_values:
        return "a command-line flag"
    for key, value in os.environ.items():
        if key.upper() == name.upper() and value != "":
            return f"env {key}"
    if name == "bright_data_api_key" and credential_path() is not None:
        return f"the systemd credential {CREDENTIAL_NAME}"
    try:
        path = find_config_file(init_values.get("config_file"))
        origins = read_toml(path)[1] if path is not None else {}
    except ConfigError:
        return ""
    return f"{path} {origins[name]}" if name in origins else ""


def secret_candidates(init_values: Mapping[str, Any]) -> list[str]:
    """Every API key the sources could have supplied, to scrub from any message."""
    found: list[Any] = [init_values.get("bright_data_api_key")]
    found += [v for k, v in os.environ.items() if k.upper() == "BRIGHT_DATA_API_KEY"]
    try:
        credential = credential_path()
        found.append(credential.read_text(encoding="utf-8") if credential else None)
        path = find_config_file(init_values.get("config_file"))
        found.append(read_toml(path)[0].get("bright_data_api_key") if path else None)
    except (ConfigError, OSError, UnicodeDecodeError):
        pass
    texts = [v.get_secret_value() if isinstance(v, SecretStr) else v for v in found]
    return [t.strip() for t in texts if isinstance(t, str) and len(t.strip()) >= 4]


def scrub(message: str, secrets: list[str]) -> str:
    """`message` with each of `secrets` replaced by its mask."""
    for secret in secrets:
        message = message.replace(secret, mask_secret(secret))
    return message


def config_error(
    exc: ValidationError, init_values: Mapping[str, Any], fields: Mapping[str, FieldInfo]
) -> ConfigError:
    """The first problem as one line; the rest are counted (fix one, rerun).

    `init_values` are the overrides given (for "from a command-line flag"); `fields` are the
    model's fields (for bounds, units and the list of known settings).
    """
    errors = exc.errors()
    first = errors[0]
    problem = first.get("ctx", {}).get("error")
    loc = first.get("loc") or ()
    name = str(loc[0]) if loc else ""
    value = first.get("input")
    if isinstance(problem, Problem):
        name = problem.field or name
        value = problem.value if problem.field else value
        explanation = problem.problem
    elif first["type"] == "extra_forbidden":
        known = ", ".join(fields)
        return ConfigError(f"config: unknown setting {name!r}; known settings: {known}")
    else:
        explanation = _explain(name, first, fields)
    if name == "redis_url":  # its own mask: the password anywhere in it, nothing else
        from crawler.utils.urls import redact_url

        shown = show(redact_url(_plain(value)))
    else:
        shown = mask_secret(_plain(value)) if name in SECRET_FIELDS else show(value)
    message = f"config: {name} = {shown} {explanation}"
    origin = _origin(name, init_values)
    if origin:
        message += f"; from {origin}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return ConfigError(scrub(message, secret_candidates(init_values)))


def _plain(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value if isinstance(value, str) else str(value)
