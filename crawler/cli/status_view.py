"""`crawler status`: ask the daemon, render the answer, exit 0 or 3.

The command people run most, so it also has a quick path around Typer: Typer 0.29 imports
pydantic to coerce arguments, and building `Settings` costs as much again, together well over
the rest of the command. `crawler status` and `crawler status --json` need neither: the socket
path comes from `crawler.config.files` (a test holds it equal to `Settings.socket_path`).
Anything else, or a config file the quick path cannot read, goes through the full CLI, which
reports problems properly.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from crawler.utils.exceptions import CrawlerError, DaemonNotRunningError

__all__ = ["EXIT_NOT_RUNNING", "quick_status", "show_status"]

EXIT_NOT_RUNNING = 3
_QUICK_FLAGS = frozenset({"--json", "--major-units"})
#: A status answer for a large watchlist takes the daemon a moment to build.
_STATUS_TIMEOUT_S = 30.0
_RECV_BYTES = 256 * 1024


def show_status(
    socket_path: Path, as_json: bool, major_units: bool = False, explicit: bool | None = None
) -> int:
    """Print the daemon's status (a table, or JSON); the exit code: 0, or 3 if not running.
    `major_units`: GBp, ZAc and ILA prices shown in GBP, ZAR and ILS.

    `socket_path` is the configured socket; unless the place was named (`explicit`, by
    default read from the environment) a daemon running elsewhere is found too
    (`crawler.cli.locate`)."""
    # rich loads only when there is a table to draw: "not running" should be instant.
    from crawler.cli.locate import locate_daemon, location_is_explicit

    if explicit is None:
        explicit = location_is_explicit()
    # Found elsewhere: no note here, the screen's "socket" line (and --json's) says which.
    socket_path = locate_daemon(socket_path, explicit).socket
    from crawler.cli.render import STATUS_MAX_ROWS, console, print_json, render_status

    try:
        # A screen draws STATUS_MAX_ROWS symbols: ask for no more (--json gets them all).
        target = "/v1/status" if as_json else f"/v1/status?rows={STATUS_MAX_ROWS}"
        answer = _get_json(socket_path, target)
        if answer is None:  # not a plain answer: the full client says what went wrong
            from crawler.daemon.client import ControlClient

            client = ControlClient(socket_path, timeout_s=_STATUS_TIMEOUT_S)
            answer = client.call("GET", target)
    except DaemonNotRunningError:
        if as_json:
            print_json({"running": False, "socket": str(socket_path)})
        else:
            sys.stdout.write(f"crawler is not running (no answer on {socket_path})\n")
        return EXIT_NOT_RUNNING
    from crawler.utils.text import clean_data

    answer = clean_data(answer)  # upstream text (names, errors) without terminal escapes
    if major_units and isinstance(answer, dict):
        answer = _in_major_units(answer)
    if as_json:
        print_json({"running": True, **answer})
    else:
        render_status(answer, console())
    return 0


def _in_major_units(answer: dict[str, Any]) -> dict[str, Any]:
    """The status answer with each symbol's last quote in major units."""
    from crawler.normalizer.units import major_dict

    symbols = answer.get("symbols")
    if not isinstance(symbols, list):
        return answer
    converted = []
    for entry in symbols:
        if isinstance(entry, dict) and isinstance(entry.get("last_quote"), dict):
            entry = {**entry, "last_quote": major_dict(entry["last_quote"])}
        converted.append(entry)
    return {**answer, "symbols": converted}


def quick_status(args: list[str]) -> int | None:
    """The exit code if `args` is a plain `status [--json] [--major-units]` this path can
    answer, else None."""
    if not args or args[0] != "status" or len(set(args[1:])) != len(args) - 1:
        return None
    if not set(args[1:]) <= _QUICK_FLAGS:
        return None
    from crawler.config.files import major_units_from_files, socket_path_from_files

    try:
        socket_path = socket_path_from_files()
        major = "--major-units" in args or major_units_from_files()
        return show_status(socket_path, as_json="--json" in args, major_units=major)
    except CrawlerError:
        return None  # the full CLI says what is wrong, in its own words and exit code


def _get_json(socket_path: Path, target: str) -> Any:
    """GET `target` over the socket by hand, the JSON answer; None when the answer is not a
    plain 200 JSON one (the caller then asks through ControlClient, which words the error).

    http.client, and the email parser it imports, cost more to load than the request takes;
    this is the one request `crawler status` makes.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(_STATUS_TIMEOUT_S)
        try:
            sock.connect(os.fspath(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonNotRunningError(
                f"crawler is not running (no answer on {socket_path})"
            ) from exc
        except OSError:
            return None
        if hasattr(socket, "SO_PEERCRED"):
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            if struct.unpack("3i", raw)[1] not in (os.geteuid(), 0):
                return None  # another user's server: the full client refuses it in one line
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
            "Connection: close\r\n\r\n".encode("ascii")
        )
        parts: list[bytes] = []
        while data := sock.recv(_RECV_BYTES):
            parts.append(data)
    except OSError:
        return None
    finally:
        sock.close()
    head, found, body = b"".join(parts).partition(b"\r\n\r\n")
    if not found:
        return None
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or fields[1] != "200":
        return None
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    if not headers.get("content-type", "").startswith("application/json"):
        return None
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunked(body)
    elif headers.get("content-length", "").isdigit():
        body = body[: int(headers["content-length"])]
    try:
        return json.loads(body)
    except ValueError:
        return None


def _unchunked(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]
