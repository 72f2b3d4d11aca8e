"""Several hosts on one simulated wire, each MiniSFT node with its own view of it.

`FakeHost` is one node's ports with a hand-made list of neighbours; a `Segment` computes
that list from the other members at every look, so what one node does is what the others
see:

* an address bound on one node answers ping and ARP/NDP for the others;
* a node's running probe is heard by another node's probe, under that probe's
  `on_prober` rule (FakeHost.probe_answer: yield / ignore / tiebreak by MAC, RFC 5227);
* an announcement reaches, a moment later (`WIRE_LATENCY`), every other node that has the
  address bound, through its neighbour watch callback (the daemon feeds it as
  ConflictSeen);
* a node's link can go down (`SegmentPort.link`), the segment can be split into groups
  that do not see each other (`split`, `heal`);
* hosts that do not run MiniSFT (`SegmentHost`: the current holder of an address, the
  primary's physical host) answer for their addresses and have a service IsAlive finds.

`SegmentCheck` is a node's IsAlive check on it. Nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from minisft.config.model import IPAddress
from minisft.net.neighbour import ProbeAnswer
from minisft.probes.isalive.base import CheckResult
from minisft.runtime.ports import OnProberRule
from minisft.testing.fakes import FakeHost, FakeInterface, Neighbour

WIRE_LATENCY = 0.001  # an announcement reaches the other hosts after this long


class Station(Protocol):
    """A member of the segment, as the others see it."""

    @property
    def mac(self) -> str: ...

    def neighbour(self) -> Neighbour | None:
        """What the wire shows of it now (addresses, probes); None when it is off."""
        ...

    def service_ok(self, ip: IPAddress) -> bool:
        """What an IsAlive check against `ip` on it finds."""
        ...


@dataclass
class SegmentHost:
    """A host that does not run MiniSFT: it holds `addresses` (or not, when a test removes
    one) and answers ping and ARP/NDP for them as configured."""

    mac: str
    addresses: set[IPAddress] = field(default_factory=set)
    answers_ping: bool = True
    answers_arp: bool = True
    up: bool = True  # powered and cabled
    service: bool = True  # what IsAlive finds on it

    def neighbour(self) -> Neighbour | None:
        if not self.up:
            return None
        return Neighbour(self.mac, set(self.addresses), self.answers_ping, self.answers_arp)

    def service_ok(self, ip: IPAddress) -> bool:
        return self.up and ip in self.addresses and self.service


class SegmentPort(FakeHost):
    """One MiniSFT node's ports on the segment: its interface (`bound`, `link`), its ARP/NDP
    and its pings, seeing the other members as they are at each look."""

    def __init__(self, segment: Segment, mac: str, local: Iterable[IPAddress] = (),
                 *, rtt: float = 0.002) -> None:
        super().__init__(rtt=rtt)
        self.segment = segment
        self.iface = FakeInterface(mac=mac)
        self.local = set(local)  # the node's own addresses (local_ip): always answer
        self.service = True  # the node's own service, for IsAlive against it
        self._probing: Counter[IPAddress] = Counter()
        # probes that count as running though no probe_answer call runs (a test stepping
        # a machine by hand keeps its outstanding probe here)
        self.probing: set[IPAddress] = set()

    @property
    def mac(self) -> str:
        return self.iface.mac

    def __repr__(self) -> str:
        return f"<SegmentPort {self.mac} bound={sorted(map(str, self.bound))} link={self.link}>"

    # ------------------------------------------------------------- as the others see it

    def neighbour(self) -> Neighbour | None:
        if not self.link:
            return None
        return Neighbour(self.mac, {a.ip for a in self.bound} | self.local,
                         probing={ip for ip, n in self._probing.items() if n > 0}
                         | self.probing)

    def service_ok(self, ip: IPAddress) -> bool:
        return self.link and self.service and (ip in self.local or self.has_address(None, ip))

    # ------------------------------------------------------------- what it sees

    def reachable(self) -> list[Neighbour]:
        if not self.link:
            return []
        seen = [n for s in self.segment.stations_from(self) if (n := s.neighbour())]
        return seen + self.neighbours

    async def probe_answer(self, ip: IPAddress, count: int, interval: float, *,
                           on_prober: OnProberRule = "yield") -> ProbeAnswer | None:
        self._probing[ip] += 1  # the others' probes hear this one while it runs
        try:
            return await super().probe_answer(ip, count, interval, on_prober=on_prober)
        finally:
            self._probing[ip] -= 1

    async def announce(self, ip: IPAddress, count: int, interval: float) -> None:
        if self.link:
            self.segment.announce(self, ip)
        await super().announce(ip, count, interval)

    def check(self) -> SegmentCheck:
        return SegmentCheck(self)


class SegmentCheck:
    """An IsAlive check run from `port`: the service of whoever answers for the address
    (the node itself when it holds it)."""

    def __init__(self, port: SegmentPort) -> None:
        self.port = port

    async def run(self, address: str) -> CheckResult:
        ip = ipaddress.ip_address(address)
        port = self.port
        if port.has_address(None, ip) or ip in port.local:
            ok = port.service
        elif not port.link:
            ok = False
        else:
            holder = next((s for s in port.segment.stations_from(port)
                           if (n := s.neighbour()) and ip in n.holds and n.answers_ping),
                          None)
            ok = holder is not None and holder.service_ok(ip)
        return CheckResult(ok, 0.01, "200 OK" if ok else "connection refused")


class Segment:
    """The wire: MiniSFT nodes (`port`) and other hosts (`host`), all seeing each other
    unless `split`."""

    def __init__(self) -> None:
        self.stations: list[Station] = []
        self._groups: list[list[Station]] = []
        self._pending: list[_Delivery] = []
        self.delivered = 0  # announcements that reached a node's watch (for tests)

    def port(self, mac: str, local: Iterable[IPAddress | str] = ()) -> SegmentPort:
        port = SegmentPort(self, mac, (ipaddress.ip_address(a) for a in local))
        self.stations.append(port)
        return port

    def host(self, mac: str, *addresses: IPAddress | str, **kw: bool) -> SegmentHost:
        host = SegmentHost(mac, {ipaddress.ip_address(a) for a in addresses}, **kw)
        self.stations.append(host)
        return host

    def add(self, station: Station) -> Station:
        """Another kind of member (anything that fits `Station`)."""
        self.stations.append(station)
        return station

    # ------------------------------------------------------------- partitions

    def split(self, *groups: Iterable[Station]) -> None:
        """Members of different groups stop seeing each other; a member in no group still
        sees every one (a router or holder both sides reach)."""
        self._groups = [list(g) for g in groups]

    def heal(self) -> None:
        self._groups = []

    def _group(self, station: Station) -> int | None:
        for i, group in enumerate(self._groups):
            if any(s is station for s in group):
                return i
        return None

    def connected(self, a: Station, b: Station) -> bool:
        if a is b:
            return False
        ga, gb = self._group(a), self._group(b)
        return ga is None or gb is None or ga == gb

    def stations_from(self, port: SegmentPort) -> list[Station]:
        """The members `port` reaches (its own link aside)."""
        return [s for s in self.stations if self.connected(port, s)]

    # ------------------------------------------------------------- the wire

    def announce(self, sender: SegmentPort, ip: IPAddress, now: float | None = None) -> None:
        """A gratuitous ARP / unsolicited NA from `sender`: every other node that has `ip`
        bound hears it through its neighbour watch, WIRE_LATENCY later. Outside an event
        loop (a test stepping a machine by hand) `now` says when; it is delivered once a
        loop runs again (`resume`)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if now is None:
            assert loop is not None, "outside an event loop, say when (now)"
            now = loop.time()
        for station in self.stations_from(sender):
            if isinstance(station, SegmentPort):
                delivery = _Delivery(now + WIRE_LATENCY, sender, station, ip)
                self._pending.append(delivery)
                if loop is not None:
                    loop.call_at(delivery.at, self._deliver, delivery)

    def resume(self) -> None:
        """Schedule the deliveries still on the wire on the running event loop (one that
        ended took its timers with it)."""
        loop = asyncio.get_running_loop()
        for delivery in self._pending:
            loop.call_at(delivery.at, self._deliver, delivery)

    def _deliver(self, d: _Delivery) -> None:
        if d not in self._pending:
            return  # delivered already, under an earlier loop
        self._pending.remove(d)
        if not (d.sender.link and d.to.link and self.connected(d.sender, d.to)):
            return
        callback = d.to.watched.get(d.ip)
        if callback is not None and d.to.has_address(None, d.ip):
            self.delivered += 1
            callback(d.sender.mac)


@dataclass(eq=False)
class _Delivery:
    at: float
    sender: SegmentPort
    to: SegmentPort
    ip: IPAddress
