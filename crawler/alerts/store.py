"""Where alert rules and their states live: embedded in the data dir, or on the cluster's Redis.

    store = open_alert_store(settings)            # Redis when redis_url is set, else embedded
    rule = store.add(AlertRule.build(kind="above", symbol="AAPL:US", threshold="200"))
    store.claim(rule.id, 1)                        # True once, for the whole cluster
    store.save_state(rule.id, RuleState(armed=False, fires=1))
    store.close()

    what                   embedded (<data_dir>/alerts)   Redis
    rules                  rule:ID -> record              hash crawler:alerts:rules
    states                 state:ID -> record             hash crawler:alerts:state
    the next id            seq                            crawler:alerts:seq (INCR)
    edits (for re-reads)   version                        crawler:alerts:version (INCR)
    a firing, claimed once claim:ID:N (add: if absent)    crawler:alerts:claim:ID:N (SET NX EX)

A firing is claimed before it is delivered: the claim of rule ID's Nth firing succeeds for one
caller only (a SET NX on Redis, diskcache's atomic `add` embedded), so three nodes that see the
same crossing deliver it once. Claims expire after `CLAIM_TTL_S`; the state's `fires` counter
moves past them long before.

Both classes keep one contract (`tests/test_alerts_store.py` runs one suite against both).
Errors are StorageError (StoreUnavailableError when Redis does not answer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from crawler.alerts.rules import AlertRule, RuleState
from crawler.store.datadir import CorruptRecordError, open_store, storage_errors
from crawler.utils.exceptions import StorageError, UsageError

if TYPE_CHECKING:
    import diskcache

    from crawler.config import Settings
    from crawler.store.redis_client import RedisConnection

__all__ = [
    "ALERTS_SUBDIR",
    "CLAIM_TTL_S",
    "MAX_RULES",
    "AlertStore",
    "EmbeddedAlertStore",
    "RedisAlertStore",
    "open_alert_store",
]

ALERTS_SUBDIR: Final = "alerts"
#: How long a claimed firing is remembered (the `fires` counter has moved on by then).
CLAIM_TTL_S: Final = 7 * 86400
#: Rules at most: each is looked at for every quote of its symbol.
MAX_RULES: Final = 1000
_WHAT: Final = "alert store"


class AlertStore(Protocol):
    """Rules, states and claims (see the module docstring)."""

    def add(self, rule: AlertRule) -> AlertRule: ...
    def remove(self, rule_id: int) -> bool: ...
    def rules(self) -> list[AlertRule]: ...
    def states(self) -> dict[int, RuleState]: ...
    def state(self, rule_id: int) -> RuleState: ...
    def save_state(self, rule_id: int, state: RuleState) -> None: ...
    def claim(self, rule_id: int, fire_no: int, node: str = "") -> bool: ...
    def version(self) -> int: ...
    def close(self) -> None: ...


def _full(max_rules: int) -> UsageError:
    return UsageError(f"there are already {max_rules} alerts; remove some before adding more")


def _decode(raw: object, what: str) -> dict[str, Any]:
    data = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(data, dict):
        raise ValueError(f"{what} is {raw!r}, not an object")
    return data


class EmbeddedAlertStore:
    """Rules and states in `<data_dir>/alerts`; safe for several threads and processes."""

    def __init__(self, directory: Path, max_rules: int = MAX_RULES) -> None:
        self._directory = Path(directory)
        self._max_rules = max_rules
        self._cache: diskcache.Cache = open_store(self._directory, _WHAT, expiring=True)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            with storage_errors(_WHAT, self._directory):
                yield
        except (CorruptRecordError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"alert store at {self._directory} is corrupt ({exc}); move it aside and add "
                "the alerts again"
            ) from exc

    def _int(self, key: str) -> int:
        value = self._cache.get(key)
        return int(value) if isinstance(value, int) else 0

    def add(self, rule: AlertRule) -> AlertRule:
        """Store `rule` under a new id; UsageError when `max_rules` are there."""
        with self._errors(), self._cache.transact():
            ids = self._ids()
            if len(ids) >= self._max_rules:
                raise _full(self._max_rules)
            rule_id = self._int("seq") + 1
            stored = rule.with_id(rule_id)
            self._cache.set("seq", rule_id)
            self._cache.set(f"rule:{rule_id}", stored.to_record())
            self._cache.set(f"state:{rule_id}", RuleState().to_record())
            self._cache.set("version", self._int("version") + 1)
        return stored

    def remove(self, rule_id: int) -> bool:
        with self._errors(), self._cache.transact():
            if not self._cache.delete(f"rule:{rule_id}"):
                return False
            self._cache.delete(f"state:{rule_id}")
            self._cache.set("version", self._int("version") + 1)
        return True

    def _ids(self) -> list[int]:
        return sorted(
            int(key[5:])
            for key in self._cache.iterkeys()
            if isinstance(key, str) and key.startswith("rule:")
        )

    def rules(self) -> list[AlertRule]:
        with self._errors():
            out = []
            for rule_id in self._ids():
                raw = self._cache.get(f"rule:{rule_id}")
                if raw is not None:  # removed between the listing and the read
                    out.append(AlertRule.from_record(_decode(raw, f"rule {rule_id}")))
            return out

    def states(self) -> dict[int, RuleState]:
        with self._errors():
            return {rule_id: self._state(rule_id) for rule_id in self._ids()}

    def _state(self, rule_id: int) -> RuleState:
        raw = self._cache.get(f"state:{rule_id}")
        return RuleState() if raw is None else RuleState.from_record(_decode(raw, "state"))

    def state(self, rule_id: int) -> RuleState:
        with self._errors():
            return self._state(rule_id)

    def save_state(self, rule_id: int, state: RuleState) -> None:
        with self._errors(), self._cache.transact():
            if self._cache.get(f"rule:{rule_id}") is not None:  # not for a removed rule
                self._cache.set(f"state:{rule_id}", state.to_record())

    def claim(self, rule_id: int, fire_no: int, node: str = "") -> bool:
        with self._errors():
            return bool(
                self._cache.add(f"claim:{rule_id}:{fire_no}", node or "local", expire=CLAIM_TTL_S)
            )

    def version(self) -> int:
        with self._errors():
            return self._int("version")

    def close(self) -> None:
        self._cache.close()


class RedisAlertStore:
    """Rules and states on the cluster's Redis: every node evaluates the same rules, and each
    firing is delivered by the one node whose claim (SET NX) succeeded."""

    def __init__(self, redis: RedisConnection, max_rules: int = MAX_RULES) -> None:
        self._redis = redis
        self._max_rules = max_rules
        self._rules = redis.key("alerts", "rules")
        self._states = redis.key("alerts", "state")
        self._seq = redis.key("alerts", "seq")
        self._version = redis.key("alerts", "version")

    def _errors(self) -> Any:
        return self._redis.errors(_WHAT)

    def add(self, rule: AlertRule) -> AlertRule:
        client = self._redis.client
        with self._errors():
            if int(client.hlen(self._rules)) >= self._max_rules:
                raise _full(self._max_rules)
            rule_id = int(client.incr(self._seq))
            stored = rule.with_id(rule_id)
            pipe = client.pipeline(transaction=True)
            pipe.hset(self._rules, str(rule_id), json.dumps(stored.to_record()))
            pipe.hset(self._states, str(rule_id), json.dumps(RuleState().to_record()))
            pipe.incr(self._version)
            pipe.execute()
        return stored

    def remove(self, rule_id: int) -> bool:
        client = self._redis.client
        with self._errors():
            pipe = client.pipeline(transaction=True)
            pipe.hdel(self._rules, str(rule_id))
            pipe.hdel(self._states, str(rule_id))
            removed = int(pipe.execute()[0])
            if removed:
                client.incr(self._version)
            return bool(removed)

    def rules(self) -> list[AlertRule]:
        with self._errors():
            raw = self._redis.client.hgetall(self._rules)
        try:
            rules = [AlertRule.from_record(_decode(value, "rule")) for value in dict(raw).values()]
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"alert store on Redis holds a malformed rule ({exc})") from exc
        return sorted(rules, key=lambda rule: rule.id)

    def states(self) -> dict[int, RuleState]:
        with self._errors():
            ids = [int(key) for key in self._redis.client.hkeys(self._rules)]
            raw = dict(self._redis.client.hgetall(self._states))
        out: dict[int, RuleState] = {}
        for rule_id in ids:
            value = raw.get(str(rule_id))
            out[rule_id] = RuleState() if value is None else self._parse_state(value)
        return out

    @staticmethod
    def _parse_state(value: object) -> RuleState:
        try:
            return RuleState.from_record(_decode(value, "state"))
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"alert store on Redis holds a malformed state ({exc})") from exc

    def state(self, rule_id: int) -> RuleState:
        with self._errors():
            value = self._redis.client.hget(self._states, str(rule_id))
        return RuleState() if value is None else self._parse_state(value)

    def save_state(self, rule_id: int, state: RuleState) -> None:
        with self._errors():
            if self._redis.client.hexists(self._rules, str(rule_id)):
                self._redis.client.hset(self._states, str(rule_id), json.dumps(state.to_record()))

    def claim(self, rule_id: int, fire_no: int, node: str = "") -> bool:
        key = self._redis.key("alerts", "claim", str(rule_id), str(fire_no))
        with self._errors():
            return bool(self._redis.client.set(key, node or "?", nx=True, ex=CLAIM_TTL_S))

    def version(self) -> int:
        with self._errors():
            value = self._redis.client.get(self._version)
        return int(value) if value else 0

    def close(self) -> None:
        """Nothing of its own: the connection belongs to whoever opened it."""


def open_alert_store(
    settings: Settings, redis: RedisConnection | None = None
) -> tuple[AlertStore, RedisConnection | None]:
    """The alert store `settings` ask for, and the Redis connection opened for it (to close;
    None when `redis` was given or the store is embedded)."""
    if settings.redis_url is None:
        from crawler.store.datadir import ensure_data_dir

        data_dir = ensure_data_dir(Path(settings.data_dir))
        return EmbeddedAlertStore(data_dir / ALERTS_SUBDIR), None
    if redis is not None:
        return RedisAlertStore(redis), None
    from crawler.store.redis_client import RedisConnection

    opened = RedisConnection(settings.redis_url.get_secret_value(), max_connections=4)
    return RedisAlertStore(opened), opened
