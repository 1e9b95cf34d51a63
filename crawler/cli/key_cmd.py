"""`crawler key set`: write the Bright Data key file the systemd unit loads as a credential.

    sudo /opt/crawler/.venv/bin/crawler key set          # asks for the key (not echoed)
    pass show brightdata | sudo crawler key set          # or reads one line from stdin

The README's old `sudo sh -c 'printf %s "$KEY" > ...'` wrote 0 bytes (sudo drops KEY) and the
daemon ran free-only without a word; this refuses an empty key (exit 2, nothing written) and
writes the file 0600 whatever the umask, atomically (a half-written key is never loaded).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from crawler.config.files import CREDENTIAL_NAME
from crawler.config.messages import mask_secret
from crawler.utils.exceptions import UsageError

__all__ = ["DEFAULT_KEY_FILE", "key_app", "register"]

#: Where the unit's `LoadCredential=bright_data_api_key:` reads the key from.
DEFAULT_KEY_FILE = Path("/etc/crawler") / CREDENTIAL_NAME

key_app = typer.Typer(help="The Bright Data key file for the systemd unit.", no_args_is_help=True)


def _read_key() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Bright Data API key: ")
    return sys.stdin.readline()


@key_app.command("set")
def key_set(
    file: Annotated[
        Path, typer.Option("--file", help="The key file (the unit's LoadCredential= source).")
    ] = DEFAULT_KEY_FILE,
) -> None:
    """Write the key (asked for, or one line of stdin) to the key file, 0600; an empty key is
    refused and nothing is written."""
    raw = _read_key()
    key = raw.strip()
    if not key:
        raise UsageError(
            f"no key given ({len(raw.encode())} bytes read); {file} was not written. Type the "
            'key when asked, or pipe it in: `printf %s "$KEY" | sudo crawler key set`'
        )
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise UsageError("the key contains spaces or control characters; give it as issued")
    if not file.parent.is_dir():
        raise UsageError(f"{file.parent} does not exist; create it first (install -d -m 0700)")
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, file)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    typer.echo(
        f"wrote the key ({mask_secret(key)}, {len(key)} characters) to {file} (mode 0600); "
        "restart the service to load it: sudo systemctl restart crawler"
    )


def register(app: typer.Typer) -> None:
    """Add `key` to `app`."""
    app.add_typer(key_app, name="key")
