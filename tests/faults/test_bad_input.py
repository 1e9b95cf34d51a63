"""Hostile input through the CLI and the raw control socket, against one running daemon.

What could be lost: the daemon (a crash or a wedged connection thread), the watchlist (garbage
stored as a symbol), and the user's patience (tracebacks). Asserted for every case:

- CLI: exit 2 (bad usage, bad symbol) or 1 (the daemon refused the request), exactly one line
  on stderr, no "Traceback", and no "unexpected ..." (an untranslated exception). The CLI
  runs in-process (`crawler.cli.main`) so that the table stays fast and NUL bytes, which no
  argv can carry, can be tried too; a few cases also run as a real subprocess.
- socket: a 4xx (505 for an HTTP version we do not speak) with a JSON error body
  {"error": {"type", "message"}}, never a hang, never a dropped connection without an answer.
- after each batch the daemon process is alive and GET /status answers 200, and the watchlist
  holds only the symbols added on purpose.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.cli import main as cli_main
from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness, one_clean_line

GOOD = "AAPL:US"
BAD_SYMBOLS = {
    "empty": "",
    "blank": "   ",
    "33-chars": "A" * 33,
    "shell-rm": ";rm -rf /",
    "shell-subst": "$(x)",
    "backticks": "`id`",
    "two-colons": "AAPL:US:XX",
    "unknown-suffix": "AAPL:ZZZ",
    "unicode": "ÄPFEL:US",
    "rtl-override": "\u202eSU:LPAA",
    "nul": "AAPL\x00:US",
    "newline": "AAPL\n:US",
    "path": "../../etc/passwd",
    "space": "AA PL:US",
    "lone-surrogate": "\ud800:US",
}
# argv that must fail cleanly; expected exit code.
BAD_FLAGS: dict[str, tuple[list[str], int]] = {
    "unknown-flag": (["fetch", "--bogus", GOOD], 2),
    "unknown-command": (["frobnicate"], 2),
    "unknown-subcommand": (["symbols", "frobnicate"], 2),
    "bad-asset-class": (["fetch", "--asset-class", "nonsense", GOOD], 2),
    "bad-asset-class-add": (["symbols", "add", "--asset-class", "beans", GOOD], 2),
    "no-symbols": (["fetch"], 2),
    "bad-since": (["history", GOOD, "--since", "yesterdayish"], 2),
    "bad-until": (["history", GOOD, "--until", "2026-13-45"], 2),
    "since-unicode": (["history", GOOD, "--since", "3 дня"], 2),
    "bad-limit-text": (["history", GOOD, "--limit", "abc"], 2),
    "bad-limit-negative": (["history", GOOD, "--limit", "-1"], 2),
    "json-and-csv": (["history", GOOD, "--json", "--csv"], 2),
    "bad-export-format": (["export", "--format", "xml"], 2),
    "bad-export-since": (["export", "--since", "not-a-time"], 2),
    "bad-interval": (["start", "--interval", "5"], 2),
    "config-missing-unicode": (["--config", "/nonexistent/конфиг-ü.toml", "status"], 2),
}
SUBPROCESS_CASES = ["unknown-flag", "bad-since", "bad-asset-class"]
#: Header shapes the standard library's parser lets through; the server refuses them itself.
HEADER_GARBAGE = (
    "header-injection-cr",
    "header-no-colon",
    "header-cr-before-crlf",
    "header-envelope-no-colon",
)


def assert_clean_failure(code: int, err: str, expected: set[int]) -> None:
    line = one_clean_line(err)
    assert "unexpected" not in line, line
    assert code in expected, f"exit {code}, expected one of {sorted(expected)}"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHarness]:
    base = tmp_path_factory.mktemp("bad-input")
    with FakeMarket() as market:
        harness = DaemonHarness(market, base, SOURCES_ORDER="bright_data")
        harness.start()
        status, body = harness.client().post("/symbols", {"symbol": GOOD})
        assert status == 201, body
        try:
            yield harness
        finally:
            harness.stop()


@pytest.fixture
def cli_env(daemon: DaemonHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's environment in this process, for the in-process CLI."""
    for key in [*daemon.env, "CRAWLER_CONFIG"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in daemon.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(daemon.base)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from crawler.config import reset_settings

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    reset_settings()
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), out, err


def assert_serving(daemon: DaemonHarness) -> None:
    assert daemon.alive(), daemon.log_tail()
    status, body = daemon.client(timeout_s=10).get("/status")
    assert status == 200, body
    assert [s["symbol"] for s in body["symbols"]] == [GOOD]  # no garbage was stored


# -- the CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["fetch", "symbols add", "symbols remove", "history"])
def test_bad_symbols_through_the_cli(
    verb: str, daemon: DaemonHarness, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = []
    for case, symbol in BAD_SYMBOLS.items():
        code, _out, err = run_cli([*verb.split(), symbol], capsys)
        try:
            # Every command checks its symbols before anything else: a usage error, exit 2.
            assert_clean_failure(code, err, {2})
        except AssertionError as exc:
            failures.append(f"{verb} {case}: {exc}\n{err}")
    assert not failures, "\n".join(failures)
    assert_serving(daemon)


def test_bad_flags_through_the_cli(
    daemon: DaemonHarness, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = []
    for case, (argv, expected) in BAD_FLAGS.items():
        code, _out, err = run_cli(argv, capsys)
        try:
            assert_clean_failure(code, err, {expected})  # the same code as offline
        except AssertionError as exc:
            failures.append(f"{case}: {exc}\n{err}")
    assert not failures, "\n".join(failures)
    assert_serving(daemon)


def test_unicode_output_path(
    daemon: DaemonHarness, cli_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "нет-такой-папки" / "ü.csv"
    code, _out, err = run_cli(["export", "-o", str(missing)], capsys)
    line = one_clean_line(err)
    assert code == 2, err  # a bad argument, named, not "unexpected FileNotFoundError"
    assert line == (
        f"error: -o {missing}: the directory {missing.parent} does not exist; "
        "create it or write elsewhere"
    )
    code, _out, err = run_cli(["export", "-o", str(tmp_path)], capsys)
    line = one_clean_line(err)
    assert code == 2, err
    assert line.startswith(f"error: -o {tmp_path}: cannot write it (Is a directory)"), line
    fine = tmp_path / "ß-ü-导出.csv"
    code, _out, err = run_cli(["export", "-o", str(fine)], capsys)
    assert code == 0, err
    assert fine.read_text().startswith("symbol,")
    assert_serving(daemon)


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_flags_through_a_real_cli_process(case: str, daemon: DaemonHarness) -> None:
    argv, expected = BAD_FLAGS[case]
    result = daemon.cli(*argv)
    one_clean_line(result.stderr)
    assert result.returncode == expected, result
    assert_serving(daemon)


def test_bad_symbol_through_a_real_cli_process(daemon: DaemonHarness) -> None:
    result = daemon.cli("fetch", ";rm -rf /", "$(x)")
    one_clean_line(result.stderr)
    assert result.returncode == 2, result
    assert_serving(daemon)


# -- the raw socket ----------------------------------------------------------------------------


def exchange(path: Path, raw: bytes, timeout_s: float = 8.0) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, half-close, read the whole answer: (status, headers, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early; the answer is still there to read
        data = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")[1:]
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), f"no HTTP answer to {raw[:80]!r}: {data[:200]!r}"
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def request(method: str, target: str, body: bytes | None = None, **headers: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def post(target: str, body: object) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request("POST", target, raw)


NESTED = b"[" * 30_000 + b"]" * 30_000  # under 64 KiB, but deeper than json can recurse
SOCKET_CASES: dict[str, tuple[bytes, set[int]]] = {
    # JSON bodies
    "not-json": (post("/fetch", b"{symbols: AAPL"), {400}),
    "empty-body": (post("/fetch", b""), {400}),
    "array-not-object": (post("/fetch", ["AAPL:US"]), {400}),
    "string-body": (post("/fetch", "AAPL:US"), {400}),
    "null-body": (post("/fetch", None), {400}),
    "symbols-string": (post("/fetch", {"symbols": "AAPL:US"}), {400}),
    "symbols-ints": (post("/fetch", {"symbols": [1, 2]}), {400}),
    "symbols-nested": (post("/fetch", {"symbols": [["AAPL:US"]]}), {400}),
    "symbols-missing": (post("/fetch", {}), {400}),
    "symbols-empty": (post("/fetch", {"symbols": []}), {400}),
    "symbols-too-many": (post("/fetch", {"symbols": ["AAPL:US"] * 1001}), {400}),
    "fresh-not-bool": (post("/fetch", {"symbols": ["AAPL:US"], "fresh": "yes"}), {400}),
    "unknown-field": (post("/fetch", {"symbols": ["AAPL:US"], "rm": "-rf"}), {400}),
    "nan": (post("/fetch", b'{"symbols": ["AAPL:US"], "fresh": NaN}'), {400}),
    "deeply-nested": (post("/fetch", NESTED), {400}),
    "huge": (post("/fetch", {"symbols": ["A" * 70_000]}), {413}),
    "invalid-utf8": (post("/fetch", b'{"symbols": ["\xff\xfe"]}'), {400}),
    "symbol-shell": (post("/fetch", {"symbols": [";rm -rf /"]}), {400}),
    "symbol-33": (post("/fetch", {"symbols": ["A" * 33]}), {400}),
    "symbol-nul": (post("/fetch", {"symbols": ["AAPL\u0000:US"]}), {400}),
    "symbol-surrogate": (post("/fetch", b'{"symbols": ["\\ud800:US"]}'), {400}),
    "add-int": (post("/symbols", {"symbol": 5}), {400}),
    "add-null": (post("/symbols", {"symbol": None}), {400}),
    "add-bad-class": (post("/symbols", {"symbol": "TSLA:US", "asset_class": "beans"}), {400}),
    "add-two-colons": (post("/symbols", {"symbol": "A:B:C"}), {400}),
    "add-array": (post("/symbols", [{"symbol": "TSLA:US"}]), {400}),
    # paths and queries
    "delete-nul": (request("DELETE", "/symbols/%00"), {400}),
    "delete-rtl": (request("DELETE", "/symbols/%E2%80%AE"), {400}),
    "delete-dotdot": (request("DELETE", "/symbols/.."), {400}),
    "delete-bad-escape": (request("DELETE", "/symbols/%ZZ"), {400}),
    "delete-untracked": (request("DELETE", "/symbols/MSFT:US"), {404}),
    "history-bad-since": (request("GET", "/history?symbol=AAPL:US&since=garbage"), {400}),
    "history-bad-limit": (request("GET", "/history?symbol=AAPL:US&limit=-1"), {400}),
    "history-no-symbol": (request("GET", "/history"), {400}),
    "export-bad-format": (request("GET", "/export?format=xml"), {400}),
    "traversal": (request("GET", "/../../etc/passwd"), {404}),
    "unicode-path": (b"GET /symbols/\xc3\xa4\xff HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "wrong-method": (request("PUT", "/status"), {405}),
    "unknown-method": (request("BREW", "/status"), {501}),
    # HTTP garbage
    "binary-junk": (b"\x00\xff\x13\x37" * 64 + b"\r\n\r\n", {400}),
    "bad-request-line": (b"GARBAGE\r\n\r\n", {400}),
    "too-many-words": (b"GET / status HTTP/1.1\r\n\r\n", {400}),
    "http-9": (b"GET /status HTTP/9.9\r\nHost: x\r\n\r\n", {505}),
    "content-length-text": (request("POST", "/fetch", None, Content_Length="abc"), {400}),
    "content-length-negative": (request("POST", "/fetch", None, Content_Length="-5"), {400}),
    "content-length-twice": (
        b"POST /fetch HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
        {400},
    ),
    "content-length-short": (
        b"POST /fetch HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{}",
        {400},  # the client half-closes: the body ends short at once, no timeout
    ),
    "content-length-huge": (request("POST", "/fetch", None, Content_Length="99999999999"), {413}),
    "bad-chunk": (
        b"POST /fetch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n{}\r\n0\r\n\r\n",
        {400},
    ),
    "header-no-colon": (b"GET /status HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", {400}),
    "header-injection-cr": (
        b"GET /status HTTP/1.1\r\nHost: x\r\nX-A: a\rInjected: b\r\n\r\n",
        {400},
    ),
    "header-cr-before-crlf": (
        b"GET /status HTTP/1.1\r\nX-A: a\r\r\nContent-Length: 5\r\n\r\n",
        {400},
    ),
    "header-envelope-no-colon": (b"GET /status HTTP/1.1\r\nFrom evil\r\nHost: x\r\n\r\n", {400}),
    "header-huge": (b"GET /status HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", {400}),
    "too-many-headers": (
        b"GET /status HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
        {400},
    ),
    "target-too-long": (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", {400}),
}


@pytest.mark.parametrize("batch", ["bodies", "paths", "garbage"])
def test_bad_requests_on_the_raw_socket(batch: str, daemon: DaemonHarness) -> None:
    names = list(SOCKET_CASES)
    bounds = {"bodies": (0, names.index("delete-nul")),
              "paths": (names.index("delete-nul"), names.index("binary-junk")),
              "garbage": (names.index("binary-junk"), len(names))}  # fmt: skip
    start, end = bounds[batch]
    failures = []
    for case in names[start:end]:
        raw, allowed = SOCKET_CASES[case]
        try:
            status, headers, body = exchange(daemon.socket_path, raw)
            # One right answer per case: each set holds exactly one status.
            assert len(allowed) == 1, f"{case}: pin one status, not {sorted(allowed)}"
            assert status in allowed, f"status {status}, expected {sorted(allowed)}"
            assert headers.get("content-type", "").startswith("application/json"), headers
            error = json.loads(body)["error"]
            assert isinstance(error["type"], str) and error["type"]
            assert isinstance(error["message"], str) and "\n" not in error["message"].strip()
        except (AssertionError, OSError, ValueError, KeyError) as exc:
            failures.append(f"{case}: {type(exc).__name__}: {exc}")
        assert daemon.alive(), f"the daemon died on {case}:\n{daemon.log_tail()}"
    assert not failures, "\n".join(failures)
    assert_serving(daemon)
    assert "Traceback" not in daemon.log_tail(200_000)  # no handler blew up, even caught


@pytest.mark.parametrize("verb", ["symbols remove", "history"])
def test_undecodable_symbol_is_a_symbol_error(
    verb: str, daemon: DaemonHarness, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_cli([*verb.split(), BAD_SYMBOLS["lone-surrogate"]], capsys)
    assert_clean_failure(code, err, {2})


@pytest.mark.parametrize("case", HEADER_GARBAGE)
def test_header_garbage_is_refused(case: str, daemon: DaemonHarness) -> None:
    raw, allowed = SOCKET_CASES[case]
    status, _headers, _body = exchange(daemon.socket_path, raw)
    assert status in allowed
    assert_serving(daemon)


def test_not_tracked_is_told_apart_from_an_unknown_route(
    daemon: DaemonHarness, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a NotTracked answer means "not tracked"; a 404 for an unknown path is our bug."""
    status, body = daemon.client().delete("/symbols/MSFT%3AUS")
    assert (status, body["error"]["type"]) == (404, "NotTracked"), body
    status, body = daemon.client().delete("/symbols/")
    assert (status, body["error"]["type"]) == (404, "NotFound"), body
    code, _out, err = run_cli(["symbols", "remove", "MSFT:US"], capsys)
    assert code == 1 and "MSFT:US is not tracked" in one_clean_line(err)
    code, _out, err = run_cli(["symbols", "remove", ""], capsys)
    line = one_clean_line(err)
    assert code == 2 and "not tracked" not in line, line
    assert_serving(daemon)


def test_the_table_is_big_enough() -> None:
    cli_cases = len(BAD_SYMBOLS) * 4 + len(BAD_FLAGS) + 2
    assert cli_cases + len(SOCKET_CASES) >= 50
    assert len(SOCKET_CASES) >= 50


if sys.platform != "linux":  # SO_PEERCRED and abstract details: the daemon is Linux-only
    pytestmark = pytest.mark.skip("the control socket needs Linux")


def test_bad_flags_without_a_daemon_exit_as_with_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The offline path (no daemon) gives every bad flag the same exit code as the daemon's."""
    config = tmp_path / "config.toml"
    config.write_text("")
    for key, value in {
        "CRAWLER_CONFIG": str(config),
        "DATA_DIR": str(tmp_path / "data"),
        "CRAWLER_SOCKET": str(tmp_path / "nobody-home.sock"),
        "SOURCES_ORDER": "yfinance",
        "YFINANCE_ENDPOINT": "http://127.0.0.1:9",  # never reached: every case fails first
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    failures = []
    for case, (argv, expected) in BAD_FLAGS.items():
        code, _out, err = run_cli(argv, capsys)
        try:
            assert_clean_failure(code, err, {expected})
        except AssertionError as exc:
            failures.append(f"{case}: {exc}\n{err}")
    assert not failures, "\n".join(failures)


def test_export_file_is_private_whatever_the_umask(daemon: DaemonHarness, tmp_path: Path) -> None:
    """`export -o` under umask 000 writes a 0600 file (the history is the user's data), through a
    real CLI process."""
    out = tmp_path / "history.csv"
    result = daemon.cli("export", "-o", str(out), umask=0)
    assert result.returncode == 0, result
    assert out.read_text().startswith("symbol,")
    assert out.stat().st_mode & 0o777 == 0o600
    assert_serving(daemon)
