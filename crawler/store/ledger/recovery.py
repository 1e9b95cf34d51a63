"""The cluster ledger fails closed when Redis loses its data, and is rebuilt from the nodes.

Redis can forget (FLUSHALL, a restart without persistence, eviction). The day's spend and the
24-hour window are then gone from Redis, but every node still knows what *it* paid: each keeps,
in its own data dir, a durable record of its own reservations (`SpendRecord`, in
`crawler.store.ledger.spend_record`), written before the reservation is asked for (a crash in
between over-counts: the safe side), plus the last cluster total and clock it saw and the
peers it saw alive.

An *epoch* key marks data Redis still holds. It has no expiry and is created once per cluster:

    crawler:ledger:epoch      hash id, state ("ok" | "recovering"), since_us (Redis TIME),
                              by (the node that noticed), reason, adopted ("1": not a loss)
    crawler:ledger:reports    hash node -> its report (JSON), for the current epoch
    crawler:ledger:expected   set  the nodes whose report the epoch waits for

A node that finds the epoch gone while it remembers one (or remembers spend), or finds today's
day key or the clock key gone while it remembers them under the current epoch, starts a new
epoch in state "recovering". While an epoch recovers, the reserve script refuses every paid
request. Each node reports once per epoch, before its first reservation under it (and from
its heartbeat, so an idle node reports within one beat): its own spend per day, its own
per-minute window buckets, the highest cluster total it saw and the cluster clock it saw. The
report script re-seeds each day as max(sum of the nodes' own spends, highest total any node
saw), restores the window as the sum of the nodes' buckets (plus any part of the seed no node
claimed, at the current minute), and restores the clock (the latest day any node saw, so a
changed BUDGET_TIMEZONE cannot open a fresh day). The epoch turns "ok" once every expected
node has reported: the reporters, every peer a reporter saw alive before the loss, and every
node beating now; and not before RECOVERY_GRACE_S (two heartbeats: the heartbeat keys went
with the loss, and a live node must have had the time to beat again). Until then no node
pays; a node that never reports keeps the cluster on free sources (status says who is
missing; start it, or give it up with `SREM` if its data is lost).

A cluster with no epoch and no clock key is new (nothing to recover) when the node remembers
nothing; an existing clock without an epoch is a cluster from before epochs (adopted: reports
are kept but add nothing).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from crawler.logging import get_logger
from crawler.store.ledger.scripts import ADOPT_LUA, BEGIN_LUA, COMPLETE_LUA, REPORT_LUA
from crawler.store.ledger.spend_record import SpendRecord, encode_report
from crawler.store.ledger.terms import DAYS_KEPT, WHAT, WINDOW_MINUTES
from crawler.store.redis_client import RedisConnection, text_map
from crawler.utils.clock import epoch_us as _us
from crawler.utils.clock import from_epoch_us as _from_us
from crawler.utils.exceptions import StorageError, StoreUnavailableError

__all__ = [
    "DAY_KEY_TTL_S",
    "RECOVERY_GRACE_S",
    "RECOVERY_WAIT_S",
    "RecoveryGate",
]

log = get_logger("crawler.ledger")

#: After this long, a recovery still waiting for a node says so loudly in status.
RECOVERY_WAIT_S: Final = 60.0
#: A recovery lasts at least this long: Redis lost the heartbeats too, and every live node
#: beats (HEARTBEAT_S, 10 s) within it, so the recovery knows whom to wait for.
RECOVERY_GRACE_S: Final = 20.0
#: Day keys (and the window) expire this long after their last write: roll-over needs no job.
DAY_KEY_TTL_S: Final = (DAYS_KEPT + 1) * 86_400
#: Gate answers acted on per call before giving up (each is one epoch change met).
GATE_TRIES: Final = 4


class RecoveryGate:
    """The epoch's gate for one node: read it, adopt or begin an epoch, report this node's
    spend to it, complete it. `real_minute` is the node's real-time minute (the window's)."""

    def __init__(
        self,
        redis: RedisConnection,
        spend: SpendRecord,
        node: str,
        live_nodes: Callable[[], list[str]],
        grace_s: float,
        now: Callable[[], datetime],
        real_minute: Callable[[], int],
    ) -> None:
        self._redis = redis
        self._spend = spend
        self.node = node
        self._live_nodes = live_nodes
        self._grace_us = int(grace_s * 1_000_000)
        self._now = now
        self._real_minute = real_minute
        self._adopt_script = redis.script("ledger_epoch_adopt", ADOPT_LUA)
        self._begin_script = redis.script("ledger_epoch_begin", BEGIN_LUA)
        self._report_script = redis.script("ledger_epoch_report", REPORT_LUA)
        self._complete_script = redis.script("ledger_epoch_complete", COMPLETE_LUA)
        self.epoch_key = redis.key("ledger", "epoch")
        self._reports_key = redis.key("ledger", "reports")
        self._expected_key = redis.key("ledger", "expected")
        self._clock_key = redis.key("ledger", "clock")
        self._window_key = redis.key("ledger", "window")
        self._day_prefix = redis.key("ledger", "day", "")

    def read(self) -> tuple[int, str]:
        """The gate's code for this node now (as the reserve script would answer) and the
        epoch id Redis holds."""
        with self._redis.errors(WHAT):
            epoch = text_map(self._redis.client.hgetall(self.epoch_key))
        found = epoch.get("id", "")
        if not found:
            return -1, ""
        if found != self._spend.epoch():
            return -2, found
        if epoch.get("state") != "ok":
            return -3, found
        return 1, found

    def wait_open(self) -> None:
        """Act on the gate until it is open for this node (at most GATE_TRIES answers);
        raises StoreUnavailableError while the cluster's spend is being recovered."""
        for _ in range(GATE_TRIES):
            code, found = self.read()
            if code > 0:
                return
            self.enter(code, found)

    def enter(self, code: int, found: str) -> None:
        """Act on the gate's answer: adopt or begin an epoch, report to it, try to complete
        it. Returns when a reservation may be tried again; raises StoreUnavailableError while
        the cluster's spend is not known."""
        if code == -1:
            if self._spend.epoch() or self._spend.has_spend():
                found = self._begin("Redis holds no ledger epoch (flushed or restarted empty)", "")
            else:
                mine = uuid.uuid4().hex
                found = str(self._call(self._adopt_script, [self.epoch_key, self._clock_key],
                                       [mine, self.node]))  # fmt: skip
                if found == mine:  # a new cluster (or one from before epochs): ours, and ok
                    self._spend.set_epoch(found)
                return  # another node's epoch: the next try meets it (-2) and reports
        elif code == -4:
            found = self._begin("Redis lost today's ledger keys (evicted?)", found)
        if code in (-1, -2, -3, -4) and found != self._spend.epoch():
            # Not when this node is on `found` already: another of its threads or processes
            # adopted it, or reported to it, after the script answered; a report now would
            # count again the spend Redis holds.
            self._report(found)
        state = self._complete(found)
        if state["state"] == "recovering":
            raise StoreUnavailableError(_recovering_message(state))

    def status(self) -> dict[str, Any]:
        """`RedisLedger.recovery_status()`: whether the cluster's spend is known."""
        with self._redis.errors(WHAT):
            epoch = text_map(self._redis.client.hgetall(self.epoch_key))
            reported = sorted(str(n) for n in self._redis.client.hkeys(self._reports_key))
        found = epoch.get("id", "")
        if not found:
            return {"state": "no epoch", "waiting_for": [], "reported": [], "timed_out": False}
        if epoch.get("state") == "ok":
            out: dict[str, Any] = {
                "state": "ok",
                "epoch": found,
                "reason": epoch.get("reason"),
                # whom a recovery would wait for, as this node last saw them beating
                "peers": self._spend.peers(),
            }
            if epoch.get("completed_us"):
                out["recovered_at"] = _from_us(int(epoch["completed_us"])).isoformat()
                out["reported"] = reported
            return out
        state = self._complete(found)
        state["reported"] = reported
        state["timed_out"] = float(state.get("waited_s", 0)) >= RECOVERY_WAIT_S
        state["message"] = _recovering_message(state)
        return state

    def recovering(self) -> bool:
        """Whether nothing may be spent: the epoch recovers, or is gone while this node
        remembers one (or remembers spend)."""
        with self._redis.errors(WHAT):
            epoch = text_map(self._redis.client.hgetall(self.epoch_key))
        if epoch:
            return epoch.get("state") != "ok"
        return bool(self._spend.epoch() or self._spend.has_spend())

    def _begin(self, reason: str, lost: str) -> str:
        """Start a recovering epoch, unless Redis holds another than `lost` ('': any) already;
        returns the epoch Redis holds now."""
        mine = uuid.uuid4().hex
        found = str(self._call(
            self._begin_script,
            [self.epoch_key, self._reports_key, self._expected_key, self._clock_key,
             self._window_key],
            [mine, self.node, reason, lost, _us(self._now()), self._day_prefix],
        ))  # fmt: skip
        if found == mine:
            log.warning("ledger recovery: Redis lost the cluster's spend; no paid request until "
                        "every node has reported its own", reason=reason, epoch=found)  # fmt: skip
        return found

    def _report(self, epoch: str) -> None:
        """Tell `epoch` what this node paid (once per epoch), then remember it."""
        now_us = _us(self._now())
        report = self._spend.report(self._spend.peers(), now_us)
        applied = int(self._call(
            self._report_script,
            [self.epoch_key, self._reports_key, self._expected_key, self._clock_key,
             self._window_key],
            [epoch, self.node, encode_report(report), self._day_prefix,
             self._real_minute(), DAY_KEY_TTL_S, WINDOW_MINUTES],
        ))  # fmt: skip
        if applied == 0:
            return  # another epoch began meanwhile: the next try reports to it
        self._spend.set_epoch(epoch)
        if applied == 1:
            log.info("ledger recovery: reported this node's spend", epoch=epoch,
                     days=report["days"], seen=report["seen"])  # fmt: skip

    def _complete(self, epoch: str) -> dict[str, Any]:
        """Add the nodes beating now to the epoch's expected set; turn it "ok" once every
        expected node has reported. Returns recovery_status()'s shape."""
        try:
            live = list(self._live_nodes())
        except StorageError:
            live = []
        reply = self._call(self._complete_script,
                           [self.epoch_key, self._reports_key, self._expected_key],
                           [epoch, _us(self._now()), self._grace_us, *live])  # fmt: skip
        parts = [str(part) for part in reply]
        if parts[0] == "gone":
            return {"state": "changing", "epoch": epoch, "waiting_for": []}
        since = _from_us(int(parts[1] or 0))
        return {
            "state": parts[0],
            "epoch": epoch,
            "since": since.isoformat(),
            "reason": parts[2],
            "noticed_by": parts[3],
            "waiting_for": sorted(parts[4:]),
            "waited_s": max(0.0, (self._now() - since).total_seconds()),
        }

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        with self._redis.errors(WHAT):
            return script(keys=keys, args=args)


def _recovering_message(state: dict[str, Any]) -> str:
    waiting = ", ".join(state.get("waiting_for") or []) or "(none)"
    text = (
        f"{WHAT}: Redis lost the cluster's spend ({state.get('reason') or 'data lost'}); no "
        f"paid request until every node has reported its own: waiting for {waiting}"
    )
    if float(state.get("waited_s", 0)) >= RECOVERY_WAIT_S:
        text += (
            f" for {int(float(state['waited_s']))} s; start that node (it reports from its data "
            "dir), or if its data is lost for good give up on it with "
            "`redis-cli SREM crawler:ledger:expected NODE` (its spend today is then unknown)"
        )
    return text
