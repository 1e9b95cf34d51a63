"""The connection to the shared Redis: one client per process, errors translated at the boundary.

    redis = RedisConnection("redis://127.0.0.1:6379/0")
    with redis.errors("budget ledger"):
        redis.client.incr(redis.key("counter"))

Every key the crawler writes starts with `key_prefix` ("crawler:" by default), so one Redis can
serve other programs (or several clusters, with different prefixes) beside us.

Faults: redis-py reconnects by itself on the next command after a dropped connection, so a
Redis that comes back is used again without a restart. Until then every call raises
`StoreUnavailableError` within `socket_timeout_s` (short: a collection must not hang on a dead
Redis), and for `RETRY_S` after a failure calls fail at once without trying (a collection of a
thousand symbols must not wait a timeout per call); `ping()` always tries, and a success ends
that pause. Any other Redis error is a `StorageError`. `redact_url` is what logs and status show:
the password never leaves this module.

    >>> redact_url("redis://:s3cret@10.0.0.5:6379/0")
    'redis://:****@10.0.0.5:6379/0'
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from crawler.utils.error_map import ErrorTable, caught
from crawler.utils.exceptions import ConfigError, StorageError, StoreUnavailableError
from crawler.utils.urls import redact_url, url_secrets

if TYPE_CHECKING:
    import redis

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "PERSISTENCE",
    "RETRY_S",
    "RedisConnection",
    "redact_url",
    "redis_errors",
    "text_map",
    "url_secrets",
]

DEFAULT_KEY_PREFIX: Final = "crawler:"
#: Connect and per-command timeouts: a dead Redis must cost a collection seconds, not minutes.
_CONNECT_TIMEOUT_S: Final = 1.0
_SOCKET_TIMEOUT_S: Final = 2.0
_SCHEMES: Final = ("redis", "rediss", "unix")
#: After Redis failed to answer, calls fail fast for this long before the next real try.
RETRY_S: Final = 2.0
#: Redis' persistence settings are asked again after this long (status asks often).
_PERSISTENCE_S: Final = 30.0
#: The Redis settings a cluster needs (README, "Running several nodes on one Redis").
PERSISTENCE: Final = "appendonly yes, appendfsync everysec, maxmemory-policy noeviction"


def redis_errors(module: Any) -> ErrorTable:
    """redis-py's errors and ours (`crawler.utils.error_map`), `module` being redis: Redis out
    of reach (down, still loading its data, too slow, the socket failing) is
    StoreUnavailableError, failed fast for RETRY_S and retried; anything else it raises is a
    command Redis refused, StorageError."""
    return (
        (module.ConnectionError, StoreUnavailableError),
        (module.TimeoutError, StoreUnavailableError),
        (module.BusyLoadingError, StoreUnavailableError),
        (OSError, StoreUnavailableError),
        (module.RedisError, StorageError),
    )


class RedisConnection:
    """A redis-py client for `url` (decoded str replies) plus error translation and key naming.

    Raises ConfigError for a URL that is not redis://, rediss:// or unix://, or when redis-py
    is not installed. Connecting is lazy: a Redis that is down at start-up is not an error here.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        socket_timeout_s: float = _SOCKET_TIMEOUT_S,
        max_connections: int = 64,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"redis_url {redact_url(url)!r} is not a Redis URL; use "
                "redis://host:6379/0 (or rediss://, unix://)"
            )
        try:
            import redis as redis_module
        except ImportError as exc:  # pragma: no cover - redis is a runtime dependency
            raise ConfigError(
                "redis_url is set but the redis package is missing; pip install 'crawler[redis]'"
            ) from exc
        self.url = url
        self.shown_url = redact_url(url)
        self.key_prefix = key_prefix
        self._module = redis_module
        self.error_table = redis_errors(redis_module)
        self._unavailable = caught(self.error_table, StoreUnavailableError)
        self._refused = caught(self.error_table, StorageError)
        try:
            self.client: redis.Redis = redis_module.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=_CONNECT_TIMEOUT_S,
                socket_timeout=socket_timeout_s,
                health_check_interval=30,
                max_connections=max_connections,
            )
        except ValueError as exc:
            raise ConfigError(f"redis_url {self.shown_url!r} is invalid: {exc}") from None
        self._lock = threading.Lock()
        self._scripts: dict[str, Any] = {}
        # monotonic time until which calls fail fast (0: try every call).
        self._down_until = 0.0
        self._last_error = ""
        self._persistence: tuple[float, dict[str, Any]] | None = None

    def key(self, *parts: str) -> str:
        """The full key of `parts`, e.g. key("lease", "AAPL:US") -> "crawler:lease:AAPL:US"."""
        return self.key_prefix + ":".join(parts)

    def script(self, name: str, source: str) -> Any:
        """A registered Lua script (EVALSHA, re-loaded by redis-py after a Redis restart)."""
        with self._lock:
            found = self._scripts.get(name)
            if found is None:
                found = self._scripts[name] = self.client.register_script(source)
            return found

    @contextmanager
    def errors(self, what: str, *, probe: bool = False) -> Iterator[None]:
        """Translate redis-py's errors into ours, naming `what` and the (redacted) URL.

        Within RETRY_S of a failure, raises StoreUnavailableError at once unless `probe`.
        """
        if not probe and time.monotonic() < self._down_until:
            raise StoreUnavailableError(
                f"{what}: Redis at {self.shown_url} is unreachable ({self._last_error}); "
                "start it or fix redis_url; crawler reconnects by itself"
            )
        try:
            yield
        except self._unavailable as exc:
            self._last_error = type(exc).__name__
            self._down_until = time.monotonic() + RETRY_S
            raise StoreUnavailableError(
                f"{what}: Redis at {self.shown_url} is unreachable ({type(exc).__name__}); "
                "start it or fix redis_url; crawler reconnects by itself"
            ) from exc
        except self._refused as exc:
            raise StorageError(
                f"{what}: Redis at {self.shown_url} refused a command: {_first_line(exc)}"
            ) from exc
        # Redis answered: stop failing fast.
        self._down_until = 0.0

    def ping(self) -> bool:
        """Whether Redis answers now: always a real try (never raises); a success ends the
        fail-fast pause at once."""
        try:
            with self.errors("ping", probe=True):
                return bool(self.client.ping())
        except StorageError:
            return False

    def persistence(self) -> dict[str, Any]:
        """How Redis keeps its data, for status: {"appendonly", "appendfsync",
        "maxmemory_policy", "warning"}; the values are None ("unknown") when CONFIG is
        disabled or Redis does not answer. `warning` is None when it is what the cluster
        needs (AOF with fsync every second, no eviction). Asked at most every PERSISTENCE_S."""
        now = time.monotonic()
        with self._lock:
            cached = self._persistence
        if cached is not None and now - cached[0] < _PERSISTENCE_S:
            return dict(cached[1])
        out: dict[str, Any] = {"appendonly": None, "appendfsync": None, "maxmemory_policy": None}
        try:
            with self.errors("persistence check"):
                for name in ("appendonly", "appendfsync", "maxmemory-policy"):
                    value = self.client.config_get(name).get(name)
                    out[name.replace("-", "_")] = None if value is None else str(value)
        except StorageError as exc:
            out["warning"] = (
                f"Redis persistence unknown ({_first_line(exc)}); run it with {PERSISTENCE}"
            )
            return out  # not cached: Redis may be back at the next look
        wrong = []
        if out["appendonly"] != "yes":
            wrong.append(f"appendonly {out['appendonly']}")
        elif out["appendfsync"] not in ("everysec", "always"):
            wrong.append(f"appendfsync {out['appendfsync']}")
        if out["maxmemory_policy"] != "noeviction":
            wrong.append(f"maxmemory-policy {out['maxmemory_policy']}")
        out["warning"] = (
            f"Redis runs with {', '.join(wrong)}: a restart or eviction loses the ledger "
            f"(paid requests stop until every node reports); run it with {PERSISTENCE}"
            if wrong
            else None
        )
        with self._lock:
            self._persistence = (now, dict(out))
        return out

    def close(self) -> None:
        """Close every pooled connection (a later call reconnects)."""
        with suppress(Exception):  # closing must never mask the caller's own error
            self.client.close()


def text_map(raw: Any) -> dict[str, str]:
    """A hash reply as str -> str (the client decodes replies; this satisfies the types)."""
    return {_text(key): _text(value) for key, value in dict(raw).items()}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
