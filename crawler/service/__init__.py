"""The service layer: what crawler can be asked to do, below the daemon and the offline CLI.

- `verbs.py`: `Operations`, the verbs (fetch, symbols, collect, backfill, history, export).
- `metrics.py`: the Prometheus recorder and the collector over the status document.

Import from the modules themselves; this package imports nothing, so `crawler status` stays
light (prometheus_client, pandas and yfinance load only where a verb needs them).
"""
