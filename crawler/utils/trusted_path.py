"""Paths no other local user can redirect: checked before the daemon creates or opens anything.

    real = trusted_path(Path("/var/lib/crawler/ledger"))   # UntrustedPathError names the culprit

The walk starts at "/" and takes one component at a time with `lstat`, so it never follows a
symbolic link it has not looked at. It refuses, naming the component:

- anything on the way (directory, symbolic link, the last component) owned by a user other than
  us or root: its owner can re-point the link, or swap what the directory holds, at any moment
  (a `nobody`-owned parent holding `data -> /some/1777-dir` made root chmod and fill that dir);
- a directory on the way that others may write without the sticky bit (mode o+w, or g+w for a
  group that is not ours or root's): anyone may replace the next component.

A symbolic link owned by us or root is followed (`~/.local/share/crawler -> /mnt/disk/crawler`
is a choice of the user's). What the walk approves cannot change behind our back, since only
we and root can change any of it, so opening by path afterwards is safe; the openers still use
O_NOFOLLOW and check what they opened with `fstat`. Imports only the standard library.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["UntrustedPathError", "trusted_path", "trusted_uids", "writable_by_others"]

#: As the kernel's limit on symbolic links followed in one lookup (ELOOP past it).
_MAX_LINKS: Final = 40


class UntrustedPathError(Exception):
    """A component of a path could be changed by another user; `.culprit` is that component."""

    def __init__(self, culprit: Path, reason: str, uid: int) -> None:
        super().__init__(f"{culprit} {reason}")
        self.culprit = culprit
        self.reason = reason
        self.uid = uid


def trusted_uids() -> frozenset[int]:
    """Who may own what we open: ourselves (effective uid) and root."""
    return frozenset({os.geteuid(), 0})


def writable_by_others(info: os.stat_result) -> bool:
    """Whether users other than us and root may create or replace entries of a directory."""
    mode = info.st_mode
    if mode & stat.S_IWOTH:
        return True
    return bool(mode & stat.S_IWGRP) and info.st_gid not in {os.getegid(), 0}


def trusted_path(path: Path) -> Path:
    """The real path of `path`, after checking every component (see the module docstring).

    The walk stops at the first component that does not exist: the rest is for us to create,
    inside a directory that was checked. Raises UntrustedPathError, or OSError for a lookup
    that fails otherwise (ENOTDIR, ELOOP, EACCES).
    """
    uids = trusted_uids()
    pending = list(reversed(Path(os.path.abspath(path)).parts[1:]))
    current = Path("/")
    links = 0
    _check_directory(current, os.lstat(current), uids)
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent  # `current` holds no link: ".." is lexical here
            continue
        candidate = current / name
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            return candidate.joinpath(*reversed(pending))
        is_link = stat.S_ISLNK(info.st_mode)
        if info.st_uid not in uids:
            what = "is a symbolic link owned by" if is_link else "belongs to"
            raise UntrustedPathError(candidate, f"{what} uid {info.st_uid}", info.st_uid)
        if is_link:
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path("/")
            pending.extend(reversed([part for part in target.parts if part != "/"]))
            continue
        if pending and stat.S_ISDIR(info.st_mode):
            _check_directory(candidate, info, uids)
        current = candidate
    return current


def _check_directory(directory: Path, info: os.stat_result, uids: frozenset[int]) -> None:
    if info.st_uid not in uids:
        raise UntrustedPathError(directory, f"belongs to uid {info.st_uid}", info.st_uid)
    if writable_by_others(info) and not info.st_mode & stat.S_ISVTX:
        raise UntrustedPathError(
            directory,
            f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o}, no sticky bit)",
            info.st_uid,
        )
