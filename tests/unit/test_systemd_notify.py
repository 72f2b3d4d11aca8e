"""The sd_notify protocol against a real AF_UNIX datagram socket, as systemd listens."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from minisft.runtime import systemd


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def _nothing_pending(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def test_ready_carries_the_status_line(listener: socket.socket) -> None:
    systemd.notify_ready("watching web, db")
    assert _received(listener) == "READY=1\nSTATUS=watching web, db"
    assert _nothing_pending(listener)


def test_watchdog_and_stopping_are_one_datagram_each(listener: socket.socket) -> None:
    systemd.notify_watchdog()
    systemd.notify_stopping()
    assert _received(listener) == "WATCHDOG=1"
    assert _received(listener) == "STOPPING=1"
    assert _nothing_pending(listener)


def test_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"minisft-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)  # Linux only, like the daemon
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        systemd.notify_watchdog()
        assert _received(sock) == "WATCHDOG=1"


def test_no_notify_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sent: list[object] = []
    monkeypatch.setattr(socket.socket, "sendto", lambda *a: sent.append(a))
    systemd.notify_ready("x")
    systemd.notify_stopping()
    assert sent == []


def test_a_socket_nobody_listens_on_does_not_raise(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd gone (or the unit not Type=notify) must never stop the daemon
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent"))
    systemd.notify_stopping()


@pytest.mark.parametrize(("usec", "interval"), [
    ("10000000", 5.0),  # WatchdogSec=10s: ping every 5 s
    ("1", 0.5e-6),
    ("0", 0.0),
    ("-4000000", 0.0),
    ("", 0.0),
    ("ten", 0.0),
    ("1.5e6", 0.0),
])
def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch,
                                                   usec: str, interval: float) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == interval


def test_no_watchdog_usec_means_no_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.watchdog_interval() == 0.0


@pytest.mark.parametrize(("owner", "interval"), [
    (str(os.getpid()), 5.0),
    (str(os.getpid() + 1), 0.0),  # meant for another process (a parent we inherited it from)
    ("not-a-pid", 0.0),
])
def test_watchdog_pid_must_be_ours(monkeypatch: pytest.MonkeyPatch,
                                   owner: str, interval: float) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", owner)
    assert systemd.watchdog_interval() == interval
