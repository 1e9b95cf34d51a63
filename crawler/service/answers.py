"""What every verb's answer is made of: JSON-safe values, an error entry, symbols, asset
classes and times read from user text, and a rejected Bright Data key said as a config error.

    jsonable({"price": Decimal("1.5")})      # {"price": "1.5"}
    parse_asset_class("stocks")              # AssetClass.STOCKS; SymbolError naming the allowed
    parse_time("since", "2h", now)           # now - 2 h; ConfigError "--since: ..."
    parse_symbols(["AAPL:US", "nope"])      # ([AAPL:US], {"nope": {"type", "message"}}, [])
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import Symbol
from crawler.normalizer.user_symbols import read_symbol
from crawler.utils.exceptions import ConfigError, CrawlerError, SymbolError

__all__ = [
    "error_dict",
    "jsonable",
    "key_problems",
    "parse_asset_class",
    "parse_symbols",
    "parse_time",
]


def jsonable(value: Any) -> Any:
    """`value` made JSON-safe: Decimal → str, datetime → ISO, Enum → value, Path → str."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if isinstance(value, Decimal | Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def parse_asset_class(text: str | AssetClass | None) -> AssetClass | None:
    """An asset class from user text (None stays None); SymbolError naming the allowed ones."""
    if text is None or isinstance(text, AssetClass):
        return text
    try:
        return AssetClass.parse(text)
    except ValueError as exc:
        raise SymbolError(str(exc)) from None


def parse_time(name: str, text: str | None, now: datetime) -> datetime | None:
    """`--name`'s time ("2h", an ISO date) before `now`; None when not given."""
    if text is None or text == "":
        return None
    from crawler.store.history import parse_time_spec

    try:
        return parse_time_spec(text, now)
    except ValueError as exc:
        raise ConfigError(f"--{name}: {exc}") from None


def key_problems() -> dict[str, str]:
    """An empty Bright Data key credential, as a config error of `bright_data` (so status
    shows it in red, not as a quiet "(not set)")."""
    from crawler.config.files import empty_key_credential

    problem = empty_key_credential()
    return {"bright_data": problem} if problem else {}


def error_dict(error: CrawlerError) -> dict[str, str]:
    """A per-symbol failure as answers hold it: {"type", "message"}."""
    return {"type": type(error).__name__, "message": error.message}


def parse_symbols(
    symbols: Sequence[str], asset_class: str | AssetClass | None = None
) -> tuple[list[Symbol], dict[str, dict[str, str]], list[str]]:
    """The well-formed symbols, an error per malformed one, and a notice per Yahoo-form
    one translated; SymbolError when none is well-formed (the request itself is bad: exit
    2, HTTP 400), naming each."""
    if not symbols:
        raise SymbolError("no symbols given; name at least one, e.g. AAPL:US")
    asset = parse_asset_class(asset_class)
    parsed: list[Symbol] = []
    notices: list[str] = []
    errors: dict[str, dict[str, str]] = {}
    for text in symbols:
        try:
            read = read_symbol(text, asset)
        except SymbolError as exc:
            errors[text] = error_dict(exc)
            continue
        parsed.append(read.symbol)
        if read.notice:
            notices.append(read.notice)
    if not parsed:
        # Nothing to fetch: the request itself is bad (exit 2, HTTP 400), naming each one.
        raise SymbolError("; ".join(error["message"] for error in errors.values()))
    return parsed, errors, notices
