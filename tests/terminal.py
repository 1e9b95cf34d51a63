"""The CLI in a real terminal: a pseudo-terminal of a given size, as a user's shell gives it.

    term = Terminal.run([sys.executable, "-m", "crawler", "status"], env, columns=80)
    term.wait()                       # the exit code
    term.text()                       # everything drawn, escape sequences removed

    term = Terminal.run([...collect...], env)
    term.wait_for("/300")             # output seen so far contains it (or AssertionError)
    term.interrupt()                  # SIGINT, what Ctrl-C sends to the foreground process

stdout and stderr both go to the terminal, as in a shell. The size is set on the terminal
itself (TIOCSWINSZ), not only in COLUMNS, so whatever asks the terminal gets the same answer.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time

__all__ = ["Terminal", "strip_ansi"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def strip_ansi(text: str) -> str:
    """`text` without escape sequences and carriage returns."""
    return _ANSI.sub("", text)


class Terminal:
    """One process on a pseudo-terminal; its output is read as it comes."""

    def __init__(self, proc: subprocess.Popen[bytes], master: int) -> None:
        self.proc = proc
        self._master = master
        self.raw = b""

    @classmethod
    def run(
        cls, argv: list[str], env: dict[str, str], columns: int = 120, lines: int = 40, **kw: object
    ) -> Terminal:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        env = {**env, "COLUMNS": str(columns), "LINES": str(lines), "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True, **kw
        )  # type: ignore[call-overload]
        os.close(slave)
        return cls(proc, master)

    def _read(self, timeout_s: float) -> bool:
        """Read what is there within `timeout_s`; False once the terminal is closed."""
        ready, _, _ = select.select([self._master], [], [], timeout_s)
        if not ready:
            return True
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: every writer has gone
            return False
        if not data:
            return False
        self.raw += data
        return True

    def text(self) -> str:
        """Everything drawn so far, without escape sequences."""
        return strip_ansi(self.raw.decode("utf-8", "replace"))

    def wait_for(self, needle: str, deadline_s: float = 60.0) -> None:
        """Read until the output contains `needle`; AssertionError after `deadline_s`."""
        end = time.monotonic() + deadline_s
        while needle not in self.text():
            if time.monotonic() > end or not self._read(0.1):
                if needle in self.text():
                    return
                raise AssertionError(f"{needle!r} not seen in:\n{self.text()[-3000:]}")

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the process."""
        self.proc.send_signal(signal.SIGINT)

    def wait(self, deadline_s: float = 60.0) -> int:
        """Read to the end; the exit code."""
        end = time.monotonic() + deadline_s
        while self._read(0.1):
            if time.monotonic() > end:
                self.proc.kill()
                raise AssertionError(f"still running after {deadline_s}s:\n{self.text()[-3000:]}")
        code = self.proc.wait(max(1.0, end - time.monotonic()))
        os.close(self._master)
        return code
