"""Alerts: rules on prices, moves, stale quotes and the budget, fired once per crossing.

rules      `AlertRule`, `RuleState` and the pure decisions (hysteresis)
store      rules and states: embedded in the data dir, or on the cluster's Redis
evaluator  `AlertEvaluator`: looks at every landed quote, claims and delivers firings
notify     Apprise delivery on its own thread; notify URLs masked wherever shown
service    `AlertService`: the verbs behind `crawler alerts` and the control routes
"""

from __future__ import annotations

__all__: list[str] = []
