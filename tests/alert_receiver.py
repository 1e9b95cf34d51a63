"""A real HTTP receiver for Apprise's JSON target (`json://127.0.0.1:PORT/hook`): it records
each notice, and can answer an error or hold every request until released.

    with Receiver() as receiver:
        url = receiver.url("/hook", auth="user:secret")   # json://user:secret@127.0.0.1:PORT/hook
        receiver.hold()        # requests wait (a target that hangs) ...
        receiver.release()     # ... until this
        receiver.status = 500  # a target that refuses
        receiver.notices       # [{"title", "message", "type", "version", ...}, ...]
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Receiver"]


class Receiver:
    """See the module docstring."""

    def __init__(self) -> None:
        self.notices: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.status = 200
        self.in_flight = 0
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.in_flight += 1
                receiver._open.wait(120)
                with receiver._lock:
                    receiver.in_flight -= 1
                    receiver.notices.append(json.loads(body or b"{}"))
                    receiver.authorizations.append(self.headers.get("Authorization"))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook", auth: str = "") -> str:
        return f"json://{auth + '@' if auth else ''}127.0.0.1:{self.port}{path}"

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def count(self) -> int:
        with self._lock:
            return len(self.notices)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
