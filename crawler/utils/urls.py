"""Credentials written in URLs: masked for logs, status and errors, listed for the log redactor.

Below the stores and the settings alike: the settings show a Redis URL, the Redis client
redacts its own errors, and neither should import the other for it.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

__all__ = ["redact_url", "url_secrets"]

_MASK: Final = "****"


def redact_url(url: str) -> str:
    """`url` with every credential in it replaced by ****, for logs, status and errors.

    Whatever form the password takes: ``redis://:pw@h``, ``redis://user:pw@h``, a bare
    ``redis://pw@h`` (userinfo without a colon may be a password), a ``?password=`` query
    parameter (any name holding "pass", any case), over ``rediss://`` or ``unix://``. A URL
    that cannot be parsed is not shown at all.

    >>> redact_url("redis://h:6379/0?db=1&password=s3cret")
    'redis://h:6379/0?db=1&password=****'
    >>> redact_url("unix:///run/redis.sock?password=s3cret")
    'unix:///run/redis.sock?password=****'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a Redis URL that cannot be parsed; not shown)"
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{_MASK}@{hostport}" if colon else f"{_MASK}@{hostport}"
    query = "&".join(_redact_param(param) for param in parts.query.split("&"))
    if url.startswith(f"{parts.scheme}://"):  # keep unix:///path's empty host
        shown = f"{parts.scheme}://{netloc}{parts.path}"
        shown += f"?{query}" if query else ""
        return shown + (f"#{parts.fragment}" if parts.fragment else "")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def url_secrets(url: str) -> list[str]:
    """The credentials written in `url` (as written and percent-decoded), for the log
    redactor: a message that echoes one (a library's error) still never shows it."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]  # unparseable: the whole URL is the secret
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        found.append(userinfo.partition(":")[2] or userinfo)
    for param in parts.query.split("&"):
        name, _, value = param.partition("=")
        if _is_secret_param(name):
            found.append(value)
    out: list[str] = []
    for text in found:
        for form in (text, unquote(text), unquote_plus(text)):
            if form and form not in out:
                out.append(form)
    return out


def _is_secret_param(name: str) -> bool:
    return "pass" in unquote_plus(name).lower()


def _redact_param(param: str) -> str:
    name, eq, _ = param.partition("=")
    return f"{name}={_MASK}" if eq and _is_secret_param(name) else param
