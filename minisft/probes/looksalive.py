"""LooksAlive: ICMP echo with icmplib, one raw socket per address family for the whole daemon.

Every raw ICMP socket receives a copy of every ICMP packet, so a socket per monitor would
cost (monitors x replies) copies; one socket per family with replies matched to waiters by
(identifier, sequence) keeps 500 monitors cheap. A kernel ICMP filter keeps echo requests
and other noise out of userspace.

icmplib builds and sends the requests. Replies are read here, by an event-loop reader that
never times out, and not with icmplib's `AsyncSocket.receive(timeout)`: that call throws
away a packet it has already taken off the socket when it reads it after its own deadline
(`if current_time > time_limit: raise TimeoutError`). A reader looping on
`receive(timeout=1.0)` re-arms right after each reply, so with one ping a second its
deadline fell on the next reply, and a quarter to a third of all replies were read and
dropped on a loss-free network (issue 10, defect 3).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from icmplib import ICMPRequest, ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import ICMPLibError

log = logging.getLogger("minisft.looksalive")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_ECHO_REQUEST = {4: 8, 6: 128}
_ECHO_REPLY = {4: 0, 6: 129}
_UNREACHABLE = {4: {3: "destination unreachable", 11: "time exceeded"},
                6: {1: "destination unreachable", 3: "time exceeded"}}
_SOL_RAW = 255
_ICMP_FILTER = 1  # linux/icmp.h: bit set = type blocked
_ICMP6_FILTER = 1  # netinet/icmp6.h, level IPPROTO_ICMPV6
_IPV6_HEADER = 40  # our requests carry no extension headers, so neither do their quotes
_READ_SIZE = 1024  # more than an echo reply or an error quoting one ever needs
_READS_PER_WAKEUP = 64  # a flood of ICMP must not hold the event loop: the rest waits


@dataclass(frozen=True)
class PingOutcome:
    ok: bool
    rtt: float | None  # seconds
    detail: str


@dataclass(frozen=True)
class EchoAnswer:
    """What an ICMP packet says about one of our echo requests."""

    icmp_type: int  # echo reply, or the error (unreachable, time exceeded)
    identifier: int
    sequence: int


def parse_answer(packet: bytes, version: int) -> EchoAnswer | None:
    """The echo reply in `packet`, or the error quoting an echo request; None for anything
    else (truncated, someone else's echo request, other ICMP types).

    `packet` is what a raw socket of that family reads: an IPv4 packet with its header
    (whose length is in the header: options make it longer than 20 bytes), or an ICMPv6
    message alone. An error carries the IP header and first 8 bytes of the datagram it
    answers, i.e. our echo request's identifier and sequence.
    """
    if version == 4:
        packet = _ipv4_payload(packet)
    if len(packet) < 8:
        return None
    icmp_type = packet[0]
    if icmp_type == _ECHO_REPLY[version]:
        echo = packet
    elif icmp_type in _UNREACHABLE[version]:
        quoted = packet[8:]
        echo = _ipv4_payload(quoted) if version == 4 else quoted[_IPV6_HEADER:]
        if len(echo) < 8 or echo[0] != _ECHO_REQUEST[version]:
            return None
    else:
        return None
    identifier, sequence = struct.unpack_from("!HH", echo, 4)
    return EchoAnswer(icmp_type, identifier, sequence)


def _ipv4_payload(packet: bytes) -> bytes:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return b""
    return packet[(packet[0] & 0x0F) * 4:]


class Pinger:
    """Send echo requests and await their replies; safe for many concurrent callers."""

    def __init__(self) -> None:
        self._ident = int.from_bytes(os.urandom(2), "big") or 1
        self._seq = 0
        self._sockets: dict[int, Any] = {}  # icmplib ICMPv4Socket / ICMPv6Socket
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[int, asyncio.Future[tuple[int, float]]] = {}
        self.stats = {"sent": 0, "answered": 0, "timeouts": 0, "errors": 0, "late": 0}

    async def ping(self, address: IPAddress, timeout: float, *, linger: float = 0.0,
                   on_late: Callable[[float], object] | None = None) -> PingOutcome:
        """One echo to `address`, waiting `timeout` for its reply. With `on_late`, a reply
        that comes after `timeout` but within `linger` (from the send) is still matched:
        `on_late(rtt)` is called with it. The caller waits a short estimate (the RTO) to
        start retries early, and still learns that a slow reply was not a lost one."""
        version = address.version
        sock = self._socket(version)
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        request = ICMPRequest(destination=str(address), id=self._ident, sequence=seq,
                              payload_size=16)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, float]] = loop.create_future()
        self._waiters[seq] = waiter
        lingering = False
        try:
            try:
                sock.send(request)
            except ICMPLibError as exc:
                self.stats["errors"] += 1
                return PingOutcome(False, None, f"send failed: {exc}")
            self.stats["sent"] += 1
            try:
                # shielded: a timeout must not cancel the waiter, which may linger on
                icmp_type, received = await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except TimeoutError:
                self.stats["timeouts"] += 1
                if on_late is not None and linger > timeout:
                    lingering = True
                    self._linger(seq, waiter, request.time, version, linger - timeout, on_late)
                return PingOutcome(False, None, f"no reply within {timeout:g}s")
        finally:
            if not lingering:
                self._forget(seq, waiter)
        if icmp_type != _ECHO_REPLY[version]:
            return PingOutcome(False, None, _UNREACHABLE[version].get(icmp_type,
                                                                      f"ICMP type {icmp_type}"))
        self.stats["answered"] += 1
        return PingOutcome(True, max(0.0, received - request.time), "echo reply")

    def _linger(self, seq: int, waiter: asyncio.Future[tuple[int, float]], sent_at: float,
                version: int, remaining: float, on_late: Callable[[float], object]) -> None:
        """Keep matching a reply to `seq` for `remaining` seconds more."""
        def arrived(done: asyncio.Future[tuple[int, float]]) -> None:
            give_up.cancel()
            self._forget(seq, done)
            if done.cancelled():
                return
            icmp_type, received = done.result()
            if icmp_type == _ECHO_REPLY[version]:
                self.stats["late"] += 1
                on_late(max(0.0, received - sent_at))

        give_up = asyncio.get_running_loop().call_later(remaining, waiter.cancel)
        waiter.add_done_callback(arrived)

    def _forget(self, seq: int, waiter: asyncio.Future[tuple[int, float]]) -> None:
        if self._waiters.get(seq) is waiter:
            del self._waiters[seq]
        if not waiter.done():
            waiter.cancel()

    def _socket(self, version: int) -> Any:
        icmp = self._sockets.get(version)
        if icmp is None:
            icmp = ICMPv4Socket(privileged=True) if version == 4 else \
                ICMPv6Socket(privileged=True)
            raw: socket.socket = icmp.sock
            raw.setblocking(False)
            _install_filter(raw, version)
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(raw.fileno(), self._read, raw, version)
            self._sockets[version] = icmp
        return icmp

    def _read(self, raw: socket.socket, version: int) -> None:
        """The socket is readable: hand every waiting reply to its ping. Nothing read is
        ever dropped for lack of time, and no timer races the read."""
        for _ in range(_READS_PER_WAKEUP):
            try:
                packet = raw.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # a socket hiccup: the next readable event retries
                log.debug("ICMP receive error: %s", exc)
                return
            received = time.time()  # the clock icmplib stamps request.time with
            answer = parse_answer(packet, version)
            if answer is None or answer.identifier != self._ident:
                continue
            waiter = self._waiters.get(answer.sequence)
            if waiter is not None and not waiter.done():
                waiter.set_result((answer.icmp_type, received))

    async def close(self) -> None:
        for icmp in self._sockets.values():
            if self._loop is not None and icmp.sock is not None:
                self._loop.remove_reader(icmp.sock.fileno())
            icmp.close()
        self._sockets.clear()
        self._loop = None


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
