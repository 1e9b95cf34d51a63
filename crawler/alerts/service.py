"""What `crawler alerts` can be asked, in one place: the daemon's routes and the CLI's offline
mode both call `AlertService`, so the two paths answer alike.

    service = AlertService.offline(settings)          # the CLI without a daemon
    service.add(kind="above", symbol="AAPL", threshold="200", notify=["ntfy://ntfy.sh/t"])
    service.list()      # {"alerts": [{"id": 1, "rule": "AAPL:US above 200", "state": "armed",
                        #   "notify": ["ntfy://ntfy.sh/t"], ...}]}   notify URLs masked;
                        # in the daemon also "evaluator": {"rules", "fired", "notices", ...}
    service.remove(1)   # {"id": 1, "removed": True}
    service.test([])    # a test notice to every notify URL in use: {"targets": [...]}
    service.close()

Every answer is JSON-safe; notify URLs appear only in their masked form. Bad input raises
UsageError / SymbolError (exit 2, HTTP 400).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from crawler.alerts.notify import check_url, send, shown_url
from crawler.alerts.rules import AlertRule, RuleState
from crawler.logging import get_logger
from crawler.utils.exceptions import UsageError

if TYPE_CHECKING:
    from crawler.alerts.evaluator import AlertEvaluator
    from crawler.alerts.store import AlertStore
    from crawler.config import Settings
    from crawler.events import EventBus
    from crawler.store.redis_client import RedisConnection

__all__ = ["AlertService", "parse_alert_id", "rule_view"]

log = get_logger("crawler.alerts")

#: A notify URL list longer than this is refused (each target is sent every firing).
MAX_NOTIFY = 10
_TEST_TITLE = "crawler alert: test"


def parse_alert_id(text: str | int) -> int:
    """An alert id from the user; UsageError for anything but a positive whole number."""
    raw = str(text).strip()
    if not raw.isdigit() or int(raw) < 1 or len(raw) > 18:
        raise UsageError(f"alert id {text!r} is not a number; see `crawler alerts list`")
    return int(raw)


def rule_view(rule: AlertRule, state: RuleState) -> dict[str, Any]:
    """A rule and its state for the caller (notify URLs masked)."""
    return {
        "id": rule.id,
        "kind": rule.kind,
        "symbol": rule.symbol,
        "rule": rule.describe(),
        "threshold": None if rule.threshold is None else str(rule.threshold),
        "duration_s": rule.duration_s,
        "basis": rule.basis,
        "notify": [shown_url(url) for url in rule.notify],
        "created_at": rule.created_at.isoformat(),
        "state": "armed" if state.armed else "fired",
        "fires": state.fires,
        "fired_at": None if state.fired_at is None else state.fired_at.isoformat(),
        "fired_value": state.fired_value,
    }


class AlertService:
    """The `alerts` verbs over one store; in the daemon also its evaluator and event bus."""

    def __init__(
        self,
        store: AlertStore,
        *,
        evaluator: AlertEvaluator | None = None,
        events: EventBus | None = None,
        notify_timeout_s: float = 10.0,
        is_tracked: Callable[[str], bool] | None = None,
        closers: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.store = store
        self.evaluator = evaluator
        self.events = events
        self.notify_timeout_s = notify_timeout_s
        self._is_tracked = is_tracked
        self._closers = list(closers)

    @classmethod
    def offline(cls, settings: Settings) -> AlertService:
        """Straight on the data dir (or the cluster's Redis), without a daemon."""
        from crawler.alerts.store import open_alert_store

        store, redis = open_alert_store(settings)
        closers: list[Callable[[], None]] = [store.close]
        if redis is not None:
            closers.append(_closer(redis))
        return cls(
            store, notify_timeout_s=float(settings.alerts_notify_timeout_seconds), closers=closers
        )

    def close(self) -> None:
        """Close what `offline` opened."""
        closers, self._closers = self._closers, []
        for close in closers:
            close()

    # -- verbs -------------------------------------------------------------------------------

    def add(
        self,
        *,
        kind: str,
        symbol: str | None = None,
        threshold: object = None,
        duration: str | int | None = None,
        basis: str | None = None,
        notify: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Store a new rule; {"alert": view, "notices": [...]}."""
        notices: list[str] = []
        canonical: str | None = None
        if symbol is not None:
            from crawler.normalizer.user_symbols import read_symbol

            read = read_symbol(symbol)
            canonical = read.symbol.canonical
            if read.notice:
                notices.append(read.notice)
        urls = [url for url in notify if isinstance(url, str)]
        if len(urls) > MAX_NOTIFY:
            raise UsageError(f"--notify: at most {MAX_NOTIFY} targets per alert")
        rule = AlertRule.build(
            kind=kind,
            symbol=canonical,
            threshold=threshold,
            duration=duration,
            basis=basis,
            notify=tuple(dict.fromkeys(urls)),
        )
        for url in rule.notify:
            check_url(url)
        stored = self.store.add(rule)
        if canonical is not None and self._is_tracked is not None:
            try:
                tracked = self._is_tracked(canonical)
            except Exception:  # only a hint: never fail the add for it
                tracked = True
            if not tracked:
                notices.append(
                    f"{canonical} is not tracked: its quotes arrive only through `crawler fetch`;"
                    f" track it with `crawler symbols add {canonical}`"
                )
        if self.evaluator is not None:
            self.evaluator.request_reload()
        log.info("alert added", rule_id=stored.id, rule=stored.describe())
        answer: dict[str, Any] = {"alert": rule_view(stored, RuleState())}
        if notices:
            answer["notices"] = notices
        return answer

    def list(self) -> dict[str, Any]:
        """{"alerts": [view...]} by id, each with its shared state."""
        rules = self.store.rules()
        states = self.store.states()
        answer: dict[str, Any] = {
            "alerts": [rule_view(rule, states.get(rule.id, RuleState())) for rule in rules]
        }
        if self.evaluator is not None:  # this daemon's own view: rules loaded, fired here
            answer["evaluator"] = self.evaluator.statistics()
        return answer

    def remove(self, rule_id: int | str) -> dict[str, Any]:
        """{"id", "removed"}; removed is False when there was no such alert."""
        number = parse_alert_id(rule_id)
        removed = self.store.remove(number)
        if removed:
            if self.evaluator is not None:
                self.evaluator.request_reload()
            log.info("alert removed", rule_id=number)
        return {"id": number, "removed": removed}

    def test(self, urls: Iterable[str] = ()) -> dict[str, Any]:
        """A test notice, now, to `urls` (else to every notify URL the alerts use), to the event
        stream and to the log: {"targets": [{"target", "ok", "error"}], "event": bool}."""
        given = [url for url in urls if isinstance(url, str)]
        for url in given:
            check_url(url)
        if not given:
            given = list(dict.fromkeys(url for rule in self.store.rules() for url in rule.notify))
        message = "a test of crawler's alerts: if you read this, notices reach you"
        results = send(given, _TEST_TITLE, message, timeout_s=self.notify_timeout_s)
        targets = [result["target"] for result in results]
        if self.events is not None:
            self.events.publish(
                "alert", id=None, kind="test", rule="test", value=None,
                threshold=None, message=message, fires=0, node="", notify=targets, test=True,
            )  # fmt: skip
        log.info(
            "alert test sent",
            targets=targets,
            failed=[result["target"] for result in results if not result["ok"]],
        )
        return {"targets": results, "event": self.events is not None}


def _closer(redis: RedisConnection) -> Callable[[], None]:
    return redis.close
