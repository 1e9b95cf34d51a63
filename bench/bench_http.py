"""The control socket's HTTP layer: `ControlServer` (h11 parsing and framing, our limits, the
peer-uid check, JSON answers) versus the standard library's `http.server` over the same kind of
Unix socket, answering the same JSON to the same keep-alive GET.

The baseline does the same work minus what h11 and our checks add: one thread per connection,
parse the request line and headers (`BaseHTTPRequestHandler`), write a 200 with a JSON body and
a Content-Length. It is what the control server's parsing was built on before h11. Each client
sends `--requests` GET /v1/ping on one keep-alive connection; `--clients` clients at once.
Rounds alternate the two servers (same process, same sockets directory); reported: requests/s
(min and median of the rounds) and CPU (this process: servers and clients) per request, and the
ratio h11 / stdlib of the medians. Target: at least 0.5x the baseline's rate (the socket
answers people and monitors, a few requests a second).

    python bench/bench_http.py [--quick] [--requests 2000] [--clients 4] [--rounds 5]
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import finish, median, parser, ratio
from crawler.daemon.control_server import ControlServer

__all__ = ["main"]

TARGET_RATIO = 0.5
_PING = b"GET /v1/ping HTTP/1.1\r\nHost: localhost\r\n\r\n"


class _StdlibHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        # The same answer as ours, encoded per request as ours is.
        body = json.dumps({"pong": True, "api_version": 1}, ensure_ascii=False).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _StdlibServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _client(path: Path, requests: int, errors: list[str]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(os.fspath(path))
        reader = sock.makefile("rb")
        for _ in range(requests):
            sock.sendall(_PING)
            status = reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = reader.read(length)
            if not status.startswith(b"HTTP/1.1 200") or b'"pong": true' not in body:
                errors.append(status.decode("latin-1").strip())
                return
        reader.close()


def _round(path: Path, clients: int, requests: int) -> tuple[float, float]:
    """(requests/s, CPU ms per request) of `clients` keep-alive clients against `path`."""
    errors: list[str] = []
    threads = [
        threading.Thread(target=_client, args=(path, requests, errors)) for _ in range(clients)
    ]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    if errors:
        raise RuntimeError(f"bad answers: {errors[:3]}")
    total = clients * requests
    return total / wall_s, cpu_s * 1000 / total


def _serve_stdlib(path: Path) -> Callable[[], None]:
    server = _StdlibServer(os.fspath(path), _StdlibHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints human lines, then the JSON line."""
    args_parser = parser(__doc__ or "")
    args_parser.add_argument("--requests", type=int, default=2000)
    args_parser.add_argument("--clients", type=int, default=4)
    args_parser.add_argument("--rounds", type=int, default=5)
    args = args_parser.parse_args(argv)
    requests, rounds = (50, 2) if args.quick else (args.requests, args.rounds)
    results: dict[str, list[tuple[float, float]]] = {"h11": [], "stdlib": []}
    with tempfile.TemporaryDirectory(prefix="bh-", dir="/tmp") as tmp:
        ours = ControlServer(Path(tmp) / "run" / "h11.sock", client_timeout_s=30.0)
        ours.start()
        stdlib_path = Path(tmp) / "stdlib.sock"
        stop_stdlib = _serve_stdlib(stdlib_path)
        try:
            _round(ours.socket_path, 1, 20)  # warm both up (imports, first threads)
            _round(stdlib_path, 1, 20)
            for index in range(rounds):
                # Alternate who goes first, so drift on a noisy machine hits both alike.
                order = [("h11", ours.socket_path), ("stdlib", stdlib_path)]
                for name, path in order if index % 2 == 0 else reversed(order):
                    results[name].append(_round(path, args.clients, requests))
        finally:
            stop_stdlib()
            ours.stop()
    figures: dict[str, Any] = {}
    for name, runs in results.items():
        rates = [rate for rate, _ in runs]
        cpus = [cpu for _, cpu in runs]
        figures[f"{name}_rps_median"] = round(median(rates))
        figures[f"{name}_rps_min"] = round(min(rates))
        figures[f"{name}_cpu_ms_per_request_median"] = round(median(cpus), 3)
        print(
            f"{name:>6}: {median(rates):,.0f} requests/s median (min {min(rates):,.0f}) over "
            f"{len(runs)} rounds of {args.clients} x {requests}; "
            f"{median(cpus):.3f} ms CPU per request"
        )
    figures["h11_vs_stdlib"] = ratio(figures["h11_rps_median"], figures["stdlib_rps_median"])
    figures["cpu_h11_vs_stdlib"] = ratio(
        figures["h11_cpu_ms_per_request_median"], figures["stdlib_cpu_ms_per_request_median"]
    )
    print(
        f"h11 control server: {figures['h11_vs_stdlib']}x the stdlib rate, "
        f"{figures['cpu_h11_vs_stdlib']}x its CPU per request"
    )
    met = figures["h11_vs_stdlib"] >= TARGET_RATIO
    return finish("http", figures, f">= {TARGET_RATIO}x the stdlib http.server rate", met)


if __name__ == "__main__":
    raise SystemExit(main())
