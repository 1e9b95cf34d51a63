"""Failures by cause: 141 symbols that failed for one reason are one line, not 141.

    groups = group_failures({"ZZZZ2:LN": "no source could serve ZZZZ2:LN (...)", ...})
    groups[0].cause     # "no source could serve it (...)": the message, the symbol taken out
    groups[0].symbols   # every symbol with that cause, in the order given
    summary_lines(groups, first=3)
    # ["141 x no source could serve it (...): ZZZZ2:LN, ZZZZ3:LN, ZZZZ4:LN and 138 more"]

Pure (standard library only): the collector's log line, `crawler collect`, `crawler fetch` and
`crawler status` all group the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FIRST_SYMBOLS",
    "FailureGroup",
    "cause_of",
    "first_few",
    "group_failures",
    "groups_json",
    "summary_lines",
]

#: Symbols a summary line names before "and N more".
FIRST_SYMBOLS = 3


@dataclass
class FailureGroup:
    """One cause and the symbols that failed with it."""

    cause: str
    symbols: list[str] = field(default_factory=list)
    #: The first symbol's own message (a group of one is said in its own words).
    message: str = ""

    @property
    def count(self) -> int:
        """How many symbols failed with this cause."""
        return len(self.symbols)


def cause_of(symbol: str, message: str) -> str:
    """`message` without the symbol's own name (and its Yahoo spelling, `TICKER.X`), so the
    messages of two symbols that failed the same way are equal."""
    ticker = symbol.split(":", 1)[0]
    text = message.replace(f"{symbol}: ", "").replace(symbol, "it")
    if ticker:
        text = re.sub(rf"(?<![\w/]){re.escape(ticker)}(\.[A-Za-z]+|=X|=F)?(?![\w/])", "it", text)
    return " ".join(text.split())


def group_failures(errors: Mapping[str, Any]) -> list[FailureGroup]:
    """The errors (symbol → message, or {"message": ...}) grouped by cause, the biggest first
    (ties in the order first seen)."""
    groups: dict[str, FailureGroup] = {}
    for symbol, error in errors.items():
        message = error.get("message", error) if isinstance(error, Mapping) else error
        cause = cause_of(symbol, str(message))
        groups.setdefault(cause, FailureGroup(cause, message=str(message))).symbols.append(symbol)
    return sorted(groups.values(), key=lambda group: -group.count)


def first_few(symbols: list[str], first: int = FIRST_SYMBOLS) -> str:
    """ "A, B, C and 138 more" (or just the names when there are no more)."""
    more = len(symbols) - min(first, len(symbols))
    return ", ".join(symbols[:first]) + (f" and {more:,} more" if more else "")


def summary_lines(groups: list[FailureGroup], first: int = FIRST_SYMBOLS) -> list[str]:
    """One line per cause: "141 x <cause>: A, B, C and 138 more"; a cause of one symbol is
    "SYMBOL: <its message>", as before there were groups."""
    lines = []
    for group in groups:
        if group.count == 1:
            lines.append(f"{group.symbols[0]}: {group.message}")
            continue
        lines.append(f"{group.count:,} x {group.cause}: {first_few(group.symbols, first)}")
    return lines


def groups_json(groups: list[FailureGroup], first: int | None = None) -> list[dict[str, Any]]:
    """The groups as JSON: cause, count and the symbols (the first `first`, or all)."""
    return [
        {
            "cause": group.cause,
            "count": group.count,
            "symbols": group.symbols if first is None else group.symbols[:first],
        }
        for group in groups
    ]
