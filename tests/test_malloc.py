"""The daemon caps glibc's malloc arenas (crawler.daemon.malloc): measured on a real process.

Sixteen threads call the C allocator at once through ctypes (which releases the GIL, so they
truly contend); glibc's own `malloc_info` then says how many arenas ("heaps") exist. Each case
runs in a fresh interpreter: the cap only governs arenas created after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_PROBE = """
import ctypes, sys, tempfile, threading
from crawler.daemon.malloc import limit_malloc_arenas
if sys.argv[1] == "cap":
    print("applied", limit_malloc_arenas())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(16)
def contend():
    start.wait()
    for _ in range(2000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=contend) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
with tempfile.NamedTemporaryFile("r") as out:
    handle = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, handle)
    libc.fclose(handle)
    print("arenas", out.read().count("<heap nr="))
"""

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/maps") or os.uname().sysname != "Linux",
    reason="malloc arenas are glibc's (Linux)",
)


def _probe(mode: str, **env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environment.update(env, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=True,
    )
    return result.stdout.split()


def test_contending_threads_get_an_arena_each_without_the_cap() -> None:
    """The baseline the cap is measured against: without it, glibc makes more than two."""
    assert int(_probe("none")[-1]) > 2


def test_the_daemon_cap_keeps_two_arenas_under_contention() -> None:
    assert _probe("cap") == ["applied", "True", "arenas", "2"]


def test_a_malloc_arena_max_in_the_environment_wins() -> None:
    """glibc read the user's MALLOC_ARENA_MAX at start; the daemon leaves it alone."""
    assert _probe("cap", MALLOC_ARENA_MAX="3")[:2] == ["applied", "False"]
