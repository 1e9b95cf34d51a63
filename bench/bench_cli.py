"""Benchmark 3, the CLI: wall time of `crawler status` (against a running daemon) and
`crawler --help`, median of 20 runs each, versus `python -c pass` (the interpreter's own start).
Then `python -X importtime -m crawler status`: the import log must show none of pandas,
yfinance, curl_cffi, apscheduler (the heavy libraries only the daemon needs).
Also `crawler status` with 1,000 symbols tracked (median of 5): its answer grows with the
watchlist, so this one is reported, not held to the target.
Target: `status` median (empty watchlist) at most 200 ms on this machine, and none of those
imports.

    python bench/bench_cli.py [--quick] [--runs 20]
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    DaemonProcess,
    fake_market,
    finish,
    generated_symbols,
    median,
    parser,
    percentile,
    ratio,
)

__all__ = ["main", "parse_importtime"]

TARGET_STATUS_MS = 200.0
FORBIDDEN_IMPORTS = ("pandas", "yfinance", "curl_cffi", "apscheduler")


def _run_s(command: Sequence[str], env: Mapping[str, str], cwd: Path) -> float:
    """Wall seconds of one run; raises if the command fails."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}: "
            f"{done.stderr.decode(errors='replace')[-800:]}"
        )
    return elapsed


def parse_importtime(log: str) -> dict[str, tuple[int, int]]:
    """`-X importtime` lines → {module: (self µs, cumulative µs)}."""
    modules: dict[str, tuple[int, int]] = {}
    for line in log.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        fields = [part.strip() for part in line[len("import time:") :].split("|")]
        if len(fields) != 3 or not fields[0].isdigit():
            continue  # the header line
        modules[fields[2]] = (int(fields[0]), int(fields[1]))
    return modules


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--runs", type=int, default=20)
    args_parser.add_argument(
        "--watchlist", type=int, default=1000, help="symbols for the second status figure"
    )
    args = args_parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    watchlist = 20 if args.quick else args.watchlist
    watchlist_runs = 2 if args.quick else 5
    python = sys.executable
    commands: dict[str, list[str]] = {
        "python_pass": [python, "-c", "pass"],
        "crawler_help": [python, "-m", "crawler", "--help"],
        "crawler_status": [python, "-m", "crawler", "status"],
    }
    with fake_market() as market, DaemonProcess(market) as daemon:
        env, cwd = daemon.env, daemon.data_dir
        for command in commands.values():  # warm the page cache and .pyc files
            _run_s(command, env, cwd)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):  # interleaved, so drift hits every command alike
            for name, command in commands.items():
                times[name].append(_run_s(command, env, cwd))
        # Then the same `status` with a full watchlist: the daemon's answer grows with it.
        daemon.add_symbols(generated_symbols(watchlist))
        daemon.collect()
        _run_s(commands["crawler_status"], env, cwd)  # warm-up: the daemon loads calendars
        full = [_run_s(commands["crawler_status"], env, cwd) for _ in range(watchlist_runs)]
        traced = subprocess.run(
            [python, "-X", "importtime", "-m", "crawler", "status"],
            env=env,
            cwd=cwd,
            capture_output=True,
            check=False,
            text=True,
        )
    modules = parse_importtime(traced.stderr)
    top_level = {name.strip().split(".")[0] for name in modules}
    forbidden = sorted(name for name in FORBIDDEN_IMPORTS if name in top_level)
    heaviest = sorted(
        ((name.strip(), cumulative) for name, (_, cumulative) in modules.items()),
        key=lambda item: -item[1],
    )
    top_packages = [(name, us) for name, us in heaviest if "." not in name and name != "crawler"][
        :8
    ]
    imports_ms = sum(self_us for self_us, _ in modules.values()) / 1000

    ms = {name: median(values) * 1000 for name, values in times.items()}
    p90 = {name: percentile(values, 90) * 1000 for name, values in times.items()}
    print(f"CLI wall time, median of {runs} runs (p90 in brackets)")
    for name in commands:
        print(f"  {name:<16} {ms[name]:7.1f} ms  ({p90[name]:.1f})")
    full_ms = median(full) * 1000
    print(f"  status, {watchlist} symbols tracked: {full_ms:.1f} ms (median of {len(full)})")
    status_vs_python = ratio(ms["crawler_status"], ms["python_pass"])
    help_vs_python = ratio(ms["crawler_help"], ms["python_pass"])
    print(f"  status / python  {status_vs_python:7.2f}x   help / python {help_vs_python:.2f}x")
    print(f"  -X importtime: {len(modules)} modules, {imports_ms:.0f} ms of imports in total")
    print(
        "  heaviest top-level imports: "
        + ", ".join(f"{n} {us / 1000:.0f} ms" for n, us in top_packages)
    )
    own = [(name, us) for name, us in heaviest if name.startswith("crawler.")][:5]
    print(
        "  heaviest crawler modules (cumulative): "
        + ", ".join(f"{name} {us / 1000:.0f} ms" for name, us in own)
    )
    print(f"  forbidden imports present: {', '.join(forbidden) or 'none'}")
    figures: dict[str, Any] = {
        "runs": runs,
        "python_pass_ms": round(ms["python_pass"], 1),
        "help_ms": round(ms["crawler_help"], 1),
        "status_ms": round(ms["crawler_status"], 1),
        "status_p90_ms": round(p90["crawler_status"], 1),
        "status_vs_python": status_vs_python,
        "help_vs_python": help_vs_python,
        "watchlist_symbols": watchlist,
        "status_watchlist_ms": round(full_ms, 1),
        "status_import_ms": round(imports_ms, 1),
        "status_modules": len(modules),
        "heavy_imports": forbidden,
        "status_importtime_rc": traced.returncode,
    }
    return finish(
        "cli",
        figures,
        target=f"status_ms <= {TARGET_STATUS_MS:g} and no {'/'.join(FORBIDDEN_IMPORTS)} imported",
        met=ms["crawler_status"] <= TARGET_STATUS_MS and not forbidden and traced.returncode == 0,
    )


if __name__ == "__main__":
    sys.exit(main())
