"""Events to the local syslog daemon, as RFC 3164 datagrams on a unix socket (/dev/log).

Each event is one datagram `<PRI>Mmm dd hh:mm:ss minisft[PID]: MESSAGE`, the format glibc's
syslog(3) uses for the local socket (no hostname: the syslog daemon adds its own).
PRI = facility * 8 + severity, and `Severity` values are syslog levels. MESSAGE is
`event.summary()` followed by key=value fields (seq, node, severity, state).

No syslog daemon (the socket path does not exist, or nothing listens on it) is NOT a
delivery error: the event is "delivered nowhere" and counted in `stats["undeliverable"]`
(one warning per episode). Retrying would only pile events up for a daemon that may never
come; the journal keeps every event anyway. A full socket buffer (syslog daemon busy) is a
DeliveryError, so the event is retried with backoff.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from pathlib import Path

from minisft.config.model import LoggingConfig
from minisft.core.events import Event
from minisft.sinks.base import DeliveryError, Sink

log = logging.getLogger("minisft.sinks.syslog")

FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}

STREAM_TIMEOUT = 2.0  # s per step on a stream /dev/log
MAX_MESSAGE = 8000  # bytes; rsyslog's default maximum message size is 8 KiB
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Errors meaning "no syslog daemon here": deliver nowhere instead of retrying forever.
_NOBODY = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR, errno.ENOTSOCK}


def facility_code(name: str) -> int:
    try:
        return FACILITIES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown syslog facility {name!r} "
                         f"(one of: {', '.join(FACILITIES)})") from None


def rfc3164_timestamp(t: float) -> str:
    lt = time.localtime(t)
    return f"{_MONTHS[lt.tm_mon - 1]} {lt.tm_mday:2d} {lt.tm_hour:02d}:{lt.tm_min:02d}:" \
           f"{lt.tm_sec:02d}"


def format_message(event: Event) -> str:
    fields = [f"seq={event.seq}", f"node={event.node}", f"severity={event.severity.label}"]
    if event.state:
        fields.append(f"state={event.state}")
    text = f"{event.summary()} ({' '.join(fields)})"
    return " ".join(text.split())  # one line: newlines would split the syslog record


class SyslogSink(Sink):
    name = "syslog"
    attempt_timeout = 2 * STREAM_TIMEOUT  # connect, then send (a stream /dev/log)

    def __init__(self, config: LoggingConfig, *, ident: str = "minisft") -> None:
        self.socket_path = Path(config.syslog_socket)
        self.facility = facility_code(config.syslog_facility)
        self.ident = ident
        self.stats: dict[str, int] = {"sent": 0, "undeliverable": 0}
        self._sock: socket.socket | None = None
        self._missing = False  # inside a "no syslog daemon" episode: warn once

    def datagram(self, event: Event) -> bytes:
        pri = self.facility * 8 + int(event.severity)
        head = f"<{pri}>{rfc3164_timestamp(event.time)} {self.ident}[{os.getpid()}]: "
        body = format_message(event).encode("utf-8", "replace")
        return head.encode() + body[:MAX_MESSAGE]

    async def start(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    async def deliver(self, event: Event) -> None:
        if self._sock is None:
            await self.start()
        assert self._sock is not None
        data = self.datagram(event)
        try:
            # Unconnected sendto: a restarted syslog daemon (new socket) just works.
            self._sock.sendto(data, str(self.socket_path))
        except OSError as exc:
            if exc.errno == errno.EPROTOTYPE:  # /dev/log is a stream socket here
                if not await asyncio.to_thread(self._send_stream, data):
                    return
            elif exc.errno in _NOBODY:
                self._nobody(exc)
                return
            else:  # EAGAIN/ENOBUFS: the syslog daemon is behind, try again later
                raise DeliveryError(f"syslog {self.socket_path}: "
                                    f"{exc.strerror or exc}") from None
        self.stats["sent"] += 1
        if self._missing:
            self._missing = False
            log.warning("syslog socket %s is back", self.socket_path)

    def _send_stream(self, data: bytes) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(STREAM_TIMEOUT)
                s.connect(str(self.socket_path))
                s.sendall(data + b"\n")  # LF-framed, as rsyslog/syslog-ng accept
        except OSError as exc:
            if exc.errno in _NOBODY:
                self._nobody(exc)
                return False
            raise DeliveryError(f"syslog {self.socket_path}: {exc.strerror or exc}") from None
        return True

    def _nobody(self, exc: OSError) -> None:
        self.stats["undeliverable"] += 1
        if not self._missing:
            self._missing = True
            log.warning("no syslog daemon at %s (%s): events go to the journal only until "
                        "one appears", self.socket_path, exc.strerror or exc)

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
