"""The ports the runtime layer is given: time, the interface, the neighbours, ICMP.

The daemon plugs in the real ones (`time.monotonic` and the event loop, `minisft.net.link.
Netlink`, `minisft.net.neighbour.NeighbourWatch`, `minisft.probes.looksalive.Pinger`);
the unit tests plug in the fakes of `minisft.testing.fakes`. Nothing in the runtime layer
constructs a port itself, so the same code runs against either (the trio/httpx way:
inject the clock and the transports).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from minisft.config.model import IPAddress, IPInterface
from minisft.net.neighbour import ProbeAnswer
from minisft.probes.looksalive import PingOutcome

OnProberRule = Literal["yield", "ignore", "tiebreak"]


class Clock(Protocol):
    """Monotonic time, and waiting for it. The runtimes read `now()`; their loops sleep
    on the event loop, whose own clock is the same monotonic one (a virtual-time loop in
    the unit tests moves both together)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle: ...


class MonotonicClock:
    """The daemon's clock: `time.monotonic`, which asyncio's loop also uses."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_at(when, callback)


class Netlink(Protocol):
    """The local interface. Synchronous (pyroute2): the driver calls it in the daemon's
    single netlink worker thread, never on the event loop."""

    def bind(self, iface: Interface, address: IPInterface) -> None: ...

    def release(self, iface: Interface, address: IPInterface) -> None: ...

    def has_address(self, iface: Interface, ip: IPAddress) -> bool: ...

    def link_up(self, iface: Interface) -> bool: ...


class Neighbours(Protocol):
    """ARP (IPv4) and NDP (IPv6) on the local segment: RFC 5227 probes and announcements."""

    async def probe_answer(self, ip: IPAddress, count: int, interval: float, *,
                           on_prober: OnProberRule = "yield") -> ProbeAnswer | None: ...

    async def announce(self, ip: IPAddress, count: int, interval: float) -> None: ...


class Pinger(Protocol):
    """ICMP echo, as `minisft.probes.looksalive.Pinger.ping`."""

    async def ping(self, address: IPAddress, timeout: float, *, linger: float = 0.0,
                   on_late: Callable[[float], object] | None = None) -> PingOutcome: ...


class HostNetlink(Netlink, Protocol):
    """The interface as the daemon also uses it: found from node.local_ip at start-up."""

    # Any: the handle the other calls take back (net.link.Interface; the fakes' own)
    def interface_for(self, local_ip: IPAddress) -> Any: ...


class WatchedNeighbours(Neighbours, Protocol):
    """The neighbours as the daemon also uses them: the frames that concern a monitor's
    address (a conflict, a host resolving it) and its peer's (which MAC uses it)."""

    def watch(self, ip: IPAddress, callback: Callable[[str], None]) -> None: ...

    def unwatch(self, ip: IPAddress) -> None: ...

    def watch_askers(self, ip: IPAddress,
                     callback: Callable[[IPAddress, str], None]) -> None: ...

    def watch_users(self, ip: IPAddress, callback: Callable[[str], None]) -> None: ...

    def unwatch_users(self, ip: IPAddress, callback: Callable[[str], None]) -> None: ...


@dataclass(frozen=True)
class HostPorts:
    """The host ports handed to a `Daemon` (the unit tests' fakes). They are the caller's:
    opened before and closed after the daemon, which closes only the real ones it built
    itself when given none."""

    netlink: HostNetlink
    neighbours: WatchedNeighbours
    pinger: Pinger


if TYPE_CHECKING:  # mypy checks here that the daemon's real ports fit these protocols
    from minisft.net.link import Interface
    from minisft.net.link import Netlink as LinuxNetlink
    from minisft.net.neighbour import NeighbourWatch
    from minisft.probes.looksalive import Pinger as IcmpPinger

    def _real_clock_fits(clock: MonotonicClock) -> Clock:
        return clock

    def _real_netlink_fits(netlink: LinuxNetlink) -> Netlink:
        return netlink

    def _real_neighbours_fit(neighbours: NeighbourWatch) -> Neighbours:
        return neighbours

    def _real_pinger_fits(pinger: IcmpPinger) -> Pinger:
        return pinger

    def _real_host_fits(netlink: LinuxNetlink, neighbours: NeighbourWatch,
                        pinger: IcmpPinger) -> HostPorts:
        return HostPorts(netlink, neighbours, pinger)
