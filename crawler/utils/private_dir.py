"""A directory of our own: created private, then looked at through a descriptor that follows
no link (the data dir and the control socket's directory alike).

    created = make_private_dir(path)                  # False: it was already there
    info = stat_dir(trusted_path(path), chmod_to=0o700 if created else None)
    if info.st_uid != os.geteuid(): ...               # the caller's refusal, in its words

OSError goes up as raised (ENOTDIR or ELOOP: not a directory, or a link where one should be);
each caller says it in its own words. Imports only the standard library.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

__all__ = ["make_private_dir", "stat_dir"]


def make_private_dir(path: Path, mode: int = 0o700) -> bool:
    """Create `path` (and its parents) with `mode` less the umask; False if it existed
    (or something else is in the way: `stat_dir` names it)."""
    with suppress(FileExistsError):
        path.mkdir(mode=mode, parents=True)
        return True
    return False


def stat_dir(path: Path, *, chmod_to: int | None = None) -> os.stat_result:
    """`fstat` of the directory at `path`, opened without following a link; `chmod_to` sets
    its mode through that descriptor when it is ours (mkdir's mode went through the umask)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if chmod_to is not None and info.st_uid == os.geteuid():
            os.fchmod(fd, chmod_to)
        return info
    finally:
        os.close(fd)
