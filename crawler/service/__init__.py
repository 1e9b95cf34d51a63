"""The service layer: what crawler can be asked to do, below the daemon and the offline CLI.

- `verbs.py`: `Operations`, the verbs (fetch, symbols, collect, backfill, status, budget...);
  `fetching.py` its fetch's helpers (who is told, what is recorded).
- `status.py`: the status document; `budget.py`: the money answer.
- `exports.py`: the history verbs (`HistoryVerbs`, a base of Operations) and exports.
- `metrics.py`: the Prometheus recorder and registry; `status_metrics.py` the status
  document as families. The port that serves them is `crawler.daemon.metrics_port`.
- `backfill.py`: backfills run one at a time (`BackfillRuns`).
- `answers.py`: what answers are made of; `parts.py`: the node parts the views read.

Import from the modules themselves; this package imports nothing, so `crawler status` stays
light (prometheus_client, pandas and yfinance load only where a verb needs them).
"""
