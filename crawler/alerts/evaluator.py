"""The daemon's alerts: rules looked at as quotes land, firings claimed once and delivered.

    evaluator = AlertEvaluator(store, events=bus, notifier=notifier, node="crawler-a")
    bus.add_quote_listener(evaluator.on_quote)   # every quote from every source passes here
    evaluator.start()                            # the "crawler-alerts" thread
    evaluator.check(now)                         # stale and budget rules (the thread calls it)
    evaluator.stop(2.0)

Where quotes are looked at: the event bus's `publish_quote`, through which every landed quote
passes (stream ticks, collections and fetches, Bright Data and Yahoo, batches too). `on_quote`
runs on the publisher's thread and only compares numbers in memory under one lock (a symbol
without rules costs one dict lookup); everything that touches the store, the event stream, the
log or a notification target happens on the evaluator's own thread, fed by a bounded queue.
So neither a slow store nor a slow target can hold a collection or the stream up; with the
queue full (it never is in practice: one item per crossing) an item is dropped and logged.

Stale and budget rules are looked at every `check_interval_s` on the same thread (with the
clock passed in: `check(now)` is what tests call), and so is the store's version: a rule added
or removed through any node or the CLI is picked up within one interval.

Firing: the local view says a rule crossed its line; the thread claims firing N (= fires + 1)
in the store (one winner cluster-wide), records the new state, publishes an `alert` event,
logs it, and queues the notice. A lost claim means another node (or an earlier run) delivered
it: the shared state is read back and nothing is delivered. A store that does not answer
leaves the rule armed, so the next quote tries again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from crawler.alerts.firing import Firing, budget_firing, quote_firing, stale_firing
from crawler.alerts.notify import Notice, Notifier, shown_url
from crawler.alerts.rules import (
    DEFAULT_BAND_PCT,
    AlertRule,
    Decision,
    RuleState,
    decide_budget,
    decide_quote,
    decide_stale,
)
from crawler.logging import get_logger
from crawler.normalizer.schemas import Quote, utc_now
from crawler.utils.exceptions import CrawlerError

if TYPE_CHECKING:
    from crawler.alerts.store import AlertStore
    from crawler.events import EventBus

__all__ = ["WORK_QUEUE_SIZE", "AlertEvaluator", "Firing"]

log = get_logger("crawler.alerts")

#: Firings and re-arms waiting for the alerts thread at most (one per crossing).
WORK_QUEUE_SIZE: Final = 4096


@dataclass
class _Live:
    rule: AlertRule
    state: RuleState
    pending: bool = False  # a firing queued and not yet claimed


class AlertEvaluator:
    """See the module docstring. `market_open(symbol)` says whether a symbol's market is open
    (stale rules wait while it is closed; None: always open); `budget_used_pct()` is today's
    share of the budget spent (None: no budget rules are looked at)."""

    def __init__(
        self,
        store: AlertStore,
        *,
        events: EventBus | None = None,
        notifier: Notifier | None = None,
        node: str = "",
        band_pct: Decimal = DEFAULT_BAND_PCT,
        check_interval_s: float = 10.0,
        market_open: Callable[[str], bool] | None = None,
        budget_used_pct: Callable[[], float | Decimal] | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.events = events
        self.notifier = notifier
        self.node = node
        self.band_pct = band_pct
        self.check_interval_s = check_interval_s
        self._market_open = market_open
        self._budget_used_pct = budget_used_pct
        self._now = now
        self._started_at = now()
        self._lock = threading.Lock()
        self._lives: dict[int, _Live] = {}
        # Replaced whole, never mutated: on_quote reads it without the lock.
        self._by_symbol: dict[str, tuple[_Live, ...]] = {}
        # symbol -> (newest source time seen, when a quote with it landed)
        self._seen: dict[str, tuple[datetime | None, datetime]] = {}
        self._open_since: dict[str, datetime | None] = {}
        self._version: int | None = None
        self._reload_wanted = False
        self._work: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=WORK_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self.fired = 0
        self.dropped = 0

    # -- rules in memory -------------------------------------------------------------------

    def reload(self) -> None:
        """Read the rules (and the states of rules new to us) from the store; StorageError
        when it cannot be read (the rules in memory stay)."""
        version = self.store.version()
        rules = self.store.rules()
        states = self.store.states()
        with self._lock:
            lives: dict[int, _Live] = {}
            for rule in rules:
                old = self._lives.get(rule.id)
                if old is not None:
                    lives[rule.id] = old  # our own view is as fresh as the store's
                else:
                    lives[rule.id] = _Live(rule, states.get(rule.id, RuleState()))
            by_symbol: dict[str, list[_Live]] = {}
            for live in lives.values():
                if live.rule.symbol is not None:
                    by_symbol.setdefault(live.rule.symbol, []).append(live)
            self._lives = lives
            self._by_symbol = {symbol: tuple(items) for symbol, items in by_symbol.items()}
            self._version = version

    def rules(self) -> list[tuple[AlertRule, RuleState]]:
        """The rules in memory with their states, by id."""
        with self._lock:
            return [(live.rule, live.state) for _, live in sorted(self._lives.items())]

    def request_reload(self) -> None:
        """Re-read the rules on the alerts thread soon (after an add or a remove)."""
        # Coalesced: two hundred adds in a row cost one or two re-reads, not two hundred.
        with self._lock:
            if self._reload_wanted:
                return
            self._reload_wanted = True
        if not self._put(("reload", None)):
            with self._lock:
                self._reload_wanted = False

    # -- the hot path ----------------------------------------------------------------------

    def on_quote(self, quote: Quote) -> None:
        """Look at `quote` (the bus calls this for every quote it publishes). Never blocks on
        anything but the evaluator's own lock; never raises."""
        lives = self._by_symbol.get(quote.symbol)
        if not lives:
            return
        now = self._now()
        with self._lock:
            newest, _ = self._seen.get(quote.symbol, (None, now))
            advanced = quote.as_of is None or newest is None or quote.as_of > newest
            if advanced:
                self._seen[quote.symbol] = (quote.as_of, now)
            for live in lives:
                if live.pending:
                    continue
                rule, state = live.rule, live.state
                if rule.kind == "stale":
                    if advanced and not state.armed:
                        self._rearm(live)
                    continue
                if rule.basis == "last-alert" and state.reference is None:
                    live.state = replace(state, reference=quote.price)  # the first price seen
                    self._put(("save", (rule.id, live.state)))
                    continue
                decision = decide_quote(rule, state, quote, self.band_pct)
                if decision is Decision.FIRE:
                    firing = quote_firing(rule, state, quote)
                    live.pending = self._put(("fire", firing))
                elif decision is Decision.REARM:
                    self._rearm(live)

    def _rearm(self, live: _Live) -> None:
        live.state = replace(live.state, armed=True)
        self._put(("save", (live.rule.id, live.state)))

    def _rearm_now(self, live: _Live) -> None:
        """Re-arm on the alerts thread itself: the store is written now."""
        with self._lock:
            live.state = replace(live.state, armed=True)
        self.handle(("save", (live.rule.id, live.state)))

    def _put(self, item: tuple[str, Any]) -> bool:
        try:
            self._work.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("alert work dropped: the alerts thread is behind", item=item[0])
            return False

    # -- the alerts thread -----------------------------------------------------------------

    def start(self) -> None:
        """Read the rules and start the alerts thread (idempotent)."""
        if self._thread is not None:
            return
        try:
            self.reload()
        except CrawlerError as exc:  # the thread retries at its first check
            log.error("cannot read the alert rules", error=exc.message)
        self._thread = threading.Thread(target=self._run, name="crawler-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop the alerts thread (what is queued after the stop is not delivered)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with suppress(queue.Full):  # a thread that far behind is abandoned (a daemon thread)
            self._work.put(None, timeout=timeout_s)
        thread.join(timeout_s)

    def _run(self) -> None:
        next_check_s = time.monotonic() + self.check_interval_s
        while True:
            try:
                item = self._work.get(timeout=max(0.0, next_check_s - time.monotonic()))
            except queue.Empty:
                item = ("idle", None)
            if item is None:
                return
            try:
                self.handle(item)
            except Exception:  # the thread must outlive any one item
                log.exception("alert work failed", item=item[0])
            if time.monotonic() >= next_check_s:
                self._safe_check()
                next_check_s = time.monotonic() + self.check_interval_s

    def _safe_check(self) -> None:
        try:
            self.check()
        except Exception:
            log.exception("alert check failed")

    def handle(self, item: tuple[str, Any]) -> None:
        """Do one queued piece of work (the alerts thread; tests call it to step)."""
        kind, value = item
        if kind == "fire":
            self._fire(value)
        elif kind == "save":
            rule_id, state = value
            try:
                self.store.save_state(rule_id, state)
            except CrawlerError as exc:
                log.warning("cannot save an alert's state", rule=rule_id, error=exc.message)
        elif kind == "reload":
            with self._lock:
                self._reload_wanted = False
            try:
                self.reload()
            except CrawlerError as exc:
                log.warning("cannot read the alert rules", error=exc.message)
        elif kind == "check":
            self.check()

    def drain(self) -> None:
        """Do everything queued now, in this thread (tests without the alerts thread)."""
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.handle(item)

    # -- periodic: stale, budget, edits ----------------------------------------------------

    def check(self, now: datetime | None = None) -> None:
        """Pick up edits to the rules, then look at stale and budget rules as of `now`."""
        now = now or self._now()
        try:
            if self.store.version() != self._version:
                self.reload()
        except CrawlerError as exc:
            log.warning("cannot read the alert rules", error=exc.message)
        with self._lock:
            lives = list(self._lives.values())
        budget_pct: Decimal | None = None
        for live in lives:
            if live.pending:
                continue
            if live.rule.kind == "stale":
                self._check_stale(live, now)
            elif live.rule.kind == "budget" and self._budget_used_pct is not None:
                if budget_pct is None:
                    try:
                        budget_pct = Decimal(str(self._budget_used_pct()))
                    except CrawlerError as exc:
                        log.warning("cannot read the budget for alerts", error=exc.message)
                        return
                decision = decide_budget(live.rule, live.state, budget_pct)
                if decision is Decision.FIRE:
                    live.pending = True
                    self._fire(budget_firing(live.rule, budget_pct))
                elif decision is Decision.REARM:
                    self._rearm_now(live)

    def _stale_age_s(self, rule: AlertRule, now: datetime) -> float | None:
        """Seconds `rule`'s symbol has gone without a newer quote while its market was open,
        counted from no earlier than the daemon's start, the rule's creation and the market's
        opening as seen here; None while the market is closed."""
        symbol = rule.symbol or ""
        is_open = True
        if self._market_open is not None:
            try:
                is_open = self._market_open(symbol)
            except Exception:  # an unknown calendar: treat as open, as the collector does
                is_open = True
        with self._lock:
            if not is_open:
                self._open_since[symbol] = None  # closed: the next opening restarts the clock
                return None
            opened = self._open_since.get(symbol, self._started_at)  # open since our start
            if opened is None:
                opened = self._open_since[symbol] = now
            seen = self._seen.get(symbol)
        since = max(opened, self._started_at, rule.created_at)
        if seen is not None:
            since = max(since, seen[1])
        return (now - since).total_seconds()

    def _check_stale(self, live: _Live, now: datetime) -> None:
        rule = live.rule
        age_s = self._stale_age_s(rule, now)
        decision = decide_stale(rule, live.state, age_s)
        if decision is Decision.FIRE and age_s is not None:
            with self._lock:
                seen = self._seen.get(rule.symbol or "")
            live.pending = True
            self._fire(stale_firing(rule, age_s, seen[1] if seen else None))
        elif decision is Decision.REARM:
            self._rearm_now(live)

    # -- firing ----------------------------------------------------------------------------

    def _fire(self, firing: Firing) -> None:
        """Claim firing N of the rule, record it, deliver it (the alerts thread)."""
        with self._lock:
            live = self._lives.get(firing.rule_id)
        if live is None:  # removed meanwhile
            return
        state = live.state
        number = state.fires + 1
        try:
            won = self.store.claim(firing.rule_id, number, self.node)
        except CrawlerError as exc:
            log.warning(
                "alert not delivered yet: its firing cannot be claimed (retried at the next "
                "crossing)",
                rule=firing.rule_id,
                error=exc.message,
            )
            live.pending = False
            return
        if not won:
            # Another node (or an earlier run of this one) delivered this firing.
            try:
                shared = self.store.state(firing.rule_id)
            except CrawlerError:
                shared = state
            fallback = replace(state, armed=live.rule.basis == "last-alert", fires=number)
            live.state = shared if shared.fires >= number else fallback
            live.pending = False
            return
        new = RuleState(
            armed=live.rule.basis == "last-alert",
            fires=number,
            reference=firing.reference if firing.reference is not None else state.reference,
            fired_at=self._now(),
            fired_value=firing.value,
        )
        live.state = new
        live.pending = False
        try:
            self.store.save_state(firing.rule_id, new)
        except CrawlerError as exc:
            log.warning("cannot save an alert's state", rule=firing.rule_id, error=exc.message)
        self.fired += 1
        self._deliver(live.rule, new, firing)

    def _deliver(self, rule: AlertRule, state: RuleState, firing: Firing) -> None:
        targets = [shown_url(url) for url in rule.notify] if rule.notify else []
        data: dict[str, Any] = {
            "id": rule.id,
            "kind": rule.kind,
            "rule": rule.describe(),
            "value": firing.value,
            "threshold": None if rule.threshold is None else str(rule.threshold),
            "message": firing.message,
            "fires": state.fires,
            "node": self.node,
            "notify": targets,
        }
        if rule.symbol is not None:  # a budget alert has none: `?symbols=` lets it through
            data["symbol"] = rule.symbol
        if self.events is not None:
            self.events.publish("alert", **data)
        log.warning(
            "alert", rule_id=rule.id, rule=rule.describe(), value=firing.value,
            detail=firing.message, notify=targets,
        )  # fmt: skip
        if self.notifier is not None and rule.notify:
            self.notifier.enqueue(
                Notice(rule.notify, f"crawler alert: {rule.describe()}", firing.message, rule.id)
            )

    def statistics(self) -> dict[str, Any]:
        """rules (loaded here), fired (by this node since its start), dropped, queued, and
        the notifier's notices (sent, failed, dropped, pending)."""
        with self._lock:
            count = len(self._lives)
        out: dict[str, Any] = {
            "rules": count,
            "fired": self.fired,
            "dropped": self.dropped,
            "queued": self._work.qsize(),
        }
        if self.notifier is not None:
            out["notices"] = self.notifier.statistics()
        return out
