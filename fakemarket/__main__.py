"""Run the fake market by hand, so the daemon can run offline against it:

python -m fakemarket --bright-data-port 8801 --yahoo-port 8802 --stream-port 8803
# then, in another shell, export the variables it prints and `crawler start --foreground`
"""

from __future__ import annotations

import argparse
import signal
import threading

from fakemarket import DEFAULT_API_KEY, FakeMarket


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fakemarket", description=__doc__)
    parser.add_argument("--bright-data-port", type=int, default=8801)
    parser.add_argument("--yahoo-port", type=int, default=8802)
    parser.add_argument("--stream-port", type=int, default=8803)
    parser.add_argument(
        "--stream-tick-rate", type=float, default=1.0, help="streamed ticks/s per symbol (0 = none)"
    )
    parser.add_argument("--stream-framing", choices=("json", "base64"), default="json")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    parser.add_argument(
        "--print-env", action="store_true", help="print the export lines for these ports and exit"
    )
    args = parser.parse_args()
    if args.print_env:
        for key, value in _environment(args).items():
            print(f"export {key}={value}")
        return
    market = FakeMarket(
        api_key=args.api_key,
        bright_data_port=args.bright_data_port,
        yahoo_port=args.yahoo_port,
        stream_port=args.stream_port,
        stream_tick_rate=args.stream_tick_rate,
    ).start()
    market.stream.framing = args.stream_framing
    if args.latency_ms:
        market.bright_data.faults.set("*", latency_s=args.latency_ms / 1000)
        market.yahoo.faults.set("*", latency_s=args.latency_ms / 1000)
    print("fake market listening on 127.0.0.1; point crawler at it with:")
    for key, value in market.environment().items():
        print(f"  export {key}={value}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    market.stop()


def _environment(args: argparse.Namespace) -> dict[str, str]:
    return {
        "BRIGHT_DATA_ENDPOINT": f"http://127.0.0.1:{args.bright_data_port}",
        "BRIGHT_DATA_ZONE": "web_unlocker1",
        "YFINANCE_ENDPOINT": f"http://127.0.0.1:{args.yahoo_port}",
        "YFINANCE_STREAM_ENDPOINT": f"ws://127.0.0.1:{args.stream_port}/",
        "BRIGHT_DATA_API_KEY": args.api_key,
    }


if __name__ == "__main__":
    main()
