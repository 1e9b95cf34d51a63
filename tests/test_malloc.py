"""The daemon's glibc malloc settings (crawler.daemon.malloc), measured on a real process.

Sixteen threads call the C allocator at once through ctypes (which releases the GIL, so they
truly contend); glibc's own `malloc_info` then says how many arenas ("heaps") exist, and
`mallinfo2` how many blocks are mmapped. Each case runs in a fresh interpreter: the cap only
governs arenas created after it.
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
from crawler.daemon.malloc import tune_malloc
if sys.argv[1] == "cap":
    print("applied", ",".join(sorted(tune_malloc())) or "-")
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
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
# glibc's default raises the mmap threshold past a freed 1 MiB block: the next one comes from
# the heap (and its pages stay); with a fixed threshold it is mmapped again.
libc.free(libc.malloc(1 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print("mmapped_again", libc.mallinfo2().hblks - before)
libc.free(block)
"""

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/maps") or os.uname().sysname != "Linux",
    reason="malloc arenas are glibc's (Linux)",
)


def _probe(mode: str, **env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
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


def test_without_the_settings_threads_get_arenas_and_big_blocks_stay_on_the_heap() -> None:
    """The baseline the settings are measured against: glibc's defaults."""
    answer = _probe("none")
    if (os.cpu_count() or 1) > 1:  # one core: threads rarely meet inside malloc
        assert int(answer[answer.index("arenas") + 1]) > 2
    assert answer[-2:] == ["mmapped_again", "0"]


def test_the_daemon_settings_keep_two_arenas_and_give_big_blocks_back() -> None:
    assert _probe("cap") == [
        "applied",
        "arena_max,mmap_threshold,trim_threshold",
        "arenas",
        "2",
        "mmapped_again",
        "1",
    ]


def test_a_malloc_variable_in_the_environment_wins() -> None:
    """glibc read the user's MALLOC_ARENA_MAX at start; the daemon leaves that option alone."""
    assert _probe("cap", MALLOC_ARENA_MAX="3")[:2] == ["applied", "mmap_threshold,trim_threshold"]
