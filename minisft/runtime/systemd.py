"""systemd's service notification protocol (sd_notify(3)) and watchdog settings.

The daemon runs as a Type=notify unit with WatchdogSec: it says READY=1 once it watches,
WATCHDOG=1 at half the watchdog period and STOPPING=1 when it shuts down. Outside systemd
(no $NOTIFY_SOCKET) every call here is a no-op, so the daemon runs the same by hand.
"""

from __future__ import annotations

import contextlib
import os
import socket


def notify(message: str) -> None:
    """One datagram to $NOTIFY_SOCKET; never raises: a missing or full socket must not stop
    the daemon (systemd then times out or restarts it, which is its job)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):  # an abstract socket: the kernel name starts with a NUL
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), addr)


def notify_ready(status: str) -> None:
    notify(f"READY=1\nSTATUS={status}")


def notify_watchdog() -> None:
    notify("WATCHDOG=1")


def notify_stopping() -> None:
    notify("STOPPING=1")


def watchdog_interval() -> float:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises; 0.0 when the watchdog is off, the value is not a positive whole number, or
    $WATCHDOG_PID names another process (the setting was inherited from a parent the
    watchdog is meant for, and systemd would drop our pings under NotifyAccess=main)."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return 0.0
    owner = os.environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != os.getpid():
                return 0.0
        except ValueError:
            return 0.0
    try:
        value = int(usec)
    except ValueError:
        return 0.0
    return value / 2e6 if value > 0 else 0.0
