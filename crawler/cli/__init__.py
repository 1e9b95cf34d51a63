"""The `crawler` command line (Typer): thin, arguments in, rendering and exit codes out.

Importing this package is cheap; the commands import the heavy parts (pandas, yfinance,
APScheduler) only when they need them, and `crawler status` skips even Typer (see
`status_view`), so the commands people run most start fast.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crawler.cli.app import app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI with `argv` (default: sys.argv[1:]) and exit with its code."""
    args = sys.argv[1:] if argv is None else argv
    from crawler.cli.status_view import quick_status

    code = quick_status(args)
    if code is not None:
        sys.stdout.flush()
        sys.exit(code)
    from crawler.cli.app import main as full_main

    full_main(args)


def __getattr__(name: str) -> Any:
    if name == "app":
        from crawler.cli.app import app

        return app
    raise AttributeError(f"module 'crawler.cli' has no attribute {name!r}")
