"""LooksAlive: ICMP echo with icmplib, one raw socket per address family for the whole daemon.

Every raw ICMP socket receives a copy of every ICMP packet, so a socket per monitor would
cost (monitors x replies) copies; one socket per family with replies matched to waiters by
(identifier, sequence) keeps 500 monitors cheap. A kernel ICMP filter keeps echo requests
and other noise out of userspace.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import struct
from dataclasses import dataclass

from icmplib import ICMPRequest, ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import ICMPLibError, TimeoutExceeded
from icmplib.sockets import AsyncSocket

log = logging.getLogger("minisft.looksalive")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_ECHO_REPLY = {4: 0, 6: 129}
_UNREACHABLE = {4: {3: "destination unreachable", 11: "time exceeded"},
                6: {1: "destination unreachable", 3: "time exceeded"}}
_SOL_RAW = 255
_ICMP_FILTER = 1  # linux/icmp.h: bit set = type blocked
_ICMP6_FILTER = 1  # netinet/icmp6.h, level IPPROTO_ICMPV6


@dataclass(frozen=True)
class PingOutcome:
    ok: bool
    rtt: float | None  # seconds
    detail: str


class Pinger:
    """Send echo requests and await their replies; safe for many concurrent callers."""

    def __init__(self) -> None:
        self._ident = int.from_bytes(os.urandom(2), "big") or 1
        self._seq = 0
        self._sockets: dict[int, AsyncSocket] = {}
        self._readers: dict[int, asyncio.Task[None]] = {}
        self._waiters: dict[int, asyncio.Future[tuple[int, float]]] = {}
        self.stats = {"sent": 0, "answered": 0, "timeouts": 0, "errors": 0}

    async def ping(self, address: IPAddress, timeout: float) -> PingOutcome:
        version = address.version
        sock = self._socket(version)
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        request = ICMPRequest(destination=str(address), id=self._ident, sequence=seq,
                              payload_size=16)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, float]] = loop.create_future()
        self._waiters[seq] = waiter
        try:
            try:
                sock.send(request)
            except ICMPLibError as exc:
                self.stats["errors"] += 1
                return PingOutcome(False, None, f"send failed: {exc}")
            self.stats["sent"] += 1
            try:
                icmp_type, received = await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                self.stats["timeouts"] += 1
                return PingOutcome(False, None, f"no reply within {timeout:g}s")
        finally:
            self._waiters.pop(seq, None)
        if icmp_type != _ECHO_REPLY[version]:
            return PingOutcome(False, None, _UNREACHABLE[version].get(icmp_type,
                                                                      f"ICMP type {icmp_type}"))
        self.stats["answered"] += 1
        return PingOutcome(True, max(0.0, received - request.time), "echo reply")

    def _socket(self, version: int) -> AsyncSocket:
        sock = self._sockets.get(version)
        if sock is None:
            raw = ICMPv4Socket(privileged=True) if version == 4 else ICMPv6Socket(privileged=True)
            _install_filter(raw.sock, version)
            sock = AsyncSocket(raw)
            self._sockets[version] = sock
            self._readers[version] = asyncio.get_running_loop().create_task(
                self._read(sock), name=f"icmpv{version}-reader")
        return sock

    async def _read(self, sock: AsyncSocket) -> None:
        while True:
            try:
                reply = await sock.receive(None, timeout=1.0)
            except TimeoutExceeded:
                continue
            except ICMPLibError as exc:  # a bad packet or a socket hiccup: keep reading
                log.debug("ICMP receive error: %s", exc)
                await asyncio.sleep(0.01)
                continue
            if reply.id != self._ident:
                continue
            waiter = self._waiters.get(reply.sequence)
            if waiter is not None and not waiter.done():
                waiter.set_result((reply.type, reply.time))

    async def close(self) -> None:
        for task in self._readers.values():
            # Python 3.11's asyncio.wait_for (inside icmplib's AsyncSocket.receive) drops a
            # cancel that races with an arriving packet (e.g. an ICMP port unreachable):
            # the reader loops on into a new receive. Cancel until it really ends.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.2)
        for sock in self._sockets.values():
            sock.close()
        self._readers.clear()
        self._sockets.clear()


def _install_filter(sock: socket.socket, version: int) -> None:
    """Let only echo replies and errors through to this raw socket."""
    try:
        if version == 4:
            allowed = (1 << 0) | (1 << 3) | (1 << 11)
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", ~allowed & 0xFFFFFFFF))
        else:
            words = [0xFFFFFFFF] * 8
            for icmp_type in (1, 3, 129):
                words[icmp_type >> 5] &= ~(1 << (icmp_type & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *words))
    except OSError as exc:  # not fatal: we match replies by id/sequence anyway
        log.debug("could not install ICMP filter: %s", exc)
