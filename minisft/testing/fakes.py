"""Fakes of the runtime's ports, in one place: virtual time and an in-memory host.

* `VirtualClock` and `run_virtual`: an asyncio event loop whose clock is virtual (trio's
  MockClock is the model). With `autojump` (the default) time jumps to the next timer as
  soon as every task waits, so a minute of failover logic runs in milliseconds and in the
  same order every time; without it, time moves only when a test calls `advance`, and a
  loop where every task waits for time raises `TimeStandsStill` instead of hanging.
* `FakeHost`: one node's view of its segment, implementing the `Netlink`, `Neighbours`
  and `Pinger` ports of `minisft.runtime.ports` (and what the daemon also asks of them):
  the addresses bound here, the other hosts that answer ping and ARP/NDP for an address,
  replies that get lost, a probe that cannot be sent.
* `InlineExecutor`: the netlink "thread" of the tests: runs each call at once, so a bind
  takes no time unless the host says so.

Nothing here decides anything: the runtime under test is the daemon's own code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import selectors
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from minisft.config.model import IPAddress, IPInterface
from minisft.net.neighbour import ProbeAnswer
from minisft.probes.looksalive import PingOutcome
from minisft.runtime.ports import (
    Clock,
    HostPorts,
    Neighbours,
    Netlink,
    OnProberRule,
    Pinger,
)

T = TypeVar("T")

START = 1000.0  # monotonic clocks do not start at zero


# ====================================================================== virtual time


class TimeStandsStill(RuntimeError):
    """Every task waits for time, and the clock does not jump (autojump off): the test
    would hang. Advance the clock, or let it jump."""


class VirtualClock:
    """The `Clock` port in virtual time; also the clock of the loop `run_virtual` makes."""

    def __init__(self, start: float = START, *, autojump: bool = True) -> None:
        self._now = start
        self.autojump = autojump

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_at(when, callback)

    def advance(self, seconds: float) -> None:
        """Move time forward; timers that fall due run at the loop's next turn."""
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now += seconds


class _JumpingSelector(selectors.DefaultSelector):
    """Never sleeps for time: what is ready now is returned; when nothing is, the clock
    jumps by the loop's timeout (the next timer) instead of the process waiting."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # no timer at all: only a thread or a real socket can still wake the loop
            ready = super().select(5.0)
            if not ready:
                raise TimeStandsStill("every task waits and no timer is set")
            return ready
        if not self._clock.autojump:
            raise TimeStandsStill(f"every task waits for time ({timeout:g}s to the next "
                                  "timer) and the clock does not jump")
        self._clock.advance(timeout)
        return []


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_JumpingSelector(clock))
        self.virtual_clock = clock

    def time(self) -> float:
        return self.virtual_clock.now()


def run_virtual(main: Coroutine[Any, Any, T], clock: VirtualClock | None = None) -> T:
    """Run `main` to its end on an event loop in virtual time (see `VirtualClock`)."""
    clock = clock or VirtualClock()
    with asyncio.Runner(loop_factory=lambda: _VirtualTimeLoop(clock)) as runner:
        return runner.run(main)


class InlineExecutor(Executor):
    """Runs each submitted call at once, in the caller's thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


# ====================================================================== the host


@dataclass(frozen=True)
class FakeInterface:
    name: str = "eth0"
    index: int = 2
    mac: str = "02:00:00:00:01:01"


@dataclass
class Neighbour:
    """Another host on the segment, holding addresses (or trying to)."""

    mac: str
    holds: set[IPAddress] = field(default_factory=set)
    answers_ping: bool = True
    answers_arp: bool = True
    probing: set[IPAddress] = field(default_factory=set)  # probing for it, not holding it


class FakeHost:
    """A node's interface, ARP/NDP and ICMP, in memory and in (virtual) time.

    `log` records what the runtime did to the world, in order: "bind 192.0.2.10/24",
    "release 192.0.2.10/24", "announce 192.0.2.10" (one per frame), "probe 192.0.2.10"."""

    def __init__(self, *, rtt: float = 0.002) -> None:
        self.iface = FakeInterface()
        self.bound: set[IPInterface] = set()
        self.link = True
        self.neighbours: list[Neighbour] = []
        self.rtt = rtt
        self.lose_replies = 0  # the next n echo replies are lost on the way back
        self.probe_error: str | None = None  # probes cannot be sent (e.g. ENETDOWN)
        self.probe_ignores_cancel = False  # a probe that reports despite its cancel
        self.fail_bind: str | None = None
        # seconds a bind blocks its netlink thread (real time: for a real worker thread
        # only, e.g. so that a reload can land while a bind is under way)
        self.bind_latency = 0.0
        self.log: list[str] = []
        self.watched: dict[IPAddress, Callable[[str], object]] = {}
        self.askers: dict[IPAddress, Callable[[IPAddress, str], object]] = {}
        self.users: dict[IPAddress, list[Callable[[str], object]]] = {}

    # ------------------------------------------------------------- the segment

    def add_neighbour(self, mac: str, *holds: str) -> Neighbour:
        n = Neighbour(mac, {ipaddress.ip_address(a) for a in holds})
        self.neighbours.append(n)
        return n

    def reachable(self) -> list[Neighbour]:
        """The other hosts this one can reach now (a segment narrows it: partitions)."""
        return self.neighbours if self.link else []

    def answering(self, ip: IPAddress, *, arp: bool) -> Neighbour | None:
        """The first reachable host that holds `ip` and answers ARP/NDP (`arp`) or ping
        for it: one that holds it silently must not hide another that answers."""
        for n in self.reachable():
            if ip in n.holds and (n.answers_arp if arp else n.answers_ping):
                return n
        return None

    def holds(self, address: str) -> bool:
        return ipaddress.ip_interface(address) in self.bound

    # ------------------------------------------------------------- Netlink

    def interface_for(self, local_ip: IPAddress) -> FakeInterface:
        return self.iface

    def bind(self, iface: object, address: IPInterface) -> None:
        if self.fail_bind:
            raise OSError(self.fail_bind)
        if self.bind_latency:
            time.sleep(self.bind_latency)
        self.bound.add(address)
        self.log.append(f"bind {address}")

    def release(self, iface: object, address: IPInterface) -> None:
        self.bound.discard(address)
        self.log.append(f"release {address}")

    def has_address(self, iface: object, ip: IPAddress) -> bool:
        return any(a.ip == ip for a in self.bound)

    def link_up(self, iface: object) -> bool:
        return self.link

    def close(self) -> None:
        pass

    # ------------------------------------------------------------- Neighbours

    async def probe_answer(self, ip: IPAddress, count: int, interval: float, *,
                           on_prober: OnProberRule = "yield") -> ProbeAnswer | None:
        self.log.append(f"probe {ip}")
        if self.probe_error:
            raise OSError(self.probe_error)
        for _ in range(max(1, count)):
            holder = self.answering(ip, arp=True)
            if holder is not None:
                return ProbeAnswer(holder.mac, prober=False)
            prober = next((n for n in self.reachable() if ip in n.probing and (
                on_prober == "yield" or (on_prober == "tiebreak"
                                         and n.mac < self.iface.mac))), None)
            if prober is not None:
                return ProbeAnswer(prober.mac, prober=True)
            try:
                await asyncio.sleep(interval)
            except asyncio.CancelledError:
                if not self.probe_ignores_cancel:
                    raise
                return None  # as a probe whose result raced its cancellation
        return None

    async def announce(self, ip: IPAddress, count: int, interval: float) -> None:
        for i in range(count):  # a log line per frame, as the real one sends them
            if i:
                await asyncio.sleep(interval)
            self.log.append(f"announce {ip}")

    def watch(self, ip: IPAddress, callback: Callable[[str], object]) -> None:
        self.watched[ip] = callback

    def watch_askers(self, ip: IPAddress,
                     callback: Callable[[IPAddress, str], object]) -> None:
        self.askers[ip] = callback  # a test plays a host resolving ip: askers[ip](sender, mac)

    def watch_users(self, ip: IPAddress, callback: Callable[[str], object]) -> None:
        self.users.setdefault(ip, []).append(callback)  # a test plays ip's frames: users[ip]

    def unwatch_users(self, ip: IPAddress, callback: Callable[[str], object]) -> None:
        callbacks = self.users.get(ip, [])
        if callback in callbacks:
            callbacks.remove(callback)

    def unwatch(self, ip: IPAddress) -> None:
        self.watched.pop(ip, None)
        self.askers.pop(ip, None)

    # ------------------------------------------------------------- Pinger

    async def ping(self, address: IPAddress, timeout: float, *, linger: float = 0.0,
                   on_late: Callable[[float], object] | None = None) -> PingOutcome:
        answers = self.answering(address, arp=False) is not None
        if answers and self.lose_replies:
            self.lose_replies -= 1
            answers = False
        if answers and self.rtt <= timeout:
            await asyncio.sleep(self.rtt)
            return PingOutcome(True, self.rtt, "echo reply")
        if answers and on_late is not None and self.rtt <= linger:
            # slower than the caller waited, within what it still accepts
            asyncio.get_running_loop().call_later(self.rtt, on_late, self.rtt)
        await asyncio.sleep(timeout)
        return PingOutcome(False, None, f"no reply within {timeout:g}s")


def _fake_host_fits(host: FakeHost) -> tuple[Netlink, Neighbours, Pinger]:
    """mypy checks here that FakeHost fits the ports it stands in for."""
    return host, host, host


def fake_host_ports(host: FakeHost) -> HostPorts:
    """A daemon's host ports, all played by one fake host."""
    return HostPorts(netlink=host, neighbours=host, pinger=host)


def _virtual_clock_fits(clock: VirtualClock) -> Clock:
    return clock
