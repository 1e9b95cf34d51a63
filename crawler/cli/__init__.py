"""The `crawler` command line (Typer): thin, arguments in, rendering and exit codes out.

Importing this package is cheap; the commands import the heavy parts (pandas, yfinance,
APScheduler) only when they need them, so `crawler status` and `crawler --help` start fast.
"""

from crawler.cli.app import app, main

__all__ = ["app", "main"]
