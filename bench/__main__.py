"""Run the benchmarks, each in its own process, and collect their final JSON lines.

    python -m bench                          # all of them
    python -m bench cache collection         # some of them
    python -m bench --quick                  # tiny sizes: does each one run?

Every benchmark's output is passed through as it comes; its last line (JSON) is collected into
bench/results/latest.json: {"started_at": ..., "python": ..., "quick": ..., "results": {...}}.
A benchmark that crashes or prints no JSON is recorded as {"bench": name, "error": ...}.
Exit status: 0 when every benchmark ran (met or not), 1 when one crashed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "last_json_line", "main"]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "results" / "latest.json"

#: name → script, in the order they run by default.
BENCHMARKS: dict[str, str] = {
    "cache": "bench_cache.py",
    "collection": "bench_collection.py",
    "cli": "bench_cli.py",
    "memory": "bench_memory.py",
    "socket": "bench_socket.py",
    "http": "bench_http.py",
    "status": "bench_status.py",
    "export": "bench_export.py",
    "market_hours": "bench_market_hours.py",
    "stream": "bench_stream.py",
    "yahoo": "bench_yahoo.py",
    "pacing": "bench_pacing.py",
    "firstday": "bench_firstday.py",
    "cluster": "bench_cluster.py",
    "dashboard": "bench_dashboard.py",
    "backfill": "bench_backfill.py",
    "alerts": "bench_alerts.py",
}

#: Quick-mode arguments for the scripts that do not take --quick; every other one does (most
#: through `bench._common.parser`, so the flag's name is not in their text to be looked for).
QUICK_FALLBACK: dict[str, list[str]] = {"export": ["--rows", "20000"], "market_hours": []}


def last_json_line(output: str) -> dict[str, Any] | None:
    """The last line of `output` that parses as a JSON object, or None."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _arguments(name: str, script: Path, quick: bool) -> list[str]:
    if not quick:
        return []
    return QUICK_FALLBACK.get(name, ["--quick"])


def run_one(name: str, quick: bool, timeout_s: float) -> dict[str, Any]:
    """Run one benchmark script; returns its final JSON object (or an error record)."""
    script = BENCH_DIR / BENCHMARKS[name]
    if not script.is_file():
        return {"bench": name, "error": f"{script.name} does not exist yet"}
    command = [sys.executable, str(script), *_arguments(name, script, quick)]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    lines: list[str] = []
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            print("   " + line, end="", flush=True)
            lines.append(line)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return {"bench": name, "error": f"timed out after {timeout_s:g}s"}
    finally:
        process.stdout.close()
    elapsed_s = round(time.perf_counter() - started, 1)
    result = last_json_line("".join(lines))
    if process.returncode != 0 or result is None:
        tail = "".join(lines[-5:]).strip()
        return {
            "bench": name,
            "error": f"exit status {process.returncode}; no final JSON line"
            if result is None
            else f"exit status {process.returncode}",
            "tail": tail,
            "elapsed_s": elapsed_s,
        }
    result.setdefault("bench", name)  # a script that forgot to name itself
    result["elapsed_s"] = elapsed_s
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="results file")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    results = {name: run_one(name, args.quick, args.timeout) for name in names}
    report = {
        "started_at": started_at,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quick": args.quick,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")

    print("\nsummary")
    for name, result in results.items():
        if "error" in result:
            verdict = f"ERROR: {result['error']}"
        elif "met" not in result:
            verdict = "ran (it reports no target)"
        else:
            verdict = f"{'met' if result['met'] else 'NOT met'}: {result.get('target', '-')}"
        print(f"  {name:<14} {verdict}")
    print(f"written to {args.output}")
    crashed = [r for r in results.values() if "error" in r and "does not exist" not in r["error"]]
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
