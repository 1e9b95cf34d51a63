"""A real `redis-server` on a random loopback port, for tests and benchmarks (no fakeredis).

    server = RedisServer(tmp_path)
    server.start()           # waits until it answers PING
    url = server.url         # redis://127.0.0.1:PORT/0
    server.restart()         # same port, empty (no persistence): "Redis restarted empty"
    server.stop()

`RedisServer(directory, persistent=True)` runs as the README asks a cluster's Redis to run (AOF,
here with fsync always, so a kill loses nothing; no eviction): a restart keeps the data.

`.ci/run` installs the Debian package when the binary is missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "redis_server_binary"]

_START_TIMEOUT_S = 10.0


def redis_server_binary() -> str | None:
    """The redis-server executable, or None when it is not installed."""
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process bound to 127.0.0.1 only, without persistence unless asked."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        persistent: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed; apt-get install -y redis-server")
        self.binary = binary
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.persistent = persistent
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL crawler's `redis_url` takes."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start and wait until PING answers (raises RuntimeError if it does not)."""
        log = (self.directory / "redis.log").open("ab")
        options = {
            "--bind": "127.0.0.1",
            "--port": str(self.port),
            "--save": "",
            "--appendonly": "yes" if self.persistent else "no",
            "--appendfsync": "always" if self.persistent else "everysec",
            "--maxmemory-policy": "noeviction",
            "--dir": str(self.directory),
            "--protected-mode": "yes",
            "--daemonize": "no",
        }
        self.process = subprocess.Popen(
            [self.binary, *(part for pair in options.items() for part in pair), *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited at start: {(self.directory / 'redis.log').read_text()}"
                )
            if self.answers():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 10 s")

    def answers(self) -> bool:
        """Whether PING gets +PONG now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (no save) and wait for the process to go."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Stop, then start empty on the same port."""
        self.stop()
        self.start()
