"""Benchmark: what alerts cost a collection, and that a bad notify target costs it nothing more.

One real daemon (the fake market at 50 ms, 16 workers, the stream off, a cache TTL of 1 s)
collects the same N symbols (200; --quick 20) per round, every quote fetched again (the TTL has
run out), interleaved over four set-ups (ABCD, then DCBA):

  none      no alert rules
  fast      a rule on each of K of the symbols (20; --quick 5), each firing at the symbol's
            first quote (K firings per collection: a market gapping past many lines at
            once), notices to a local receiver that answers at once
  hanging   the same, to a receiver that never answers (the notify thread blocks on its first
            notice for the whole bench; the queue fills and drops, logged)
  refusing  the same, to a port where nothing listens (every notice fails at once)

An untimed warm-up collection comes first. Figures per set-up: the collection's wall time
(POST /collect until its report, median and min of the rounds) and the daemon's CPU time per
quote (utime + stime from /proc), each as a ratio to `none` from the same rounds. Target: a
hanging or refusing target costs a collection nothing it can see: median wall time at most
1.25x `none`'s (the slack is the shared machine's noise; the fast target is the reference for
what the firings themselves cost).

    python bench/bench_alerts.py [--quick] [--symbols 200] [--firing 20] [--rounds 8]
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DaemonProcess, fake_market, finish, median, parser, ratio

__all__ = ["main"]

TARGET_RATIO = 1.25
CACHE_TTL_S = 1
SETUPS = ("none", "fast", "hanging", "refusing")


class _Receiver:
    """A local HTTP target for Apprise's json://: answers at once, or holds every request."""

    def __init__(self, hang: bool) -> None:
        release = self.release = threading.Event()
        self.count = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if hang:
                    release.wait()
                receiver.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"json://127.0.0.1:{port}/hook"


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(predicate: Any, what: str, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _one_round(
    daemon: DaemonProcess,
    setup: str,
    symbols: list[str],
    url: str | None,
    firing: int,
    last_end_s: float,
) -> dict[str, Any]:
    client = daemon.client
    for alert in client.call("GET", "/alerts")["alerts"]:  # untimed: fresh rules each round
        client.delete(f"/alerts/{alert['id']}")
    if url is not None:
        for symbol in symbols[:firing]:
            body = {"kind": "above", "symbol": symbol, "threshold": "0.0001", "notify": [url]}
            client.call("POST", "/alerts", body)
    want = firing if url is not None else 0
    _wait(lambda: client.call("GET", "/alerts")["evaluator"]["rules"] == want, "rules loaded")
    # The cached quotes (TTL 1 s) must have expired: every symbol is fetched again.
    while time.monotonic() < last_end_s + CACHE_TTL_S + 0.2:
        time.sleep(0.05)
    fired_before = client.call("GET", "/alerts")["evaluator"]["fired"]
    cpu_before = _cpu_s(daemon.pid)
    started = time.perf_counter()
    report = daemon.collect()
    wall_s = time.perf_counter() - started
    cpu_s = _cpu_s(daemon.pid) - cpu_before
    if report.get("quotes") != len(symbols):
        raise RuntimeError(f"{setup}: the collection got {report.get('quotes')} quotes")
    if url is not None:  # every rule fired (claimed, logged, queued), collection or not
        _wait(
            lambda: client.call("GET", "/alerts")["evaluator"]["fired"] - fired_before == want,
            "every firing",
        )
    return {
        "wall_s": wall_s,
        "cpu_ms_per_quote": cpu_s * 1000 / len(symbols),
        "end_s": time.monotonic(),
        "sources": report.get("sources"),
    }


def main() -> int:
    args_parser = parser(__doc__ or "")
    args_parser.add_argument("--symbols", type=int, default=200)
    args_parser.add_argument("--firing", type=int, default=20)
    args_parser.add_argument("--rounds", type=int, default=8)
    args = args_parser.parse_args()
    count, firing, rounds = (20, 5, 1) if args.quick else (args.symbols, args.firing, args.rounds)
    fast, hanging = _Receiver(hang=False), _Receiver(hang=True)
    urls: dict[str, str | None] = {
        "none": None,
        "fast": fast.url,
        "hanging": hanging.url,
        "refusing": _closed_port_url(),
    }
    results: dict[str, list[dict[str, Any]]] = {setup: [] for setup in SETUPS}
    env = {
        "STREAM_ENABLED": "false",
        "MAX_WORKERS": "16",
        "ALERTS_CHECK_INTERVAL_SECONDS": "0.2",
        "ALERTS_NOTIFY_TIMEOUT_SECONDS": "300",  # the hanging target holds a notice that long
        "CACHE_TTL_SECONDS": str(CACHE_TTL_S),
    }
    try:
        with fake_market(latency_s=0.05) as market, DaemonProcess(market, env) as daemon:
            # The same symbols every round (a watchlist that grows slows every collection
            # a little; that drift is not what is measured here).
            symbols = [f"A{i:04d}:US" for i in range(count)]
            daemon.add_symbols(symbols)
            # Untimed: the first collection loads the sources (imports, Yahoo's cookie), the
            # first rule Apprise; neither belongs to a set-up's figures.
            warm = _one_round(daemon, "warm-up", symbols, fast.url, firing, 0.0)
            print(f"warm-up: sources {warm['sources']}", flush=True)
            last_end_s = float(warm["end_s"])
            for round_no in range(rounds):
                order = SETUPS if round_no % 2 == 0 else tuple(reversed(SETUPS))
                for setup in order:
                    figures = _one_round(daemon, setup, symbols, urls[setup], firing, last_end_s)
                    results[setup].append(figures)
                    last_end_s = float(figures["end_s"])
                    print(
                        f"round {round_no + 1} {setup:9s} {figures['wall_s']:.3f} s "
                        f"{figures['cpu_ms_per_quote']:.3f} ms CPU/quote",
                        flush=True,
                    )
            notices = daemon.client.call("GET", "/alerts")["evaluator"]["notices"]
    finally:
        fast.close()
        hanging.close()
    walls = {setup: [r["wall_s"] for r in results[setup]] for setup in SETUPS}
    cpus = {setup: [r["cpu_ms_per_quote"] for r in results[setup]] for setup in SETUPS}
    base_wall, base_cpu = median(walls["none"]), median(cpus["none"])
    figures: dict[str, Any] = {
        "symbols": count, "firing": firing, "rounds": rounds, "notices": notices
    }  # fmt: skip
    for setup in SETUPS:
        figures[setup] = {
            "wall_s_median": round(median(walls[setup]), 3),
            "wall_s_min": round(min(walls[setup]), 3),
            "cpu_ms_per_quote_median": round(median(cpus[setup]), 3),
            "wall_vs_none": ratio(median(walls[setup]), base_wall),
            "wall_min_vs_none_min": ratio(min(walls[setup]), min(walls["none"])),
            "cpu_vs_none": ratio(median(cpus[setup]), base_cpu),
        }
    figures["fast_notices_received"] = fast.count
    met = all(figures[setup]["wall_vs_none"] <= TARGET_RATIO for setup in ("hanging", "refusing"))
    return finish(
        "alerts",
        figures,
        f"a hanging or refusing notify target: median collection <= {TARGET_RATIO}x none's",
        met,
    )


if __name__ == "__main__":
    raise SystemExit(main())
