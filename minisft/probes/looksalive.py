"""LooksAlive: ICMP echo, one ping hub for the whole daemon.

Every raw ICMP socket receives a copy of every ICMP packet, so a socket per monitor would
cost (monitors x replies) copies; one socket per family with replies matched to waiters by
(identifier, sequence) keeps 500 monitors cheap. A kernel ICMP filter keeps echo requests
and other noise out of userspace.

The per-ping cost is what limits how many addresses one daemon can watch (issue 14: 500
monitors at 1 s must stay under 15% of a core), so a ping costs one `sendto`, one entry in
a dict and one in a heap, and one future for its caller to await:
* The request is built here, not by icmplib's `send`, which costs two `setsockopt` calls
  (TTL, traffic class) and an address lookup per packet. icmplib only opens the sockets.
* Replies are drained by one event-loop reader per socket, every packet that is ready per
  wake-up. The reader never times out: icmplib's `AsyncSocket.receive(timeout)` throws away
  a packet it has already taken off the socket when it reads it after its own deadline, and
  a quarter to a third of all replies were read and dropped that way (issue 10, defect 3).
* All deadlines (a ping's timeout, then how long a late reply is still matched) live in one
  heap, served by one asyncio timer armed for the earliest: no `wait_for`, no `call_later`
  and no task per ping. A deadline whose ping was answered stays in the heap and is skipped
  when it comes up, which is cheaper than taking it out.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from icmplib import ICMPv4Socket, ICMPv6Socket

from minisft.net.sockets import enlarge_receive_buffer

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
# A flood of ICMP must not hold the event loop: what is left after this many waits for the
# next wake-up (the socket stays readable). 500 monitors at 1 s get ~500 replies a second.
_READS_PER_WAKEUP = 256
# room for thousands of replies while the loop is busy (see enlarge_receive_buffer)
ICMP_RECEIVE_BUFFER = 4 * 1024 * 1024
_PAYLOAD = b"MiniSFT-LooksAlv"  # 16 bytes, as icmplib's payload_size=16 sent before
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
# the clock resolution asyncio itself allows a timer to fire early by
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution


@dataclass(frozen=True)
class PingOutcome:
    ok: bool
    rtt: float | None  # seconds
    detail: str


class EchoAnswer(NamedTuple):
    """What an ICMP packet says about one of our echo requests. A tuple, not a dataclass:
    the reader builds one for every packet it reads."""

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


def echo_request(version: int, identifier: int, sequence: int) -> bytes:
    """An ICMP echo request as a raw socket of that family sends it (no IP header). The
    IPv4 checksum is ours to fill in; for ICMPv6 the kernel computes it (RFC 3542 3.1),
    over a pseudo-header we do not know, so it is left 0."""
    header = struct.pack("!BBHHH", _ECHO_REQUEST[version], 0, 0, identifier, sequence)
    if version == 6:
        return header + _PAYLOAD
    total = sum(struct.unpack("!12H", header + _PAYLOAD))
    total = (total & 0xFFFF) + (total >> 16)
    total += total >> 16
    checksum = ~total & 0xFFFF
    return struct.pack("!BBHHH", _ECHO_REQUEST[version], 0, checksum, identifier,
                       sequence) + _PAYLOAD


class IcmpSocket(Protocol):
    """What the hub needs of a raw ICMP socket (a `socket.socket`, or a test's fake)."""

    def fileno(self) -> int: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def sendto(self, data: bytes, address: Any, /) -> int: ...
    def close(self) -> None: ...


def open_icmp_socket(version: int) -> socket.socket:
    """A raw ICMP socket of that family, non-blocking, with the kernel filter installed.

    icmplib opens it (its errors say which privilege is missing); the socket is then taken
    out of icmplib's object, which would close it when garbage-collected."""
    icmp = ICMPv4Socket(privileged=True) if version == 4 else ICMPv6Socket(privileged=True)
    raw = socket.socket(fileno=icmp.sock.detach())
    icmp.close()  # closes only the detached husk
    raw.setblocking(False)
    _install_filter(raw, version)
    enlarge_receive_buffer(raw, ICMP_RECEIVE_BUFFER)
    return raw


# a ping's phase; also tags its deadlines in the heap, so a stale deadline is recognised
_WAITING, _LINGERING, _DONE = 0, 1, 2


class _Ping:
    """One echo request in flight."""

    __slots__ = ("future", "linger_until", "on_late", "phase", "sent", "sequence", "timeout",
                 "version")

    def __init__(self, sequence: int, version: int, sent: float, timeout: float,
                 linger_until: float | None, future: asyncio.Future[PingOutcome],
                 on_late: Callable[[float], object] | None) -> None:
        self.sequence = sequence
        self.version = version
        self.sent = sent
        self.timeout = timeout
        self.linger_until = linger_until  # None: forget it at the timeout
        self.future = future
        self.on_late = on_late
        self.phase = _WAITING


class Pinger:
    """Send echo requests and await their replies; safe for many concurrent callers.

    The hub: one socket per family (opened on first use), one reader per socket, one heap of
    deadlines and at most one armed timer. `open_socket` and the event loop's clock are the
    only ways it touches the world, so tests run it on fakes and in simulated time.
    """

    def __init__(self, *, open_socket: Callable[[int], IcmpSocket] = open_icmp_socket) -> None:
        self._open_socket = open_socket
        self._ident = int.from_bytes(os.urandom(2), "big") or 1
        self._seq = 0
        self._sockets: dict[int, IcmpSocket] = {}
        self._sockaddrs: dict[IPAddress, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[int, _Ping] = {}  # by sequence, while waiting or lingering
        # (deadline, tie-breaker, phase it ends, ping): a ping waiting has its timeout in
        # here, a ping lingering its linger end; entries of pings since answered are stale
        self._deadlines: list[tuple[float, int, int, _Ping]] = []
        self._pushed = 0
        self._timer: asyncio.TimerHandle | None = None
        self._serving_deadlines = False  # _deadlines_due arms the timer once, at its end
        self.stats = {"sent": 0, "answered": 0, "timeouts": 0, "errors": 0, "late": 0,
                      "deadline_wakeups": 0, "reader_wakeups": 0, "packets_read": 0}

    @property
    def in_flight(self) -> int:
        """Echo requests still matched to a reply (waiting, or lingering for a late one)."""
        return len(self._waiters)

    async def ping(self, address: IPAddress, timeout: float, *, linger: float = 0.0,
                   on_late: Callable[[float], object] | None = None) -> PingOutcome:
        """One echo to `address`, waiting `timeout` for its reply. With `on_late`, a reply
        that comes after `timeout` but within `linger` (from the send) is still matched:
        `on_late(rtt)` is called with it. The caller waits a short estimate (the RTO) to
        start retries early, and still learns that a slow reply was not a lost one."""
        version = address.version
        sock = self._socket(version)
        loop = self._loop
        assert loop is not None
        sequence = self._next_sequence()
        sockaddr = self._sockaddrs.get(address) or self._resolve(address)
        sent = loop.time()
        try:
            sock.sendto(echo_request(version, self._ident, sequence), sockaddr)
        except OSError as exc:  # e.g. ENETUNREACH: our own link is down
            self.stats["errors"] += 1
            return PingOutcome(False, None, f"send failed: {exc}")
        self.stats["sent"] += 1
        lingers = on_late is not None and linger > timeout
        ping = _Ping(sequence, version, sent, timeout, sent + linger if lingers else None,
                     loop.create_future(), on_late)
        self._waiters[sequence] = ping
        self._push(sent + timeout, _WAITING, ping)
        try:
            return await ping.future
        except asyncio.CancelledError:
            self._forget(ping)  # a cancelled caller wants no late reply either
            raise

    def _next_sequence(self) -> int:
        sequence = (self._seq + 1) & 0xFFFF
        while sequence in self._waiters:  # only with >65k in flight, or a huge linger
            sequence = (sequence + 1) & 0xFFFF
        self._seq = sequence
        return sequence

    def _resolve(self, address: IPAddress) -> Any:
        """The socket address of `address`, as icmplib looked it up for every packet (an
        IPv6 address's scope id included); looked up once per address here."""
        sockaddr = socket.getaddrinfo(str(address), None, _FAMILY[address.version],
                                      socket.SOCK_RAW)[0][4]
        if len(self._sockaddrs) >= 4096:  # addresses come from the config: never this many
            self._sockaddrs.clear()
        self._sockaddrs[address] = sockaddr
        return sockaddr

    # ------------------------------------------------------------------ deadlines

    def _push(self, deadline: float, phase: int, ping: _Ping) -> None:
        self._pushed += 1
        heapq.heappush(self._deadlines, (deadline, self._pushed, phase, ping))
        timer = self._timer
        if not self._serving_deadlines and (timer is None or deadline < timer.when()):
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_at(deadline, self._deadlines_due)

    def _deadlines_due(self) -> None:
        """The one timer fired: end every ping whose deadline has come, then arm the timer
        for the earliest deadline still live (stale ones on top are dropped on the way)."""
        self._timer = None
        self.stats["deadline_wakeups"] += 1
        assert self._loop is not None
        now = self._loop.time() + _CLOCK_RESOLUTION
        heap = self._deadlines
        self._serving_deadlines = True
        drained = False
        try:
            while heap:
                deadline, _, phase, ping = heap[0]
                if ping.phase != phase:  # answered, forgotten, or moved on to lingering
                    heapq.heappop(heap)
                    continue
                if deadline > now:
                    self._arm(deadline)
                    return
                if phase == _WAITING and not drained:
                    # A busy loop can run this timer before the reader whose reply is
                    # already queued on the socket: read what is there first, so a reply
                    # that came in time is never counted lost (a false takeover under
                    # load). Once per wake-up: one recv returning EAGAIN per socket.
                    drained = True
                    self._drain_all()
                    continue
                heapq.heappop(heap)
                if phase == _WAITING:
                    self._timed_out(ping)
                else:  # the linger is over: a reply now is simply not matched
                    self._forget(ping)
        finally:
            self._serving_deadlines = False

    def _drain_all(self) -> None:
        for version, sock in list(self._sockets.items()):
            self._read(sock, version, counted=False)

    def _timed_out(self, ping: _Ping) -> None:
        self.stats["timeouts"] += 1
        if ping.linger_until is not None:
            ping.phase = _LINGERING
            self._push(ping.linger_until, _LINGERING, ping)
        else:
            self._forget(ping)
        if not ping.future.done():
            ping.future.set_result(PingOutcome(False, None,
                                               f"no reply within {ping.timeout:g}s"))

    def _forget(self, ping: _Ping) -> None:
        ping.phase = _DONE
        if self._waiters.get(ping.sequence) is ping:
            del self._waiters[ping.sequence]

    # ------------------------------------------------------------------ replies

    def _socket(self, version: int) -> IcmpSocket:
        sock = self._sockets.get(version)
        if sock is None:
            sock = self._open_socket(version)
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(sock.fileno(), self._read, sock, version)
            self._sockets[version] = sock
        return sock

    def _read(self, sock: IcmpSocket, version: int, *, counted: bool = True) -> None:
        """The socket is readable (or a deadline is due, `counted` False): drain it,
        handing every reply to its ping. Nothing read is ever dropped for lack of time."""
        assert self._loop is not None
        clock = self._loop.time
        if counted:
            self.stats["reader_wakeups"] += 1
        for _ in range(_READS_PER_WAKEUP):
            try:
                packet = sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # a socket hiccup: the next readable event retries
                log.debug("ICMP receive error: %s", exc)
                return
            received = clock()
            self.stats["packets_read"] += 1
            answer = parse_answer(packet, version)
            if answer is None or answer.identifier != self._ident:
                continue  # not ours: another process's ping, or noise
            ping = self._waiters.get(answer.sequence)
            if ping is not None and ping.version == version:
                self._answered(ping, answer.icmp_type, received)

    def _answered(self, ping: _Ping, icmp_type: int, received: float) -> None:
        phase = ping.phase
        self._forget(ping)
        is_reply = icmp_type == _ECHO_REPLY[ping.version]
        rtt = max(0.0, received - ping.sent)
        if phase == _LINGERING:
            if is_reply and ping.on_late is not None:
                self.stats["late"] += 1
                try:
                    ping.on_late(rtt)
                except Exception:  # the caller's bug must not cost the replies after it
                    log.exception("late-reply callback failed")
            return
        if ping.future.done():  # its caller was cancelled an instant ago
            return
        if is_reply:
            self.stats["answered"] += 1
            ping.future.set_result(PingOutcome(True, rtt, "echo reply"))
        else:
            ping.future.set_result(PingOutcome(
                False, None, _UNREACHABLE[ping.version].get(icmp_type,
                                                            f"ICMP type {icmp_type}")))

    async def close(self) -> None:
        """Close the sockets. Pings still waiting end as unanswered now; none lingers."""
        for sock in self._sockets.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for ping in list(self._waiters.values()):
            self._forget(ping)
            if not ping.future.done():
                ping.future.set_result(PingOutcome(False, None, "pinger closed"))
        self._deadlines.clear()
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
