"""Benchmark 8, live quotes: N symbols (500; --quick 50) streaming from the fake market at T ticks
per second each (5), against the same N symbols polled, both daemons running side by side on
the same fake market in the same run.

- streaming daemon: the defaults (stream on), its watchlist added through the socket;
- polling daemon (the baseline): STREAM_ENABLED=false, collecting every 60 s (the shortest
  interval allowed; the default is 900 s, where polling ages are 15 times these) with a 60 s
  cache TTL, so every collection fetches every symbol again (Bright Data, a huge budget).

Repeated R times (6; --quick 2), interleaved: a quiet window of Q seconds (10; --quick 3) in
which only the CPU time of each daemon and the streamed tick count move, then one GET /status
of each daemon, whose per-symbol `age_s` (now minus the quote's own time) and `fetched_age_s`
give that round's median quote age. Figures: min and median over rounds of the median age of
each daemon and their ratio; CPU per streamed tick (the streaming daemon's CPU time over the
window / ticks it decoded) beside the polling daemon's CPU per polled quote; Bright Data
requests the streaming daemon made (after a forced collection at the end, which must be served
by the stream); the peak RSS of both daemons.
Target: median streamed age <= 2 s, CPU per tick <= 0.2 ms, no paid request for streamed
symbols, peak RSS <= 150 MB.

    python bench/bench_stream.py [--quick] [--symbols 500] [--tick-rate 5] [--rounds 6]
"""

from __future__ import annotations

import os
import sys
import time
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
    ratio,
    rss_kib,
)

__all__ = ["main"]

TARGET_AGE_S = 2.0
TARGET_CPU_MS_PER_TICK = 0.2
TARGET_RSS_MB = 150.0
POLL_INTERVAL_S = 60


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ages(status: dict[str, Any]) -> tuple[float | None, float | None, int]:
    """(median age_s, median fetched_age_s, symbols with a quote) of a status document."""
    rows = [row for row in status.get("symbols") or [] if row.get("age_s") is not None]
    if not rows:
        return None, None, 0
    return (
        median([float(row["age_s"]) for row in rows]),
        median([float(row["fetched_age_s"]) for row in rows]),
        len(rows),
    )


def wait_for(predicate: Any, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {deadline_s:g}s waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--symbols", type=int, default=500)
    args_parser.add_argument("--tick-rate", type=float, default=5.0)
    args_parser.add_argument("--rounds", type=int, default=6)
    args_parser.add_argument("--quiet-s", type=float, default=10.0)
    args = args_parser.parse_args(argv)
    n, rounds, quiet_s = (50, 2, 3.0) if args.quick else (args.symbols, args.rounds, args.quiet_s)
    symbols = generated_symbols(n)
    polling_env = {
        "STREAM_ENABLED": "false",
        "AUTO_UPDATE_ENABLED": "true",
        "UPDATE_INTERVAL_SECONDS": str(POLL_INTERVAL_S),
        "CACHE_TTL_SECONDS": str(POLL_INTERVAL_S),
        "COLLECTION_JITTER_SECONDS": "0",
    }
    print(f"{n} symbols, {args.tick_rate:g} ticks/s each; {rounds} rounds of {quiet_s:g}s")
    with (
        fake_market(stream_tick_rate=args.tick_rate) as market,
        DaemonProcess(market, {"STREAM_ENABLED": "true"}) as streaming,
        DaemonProcess(market, polling_env) as polling,
    ):
        streaming.add_symbols(symbols)
        polling.add_symbols(symbols)
        poll_cpu_start_s = cpu_s(polling.pid)
        polling.collect()  # the first poll; the scheduler repeats it every 60 s
        wait_for(
            lambda: ages(streaming.client.call("GET", "/status"))[2] == n,
            120,
            "a streamed quote of every symbol",
        )
        stream_cpu_start_s = cpu_s(streaming.pid)
        rows: list[dict[str, float]] = []
        peak_rss = first_rss = rss_kib(streaming.pid)
        poll_peak_rss = rss_kib(polling.pid)
        for number in range(1, rounds + 1):
            before = streaming.client.call("GET", "/status")["stream"]["ticks"]
            cpu_before = cpu_s(streaming.pid)
            time.sleep(quiet_s)
            cpu_after = cpu_s(streaming.pid)
            stream_status = streaming.client.call("GET", "/status")
            poll_status = polling.client.call("GET", "/status")
            ticks = int(stream_status["stream"]["ticks"]) - int(before)
            s_age, s_fetched, _ = ages(stream_status)
            p_age, p_fetched, _ = ages(poll_status)
            rss_now = rss_kib(streaming.pid)
            peak_rss = max(peak_rss, rss_now)
            poll_peak_rss = max(poll_peak_rss, rss_kib(polling.pid))
            row = {
                "ticks_per_s": ticks / quiet_s,
                "cpu_ms_per_tick": 1000 * (cpu_after - cpu_before) / max(1, ticks),
                "stream_age_s": s_age or 0.0,
                "stream_fetched_age_s": s_fetched or 0.0,
                "poll_age_s": p_age or 0.0,
                "poll_fetched_age_s": p_fetched or 0.0,
            }
            rows.append(row)
            print(
                f"round {number}: {row['ticks_per_s']:.0f} ticks/s, "
                f"{row['cpu_ms_per_tick']:.3f} ms CPU/tick; median age streamed "
                f"{row['stream_age_s']:.1f}s (fetched {row['stream_fetched_age_s']:.1f}s), "
                f"polled {row['poll_age_s']:.1f}s (fetched {row['poll_fetched_age_s']:.1f}s); "
                f"RSS {rss_now / 1024:.1f} MB"
            )
        # Everything tracked is streamed: a collection now must not pay for any of it.
        report = streaming.collect()
        final = streaming.client.call("GET", "/status")
        paid_streamed = int(final["sources"]["bright_data"]["total_requests"])
        poll_final = polling.client.call("GET", "/status")
        polled_quotes = int(poll_final["sources"]["bright_data"]["successes"])
        # Its collections, its idle time and the status requests, per quote it polled.
        poll_cpu_s = cpu_s(polling.pid) - poll_cpu_start_s
        stream_cpu_s = cpu_s(streaming.pid) - stream_cpu_start_s
        bad_frames = int(final["stream"]["bad_frames"])

    def both(key: str) -> tuple[float, float]:
        values = [row[key] for row in rows]
        return round(min(values), 3), round(median(values), 3)

    stream_min, stream_med = both("stream_age_s")
    poll_min, poll_med = both("poll_age_s")
    cpu_min, cpu_med = both("cpu_ms_per_tick")
    figures = {
        "symbols": n,
        "tick_rate": args.tick_rate,
        "ticks_per_s_median": both("ticks_per_s")[1],
        "stream_age_s_min": stream_min,
        "stream_age_s_median": stream_med,
        "stream_fetched_age_s_median": both("stream_fetched_age_s")[1],
        "poll_age_s_min": poll_min,
        "poll_age_s_median": poll_med,
        "poll_fetched_age_s_median": both("poll_fetched_age_s")[1],
        "poll_interval_s": POLL_INTERVAL_S,
        "poll_vs_stream_age": ratio(poll_med, stream_med),
        "cpu_ms_per_tick_min": cpu_min,
        "cpu_ms_per_tick_median": cpu_med,
        "stream_cpu_s_total": round(stream_cpu_s, 2),
        "poll_cpu_ms_per_quote": round(1000 * poll_cpu_s / max(1, polled_quotes), 3),
        "polled_quotes": polled_quotes,
        "paid_requests_streamed": paid_streamed,
        "forced_collection_sources": report.get("sources"),
        "bad_frames": bad_frames,
        "rss_peak_mb": round(peak_rss / 1024, 1),
        "rss_growth_mb": round((peak_rss - first_rss) / 1024, 1),
        "poll_rss_peak_mb": round(poll_peak_rss / 1024, 1),
    }
    print(
        f"median quote age: streamed {stream_med:.2f}s vs polled every {POLL_INTERVAL_S}s "
        f"{poll_med:.2f}s (x{figures['poll_vs_stream_age']}); CPU {cpu_med:.3f} ms/tick "
        f"(polling: {figures['poll_cpu_ms_per_quote']} ms/quote); paid requests for streamed "
        f"symbols: {paid_streamed}; peak RSS {figures['rss_peak_mb']} MB "
        f"(polling daemon: {figures['poll_rss_peak_mb']} MB)"
    )
    met = (
        stream_med <= TARGET_AGE_S
        and cpu_med <= TARGET_CPU_MS_PER_TICK
        and paid_streamed == 0
        and figures["rss_peak_mb"] <= TARGET_RSS_MB
    )
    target = (
        f"median streamed age <= {TARGET_AGE_S:g}s, CPU <= {TARGET_CPU_MS_PER_TICK} ms/tick, "
        f"0 paid requests for streamed symbols, RSS <= {TARGET_RSS_MB:g} MB"
    )
    return finish("stream", figures, target, met)


if __name__ == "__main__":
    sys.exit(main())
