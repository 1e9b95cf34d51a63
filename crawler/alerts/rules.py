"""Alert rules and what one quote (or one look at the clock or the budget) does to them.

Pure: no store, no threads, no clock of its own. `crawler.alerts.evaluator` feeds quotes in
and acts on the decisions.

    rule = AlertRule.build(kind="above", symbol="AAPL:US", threshold="200")
    state = RuleState()                                  # armed, never fired
    decide_quote(rule, state, quote, band_pct=Decimal("0.5"))   # FIRE, REARM or None

The kinds, and when each fires and re-arms (the hysteresis band is `band_pct`, 0.5 % by
default, `[alerts] rearm_band_pct`):

    above P         fires at a price >= P; re-armed at a price <= P x (1 - band)
    below P         fires at a price <= P; re-armed at a price >= P x (1 + band)
    move N (close)  fires when the change from the previous close is >= N % either way;
                    re-armed once it is back under N - band points (never more than N / 2)
    move N (alert)  fires when the price has moved N % either way from the last alert's price
                    (at first, the first price seen); each firing moves that reference, so the
                    next alert needs another N % move: no re-arm step
    stale D         fires when no quote newer than the last one has landed for D while the
                    symbol's market is open; re-armed by the next newer quote
    budget N        fires when today's Bright Data spend reaches N % of the budget; re-armed
                    when it is back under N % (a new budget day)

Why a band: a price that hovers at the line (stream ticks move a liquid stock by a few
hundredths of a percent) would otherwise fire at every other tick. 0.5 % is well above tick
noise and well below a move anyone sets an alert for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Final

from crawler.normalizer.schemas import Quote, utc_now
from crawler.utils.exceptions import UsageError

__all__ = [
    "DEFAULT_BAND_PCT",
    "KINDS",
    "MOVE_BASES",
    "AlertRule",
    "Decision",
    "RuleState",
    "decide_budget",
    "decide_quote",
    "decide_stale",
    "format_duration",
    "move_pct",
    "parse_duration",
]

#: The hysteresis band, in percent of the line (see the module docstring).
DEFAULT_BAND_PCT: Final = Decimal("0.5")
KINDS: Final = ("above", "below", "move", "stale", "budget")
#: What a move is measured from: the previous close, or the price of the last alert.
MOVE_BASES: Final = ("close", "last-alert")
_MAX_PCT: Final = Decimal(1000)
_MIN_STALE_S: Final = 1
_MAX_STALE_S: Final = 7 * 86400
_HUNDRED: Final = Decimal(100)
_DURATION: Final = re.compile(r"(\d+)\s*([smhd])", re.IGNORECASE)
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Decision(Enum):
    """What a look at a rule calls for."""

    FIRE = "fire"
    REARM = "rearm"


def parse_duration(text: str) -> int:
    """Seconds from "90s", "15m", "2h", "1d", "1h30m" or a bare number of seconds;
    UsageError (exit 2) saying what is accepted."""
    raw = text.strip().lower()
    if raw.isdigit():
        return int(raw)
    parts = _DURATION.findall(raw)
    if not parts or _DURATION.sub("", raw).strip():
        raise UsageError(f"--stale {text!r}: use a duration like 90s, 15m, 2h, 1d or 1h30m")
    return sum(int(amount) * _UNIT_S[unit] for amount, unit in parts)


def format_duration(seconds: int) -> str:
    """90 -> "1m30s", 7200 -> "2h", 45 -> "45s"."""
    out, left = [], seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            out.append(f"{left // size}{unit}")
            left %= size
    return "".join(out) or "0s"


def _decimal(text: object, what: str) -> Decimal:
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        raise UsageError(f"{what} {text!r} is not a number; e.g. {what} 200") from None
    if not value.is_finite():
        raise UsageError(f"{what} {text!r} is not a finite number")
    return value


@dataclass(frozen=True)
class AlertRule:
    """One alert: `kind` with its `threshold` (a price, a percent) or `duration_s` (stale);
    `symbol` is None only for budget rules; `notify` holds Apprise URLs (secrets inside: show
    them only through `crawler.alerts.notify.shown_url`)."""

    id: int
    kind: str
    symbol: str | None
    threshold: Decimal | None = None
    duration_s: int | None = None
    basis: str | None = None  # move rules: "close" or "last-alert"
    notify: tuple[str, ...] = ()
    created_at: datetime = field(default_factory=utc_now)

    @classmethod
    def build(
        cls,
        *,
        kind: str,
        symbol: str | None = None,
        threshold: object = None,
        duration: str | int | None = None,
        basis: str | None = None,
        notify: tuple[str, ...] | list[str] = (),
        rule_id: int = 0,
        created_at: datetime | None = None,
    ) -> AlertRule:
        """A validated rule (id 0 until the store gives it one); UsageError naming the
        option at fault."""
        if kind not in KINDS:
            raise UsageError(f"unknown alert kind {kind!r}; one of {', '.join(KINDS)}")
        if kind == "budget":
            if symbol is not None:
                raise UsageError("--budget takes no symbol: the budget is the whole daemon's")
        elif symbol is None:
            raise UsageError(f"--{kind} needs a symbol, e.g. crawler alerts add AAPL:US --{kind} …")
        number: Decimal | None = None
        seconds: int | None = None
        if kind == "stale":
            seconds = duration if isinstance(duration, int) else parse_duration(str(duration))
            if not _MIN_STALE_S <= seconds <= _MAX_STALE_S:
                raise UsageError(f"--stale {format_duration(seconds)}: must be between 1s and 7d")
        else:
            number = _decimal(threshold, f"--{kind}")
            if number <= 0:
                raise UsageError(f"--{kind} {threshold}: must be more than 0")
            if kind == "budget" and number > _HUNDRED:
                raise UsageError(f"--budget {threshold}: a percent of the budget, 1 to 100")
            if kind == "move" and number > _MAX_PCT:
                raise UsageError(f"--move {threshold}: a percent, at most {_MAX_PCT}")
        if kind == "move":
            basis = basis or "close"
            if basis not in MOVE_BASES:
                raise UsageError(f"--from {basis!r}: one of {', '.join(MOVE_BASES)}")
        elif basis is not None:
            raise UsageError("--from applies to --move only")
        return cls(
            id=rule_id,
            kind=kind,
            symbol=symbol,
            threshold=number,
            duration_s=seconds,
            basis=basis,
            notify=tuple(notify),
            created_at=created_at or utc_now(),
        )

    def with_id(self, rule_id: int) -> AlertRule:
        """This rule under the id the store gave it."""
        return replace(self, id=rule_id)

    def describe(self) -> str:
        """One line: "AAPL:US above 200", "VOD:LN move 3% from close", "budget 80%"."""
        if self.kind == "budget":
            return f"budget {self.threshold}%"
        if self.kind == "stale":
            return f"{self.symbol} stale {format_duration(self.duration_s or 0)}"
        if self.kind == "move":
            return f"{self.symbol} move {self.threshold}% from {self.basis}"
        return f"{self.symbol} {self.kind} {self.threshold}"

    def to_record(self) -> dict[str, Any]:
        """The stored form (JSON-safe; the notify URLs in clear: the store is private)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "symbol": self.symbol,
            "threshold": None if self.threshold is None else str(self.threshold),
            "duration_s": self.duration_s,
            "basis": self.basis,
            "notify": list(self.notify),
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> AlertRule:
        """Inverse of `to_record`; ValueError / KeyError / TypeError on a malformed record."""
        threshold = data.get("threshold")
        return cls(
            id=int(data["id"]),
            kind=str(data["kind"]),
            symbol=data.get("symbol"),
            threshold=None if threshold is None else Decimal(str(threshold)),
            duration_s=None if data.get("duration_s") is None else int(data["duration_s"]),
            basis=data.get("basis"),
            notify=tuple(str(url) for url in data.get("notify") or ()),
            created_at=datetime.fromisoformat(str(data["created_at"])),
        )


@dataclass(frozen=True)
class RuleState:
    """Where a rule stands: `armed` (may fire), how many times it `fires`d (the cluster-wide
    claim of the next firing is "fires + 1"), the move-since-last-alert `reference` price, and
    the last firing's time and value."""

    armed: bool = True
    fires: int = 0
    reference: Decimal | None = None
    fired_at: datetime | None = None
    fired_value: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "armed": self.armed,
            "fires": self.fires,
            "reference": None if self.reference is None else str(self.reference),
            "fired_at": None if self.fired_at is None else self.fired_at.isoformat(),
            "fired_value": self.fired_value,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> RuleState:
        reference, fired_at = data.get("reference"), data.get("fired_at")
        return cls(
            armed=bool(data.get("armed", True)),
            fires=int(data.get("fires", 0)),
            reference=None if reference is None else Decimal(str(reference)),
            fired_at=None if fired_at is None else datetime.fromisoformat(str(fired_at)),
            fired_value=None if data.get("fired_value") is None else str(data["fired_value"]),
        )


def move_pct(rule: AlertRule, state: RuleState, quote: Quote) -> Decimal | None:
    """The move a move rule measures, in percent (signed), or None when it cannot be told."""
    if rule.basis == "last-alert":
        reference = state.reference
        if reference is None or reference == 0:
            return None
        return (quote.price / reference - 1) * _HUNDRED
    if quote.change_pct is not None:
        return quote.change_pct
    if quote.previous_close:
        return (quote.price / quote.previous_close - 1) * _HUNDRED
    return None


def decide_quote(
    rule: AlertRule, state: RuleState, quote: Quote, band_pct: Decimal = DEFAULT_BAND_PCT
) -> Decision | None:
    """What `quote` does to a price or move rule in `state`: FIRE, REARM or nothing."""
    line = rule.threshold
    if line is None or rule.kind not in ("above", "below", "move"):
        return None
    price = quote.price
    band = band_pct / _HUNDRED
    if rule.kind == "above":
        if state.armed and price >= line:
            return Decision.FIRE
        if not state.armed and price <= line * (1 - band):
            return Decision.REARM
        return None
    if rule.kind == "below":
        if state.armed and price <= line:
            return Decision.FIRE
        if not state.armed and price >= line * (1 + band):
            return Decision.REARM
        return None
    moved = move_pct(rule, state, quote)
    if moved is None:
        return None
    size = abs(moved)
    if rule.basis == "last-alert":
        return Decision.FIRE if size >= line else None
    if state.armed and size >= line:
        return Decision.FIRE
    if not state.armed and size < line - min(band_pct, line / 2):
        return Decision.REARM
    return None


def decide_stale(rule: AlertRule, state: RuleState, age_s: float | None) -> Decision | None:
    """A stale rule, given how long its symbol has gone without a newer quote while its market
    was open (None: the market is closed, nothing to say)."""
    if age_s is None or rule.duration_s is None:
        return None
    if state.armed and age_s >= rule.duration_s:
        return Decision.FIRE
    if not state.armed and age_s < rule.duration_s:
        return Decision.REARM
    return None


def decide_budget(rule: AlertRule, state: RuleState, used_pct: Decimal) -> Decision | None:
    """A budget rule, given the share of today's budget spent (percent)."""
    if rule.threshold is None:
        return None
    if state.armed and used_pct >= rule.threshold:
        return Decision.FIRE
    if not state.armed and used_pct < rule.threshold:
        return Decision.REARM
    return None
