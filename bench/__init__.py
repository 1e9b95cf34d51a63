"""Benchmarks for crawler, run against the fake market only (127.0.0.1, never the internet).

    python -m bench                      # every benchmark; writes bench/results/latest.json
    python -m bench cache collection     # some of them
    python -m bench --quick              # tiny sizes (what tests/test_bench_smoke.py runs)
    python bench/bench_cache.py          # one benchmark on its own

Every figure is a ratio against a baseline measured in the same run (the machines are noisy),
and every benchmark ends its output with one line of JSON:
`{"bench": "...", ...figures..., "target": "...", "met": true}`.
"""
