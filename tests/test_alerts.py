"""Alert rules and the evaluator, without a daemon: crossings fire once, the band re-arms them,
stale and budget rules follow an injected clock and budget, and every decision lands in a real
embedded store."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crawler.alerts.evaluator import AlertEvaluator
from crawler.alerts.rules import (
    AlertRule,
    Decision,
    RuleState,
    decide_budget,
    decide_quote,
    decide_stale,
    format_duration,
    parse_duration,
)
from crawler.alerts.store import EmbeddedAlertStore
from crawler.events import EventBus
from crawler.normalizer.schemas import Quote
from crawler.utils.exceptions import UsageError

T0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)


def quote(price: str, *, symbol: str = "AAPL:US", at: datetime = T0, **extra: Any) -> Quote:
    return Quote(
        symbol=symbol, price=Decimal(price), source="yahoo_stream", currency="USD", as_of=at,
        fetched_at=at, **extra,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- rules -------------------------------------------------------------------------------------


def test_above_fires_at_the_line_and_rearms_only_past_the_band() -> None:
    rule = AlertRule.build(kind="above", symbol="AAPL:US", threshold="200")
    armed, fired = RuleState(), RuleState(armed=False, fires=1)
    assert decide_quote(rule, armed, quote("199.99")) is None
    assert decide_quote(rule, armed, quote("200")) is Decision.FIRE
    # Fired: hovering at the line, even dipping under it by less than 0.5 %, does nothing.
    assert decide_quote(rule, fired, quote("200.50")) is None
    assert decide_quote(rule, fired, quote("199.01")) is None
    assert decide_quote(rule, fired, quote("199.00")) is Decision.REARM  # 200 x (1 - 0.5 %)


def test_below_mirrors_above() -> None:
    rule = AlertRule.build(kind="below", symbol="AAPL:US", threshold="100")
    fired = RuleState(armed=False, fires=1)
    assert decide_quote(rule, RuleState(), quote("100.01")) is None
    assert decide_quote(rule, RuleState(), quote("99")) is Decision.FIRE
    assert decide_quote(rule, fired, quote("100.49")) is None
    assert decide_quote(rule, fired, quote("100.50")) is Decision.REARM


def test_move_from_the_close_uses_the_change_and_rearms_under_the_band() -> None:
    rule = AlertRule.build(kind="move", symbol="AAPL:US", threshold="3")
    fired = RuleState(armed=False, fires=1)
    assert decide_quote(rule, RuleState(), quote("1", change_pct=Decimal("-2.99"))) is None
    assert decide_quote(rule, RuleState(), quote("1", change_pct=Decimal("-3.1"))) is Decision.FIRE
    # Without a change, from the previous close.
    assert (
        decide_quote(rule, RuleState(), quote("103", previous_close=Decimal("100")))
        is Decision.FIRE
    )
    assert decide_quote(rule, fired, quote("1", change_pct=Decimal("2.6"))) is None
    assert decide_quote(rule, fired, quote("1", change_pct=Decimal("2.4"))) is Decision.REARM
    # A small move's band is at most half of it: 0.4 % re-arms under 0.2 %.
    small = AlertRule.build(kind="move", symbol="AAPL:US", threshold="0.4")
    assert decide_quote(small, fired, quote("1", change_pct=Decimal("0.21"))) is None
    assert decide_quote(small, fired, quote("1", change_pct=Decimal("0.19"))) is Decision.REARM


def test_move_since_the_last_alert_measures_from_its_reference() -> None:
    rule = AlertRule.build(kind="move", symbol="AAPL:US", threshold="5", basis="last-alert")
    state = RuleState(reference=Decimal("100"))
    assert decide_quote(rule, state, quote("104.9")) is None
    assert decide_quote(rule, state, quote("95")) is Decision.FIRE
    assert decide_quote(rule, RuleState(), quote("500")) is None  # no reference yet


def test_stale_and_budget_decisions() -> None:
    stale = AlertRule.build(kind="stale", symbol="AAPL:US", duration="15m")
    assert stale.duration_s == 900
    assert decide_stale(stale, RuleState(), 899) is None
    assert decide_stale(stale, RuleState(), 900) is Decision.FIRE
    assert decide_stale(stale, RuleState(), None) is None  # market closed
    assert decide_stale(stale, RuleState(armed=False), 3) is Decision.REARM
    budget = AlertRule.build(kind="budget", threshold="80")
    assert decide_budget(budget, RuleState(), Decimal("79.99")) is None
    assert decide_budget(budget, RuleState(), Decimal("80")) is Decision.FIRE
    assert decide_budget(budget, RuleState(armed=False), Decimal("95")) is None
    assert decide_budget(budget, RuleState(armed=False), Decimal("0")) is Decision.REARM


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "above", "symbol": "AAPL:US", "threshold": "-1"}, "more than 0"),
        ({"kind": "above", "symbol": "AAPL:US", "threshold": "NaN"}, "finite"),
        ({"kind": "above", "symbol": "AAPL:US", "threshold": "x"}, "not a number"),
        ({"kind": "above", "threshold": "1"}, "needs a symbol"),
        ({"kind": "budget", "symbol": "AAPL:US", "threshold": "80"}, "takes no symbol"),
        ({"kind": "budget", "threshold": "101"}, "1 to 100"),
        ({"kind": "stale", "symbol": "AAPL:US", "duration": "8d"}, "between 1s and 7d"),
        ({"kind": "stale", "symbol": "AAPL:US", "duration": "soon"}, "duration like"),
        ({"kind": "move", "symbol": "AAPL:US", "threshold": "3", "basis": "open"}, "--from"),
        ({"kind": "above", "symbol": "AAPL:US", "threshold": "3", "basis": "close"}, "--move"),
    ],
)
def test_bad_rules_are_one_usage_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        AlertRule.build(**kwargs)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "15m", "1h30m", "2d")] == [
        90, 90, 900, 5400, 172800,
    ]  # fmt: skip
    assert format_duration(5400) == "1h30m"


# -- the evaluator, on a real embedded store ------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedAlertStore:
    return EmbeddedAlertStore(tmp_path / "alerts")


def evaluator(store: EmbeddedAlertStore, bus: EventBus, clock: Clock, **kw: Any) -> AlertEvaluator:
    ev = AlertEvaluator(store, events=bus, now=clock, node="test", **kw)
    bus.add_quote_listener(ev.on_quote)
    ev.reload()
    return ev


def alerts_seen(sub: Any) -> list[dict[str, Any]]:
    out = []
    while (event := sub.get(timeout_s=0)) is not None:
        if event.type == "alert":
            out.append(event.data)
    return out


def test_a_crossing_fires_once_until_rearmed(store: EmbeddedAlertStore) -> None:
    bus, clock = EventBus(), Clock()
    rule = store.add(AlertRule.build(kind="above", symbol="AAPL:US", threshold="200"))
    ev = evaluator(store, bus, clock)
    with bus.subscribed() as sub:
        for price in ("199", "201", "202", "199.5", "201"):  # one crossing, hovering
            bus.publish_quote(quote(price))
            ev.drain()
        assert [a["value"] for a in alerts_seen(sub)] == ["201 USD"]
        state = store.state(rule.id)
        assert (state.armed, state.fires, state.fired_value) == (False, 1, "201 USD")
        bus.publish_quote(quote("198"))  # past the band: re-armed, in the store too
        ev.drain()
        assert store.state(rule.id).armed
        bus.publish_quote(quote("200.01"))
        ev.drain()
        fired = alerts_seen(sub)
    assert len(fired) == 1 and fired[0]["fires"] == 2 and fired[0]["rule"] == "AAPL:US above 200"
    assert "AAPL:US at 200.01 USD is above 200" in fired[0]["message"]


def test_a_restart_does_not_fire_again(store: EmbeddedAlertStore, tmp_path: Path) -> None:
    bus, clock = EventBus(), Clock()
    store.add(AlertRule.build(kind="below", symbol="AAPL:US", threshold="100"))
    first = evaluator(store, bus, clock)
    bus.publish_quote(quote("99"))
    first.drain()
    assert first.fired == 1
    bus2 = EventBus()
    second = evaluator(EmbeddedAlertStore(tmp_path / "alerts"), bus2, clock)
    bus2.publish_quote(quote("98"))
    second.drain()
    assert second.fired == 0


def test_move_since_last_alert_moves_its_reference(store: EmbeddedAlertStore) -> None:
    bus, clock = EventBus(), Clock()
    store.add(AlertRule.build(kind="move", symbol="AAPL:US", threshold="5", basis="last-alert"))
    ev = evaluator(store, bus, clock)
    with bus.subscribed() as sub:
        for price in ("100", "104", "105", "108", "110.25", "104.7"):
            bus.publish_quote(quote(price))
            ev.drain()
        values = [a["value"] for a in alerts_seen(sub)]
    # 100 is the reference; 105 fires (+5 %); from 105, 110.25 fires; from 110.25, 104.7 fires.
    assert values == ["+5.00%", "+5.00%", "-5.03%"]


def test_stale_fires_after_the_duration_while_open_and_rearms_on_a_newer_quote(
    store: EmbeddedAlertStore,
) -> None:
    bus, clock = EventBus(), Clock()
    opened = {"AAPL:US": True}
    rule = store.add(AlertRule.build(kind="stale", symbol="AAPL:US", duration="10m", created_at=T0))
    ev = evaluator(store, bus, clock, market_open=lambda symbol: opened[symbol])
    with bus.subscribed() as sub:
        bus.publish_quote(quote("100", at=clock.now))
        clock.advance(599)
        ev.check()
        assert alerts_seen(sub) == []
        # The same quote again (no newer source time) does not count as fresh.
        bus.publish_quote(quote("100", at=T0))
        clock.advance(1)
        ev.check()
        fired = alerts_seen(sub)
        assert [a["value"] for a in fired] == ["10m"]
        assert "no new quote for 10m while its market is open" in fired[0]["message"]
        clock.advance(3600)
        ev.check()
        assert alerts_seen(sub) == []  # once
        bus.publish_quote(quote("101", at=clock.now))
        ev.drain()
        assert store.state(rule.id).armed
        # Closed market: no age, no alert, however long; on reopening the clock restarts.
        opened["AAPL:US"] = False
        clock.advance(86400)
        ev.check()
        opened["AAPL:US"] = True
        clock.advance(1)
        ev.check()
        clock.advance(599)
        ev.check()
        assert alerts_seen(sub) == []
        clock.advance(1)
        ev.check()
        assert len(alerts_seen(sub)) == 1


def test_budget_fires_once_and_rearms_on_a_new_day(store: EmbeddedAlertStore) -> None:
    bus, clock = EventBus(), Clock()
    used = {"pct": 10.0}
    rule = store.add(AlertRule.build(kind="budget", threshold="80"))
    ev = evaluator(store, bus, clock, budget_used_pct=lambda: used["pct"])
    with bus.subscribed() as sub:
        ev.check()
        used["pct"] = 80.5
        ev.check()
        used["pct"] = 99.0
        ev.check()
        fired = alerts_seen(sub)
        assert [a["value"] for a in fired] == ["80.5%"]
        assert "80.5% of today's Bright Data budget is spent" in fired[0]["message"]
        used["pct"] = 0.0  # a new budget day
        ev.check()
        assert store.state(rule.id).armed
        used["pct"] = 81.0
        ev.check()
        assert len(alerts_seen(sub)) == 1


def test_a_claimed_firing_is_delivered_by_one_evaluator_only(tmp_path: Path) -> None:
    """Two evaluators on one store (as nodes on one Redis): one delivers each crossing."""
    clock = Clock()
    store_a = EmbeddedAlertStore(tmp_path / "alerts")
    store_b = EmbeddedAlertStore(tmp_path / "alerts")
    store_a.add(AlertRule.build(kind="above", symbol="AAPL:US", threshold="200"))
    bus_a, bus_b = EventBus(), EventBus()
    a, b = evaluator(store_a, bus_a, clock), evaluator(store_b, bus_b, clock)
    for price in ("201", "198", "203"):  # two crossings, both seen by both nodes
        bus_a.publish_quote(quote(price))
        bus_b.publish_quote(quote(price))
        a.drain()
        b.drain()
    assert a.fired + b.fired == 2
    assert store_a.state(1).fires == 2


def test_rules_added_or_removed_elsewhere_are_picked_up_at_the_next_check(
    store: EmbeddedAlertStore,
) -> None:
    bus, clock = EventBus(), Clock()
    ev = evaluator(store, bus, clock)
    rule = store.add(AlertRule.build(kind="above", symbol="AAPL:US", threshold="1"))
    bus.publish_quote(quote("2"))
    ev.drain()
    assert ev.fired == 0  # not known yet
    ev.check()
    bus.publish_quote(quote("3"))
    ev.drain()
    assert ev.fired == 1
    store.remove(rule.id)
    ev.check()
    assert ev.rules() == []


def test_a_symbol_without_rules_costs_one_lookup(store: EmbeddedAlertStore) -> None:
    bus, clock = EventBus(), Clock()
    store.add(AlertRule.build(kind="above", symbol="AAPL:US", threshold="1"))
    ev = evaluator(store, bus, clock)
    bus.publish_quote(quote("5", symbol="MSFT:US"))
    assert ev.statistics()["queued"] == 0


def test_crawler_watch_shows_an_alert_in_its_caption() -> None:
    from crawler.cli.watch import Board

    board = Board(["AAPL:US"])
    board.apply({"type": "alert", "rule": "AAPL:US above 200", "message": "AAPL:US at 201"}, 0.0)
    assert board.news == "ALERT AAPL:US above 200: AAPL:US at 201"


# -- delivery --------------------------------------------------------------------------------


def test_a_full_notify_queue_drops_instead_of_waiting() -> None:
    from crawler.alerts.notify import Notice, Notifier
    from tests.alert_receiver import Receiver

    with Receiver() as receiver:
        receiver.hold()
        notifier = Notifier(timeout_s=30, queue_size=2)
        notifier.start()
        url = (receiver.url(),)
        assert notifier.enqueue(Notice(url, "crawler alert: a", "first", 1))
        end = time.monotonic() + 10
        while receiver.in_flight == 0 and time.monotonic() < end:  # the worker holds it
            time.sleep(0.01)
        assert notifier.enqueue(Notice(url, "crawler alert: b", "second", 2))
        assert notifier.enqueue(Notice(url, "crawler alert: c", "third", 3))
        assert not notifier.enqueue(Notice(url, "crawler alert: d", "fourth", 4))  # at once
        assert notifier.statistics()["dropped"] == 1
        receiver.release()
        end = time.monotonic() + 10
        while notifier.statistics()["sent"] < 3 and time.monotonic() < end:
            time.sleep(0.01)
        notifier.stop(5)
    # The two that waited together went as one message.
    assert [n["title"] for n in receiver.notices] == ["crawler alert: a", "crawler: 2 alerts"]
    assert receiver.notices[1]["message"] == "b: second\nc: third"


def test_secrets_in_notify_urls_are_masked_everywhere_they_could_show() -> None:
    import logging

    from crawler.alerts.notify import SecretFilter, secret_parts, shown_url

    url = "tgram://123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ/98765"
    assert "AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ" not in shown_url(url)
    assert shown_url("mailto://me:Pa55word@example.com") == "mailto://me:****@example.com/"
    assert shown_url("nosuchservice://token@host/") == "nosuchservice://****"
    assert "Pa55word" in secret_parts("json://me:Pa55word@127.0.0.1:9/")
    scrubber = SecretFilter()
    scrubber.learn([url])
    record = logging.LogRecord(
        "apprise", logging.WARNING, __file__, 1, "posting to %s failed", (url,), None
    )
    scrubber.filter(record)
    assert "AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ" not in record.getMessage()


def test_a_hanging_target_holds_up_only_its_own_notices() -> None:
    from crawler.alerts.notify import Notice, Notifier
    from tests.alert_receiver import Receiver

    with Receiver() as stuck, Receiver() as fine:
        stuck.hold()
        notifier = Notifier(timeout_s=30)
        notifier.start()
        both = (stuck.url(), fine.url())
        for number in range(3):
            notifier.enqueue(Notice(both, f"crawler alert: {number}", "crossed", number))
        end = time.monotonic() + 20
        while notifier.statistics()["sent"] < 3 and time.monotonic() < end:
            time.sleep(0.01)
        # The fine target has all three while the stuck one still holds its first.
        assert fine.count() >= 1 and stuck.count() == 0 and stuck.in_flight == 1
        assert notifier.statistics()["sent"] == 3 and notifier.statistics()["lanes"] == 2
        stuck.release()
        notifier.stop(10)
    assert stuck.count() >= 1
