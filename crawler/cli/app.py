"""The Typer app and `main()`: global options, error lines and exit codes.

Exit codes: 0 ok, 1 the request failed, 2 bad usage or configuration, 3 the daemon is not
running. Every error is one line on stderr ("error: ..."); `--debug` adds the traceback.
"""

from __future__ import annotations

import itertools
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

# Typer 0.29 vendors click; its exceptions are only reachable here.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperArgument, TyperOption

from crawler import __version__
from crawler.cli import (
    alerts_cmd,
    backfill_cmd,
    budget_cmd,
    daemon_cmds,
    dashboard_cmd,
    data_cmds,
    history_cmds,
    key_cmd,
    socket_cmd,
    watch,
)
from crawler.cli.common import CliState, warn
from crawler.utils.exceptions import CrawlerError

__all__ = ["app", "main"]

#: Words people put after a flag that takes no value (`--debug true`): named in the error.
_BOOL_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def _option_type(self: TyperOption, ctx: object) -> str | None:
    """A flag takes no value, so its help row shows none (Typer 0.29 draws `<bool>`, which
    reads as if `--debug true` were the form); other options show their value in capitals."""
    if self.is_flag or self.count:
        return None
    if self.metavar is not None:
        return self.metavar
    return (self.name or "value").upper().replace("_", "-")


def _argument_type(self: TyperArgument, ctx: object) -> str | None:
    """An argument's name already says what it is (Typer 0.29 adds `<list[str]>`)."""
    return None


def _argument_usage(self: TyperArgument) -> str:
    """`SYMBOLS...` (required) or `[SYMBOLS]...` in the usage line, not `{symbols}...`."""
    name = (self.metavar or self.name or "arg").upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign,assignment]
TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]

app = typer.Typer(
    name="crawler",
    help="crawler: market-data collection daemon and its control CLI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # main() prints one line; --debug the traceback
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crawler {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="config.toml to load (else CRAWLER_CONFIG).")
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Market-data collection daemon and its control CLI."""
    ctx.obj = CliState(debug=debug, config=config)


daemon_cmds.register(app)
socket_cmd.register(app)
key_cmd.register(app)
data_cmds.register(app)
history_cmds.register(app)
watch.register(app)
budget_cmd.register(app)
dashboard_cmd.register(app)
alerts_cmd.register(app)
backfill_cmd.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI with `argv` (default: sys.argv[1:]) and exit with its code."""
    args = sys.argv[1:] if argv is None else argv
    # Known before parsing, so even an error while parsing the options can show its traceback.
    debug = "--debug" in args
    if not debug:
        # Offline commands run the fetchers in this process: their warnings (yfinance's
        # cookie/crumb retries, a breaker opening) would land around our one error line.
        # The daemon sets up its own logging; --debug keeps Python's default (warnings shown).
        logging.getLogger().addHandler(logging.NullHandler())
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="crawler", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except NoArgsIsHelpError as exc:
        # `crawler` or `crawler config` alone: the help was asked for in effect; show it (Typer
        # has already drawn it when its message is empty) and nothing else.
        if exc.format_message().strip():
            typer.echo(exc.format_message())
        code = 0
    except UsageError as exc:
        # Bad usage is the user's to fix, never a bug: one line, no traceback even with --debug.
        where = exc.ctx.command_path if exc.ctx is not None else "crawler"
        warn(_usage_message(args, exc.format_message(), where))
        code = 2
    except ClickException as exc:
        warn(exc.format_message())
        code = exc.exit_code
    except typer.Abort:
        warn("aborted")
        code = 130
    except CrawlerError as exc:
        if debug:
            traceback.print_exc()
        warn(exc.message)
        code = exc.exit_code
    except KeyboardInterrupt:
        warn("interrupted")
        code = 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        warn(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        code = 1
    sys.stdout.flush()
    sys.exit(code if isinstance(code, int) else 0)


def _usage_message(args: list[str], message: str, where: str) -> str:
    """The usage error's line; `--debug true` is told that flags take no value."""
    for at, (flag, value) in enumerate(itertools.pairwise(args)):
        if flag.startswith("--") and value.lower() in _BOOL_WORDS and repr(value) in message:
            rest = " ".join(args[: at + 1] + args[at + 2 :])
            return f"{flag} is a flag and takes no value: write `crawler {rest}`"
    return f"{message} (see `{where} --help`)"
