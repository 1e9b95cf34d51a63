"""The daemon's C allocator settings (glibc only): fewer malloc arenas, big blocks returned.

glibc gives each thread that contends for the heap an arena of its own, up to 8 per core. The
daemon serves every control connection on a thread of its own, and runs worker pools: with a
dozen arenas each keeping its freed pages, RSS sat about 10 MB above what the process used.
Two arenas are what a process running mostly Python (one thread at a time under the GIL) needs.

    >>> limit_malloc_arenas()   # at start, before the threads: True where glibc applied it
    True

A `MALLOC_ARENA_MAX` in the environment wins (glibc read it at start; we leave it alone), and
on a C library without `mallopt` (musl, macOS) this does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Final

__all__ = ["MALLOC_ARENAS", "limit_malloc_arenas"]

#: Arenas the daemon allows (glibc's default: 8 per core).
MALLOC_ARENAS: Final = 2
_M_ARENA_MAX: Final = -8  # glibc's malloc.h


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas` (only arenas created later are affected, so call
    it before starting threads); False when the C library cannot, or the user chose already."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
