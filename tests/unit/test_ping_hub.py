"""The LooksAlive ping hub (minisft/probes/looksalive.py `Pinger`), in simulated time.

The hub runs on an asyncio loop whose clock jumps to the next timer whenever nothing is
ready, so a 250 ms timeout takes no real time and the order of events is the one the test
writes. Its raw ICMP sockets are replaced by `FakeIcmp`: what the hub sends is recorded,
and what the test delivers, the hub reads through a real socket (the loop's reader on a
socketpair), as it reads a raw socket.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import selectors
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from icmplib import ICMPv4Socket

from minisft.probes.looksalive import Pinger, PingOutcome, echo_request, parse_answer

T = TypeVar("T")
V4 = [ipaddress.IPv4Address(f"192.0.2.{i}") for i in range(1, 4)]
V6 = ipaddress.IPv6Address("2001:db8::10")


class SimulatedTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when nothing is ready: then it jumps to the next
    timer. Records every timer armed, so a test can count the hub's."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timer_owners: list[object] = []  # the object whose method each timer calls
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any,
                context: Any = None) -> asyncio.TimerHandle:
        self.timer_owners.append(getattr(callback, "__self__", None))
        return super().call_at(when, callback, *args, context=context)

    def timers_of(self, owner: object) -> int:
        """How many timers `owner` armed, cancelled ones included."""
        return sum(armer is owner for armer in self.timer_owners)


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self, loop: SimulatedTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only a socket can wake the loop
            return list(super().select(5.0))
        self._loop.now += timeout
        return []


def run(main: Callable[[SimulatedTimeLoop], Coroutine[Any, Any, T]]) -> T:
    loop = SimulatedTimeLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


class FakeIcmp:
    """A raw ICMP socket of one family: records what is sent, reads what `deliver` sends."""

    def __init__(self, version: int) -> None:
        self.version = version
        self._inside, self._outside = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._inside.setblocking(False)
        self.sent: list[tuple[bytes, Any]] = []
        self.send_error: OSError | None = None
        self.recv_errors: list[OSError] = []
        self.closed = False

    def fileno(self) -> int:
        return self._inside.fileno()

    def recv(self, bufsize: int, /) -> bytes:
        if self.recv_errors:
            raise self.recv_errors.pop(0)
        return self._inside.recv(bufsize)

    def sendto(self, data: bytes, address: Any, /) -> int:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append((data, address))
        return len(data)

    def close(self) -> None:
        self.closed = True
        self._inside.close()
        self._outside.close()

    def deliver(self, packet: bytes) -> None:
        self._outside.send(packet)

    def answer(self, request: bytes, *, icmp_type: int | None = None,
               identifier: int | None = None) -> None:
        """What the kernel hands a raw socket for `request`: its echo reply (or `icmp_type`,
        an error quoting it). IPv4 raw sockets read the IP header too."""
        ident, seq = struct.unpack_from("!HH", request, 4)
        if identifier is not None:
            ident = identifier
        reply_type = {4: 0, 6: 129}[self.version]
        ip = bytes([0x45]) + bytes(19) if self.version == 4 else b""
        if icmp_type is None:
            icmp = struct.pack("!BBHHH", reply_type, 0, 0, ident, seq) + request[8:]
        else:
            quoted_ip = bytes([0x45]) + bytes(19) if self.version == 4 else bytes(40)
            icmp = struct.pack("!BBHI", icmp_type, 0, 0, 0) + quoted_ip + request[:8]
        self.deliver(ip + icmp)


def hub() -> tuple[Pinger, dict[int, FakeIcmp]]:
    wires: dict[int, FakeIcmp] = {}

    def open_socket(version: int) -> FakeIcmp:
        wires[version] = FakeIcmp(version)
        return wires[version]
    return Pinger(open_socket=open_socket), wires


async def settle() -> None:
    """Let every ready callback and task step run, without moving the clock."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_each_reply_completes_the_ping_it_answers_with_its_own_round_trip_time() -> None:
    async def main(loop: SimulatedTimeLoop) -> list[PingOutcome]:
        pinger, wires = hub()
        pings = [asyncio.ensure_future(pinger.ping(a, 1.0)) for a in (*V4, V6)]
        await settle()
        sent = {4: [p for p, _ in wires[4].sent], 6: [p for p, _ in wires[6].sent]}
        # answered in reverse order, each after its own delay
        for delay, (version, request) in zip((0.004, 0.010, 0.020, 0.030),
                                             [(6, sent[6][0]), *((4, r) for r in sent[4][::-1])],
                                             strict=True):
            await asyncio.sleep(delay - (loop.now - 100.0))
            wires[version].answer(request)
            await settle()
        return await asyncio.gather(*pings)

    outcomes = run(main)
    assert [o.ok for o in outcomes] == [True] * 4
    rtts = [round(o.rtt or 0, 6) for o in outcomes]
    assert rtts == [0.030, 0.020, 0.010, 0.004]  # V4[0] answered last, V6 first


def test_the_request_is_an_echo_with_a_valid_checksum_and_the_addresses_socket_address() -> None:
    async def main(loop: SimulatedTimeLoop) -> None:
        pinger, wires = hub()
        task = asyncio.ensure_future(pinger.ping(V4[0], 0.1))
        await settle()
        (request, sockaddr), = wires[4].sent
        assert sockaddr == ("192.0.2.1", 0)
        assert parse_answer(bytes([0x45]) + bytes(19) + bytes([0]) + request[1:], 4) \
            is not None
        await task
    run(main)
    request = echo_request(4, 0xBEEF, 7)
    assert request[0] == 8 and struct.unpack_from("!HH", request, 4) == (0xBEEF, 7)
    # the checksum icmplib computed when it built the requests
    unchecked = request[:2] + b"\0\0" + request[4:]
    assert struct.unpack_from("!H", request, 2)[0] == ICMPv4Socket._checksum(None, unchecked)


def test_many_pings_sent_together_time_out_together_on_one_timer() -> None:
    async def main(loop: SimulatedTimeLoop) -> tuple[list[PingOutcome], float, int]:
        pinger, _ = hub()
        started = loop.now
        outcomes = await asyncio.gather(*(pinger.ping(V4[i % 3], 0.25) for i in range(300)))
        return list(outcomes), loop.now - started, loop.timers_of(pinger)

    outcomes, waited, timers = run(main)
    assert {(o.ok, o.detail) for o in outcomes} == {(False, "no reply within 0.25s")}
    assert round(waited, 6) == 0.25
    assert timers == 1


def test_one_timer_is_armed_at_a_time_and_answered_pings_cost_none() -> None:
    # 50 monitors, each pinging every second, replies after 1 ms: the hub never holds more
    # than one timer, and replies that came in time make the timer fire rarely
    async def main(loop: SimulatedTimeLoop) -> tuple[int, int, int]:
        pinger, wires = hub()

        async def monitor(offset: float) -> None:
            await asyncio.sleep(offset)
            for _ in range(10):
                task = asyncio.ensure_future(pinger.ping(V4[0], 0.2))
                await settle()
                request = wires[4].sent[-1][0]
                await asyncio.sleep(0.001)
                wires[4].answer(request)
                assert (await task).ok
                await asyncio.sleep(1.0 - 0.001)
        await asyncio.gather(*(monitor(i * 0.001) for i in range(50)))
        return loop.timers_of(pinger), pinger.stats["sent"], pinger.stats["timeouts"]

    armed, sent, timeouts = run(main)
    assert sent == 500 and timeouts == 0
    assert armed <= 20, f"{armed} timers for {sent} pings"


def test_a_reply_after_the_timeout_but_within_the_linger_is_reported_late() -> None:
    async def main(loop: SimulatedTimeLoop) -> tuple[PingOutcome, list[float], int]:
        pinger, wires = hub()
        late: list[float] = []
        outcome = await pinger.ping(V4[0], 0.005, linger=0.3, on_late=late.append)
        await asyncio.sleep(0.045)  # the reply comes 50 ms after the send
        wires[4].answer(wires[4].sent[0][0])
        await settle()
        return outcome, late, pinger.stats["late"]

    outcome, late, counted = run(main)
    assert (outcome.ok, outcome.detail) == (False, "no reply within 0.005s")
    assert [round(rtt, 6) for rtt in late] == [0.05]
    assert counted == 1


def test_a_reply_after_the_linger_or_without_a_late_callback_is_not_matched() -> None:
    async def main(loop: SimulatedTimeLoop) -> tuple[list[float], list[int]]:
        pinger, wires = hub()
        late: list[float] = []
        in_flight = []
        await pinger.ping(V4[0], 0.005, linger=0.3, on_late=late.append)
        in_flight.append(pinger.in_flight)  # lingering
        await asyncio.sleep(0.3)
        in_flight.append(pinger.in_flight)  # the linger is over
        wires[4].answer(wires[4].sent[0][0])
        await pinger.ping(V4[1], 0.005, linger=0.3)  # nobody to tell of a late reply
        in_flight.append(pinger.in_flight)
        wires[4].answer(wires[4].sent[1][0])
        await settle()
        return late, in_flight

    late, in_flight = run(main)
    assert late == []
    assert in_flight == [1, 0, 0]


def test_a_burst_of_replies_is_drained_in_one_read() -> None:
    async def main(loop: SimulatedTimeLoop) -> tuple[list[PingOutcome], int, int]:
        pinger, wires = hub()
        tasks = [asyncio.ensure_future(pinger.ping(V4[i % 3], 1.0)) for i in range(200)]
        await settle()
        before = pinger.stats["reader_wakeups"]
        for request, _ in wires[4].sent:  # all ready before the loop looks at the socket
            wires[4].answer(request)
        outcomes = await asyncio.gather(*tasks)
        return list(outcomes), pinger.stats["reader_wakeups"] - before, loop.timers_of(pinger)

    outcomes, wakeups, timers = run(main)
    assert all(o.ok for o in outcomes)
    assert wakeups == 1
    assert timers == 1


def test_a_reply_already_queued_when_the_deadline_fires_counts_as_answered() -> None:
    # A loaded loop: another callback due at the same instant as the hub's timer runs
    # first, and the reply lands on the socket while it runs, after the loop looked at the
    # sockets. The timer then fires with the reply unread; counting the ping lost would be
    # a false takeover under load.
    async def main(loop: SimulatedTimeLoop) -> tuple[PingOutcome, int]:
        pinger, wires = hub()
        loop.call_at(loop.now + 0.25, lambda: wires[4].answer(wires[4].sent[0][0]))
        outcome = await pinger.ping(V4[0], 0.25)
        return outcome, pinger.stats["timeouts"]

    outcome, timeouts = run(main)
    assert (outcome.ok, outcome.detail) == (True, "echo reply")
    assert timeouts == 0


def test_an_error_quoting_the_request_ends_the_ping_with_its_reason() -> None:
    async def main(loop: SimulatedTimeLoop) -> list[PingOutcome]:
        pinger, wires = hub()
        tasks = [asyncio.ensure_future(pinger.ping(a, 1.0)) for a in (V4[0], V6)]
        await settle()
        wires[4].answer(wires[4].sent[0][0], icmp_type=3)
        wires[6].answer(wires[6].sent[0][0], icmp_type=3)  # ICMPv6 time exceeded
        return list(await asyncio.gather(*tasks))

    v4, v6 = run(main)
    assert (v4.ok, v4.detail) == (False, "destination unreachable")
    assert (v6.ok, v6.detail) == (False, "time exceeded")


def test_someone_elses_echo_replies_do_not_answer_our_pings() -> None:
    async def main(loop: SimulatedTimeLoop) -> PingOutcome:
        pinger, wires = hub()
        task = asyncio.ensure_future(pinger.ping(V4[0], 0.1))
        await settle()
        request = wires[4].sent[0][0]
        ours = struct.unpack_from("!H", request, 4)[0]
        wires[4].answer(request, identifier=ours ^ 0xFFFF)  # another process's ping
        wires[4].deliver(b"\x45" + bytes(10))  # and a truncated packet
        return await task

    outcome = run(main)
    assert (outcome.ok, outcome.detail) == (False, "no reply within 0.1s")


def test_a_failed_send_returns_at_once_and_leaves_nothing_in_flight() -> None:
    async def main(loop: SimulatedTimeLoop) -> tuple[PingOutcome, float, int, int]:
        pinger, wires = hub()
        await pinger.ping(V4[0], 0.1)  # opens the socket
        wires[4].send_error = OSError(errno.ENETUNREACH, "Network is unreachable")
        started = loop.now
        outcome = await pinger.ping(V4[0], 0.1)
        return outcome, loop.now - started, pinger.in_flight, pinger.stats["errors"]

    outcome, waited, in_flight, errors = run(main)
    assert (outcome.ok, outcome.detail) == (False, "send failed: [Errno 101] Network is "
                                                   "unreachable")
    assert (waited, in_flight, errors) == (0.0, 0, 1)


def test_a_receive_error_loses_no_reply_already_queued() -> None:
    async def main(loop: SimulatedTimeLoop) -> PingOutcome:
        pinger, wires = hub()
        task = asyncio.ensure_future(pinger.ping(V4[0], 1.0))
        await settle()
        wires[4].recv_errors.append(OSError(errno.ENOBUFS, "No buffer space available"))
        wires[4].answer(wires[4].sent[0][0])
        return await task

    outcome = run(main)
    assert outcome.ok


def test_a_cancelled_ping_is_forgotten_and_its_reply_ignored() -> None:
    async def main(loop: SimulatedTimeLoop) -> tuple[int, int, list[float]]:
        pinger, wires = hub()
        late: list[float] = []
        task = asyncio.ensure_future(pinger.ping(V4[0], 0.1, linger=0.5, on_late=late.append))
        await settle()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        in_flight_at_once = pinger.in_flight  # not only when its timeout comes
        await asyncio.sleep(0.2)
        wires[4].answer(wires[4].sent[0][0])
        await settle()
        return in_flight_at_once, pinger.in_flight, late

    assert run(main) == (0, 0, [])


def test_close_ends_waiting_pings_and_closes_the_sockets() -> None:
    async def main(loop: SimulatedTimeLoop) -> tuple[PingOutcome, bool, float]:
        pinger, wires = hub()
        task = asyncio.ensure_future(pinger.ping(V4[0], 1.0))
        await settle()
        started = loop.now
        await pinger.close()
        outcome = await task
        return outcome, wires[4].closed, loop.now - started

    outcome, closed, waited = run(main)
    assert (outcome.ok, outcome.detail, closed, waited) == (False, "pinger closed", True, 0.0)
