"""The control socket over real Unix sockets: ControlServer, ControlClient, raw bytes, curl."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crawler.daemon.client import ControlClient, error_from_response
from crawler.daemon.control_server import (
    ControlServer,
    Request,
    Response,
    socket_is_live,
    status_for_error,
)
from crawler.utils.exceptions import (
    APIError,
    BudgetExhaustedError,
    CircuitBreakerError,
    ConfigError,
    CrawlerError,
    DaemonAlreadyRunningError,
    DaemonError,
    DaemonNotRunningError,
    StorageError,
    SymbolError,
    TransientSourceError,
    UsageError,
)

JOIN_TIMEOUT_S = 5.0
EXPORT_CHUNKS = [b"symbol,price\n", *(f"S{i}:US,{i}.5\n".encode() for i in range(200))]

ERRORS: dict[str, CrawlerError] = {
    "symbol": SymbolError("bad symbol 'A B'"),
    "config": ConfigError("TOTAL_BUDGET must be > 0"),
    "budget": BudgetExhaustedError(10, 10, Decimal("1.50")),
    "api": TransientSourceError("bright data timed out"),
    "breaker": CircuitBreakerError("open", "bright_data breaker is open"),
    "daemon": DaemonError("shutting down"),
    "storage": StorageError("disk full"),
}


def _echo(request: Request) -> Response:
    return Response(
        body={
            "method": request.method,
            "path": request.path,
            "body": request.body,
            "query": request.query,
            "peer_uid": request.peer_uid,
            "content_type": request.headers.get("content-type"),
        }
    )


def _raise_error(request: Request) -> Response:
    raise ERRORS[request.path_params["kind"]]


def _crash(request: Request) -> Response:
    raise RuntimeError("secret-detail-do-not-leak")


def _broken_stream() -> Iterator[bytes]:
    yield b"first part\n"
    raise RuntimeError("the export broke")


def make_server(socket_path: Path, **options: Any) -> ControlServer:
    """A server with the routes every test uses (not started)."""
    server = ControlServer(socket_path, **options)
    server.route("GET", "/status", lambda r: Response(body={"state": "running"}))
    server.route("GET", "/echo", _echo)
    server.route("POST", "/echo", _echo)
    server.route("DELETE", "/symbols/{symbol}", lambda r: Response(body=dict(r.path_params)))
    server.route("GET", "/symbols/count", lambda r: Response(body={"count": 3}))
    server.route("GET", "/symbols/{symbol}", lambda r: Response(body=dict(r.path_params)))
    server.route("GET", "/fail/{kind}", _raise_error)
    server.route("GET", "/crash", _crash)
    server.route("GET", "/not-json", lambda r: Response(body={"a set"}))
    server.route(
        "GET",
        "/metrics",
        lambda r: Response(text="crawler_up 1\n", content_type="text/plain; version=0.0.4"),
    )
    server.route("GET", "/export", lambda r: Response(stream=iter(EXPORT_CHUNKS)))
    server.route("GET", "/export-broken", lambda r: Response(stream=_broken_stream()))
    return server


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    # Short names: sun_path holds 107 bytes and pytest's tmp paths are long already.
    return tmp_path / "run" / "c.sock"


@pytest.fixture
def server(sock_path: Path) -> Iterator[ControlServer]:
    control = make_server(sock_path, client_timeout_s=5.0)
    control.start()
    try:
        yield control
    finally:
        control.stop()


@pytest.fixture
def client(server: ControlServer) -> ControlClient:
    return ControlClient(server.socket_path, timeout_s=5.0)


def exchange(path: Path, data: bytes, timeout_s: float = 3.0) -> bytes:
    """Send raw bytes, read one answer (to its Content-Length, or until the server closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(os.fspath(path))
        sock.sendall(data)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
        head, separator, body = received.partition(b"\r\n\r\n")
        if separator and b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    return received


def read_to_eof(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)


def read_answer_despite_reset(sock: socket.socket) -> bytes:
    """What the server answered before it closed, also when it closed with our upload unread:
    past its bounded lingering close the kernel resets the connection, and on a loaded machine
    that can come before the client has finished sending. The answer read first still counts."""
    parts = []
    try:
        while chunk := sock.recv(65536):
            parts.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(parts)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one raw HTTP answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def error_of(raw: bytes) -> tuple[int, str]:
    """(status, error type) of a raw JSON error answer; fails if the body is not our JSON."""
    status, headers, body = parse(raw)
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    return status, json.loads(body)["error"]["type"]


# -- files and permissions -----------------------------------------------------------------------


def test_socket_is_0600_in_a_0700_directory_even_with_umask_0(sock_path: Path) -> None:
    previous = os.umask(0)
    try:
        with make_server(sock_path):
            assert os.umask(0) == 0  # start() restored the process umask
            assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
            assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
            assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700
    finally:
        os.umask(previous)
    assert not sock_path.exists()  # stop() unlinked it


def test_an_existing_directory_is_never_chmod_ed(tmp_path: Path) -> None:
    """Issue 23 item 3: only a directory the server creates gets a mode; an existing one (maybe
    reached through a link) is used as it is, and the socket's 0600 keeps others out."""
    directory = tmp_path / "loose"
    directory.mkdir()
    os.chmod(directory, 0o755)
    with make_server(directory / "c.sock") as control:
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(control.socket_path).st_mode) == 0o600


def test_a_shared_directory_is_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o755)
    (directory / "other-file").write_text("not ours to hide")
    with make_server(directory / "c.sock") as control:
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(control.socket_path).st_mode) == 0o600


def test_stale_socket_is_replaced(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(os.fspath(sock_path))
    crashed.close()  # the file stays, nobody listens: what a crash leaves
    assert sock_path.exists()
    assert not socket_is_live(sock_path)
    with make_server(sock_path) as control:
        assert socket_is_live(sock_path)
        assert ControlClient(control.socket_path).get("/status") == (200, {"state": "running"})


def test_live_socket_is_detected_and_left_working(server: ControlServer) -> None:
    second = make_server(server.socket_path)
    with pytest.raises(DaemonAlreadyRunningError, match="another crawler daemon answers on"):
        second.start()
    assert ControlClient(server.socket_path).get("/status")[0] == 200


def test_a_regular_file_at_the_socket_path_is_refused(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    sock_path.write_text("not a socket")
    with pytest.raises(DaemonError, match="is not a socket"):
        make_server(sock_path).start()
    assert sock_path.read_text() == "not a socket"


def test_socket_is_live_on_missing_path(tmp_path: Path) -> None:
    assert not socket_is_live(tmp_path / "missing.sock")


# -- requests that work --------------------------------------------------------------------------


def test_get_post_delete_with_json(client: ControlClient) -> None:
    assert client.get("/status") == (200, {"state": "running"})
    status, body = client.post("/echo", {"symbols": ["AAPL:US"], "price": 1.5})
    assert status == 200
    assert body["method"] == "POST"
    assert body["body"] == {"symbols": ["AAPL:US"], "price": 1.5}
    assert body["content_type"] == "application/json"
    assert body["peer_uid"] == os.geteuid()
    assert client.delete("/symbols/AAPL:US") == (200, {"symbol": "AAPL:US"})


def test_path_params_and_query_are_decoded(client: ControlClient) -> None:
    assert client.delete("/symbols/BRK%2FB:US") == (200, {"symbol": "BRK/B:US"})
    assert client.get("/symbols/caf%C3%A9") == (200, {"symbol": "café"})
    status, body = client.request("GET", "/echo?symbol=AAPL%3AUS&since=2h&symbol=MSFT:US")
    assert status == 200
    assert body["query"] == {"symbol": "AAPL:US", "since": "2h"}  # first value wins
    assert client.get("/echo", query={"symbol": "BRK/B:US"})[1]["query"] == {"symbol": "BRK/B:US"}


def test_a_literal_segment_wins_over_a_parameter(client: ControlClient) -> None:
    assert client.get("/symbols/count") == (200, {"count": 3})
    assert client.get("/symbols/counts") == (200, {"symbol": "counts"})


def test_text_answer_keeps_its_content_type(server: ControlServer) -> None:
    raw = exchange(
        server.socket_path, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = parse(raw)
    assert (status, body) == (200, b"crawler_up 1\n")
    assert headers["content-type"] == "text/plain; version=0.0.4"
    assert ControlClient(server.socket_path).get("/metrics") == (200, "crawler_up 1\n")


def test_keep_alive_serves_several_requests_on_one_connection(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(os.fspath(server.socket_path))
        file = sock.makefile("rb")
        for _ in range(3):
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert file.readline() == b"HTTP/1.1 200 OK\r\n"
            headers = {}
            while (line := file.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                headers[name.lower()] = value.strip()
            assert "connection" not in headers
            assert json.loads(file.read(int(headers["content-length"]))) == {"state": "running"}
        file.close()


def test_http_1_0_gets_an_answer_and_a_close(server: ControlServer) -> None:
    raw = exchange(server.socket_path, b"GET /status HTTP/1.0\r\n\r\n")
    status, headers, body = parse(raw)
    assert status == 200
    assert json.loads(body) == {"state": "running"}
    assert headers["connection"] == "close"


def test_chunked_request_body_is_read(server: ControlServer) -> None:
    payload = b'{"symbols": ["AAPL:US"]}'
    request = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"%x\r\n%s\r\n" % (5, payload[:5])
        + b"%x;ext=1\r\n%s\r\n" % (len(payload) - 5, payload[5:])
        + b"0\r\n\r\n"
    )
    status, _, body = parse(exchange(server.socket_path, request))
    assert status == 200
    assert json.loads(body)["body"] == {"symbols": ["AAPL:US"]}


def test_absolute_form_target_is_accepted(server: ControlServer) -> None:
    raw = exchange(
        server.socket_path,
        b"GET http://localhost/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert parse(raw)[0] == 200


# -- requests that do not ------------------------------------------------------------------------


def test_unknown_path_is_404_and_wrong_method_is_405(server: ControlServer) -> None:
    client = ControlClient(server.socket_path)
    status, body = client.get("/nope")
    assert (status, body["error"]["type"]) == (404, "NotFound")
    raw = exchange(
        server.socket_path, b"PUT /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert error_of(raw) == (405, "MethodNotAllowed")
    assert parse(raw)[1]["allow"] == "GET"
    assert error_of(exchange(server.socket_path, b"BREW /status HTTP/1.1\r\nHost: x\r\n\r\n")) == (
        501,
        "NotImplemented",
    )


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GARBAGE\r\n\r\n", (400, "BadRequest")),
        (b"\x00\xff\xfe\x80 \x01\x02\r\n\r\n", (400, "BadRequest")),
        (b"GET /status\r\n\r\n", (400, "BadRequest")),
        (b"GET /status HTTP/1.1 extra\r\n\r\n", (400, "BadRequest")),
        (b"GET /status SPDY/3\r\n\r\n", (400, "BadRequest")),
        (b"GET /status HTTP/2.0\r\n\r\n", (505, "HTTPVersionNotSupported")),
        (b"GET status HTTP/1.1\r\nHost: x\r\n\r\n", (400, "BadRequest")),
        (b"GET /symbols/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", (400, "BadRequest")),
        (b"GET /symbols/%FF%FE HTTP/1.1\r\nHost: x\r\n\r\n", (400, "BadRequest")),
        (b"GET /echo?q=%FF HTTP/1.1\r\nHost: x\r\n\r\n", (400, "BadRequest")),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414, "URITooLong")),
        (
            b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
            (431, "HeaderFieldsTooLarge"),
        ),
        (
            b"GET /status HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 150 + b"\r\n",
            (431, "HeaderFieldsTooLarge"),
        ),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", (400, "BadRequest")),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", (400, "BadRequest")),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n", (400, "BadRequest")),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", (400, "BadRequest")),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
            (413, "PayloadTooLarge"),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            (400, "BadRequest"),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n{}",
            (400, "BadRequest"),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            (501, "NotImplemented"),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            (400, "BadRequest"),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{not json",
            (400, "BadRequest"),
        ),
        (
            b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"\xff\xfe"',
            (400, "BadRequest"),
        ),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nNaN", (400, "BadRequest")),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n" + b"[" * 60000,
            (400, "BadRequest"),
        ),
    ],
    ids=lambda value: value[:40].decode("latin-1") if isinstance(value, bytes) else str(value),
)
def test_malformed_requests_get_json_errors(
    server: ControlServer, request_bytes: bytes, expected: tuple[int, str]
) -> None:
    assert error_of(exchange(server.socket_path, request_bytes)) == expected
    assert ControlClient(server.socket_path).get("/status")[0] == 200  # still serving


@pytest.mark.parametrize(
    "header_lines",
    [
        b"no colon here\r\n",  # the stdlib records a "defect" and keeps going
        b"From evil\r\n",  # first: taken for an mbox envelope line, no defect at all
        b"Host: x\r\nFrom evil\r\n",  # last: pushed into the (ignored) message body
        b"X-A: a\rInjected: b\r\n",  # a bare CR splits one line into two headers
        b"X-A: a\r\r\nContent-Length: 5\r\n",  # CR before CRLF: headers after it vanish
        b": empty name\r\n",
        b"Bad Name: x\r\n",
        b"Host : x\r\n",
    ],
    ids=lambda value: value.decode("latin-1"),
)
def test_malformed_header_lines_are_refused(server: ControlServer, header_lines: bytes) -> None:
    request = b"GET /status HTTP/1.1\r\n" + header_lines + b"Host: x\r\nConnection: close\r\n\r\n"
    assert error_of(exchange(server.socket_path, request)) == (400, "BadRequest")
    # Not even a 100 Continue goes out before the refusal.
    expecting = b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
    raw = exchange(server.socket_path, expecting + header_lines + b"Host: x\r\n\r\n")
    assert error_of(raw) == (400, "BadRequest")
    assert ControlClient(server.socket_path).get("/status")[0] == 200  # still serving


def test_folded_and_lf_only_headers_are_still_accepted(server: ControlServer) -> None:
    folded = (
        b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/\r\n plain\r\n"
        b"Connection: close\r\n\r\n"
    )
    status, _, body = parse(exchange(server.socket_path, folded))
    assert status == 200 and json.loads(body)["content_type"].split() == ["text/", "plain"]
    lf_only = b"GET /status HTTP/1.1\nHost: x\nConnection: close\n\n"
    assert parse(exchange(server.socket_path, lf_only))[0] == 200


def test_oversized_body_is_refused_before_it_is_read(server: ControlServer) -> None:
    # Only the headers are sent: a server that read the body first would wait (and time out).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(os.fspath(server.socket_path))
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        assert error_of(read_to_eof(sock)) == (413, "PayloadTooLarge")


def test_oversized_body_sent_in_full_still_gets_413(server: ControlServer) -> None:
    request = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n" + b" " * 3_000_000
    )
    result: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(os.fspath(server.socket_path))
        reader = threading.Thread(target=lambda: result.append(read_answer_despite_reset(sock)))
        reader.start()
        # The server may stop reading after its bounded lingering close.
        with contextlib.suppress(OSError):
            sock.sendall(request)
        reader.join(JOIN_TIMEOUT_S)
    assert result and error_of(result[0]) == (413, "PayloadTooLarge")


def test_expect_100_continue_with_oversized_body_gets_413_not_100(server: ControlServer) -> None:
    request = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
    )
    assert error_of(exchange(server.socket_path, request)) == (413, "PayloadTooLarge")


def test_chunked_body_over_the_limit_is_413(sock_path: Path) -> None:
    with make_server(sock_path, max_body_bytes=100) as control:
        chunk = b"x" * 60
        request = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"3c\r\n" + chunk + b"\r\n") * 2
        )
        assert error_of(exchange(control.socket_path, request)) == (413, "PayloadTooLarge")


def test_post_without_content_length_has_no_body(server: ControlServer) -> None:
    raw = exchange(
        server.socket_path, b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, _, body = parse(raw)
    assert status == 200
    assert json.loads(body)["body"] is None


# -- handler errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("symbol", 400),
        ("config", 400),
        ("budget", 429),
        ("api", 502),
        ("breaker", 503),
        ("daemon", 503),
        ("storage", 500),
    ],
)
def test_crawler_errors_map_to_statuses(client: ControlClient, kind: str, status: int) -> None:
    error = ERRORS[kind]
    assert status_for_error(error) == status
    got_status, body = client.get(f"/fail/{kind}")
    assert got_status == status
    assert body == {"error": {"type": type(error).__name__, "message": error.message}}


def test_call_raises_the_daemons_error_class(client: ControlClient) -> None:
    with pytest.raises(SymbolError, match="bad symbol 'A B'") as caught:
        client.call("GET", "/fail/symbol")
    assert caught.value.exit_code == 2
    with pytest.raises(CrawlerError, match="daily budget exhausted"):
        client.call("GET", "/fail/budget")
    with pytest.raises(DaemonError, match="404 NotFound"):
        client.call("GET", "/nope")
    assert client.call("GET", "/status") == {"state": "running"}
    assert isinstance(
        error_from_response(502, {"error": {"type": "APIError", "message": "x"}}), APIError
    )
    assert isinstance(error_from_response(500, "plain text"), DaemonError)


@pytest.mark.parametrize(
    ("status", "error_type", "cls", "exit_code"),
    [
        (400, "BadRequest", UsageError, 2),  # the daemon refused our arguments: as offline
        (400, "SymbolError", SymbolError, 2),
        (400, "ConfigError", ConfigError, 2),
        (404, "NotFound", DaemonError, 1),  # an unknown route is our bug, not bad usage
        (404, "NotTracked", DaemonError, 1),
        (405, "MethodNotAllowed", DaemonError, 1),
        (503, "DaemonError", DaemonError, 1),
    ],
)
def test_error_answers_keep_the_offline_exit_codes(
    status: int, error_type: str, cls: type[CrawlerError], exit_code: int
) -> None:
    error = error_from_response(status, {"error": {"type": error_type, "message": "why"}})
    assert type(error) is cls
    assert error.exit_code == exit_code
    assert "why" in error.message


def test_a_bad_request_from_a_real_server_is_a_usage_error(client: ControlClient) -> None:
    with pytest.raises(UsageError, match="not valid UTF-8") as caught:
        client.call("GET", "/symbols/%FF%FE")  # the server's own BadRequest, not a handler's
    assert caught.value.exit_code == 2


def test_unexpected_exception_is_a_500_that_does_not_leak(
    client: ControlClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="crawler.control"):
        status, body = client.get("/crash")
    assert status == 500
    assert body == {
        "error": {"type": "InternalError", "message": "internal error; see the daemon log"}
    }
    logged = [r for r in caplog.records if r.name == "crawler.control" and r.exc_info]
    assert logged and "secret-detail-do-not-leak" in str(logged[0].exc_info[1])  # type: ignore[index]


def test_a_body_json_cannot_encode_is_a_500(client: ControlClient) -> None:
    status, body = client.get("/not-json")
    assert (status, body["error"]["type"]) == (500, "InternalError")


# -- concurrency and limits ----------------------------------------------------------------------


def test_a_stalled_client_does_not_block_others_and_is_dropped(sock_path: Path) -> None:
    with make_server(sock_path, client_timeout_s=1.0) as control:
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stalled.settimeout(10)
        stalled.connect(os.fspath(sock_path))
        stalled.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
        )  # and then nothing
        results: list[tuple[int, Any]] = []
        other = threading.Thread(
            target=lambda: results.append(ControlClient(sock_path).get("/status"))
        )
        other.start()
        other.join(JOIN_TIMEOUT_S)
        assert not other.is_alive()
        assert results == [(200, {"state": "running"})]
        # The stalled connection is closed by the server's timeout, not by our 10 s one.
        assert stalled.recv(1024) == b""
        stalled.close()
        assert control.socket_path.exists()


def _holding_server(sock_path: Path, **options: Any) -> tuple[ControlServer, threading.Event]:
    """A server whose GET /hold keeps its worker until the event is set, with a POST /stop."""
    release = threading.Event()
    control = make_server(sock_path, **options)
    control.route("GET", "/hold", lambda r: Response(body={"held": release.wait(30)}))
    control.route("POST", "/stop", lambda r: Response(body={"stopping": True}))
    return control, release


def _hold(sock_path: Path) -> threading.Thread:
    worker = threading.Thread(target=lambda: ControlClient(sock_path).get("/hold"), daemon=True)
    worker.start()
    return worker


def _wait_until(condition: Any) -> None:
    for _ in range(300):
        if condition():
            return
        threading.Event().wait(0.02)
    pytest.fail("never happened")


def test_requests_past_the_workers_get_503_but_stop_is_answered(sock_path: Path) -> None:
    control, release = _holding_server(sock_path, max_connections=1, client_timeout_s=30.0)
    with control:
        holder = _hold(sock_path)  # occupies the only worker
        _wait_until(lambda: control._server is not None and control._server._connections)
        status, body = ControlClient(sock_path).get("/status")
        assert (status, body["error"]["type"]) == (503, "ServiceUnavailable")
        # Issue 23 item 8: stop has workers of its own.
        assert ControlClient(sock_path).post("/v1/stop") == (200, {"stopping": True})
        release.set()
        holder.join(JOIN_TIMEOUT_S)
        assert ControlClient(sock_path).get("/status") == (200, {"state": "running"})


def test_a_head_sent_one_byte_at_a_time_is_dropped_at_the_request_deadline(
    sock_path: Path,
) -> None:
    """Issue 23 item 8: the timeout applied per read, so a byte every few seconds (under the
    timeout) held the connection, and a worker, for ever. Now the whole request has
    client_timeout_s to arrive."""
    with make_server(sock_path, client_timeout_s=1.0):
        drip = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        drip.connect(os.fspath(sock_path))
        head = b"GET /status HTTP/1.1\r\nX-Slow: " + b"a" * 1000
        dropped = False
        for byte in head:  # 0.25 s apart: well under the 1 s timeout for each read
            try:
                drip.sendall(bytes([byte]))
            except OSError:  # EPIPE / ECONNRESET: the server closed it
                dropped = True
                break
            readable, _, _ = select.select([drip], [], [], 0.25)
            if readable and drip.recv(1024) == b"":
                dropped = True
                break
        drip.close()
        assert dropped, "a client trickling its head in was never dropped"
        assert ControlClient(sock_path).get("/status") == (200, {"state": "running"})


def test_slow_connections_keep_no_one_out(sock_path: Path) -> None:
    """64 connections with half a head each (more than every worker) take no worker: status,
    and stop, are answered at once."""
    control, _ = _holding_server(
        sock_path, max_connections=4, client_timeout_s=30.0, max_waiting=128
    )
    with control:
        slow = []
        for _ in range(64):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(os.fspath(sock_path))
            conn.sendall(b"G")
            slow.append(conn)
        try:
            for _ in range(3):
                assert ControlClient(sock_path).get("/status") == (200, {"state": "running"})
            assert ControlClient(sock_path).post("/stop") == (200, {"stopping": True})
            # They were all still open, waiting (not refused, not dropped).
            readable, _, _ = select.select(slow, [], [], 0)
            assert readable == []
        finally:
            for conn in slow:
                conn.close()


def test_a_flood_of_waiting_connections_closes_the_oldest_not_the_newest(
    sock_path: Path,
) -> None:
    with make_server(sock_path, client_timeout_s=30.0, max_waiting=8):
        slow = []
        for _ in range(20):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(os.fspath(sock_path))
            conn.sendall(b"GET / HTTP/1.1\r\n")
            slow.append(conn)
        try:
            assert ControlClient(sock_path).get("/status") == (200, {"state": "running"})
            closed = [conn for conn in slow if select.select([conn], [], [], 0)[0]]
            # 6 may wait per uid (3/4 of 8): the first 14, then one more for our client.
            assert closed == slow[:15], len(closed)
            assert all(conn.recv(1) == b"" for conn in closed)
        finally:
            for conn in slow:
                conn.close()


def test_stop_closes_idle_keep_alive_connections_promptly(sock_path: Path) -> None:
    control = make_server(sock_path, client_timeout_s=60.0)
    control.start()
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.settimeout(10)
    idle.connect(os.fspath(sock_path))
    idle.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = idle.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:  # the body may arrive in a later segment
        body += idle.recv(65536)
    stopper = threading.Thread(target=control.stop)
    stopper.start()
    stopper.join(JOIN_TIMEOUT_S)
    assert not stopper.is_alive()
    assert idle.recv(1024) == b""
    idle.close()
    assert not sock_path.exists()
    with pytest.raises(DaemonNotRunningError):
        ControlClient(sock_path).get("/status")


# -- who may connect -----------------------------------------------------------------------------


def test_peer_uid_not_allowed_gets_403(sock_path: Path) -> None:
    with make_server(sock_path, allowed_uids={12345}):
        status, body = ControlClient(sock_path).get("/status")
        assert status == 403
        assert body["error"]["type"] == "Forbidden"
        raw = exchange(sock_path, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert error_of(raw) == (403, "Forbidden")


_PROBE = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(5)
try:
    sock.connect(sys.argv[1])
    sock.sendall(b"GET /status HTTP/1.1\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    print(json.dumps({"answer": data.decode("latin-1")}))
except OSError as exc:
    print(json.dumps({"error": type(exc).__name__}))
"""
NOBODY = 65534


def _probe_as_nobody(path: Path) -> dict[str, str]:
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or not os.access(python, os.X_OK):
        pytest.skip("needs root and a system python another uid can run")
    result = subprocess.run(
        [python, "-I", "-c", _PROBE, os.fspath(path)],
        user=NOBODY,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd="/",
    )
    answer: dict[str, str] = json.loads(result.stdout)
    return answer


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory other uids can reach but not write (tmp_path is root-only)."""
    directory = Path(tempfile.mkdtemp(prefix="ctl-", dir="/tmp"))
    (directory / "other-file").write_text("so the server leaves the mode alone\n")
    os.chmod(directory, 0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_another_uid_cannot_get_an_answer(sock_path: Path, world_dir: Path) -> None:
    # In the 0700 directory the other uid cannot even reach the socket.
    with make_server(sock_path):
        assert _probe_as_nobody(sock_path) == {"error": "PermissionError"}
    # In a directory others can reach, the socket's own 0600 mode stops it.
    with make_server(world_dir / "c.sock") as control:
        assert stat.S_IMODE(os.stat(world_dir).st_mode) == 0o755  # shared: left alone
        assert _probe_as_nobody(control.socket_path) == {"error": "PermissionError"}
    # A directory others can write (like /tmp) is refused (issue 13: hostile local users).
    os.chmod(world_dir, 0o1777)
    with pytest.raises(ConfigError, match="writable by others"):
        make_server(world_dir / "d.sock").start()


def test_one_uid_busy_on_every_worker_it_may_hold_leaves_room_for_another(
    world_dir: Path,
) -> None:
    """Issue 23 item 8: the per-uid cap. Root holds the workers its cap allows; the other
    allowed uid is still answered."""
    control, release = _holding_server(
        world_dir / "c.sock", max_connections=4, max_connections_per_uid=2,
        allowed_uids={os.geteuid(), NOBODY},
    )  # fmt: skip
    with control:
        os.chmod(control.socket_path, 0o666)  # let nobody reach it (peercred still checks)
        holders = [_hold(control.socket_path) for _ in range(2)]
        try:
            _wait_until(
                lambda: control._server is not None and len(control._server._connections) == 2
            )
            status, _ = ControlClient(control.socket_path).get("/status")
            assert status == 503  # root is at its cap
            # nobody's request reaches a worker (which answers its missing Host header).
            answer = _probe_as_nobody(control.socket_path)["answer"]
            assert answer.startswith("HTTP/1.1 400") and "Host header" in answer, answer
        finally:
            release.set()
            for holder in holders:
                holder.join(JOIN_TIMEOUT_S)


def test_another_uid_past_the_file_mode_gets_403_from_peercred(world_dir: Path) -> None:
    with make_server(world_dir / "c.sock") as control:
        os.chmod(control.socket_path, 0o666)  # take the file-mode layer away
        answer = _probe_as_nobody(control.socket_path)
        assert "answer" in answer, answer
        assert error_of(answer["answer"].encode("latin-1")) == (403, "Forbidden")


# -- streaming -----------------------------------------------------------------------------------


def test_streamed_answer_is_chunked_and_complete(
    client: ControlClient, server: ControlServer
) -> None:
    assert b"".join(client.stream("GET", "/export")) == b"".join(EXPORT_CHUNKS)
    raw = exchange(
        server.socket_path, b"GET /export HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = parse(raw)
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert body.endswith(b"0\r\n\r\n")


def test_streamed_answer_to_http_1_0_ends_at_close(server: ControlServer) -> None:
    status, headers, body = parse(exchange(server.socket_path, b"GET /export HTTP/1.0\r\n\r\n"))
    assert status == 200
    assert "transfer-encoding" not in headers
    assert body == b"".join(EXPORT_CHUNKS)


def test_a_broken_stream_is_an_error_for_the_client_not_a_short_file(client: ControlClient) -> None:
    received = []
    with pytest.raises(DaemonError, match="ended early"):
        for chunk in client.stream("GET", "/export-broken"):
            received.append(chunk)
    assert b"".join(received) == b"first part\n"


def test_stream_raises_the_error_answer(client: ControlClient) -> None:
    with pytest.raises(SymbolError):
        client.stream("GET", "/fail/symbol")


# -- the client on its own -----------------------------------------------------------------------


def test_client_says_not_running_when_the_socket_is_missing_or_stale(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sock"
    with pytest.raises(DaemonNotRunningError, match="start it with `crawler start`") as caught:
        ControlClient(missing).get("/status")
    assert caught.value.exit_code == 3
    stale = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(os.fspath(stale))
    leftover.close()
    with pytest.raises(DaemonNotRunningError, match=str(stale)):
        ControlClient(stale).get("/status")
    with pytest.raises(DaemonNotRunningError):
        ControlClient(stale).stream("GET", "/export")


def test_client_times_out_on_a_silent_daemon(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(os.fspath(path))
        silent.listen()  # connections queue up; nobody ever answers
        with pytest.raises(DaemonError, match="did not answer") as caught:
            ControlClient(path, timeout_s=0.3).get("/status")
        assert not isinstance(caught.value, DaemonNotRunningError)


def test_client_reports_a_garbled_answer(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(os.fspath(path))
        listener.listen()

        def answer_garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"this is not HTTP\r\n\r\n")

        responder = threading.Thread(target=answer_garbage)
        responder.start()
        with pytest.raises(DaemonError, match="failed"):
            ControlClient(path, timeout_s=3).get("/status")
        responder.join(JOIN_TIMEOUT_S)


# -- the API's own checks ------------------------------------------------------------------------


def test_route_and_response_validation(sock_path: Path) -> None:
    control = ControlServer(sock_path)
    control.route("GET", "/a/{name}", _echo)
    with pytest.raises(ValueError, match="already registered"):
        control.route("get", "/a/{name}", _echo)
    with pytest.raises(ValueError, match="start with '/'"):
        control.route("GET", "a", _echo)
    with pytest.raises(ValueError, match="whole segment"):
        control.route("GET", "/a/x{name}", _echo)
    with pytest.raises(ValueError, match="one of body, text or stream"):
        Response(body={"a": 1}, text="a")
    with pytest.raises(ConfigError, match="107 bytes"):
        ControlServer(sock_path.parent / ("x" * 120))


# -- curl ----------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_works(server: ControlServer) -> None:
    def curl(*args: str) -> Any:
        result = subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--unix-socket",
                os.fspath(server.socket_path),
                *args,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(result.stdout)

    assert curl("http://localhost/status") == {"state": "running"}
    echoed = curl("-d", '{"symbols": ["AAPL:US"]}', "http://localhost/echo?since=2h")
    assert echoed["body"] == {"symbols": ["AAPL:US"]}
    assert echoed["query"] == {"since": "2h"}
    assert curl("-X", "DELETE", "http://localhost/symbols/BRK%2FB:US") == {"symbol": "BRK/B:US"}
    assert curl("http://localhost/nope")["error"]["type"] == "NotFound"


# -- what h11's own test suite is known for ------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        # obs-fold before any header has nothing to continue: a smuggling shape, refused.
        (b"GET /status HTTP/1.1\r\n Host: x\r\n\r\n", (400, "BadRequest")),
        (b"GET /status HTTP/1.1\r\n\tX-A: b\r\nHost: x\r\n\r\n", (400, "BadRequest")),
        # CL and TE together, in either order and however TE is spelt.
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n0\r\n\r\n",
            (400, "BadRequest"),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: CHUNKED\r\n"
            b"\r\n0\r\n\r\n",
            (400, "BadRequest"),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            (501, "NotImplemented"),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            (501, "NotImplemented"),
        ),
        # Duplicate Content-Length that disagree, as two fields or as a list in one.
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 3\r\n\r\n{}",
            (400, "BadRequest"),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 2\r\n\r\n{}",
            (400, "BadRequest"),
        ),
        # Header lines without a colon, or with space before it.
        (b"GET /status HTTP/1.1\r\nHost: x\r\nX-A b\r\n\r\n", (400, "BadRequest")),
        (b"GET /status HTTP/1.1\r\nHost x\r\n\r\n", (400, "BadRequest")),
        (b"GET /status HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n", (400, "BadRequest")),
        # An oversized header block made of many small fields (each well under the limit).
        (
            b"GET /status HTTP/1.1\r\nHost: x\r\n"
            + b"X-Pad: "
            + b"p" * 1000
            + b"\r\n" * 1
            + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 900) for i in range(80))
            + b"\r\n",
            (431, "HeaderFieldsTooLarge"),
        ),
        # HTTP/1.1 without Host (RFC 9112 section 3.2: a server must answer 400).
        (b"GET /status HTTP/1.1\r\n\r\n", (400, "BadRequest")),
        # A NUL or a bare CR in a value.
        (b"GET /status HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", (400, "BadRequest")),
    ],
    ids=lambda value: value[:60].decode("latin-1") if isinstance(value, bytes) else str(value),
)
def test_h11_suite_shapes_get_json_errors(
    server: ControlServer, request_bytes: bytes, expected: tuple[int, str]
) -> None:
    assert error_of(exchange(server.socket_path, request_bytes)) == expected
    assert ControlClient(server.socket_path).get("/status")[0] == 200  # still serving


def test_missing_host_is_named_in_the_answer(server: ControlServer) -> None:
    _, _, body = parse(exchange(server.socket_path, b"GET /status HTTP/1.1\r\n\r\n"))
    assert "Host header" in json.loads(body)["error"]["message"]
    # HTTP/1.0 needs none.
    assert parse(exchange(server.socket_path, b"GET /status HTTP/1.0\r\n\r\n"))[0] == 200


def test_identical_duplicate_content_lengths_are_one_length(server: ControlServer) -> None:
    request = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}"
    )
    status, _, body = parse(exchange(server.socket_path, request))
    assert (status, json.loads(body)["body"]) == (200, {})


def test_pipelined_requests_in_one_send_are_all_answered(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(os.fspath(server.socket_path))
        sock.sendall(
            b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
            b"GET /symbols/count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answers = read_to_eof(sock)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert answers.endswith(b'{"count": 3}\n')


def test_expect_100_continue_gets_100_then_the_answer(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(os.fspath(server.socket_path))
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"{}")
        status, _, body = parse(read_to_eof(sock))
    assert (status, json.loads(body)["body"]) == (200, {})


# -- the API version -----------------------------------------------------------------------------


def test_routes_live_under_v1_and_the_old_paths_are_deprecated_aliases(
    server: ControlServer,
) -> None:
    versioned = exchange(server.socket_path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = parse(versioned)
    assert (status, json.loads(body)) == (200, {"state": "running"})
    assert headers["crawler-api-version"] == "1"
    assert "deprecation" not in headers
    alias = exchange(server.socket_path, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = parse(alias)
    assert (status, json.loads(body)) == (200, {"state": "running"})
    assert headers["deprecation"] == "true"
    assert ControlClient(server.socket_path).delete("/v1/symbols/A:US") == (200, {"symbol": "A:US"})


def test_ping_answers_the_api_version_in_a_header(server: ControlServer) -> None:
    status, headers, body = parse(
        exchange(server.socket_path, b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert (status, headers["crawler-api-version"]) == (200, "1")
    assert json.loads(body) == {"pong": True, "api_version": 1}
    # Errors carry it too, so a client can tell an old daemon from a wrong path.
    _, headers, _ = parse(exchange(server.socket_path, b"GET /v2/ping HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert headers["crawler-api-version"] == "1"


def test_a_route_given_with_its_version_is_the_same_route(sock_path: Path) -> None:
    control = ControlServer(sock_path)
    control.route("GET", "/v1/events", _echo)
    with pytest.raises(ValueError, match="already registered"):
        control.route("GET", "/events", _echo)
