"""SystemdNotifier against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.daemon.notify import SystemdNotifier


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that names it."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(os.fspath(path))
        sock.settimeout(3)
        yield sock, os.fspath(path)


def received(sock: socket.socket) -> dict[str, str]:
    datagram = sock.recv(65536).decode("utf-8")
    return dict(line.split("=", 1) for line in datagram.split("\n"))


def test_ready_status_watchdog_stopping_arrive_as_datagrams(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, address = systemd_socket
    notifier = SystemdNotifier(env={"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("watching 12 symbols")
    assert received(sock) == {"READY": "1", "STATUS": "watching 12 symbols"}
    assert notifier.ready()
    assert received(sock) == {"READY": "1"}
    assert notifier.status("budget 40% used")
    assert received(sock) == {"STATUS": "budget 40% used"}
    assert notifier.watchdog()
    assert received(sock) == {"WATCHDOG": "1"}
    assert notifier.stopping()
    assert received(sock) == {"STOPPING": "1"}


def test_newlines_in_a_value_cannot_inject_assignments(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, address = systemd_socket
    SystemdNotifier(env={"NOTIFY_SOCKET": address}).status("line one\nREADY=1")
    assert received(sock) == {"STATUS": "line one READY=1"}


def test_abstract_socket_name() -> None:
    name = f"crawler-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(3)
        assert SystemdNotifier(env={"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert received(sock) == {"READY": "1", "STATUS": "up"}


@pytest.mark.parametrize("value", [None, "", "vsock:2:1234", "@"])
def test_no_usable_notify_socket_is_a_no_op(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    notifier = SystemdNotifier(env=env)
    assert not notifier.enabled
    assert not notifier.ready("up")
    assert not notifier.watchdog()
    assert not notifier.stopping()


def test_send_failure_does_not_raise(tmp_path: Path) -> None:
    notifier = SystemdNotifier(env={"NOTIFY_SOCKET": os.fspath(tmp_path / "gone.sock")})
    assert notifier.enabled
    assert not notifier.ready("up")  # ENOENT: logged at debug, reported as False
    assert not notifier.watchdog()


def test_default_environment_is_os_environ(
    systemd_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = systemd_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert SystemdNotifier().stopping()
    assert received(sock) == {"STOPPING": "1"}


@pytest.mark.parametrize(
    ("env", "expected_s"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "60s"}, None),
        ({"WATCHDOG_USEC": "9" * 40}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], expected_s: float | None
) -> None:
    assert SystemdNotifier(env=env).watchdog_interval_s() == expected_s
