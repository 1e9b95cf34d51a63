"""The dashboard's locks: the token file, the session cookie, CSRF, the Host check, the headers.

    token = load_or_create_token(data_dir)         # <data_dir>/dashboard.token, 0600, reused
    keys = Keys(token)
    keys.cookie_value, keys.csrf                   # derived from the token (HMAC), never the token
    host_allowed("127.0.0.1:8484", bind_host, 8484)   # DNS rebinding: only our own names
    Tickets().issue()                              # a one-time sign-in, for a browser we start

The token is the only secret: the cookie and the CSRF token are HMACs of it, so a restarted
`crawler dashboard` keeps open tabs signed in, and a new token (delete the file) signs everyone
out. Nothing here knows the Bright Data key.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
import threading
import time
from pathlib import Path
from typing import Final

from crawler.utils.exceptions import DataDirError

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "SECURITY_HEADERS",
    "TOKEN_FILENAME",
    "Keys",
    "Tickets",
    "allowed_hosts",
    "host_allowed",
    "is_loopback",
    "load_or_create_token",
]

TOKEN_FILENAME: Final = "dashboard.token"
COOKIE_NAME: Final = "crawler_dashboard"
CSRF_HEADER: Final = "X-CSRF-Token"
_TOKEN_BYTES: Final = 32

#: Sent with every answer. No Access-Control-* header is ever sent: no CORS.
SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


def load_or_create_token(data_dir: Path) -> str:
    """The token in `<data_dir>/dashboard.token`, made (0600, random) when missing.

    A file that is not ours, not a regular file or readable by others is refused: the token is
    the key to the dashboard."""
    path = data_dir / TOKEN_FILENAME
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return _create_token(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataDirError(f"{path} is a symbolic link; remove it") from exc
        raise DataDirError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataDirError(f"{path} is not a regular file; remove it")
        if info.st_uid != os.geteuid():
            raise DataDirError(f"{path} belongs to uid {info.st_uid}, not you; remove it")
        if info.st_mode & 0o077:
            raise DataDirError(
                f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                "remove it and a new token is made"
            )
        token = os.read(fd, 256).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if len(token) < 32 or not token.replace("-", "").replace("_", "").isalnum():
        raise DataDirError(f"{path} does not hold a token; remove it and a new one is made")
    return token


def _create_token(path: Path) -> str:
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:  # another dashboard made it first: use theirs
        return load_or_create_token(path.parent)
    except OSError as exc:
        raise DataDirError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.write(fd, token.encode("ascii") + b"\n")
    finally:
        os.close(fd)
    return token


class Keys:
    """What the token opens: the cookie's value, the CSRF token, and their checks."""

    def __init__(self, token: str, port: int = 0) -> None:
        self._token = token.encode("ascii")
        # Cookies ignore ports: two dashboards on one host (two daemons) would sign each other
        # out if they shared the name.
        self.cookie_name = f"{COOKIE_NAME}_{port}" if port else COOKIE_NAME
        self.cookie_value = self._derive(b"session-cookie-v1")
        self.csrf = self._derive(b"csrf-v1")

    def _derive(self, purpose: bytes) -> str:
        return hmac.new(self._token, purpose, hashlib.sha256).hexdigest()

    def token_ok(self, given: str | None) -> bool:
        """Whether `given` is the token (constant time)."""
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self._token)

    def cookie_ok(self, given: str | None) -> bool:
        """Whether `given` is the session cookie's value (constant time)."""
        return given is not None and hmac.compare_digest(
            given.encode("utf-8"), self.cookie_value.encode("ascii")
        )

    def csrf_ok(self, given: str | None) -> bool:
        """Whether `given` is the CSRF token (constant time)."""
        return given is not None and hmac.compare_digest(
            given.encode("utf-8"), self.csrf.encode("ascii")
        )

    def set_cookie(self) -> str:
        """The Set-Cookie value: HttpOnly, SameSite=Strict, the whole site, the session only."""
        return f"{self.cookie_name}={self.cookie_value}; Path=/; HttpOnly; SameSite=Strict"


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, port: int) -> frozenset[str]:
    """The Host header values we answer: our own names with our port, nothing a foreign DNS
    name could resolve to (a rebinding attack sends its own name)."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    if bind_host not in ("0.0.0.0", "::", ""):
        names.add(f"[{bind_host}]" if ":" in bind_host else bind_host)
    return frozenset(f"{name}:{port}".lower() for name in names)


def host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    """Whether the request's Host header names us."""
    return host_header is not None and host_header.strip().lower() in allowed


class Tickets:
    """One-time sign-in tickets: what a browser started by us is given instead of the token
    (a command line is visible to every local user; a used or expired ticket opens nothing)."""

    def __init__(self, ttl_s: float = 120.0) -> None:
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._open: dict[str, float] = {}

    def issue(self) -> str:
        """A new ticket, good once within `ttl_s`."""
        ticket = secrets.token_urlsafe(24)
        with self._lock:
            self._open[ticket] = time.monotonic() + self._ttl_s
        return ticket

    def redeem(self, ticket: str | None) -> bool:
        """Whether `ticket` was issued and has not expired; it is used up either way."""
        if not ticket:
            return False
        with self._lock:
            expires = self._open.pop(ticket, None)
        return expires is not None and time.monotonic() < expires
