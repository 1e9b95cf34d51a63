"""Benchmark 5, the control socket under load: GET /status requests per second from 8
concurrent clients (threads, each with its own ControlClient) while a collection runs — N
symbols (1,000; --quick 100) at 50 ms fake-market latency — versus the same with the daemon idle.

Both phases see the same daemon state: the watchlist is added and one collection is run first
(so every symbol has a last quote to show), CACHE_TTL_SECONDS=1 so the measured collection
fetches again. The busy window starts once the collection is under way and must end before it
does (`busy_window_inside_collection`).
Reported: requests/s and latency percentiles of both phases, and busy/idle throughput ratio;
the same for GET /health (cheap: the socket server's own responsiveness, without the cost of
building the status, which grows with the watchlist).

    python bench/bench_socket.py [--quick] [--clients 8] [--seconds 3] [--symbols 1000]
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    DaemonProcess,
    fake_market,
    finish,
    generated_symbols,
    parser,
    percentile,
    ratio,
)

__all__ = ["main"]

#: No hard target in the issue; the ratio is reported. Below this, `met` is false.
TARGET_BUSY_VS_IDLE = 0.5


def _hammer(
    daemon: DaemonProcess, path: str, clients: int, seconds: float
) -> tuple[float, list[float]]:
    """`clients` threads GET `path` for `seconds`; returns (answers/s completed inside the
    window, latencies in s of those answers)."""
    stop = threading.Event()
    start = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []

    def worker(mine: list[float]) -> None:
        client = daemon.client
        start.wait()
        while not stop.is_set():
            began = time.perf_counter()
            status, _ = client.get(path)
            if status != 200:
                failures.append(f"HTTP {status}")
                return
            if not stop.is_set():  # answers that arrive after the window do not count
                mine.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in latencies]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"GET {path} failed: {failures[0]}")
    every = [value for mine in latencies for value in mine]
    if not every:
        raise RuntimeError(f"no GET {path} finished within {seconds:g} s; use --seconds")
    return len(every) / seconds, every


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--clients", type=int, default=8)
    args_parser.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    args_parser.add_argument("--symbols", type=int, default=1000)
    args_parser.add_argument("--latency-ms", type=float, default=50.0)
    args = args_parser.parse_args(argv)
    n, seconds = (100, 1.0) if args.quick else (args.symbols, args.seconds)
    clients = args.clients
    env = {"CACHE_TTL_SECONDS": "1"}
    paths = {"status": "/status", "health": "/health"}
    rates: dict[str, float] = {}
    latencies: dict[str, list[float]] = {}
    with fake_market(args.latency_ms / 1000) as market, DaemonProcess(market, env) as daemon:
        daemon.add_symbols(generated_symbols(n))
        first = daemon.collect()
        print(
            f"control socket, {clients} clients x {seconds:g} s per phase, {n} symbols at "
            f"{args.latency_ms:g} ms; a collection takes {first['duration_s']:.2f} s"
        )
        for path in paths.values():  # warm up: market calendars load on the first status
            daemon.client.get(path)
        time.sleep(1.05)  # past the cache TTL, so the measured collection fetches again
        for name, path in paths.items():
            rates[f"idle_{name}"], latencies[f"idle_{name}"] = _hammer(
                daemon, path, clients, seconds
            )

        report: dict[str, Any] = {}

        def collect() -> None:
            report.update(daemon.collect())

        collector = threading.Thread(target=collect)
        collector.start()
        time.sleep(min(0.2, first["duration_s"] / 10))  # let the collection get going
        for name, path in paths.items():
            rates[f"busy_{name}"], latencies[f"busy_{name}"] = _hammer(
                daemon, path, clients, seconds
            )
        inside = collector.is_alive()
        collector.join()
    busy_vs_idle = ratio(rates["busy_status"], rates["idle_status"])
    health_busy_vs_idle = ratio(rates["busy_health"], rates["idle_health"])
    figures: dict[str, Any] = {
        "clients": clients,
        "seconds": seconds,
        "symbols": n,
        "idle_rps": round(rates["idle_status"], 1),
        "busy_rps": round(rates["busy_status"], 1),
        "busy_vs_idle": busy_vs_idle,
    }
    for key, values in latencies.items():
        phase, name = key.split("_")
        prefix = phase if name == "status" else f"health_{phase}"
        figures[f"{prefix}_p50_ms"] = round(percentile(values, 50) * 1000, 2)
        figures[f"{prefix}_p99_ms"] = round(percentile(values, 99) * 1000, 2)
    figures.update(
        {
            "health_idle_rps": round(rates["idle_health"], 1),
            "health_busy_rps": round(rates["busy_health"], 1),
            "health_busy_vs_idle": health_busy_vs_idle,
            "collection_s": report.get("duration_s"),
            "collection_quotes": report.get("quotes"),
            "busy_window_inside_collection": inside,
        }
    )
    for key in ("idle_status", "busy_status", "idle_health", "busy_health"):
        phase, name = key.split("_")
        prefix = phase if name == "status" else f"health_{phase}"
        print(
            f"  {name:<6} {phase:<5} {rates[key]:8.1f} /s   p50 "
            f"{figures[f'{prefix}_p50_ms']:8.2f} ms   p99 {figures[f'{prefix}_p99_ms']:8.2f} ms"
        )
    print(
        f"  busy / idle: status {busy_vs_idle:.3f}x, health {health_busy_vs_idle:.3f}x "
        f"(the measured collection took {report.get('duration_s', 0):.2f} s; "
        f"windows inside it: {inside})"
    )
    return finish(
        "socket",
        figures,
        target=f"busy_vs_idle >= {TARGET_BUSY_VS_IDLE} (no target in the issue: reported)",
        met=busy_vs_idle >= TARGET_BUSY_VS_IDLE,
    )


if __name__ == "__main__":
    sys.exit(main())
