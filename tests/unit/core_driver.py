"""The fakes of the core tests, in one place: a simulated LAN that runs real MonitorMachines.

Nothing here decides anything, and nothing here runs a machine the way the daemon does in a
copy of its own: `Lan.run` runs the daemon's own code (MonitorRuntime, its ActionDriver and
the host's tick and link/address loops, `minisft.runtime.host_loops`) on the simulated
segment of `minisft.testing.segment`, in virtual time.

* `Host` -- a host on the segment that does not run MiniSFT: the current holder of the
  service address (answers ping and/or ARP, or not) or the primary's physical host
  (`peer_ip`, watched for automatic fallback).
* `Node` -- one MonitorMachine plus what its runtime knows: its port on the segment (is the
  address bound here? is the link up?), the outstanding probe and bind, and a trace of
  every input, the actions it produced and the state around it. Its step methods (`ping`,
  `probe_done`, `bind_done`, `tick`, ...) feed one input each, for tests that control
  every step; the results they feed are read off the same segment.
* `Lan` -- the clock, the nodes, the other hosts and the wire between them (links and
  partitions). `Lan.run(seconds)` starts a MonitorRuntime per node on the node's machine
  and its outstanding probe and bind, runs them with the host loops for `seconds` of
  virtual time, and hands the state back to the nodes, so tests can interleave steps and
  runs.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from minisft.config.model import (
    AnnounceConfig,
    CheckConfig,
    FallbackConfig,
    FallbackMode,
    IPAddress,
    IsAliveConfig,
    LooksAliveConfig,
    MonitorConfig,
    ProbeConfig,
    Role,
)
from minisft.core.actions import (
    Action,
    Announce,
    Bind,
    BindDone,
    CancelProbe,
    Emit,
    ProbeDone,
    Release,
    StartProbe,
)
from minisft.core.events import EventKind, Notice
from minisft.core.io import (
    AddressVanished,
    Command,
    ConflictSeen,
    Input,
    LinkChanged,
    PeerPingResult,
    PeerServiceResult,
    PingResult,
    Reconfigured,
    ServiceResult,
    Started,
    SwitchoverFacts,
    Tick,
    Verb,
)
from minisft.core.monitor import MonitorMachine, Purpose, State
from minisft.runtime.host_loops import TICK, HostLoops
from minisft.runtime.monitor_runtime import MonitorRuntime
from minisft.testing.fakes import InlineExecutor, Neighbour, VirtualClock, run_virtual
from minisft.testing.segment import Segment, SegmentPort

T = TypeVar("T")

PING_RTT = 0.002
BIND_LATENCY = 0.01  # the most a bind takes (on the segment: no time at all)
START = 1000.0  # monotonic clocks do not start at zero

HOLDER_MAC = "02:00:00:00:00:aa"
INTRUDER_MAC = "02:00:00:00:00:bb"


def make_config(
    role: Role = Role.BACKUP,
    *,
    name: str = "web",
    address: str = "192.0.2.10/24",
    peer_ip: str | None = None,
    interval: float = 3.0,
    retry: int = 3,
    timeout: float = 1.0,
    check: str = "always",
    isalive_retry: int = 2,
    isalive_interval: float = 10.0,
    on_holder: bool = False,
    fallback: FallbackMode = FallbackMode.MANUAL,
    hold_down: float = 60.0,
    probe_count: int = 3,
    probe_interval: float = 0.05,
    refresh: float = 10.0,
    startup_grace: float | None = None,
) -> MonitorConfig:
    return MonitorConfig(
        name=name,
        address=ipaddress.ip_interface(address),
        role=role,
        peer_ip=ipaddress.ip_address(peer_ip) if peer_ip else None,
        looksalive=LooksAliveConfig(interval=interval, retry=retry, timeout=timeout),
        isalive=IsAliveConfig(interval=isalive_interval, retry=isalive_retry,
                              check=CheckConfig(type=check), on_holder=on_holder),
        fallback=FallbackConfig(mode=fallback, hold_down=hold_down),
        probe=ProbeConfig(count=probe_count, interval=probe_interval),
        announce=AnnounceConfig(refresh=refresh),
        startup_grace=startup_grace,
    )


@dataclass
class Host:
    """A host on the segment that does not run MiniSFT here."""

    mac: str = HOLDER_MAC
    has_address: bool = True  # the service address is configured on it
    icmp: bool = True  # answers ping for the address
    arp: bool = True  # answers ARP/NDP for the address
    up: bool = True  # powered and cabled (what a ping to `peer_ip` sees)
    service: bool = True  # what IsAlive finds on it

    @property
    def answers_ping(self) -> bool:
        return self.up and self.has_address and self.icmp

    @property
    def answers_arp(self) -> bool:
        return self.up and self.has_address and self.arp


@dataclass(frozen=True)
class View:
    """What an admin sees of a machine at one moment."""

    state: State
    purpose: Purpose | None
    paused: bool
    link_up: bool
    holds: bool
    conflict_open: bool

    @classmethod
    def of(cls, m: MonitorMachine) -> View:
        return cls(m.state, m.purpose, m.paused, m.link_up, m.holds, m.conflict_open)


@dataclass(frozen=True)
class Step:
    """One input fed to a machine: when, what, what came out, and the state around it."""

    at: float
    event: Input
    actions: tuple[Action, ...]
    before: View
    after: View
    bound_after: bool  # the address is on the local interface once the actions ran
    removed_after: bool  # ... or was, until someone deleted it behind MiniSFT's back
    current_probe: int | None  # the probe token the runtime considered live before the input

    @property
    def binds(self) -> list[Bind]:
        return [a for a in self.actions if isinstance(a, Bind)]

    @property
    def notices(self) -> list[Notice]:
        return [a.notice for a in self.actions if isinstance(a, Emit)]


_DEFAULT = object()


class Node:
    """One MonitorMachine and what its runtime knows, on its port of the segment."""

    def __init__(self, lan: Lan, config: MonitorConfig, mac: str, *, service: bool = True):
        self.lan = lan
        self.config = config
        self.mac = mac
        self.port: SegmentPort = lan.segment.port(mac)
        self.port.service = service
        self.machine = MonitorMachine(config, now=lan.now)
        self.rng = random.Random(mac)  # the runtime's start jitter, the same every time
        self.probe: StartProbe | None = None  # the outstanding probe
        self.bind: Bind | None = None  # the bind under way
        self.issued_probes: list[int] = []
        self.issued_binds: list[int] = []
        self.trace: list[Step] = []
        self._view = View.of(self.machine)  # as the last step left it (see `handled`)
        self.notices: list[Notice] = []
        self.announces = 0
        self.releases = 0
        self.removed_externally = False  # address deleted behind MiniSFT's back

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def started(self) -> bool:
        return self.machine.state is not State.STARTING

    @property
    def bound(self) -> bool:
        """The address is on this node's interface."""
        return self.config.address in self.port.bound

    @bound.setter
    def bound(self, on: bool) -> None:
        if on:
            self.port.bound.add(self.config.address)
        else:
            self.port.bound.discard(self.config.address)

    @property
    def wire_up(self) -> bool:
        return self.port.link

    @property
    def service_ok(self) -> bool:
        """This node's own service, for IsAlive on the holder."""
        return self.port.service

    @service_ok.setter
    def service_ok(self, ok: bool) -> None:
        self.port.service = ok

    @property
    def bind_token(self) -> int | None:
        return self.bind.token if self.bind is not None else None

    def __repr__(self) -> str:
        m = self.machine
        return (f"<Node {self.mac} {self.config.role.value} {m.state.value}"
                f"{'/' + m.purpose.value if m.purpose else ''} bound={self.bound} "
                f"link={self.wire_up}>")

    # ---------------------------------------------------------------- the one entry point

    def feed(self, event: Input) -> list[Action]:
        """One input, its actions carried out at once on the segment (the step methods)."""
        actions = self.machine.handle(event, self.lan.now)
        for action in actions:
            self._execute(action)
        self.handled(event, actions, self.lan.now)
        return actions

    def handled(self, event: Input, actions: list[Action], now: float) -> None:
        """The machine handled `event` and its actions were carried out, by a step or by
        the runtime (MonitorRuntime's `on_handled`): keep what the runtime knows
        (outstanding probe and bind) and the trace up to date."""
        current = self.probe.token if self.probe else None
        if isinstance(event, ProbeDone) and current == event.token:
            self.probe = None
        if isinstance(event, BindDone) and self.bind_token == event.token:
            self.bind = None
        for action in actions:
            if isinstance(action, StartProbe):
                self.probe = action  # replaces any probe still running
                self.issued_probes.append(action.token)
            elif isinstance(action, CancelProbe):
                if self.probe is not None and self.probe.token == action.token:
                    self.probe = None
            elif isinstance(action, Bind):
                assert self.bind is None, "a second Bind before the first one finished"
                self.bind = action
                self.issued_binds.append(action.token)
            elif isinstance(action, Release):
                self.releases += 1
                self.removed_externally = False
            elif isinstance(action, Announce):
                self.announces += 1
        # the others' probes hear this node's outstanding one, between runs too
        self.port.probing = {self.config.ip} if self.probe is not None else set()
        if not self.machine.holds and self.machine.state is not State.BINDING:
            self.removed_externally = False  # the machine caught up with the interface
        # the machine changes only by handling an input, and every input fed to it comes
        # through here: the view the last step left is the one this step started from
        before, self._view = self._view, View.of(self.machine)
        self.trace.append(Step(now, event, tuple(actions), before, self._view,
                               self.bound, self.removed_externally, current))

    def _execute(self, action: Action) -> None:
        """An action of a step: what the runtime does at once. A probe or bind stays
        outstanding until a step or the next `Lan.run` finishes it."""
        if isinstance(action, Emit):
            self.notices.append(action.notice)
        elif isinstance(action, Release):
            self.bound = False
        elif isinstance(action, Announce):
            self.lan.announce(self)

    # ---------------------------------------------------------------- one input each

    def start(self, bound: bool = False) -> list[Action]:
        self.bound = bound
        return self.feed(Started(bound))

    def ping(self, ok: bool | None = None) -> list[Action]:
        """One LooksAlive result; by default what the wire says."""
        if ok is None:
            ok = self.lan.ping_answered(self)
        if ok:
            return self.feed(PingResult(True, PING_RTT))
        return self.feed(PingResult(False, None, "timeout"))

    def misses(self, n: int) -> None:
        """`n` unanswered pings, each followed by the probe it started (if any)."""
        for _ in range(n):
            self.ping(False)
            if self.probe is not None and self.machine.state is State.WATCHING:
                self.probe_done()

    def probe_done(self, answered_by: object = _DEFAULT, *, prober: bool = False
                   ) -> list[Action]:
        """The outstanding probe reports; by default with what the wire says."""
        assert self.probe is not None, f"no probe outstanding ({self!r})"
        if answered_by is _DEFAULT:
            mac, prober = self.lan.probe_answer(self)
        else:
            mac = answered_by  # type: ignore[assignment]
        assert mac is None or isinstance(mac, str)
        return self.feed(ProbeDone(self.probe.token, mac, prober))

    def bind_done(self, error: str | None = None) -> list[Action]:
        """The outstanding bind finishes (announcing first, as the runtime does)."""
        assert self.bind is not None, f"no bind outstanding ({self!r})"
        if error is None:
            self.port.bind(self.port.iface, ipaddress.ip_interface(self.bind.address))
            self.removed_externally = False
            self.lan.announce(self)
        return self.feed(BindDone(self.bind.token, error))

    def settle(self, limit: int = 10) -> None:
        """Let the outstanding probe and bind finish as the wire says, until none is left."""
        for _ in range(limit):
            if self.bind_token is not None:
                self.bind_done()
            elif self.probe is not None:
                self.probe_done()
            else:
                return
        raise AssertionError("probe/bind never settled")

    def stale_probe_done(self, answered_by: str | None = None) -> list[Action] | None:
        """A ProbeDone for a probe that was cancelled or replaced; None if there is none."""
        live = self.probe.token if self.probe else None
        old = [t for t in self.issued_probes if t != live]
        return self.feed(ProbeDone(old[-1], answered_by)) if old else None

    def stale_bind_done(self, error: str | None = None) -> list[Action] | None:
        """A BindDone with an old token, only where a BindDone can arrive (BINDING)."""
        old = [t for t in self.issued_binds if t != self.bind_token]
        if not old or self.machine.state is not State.BINDING:
            return None
        return self.feed(BindDone(old[-1], error))

    def reload(self, config: MonitorConfig) -> list[Action]:
        """A reload changed the monitor's settings: the probe and bind under way go on."""
        self.config = config
        return self.feed(Reconfigured(config))

    def tick(self, dt: float = TICK) -> list[Action]:
        self.lan.advance(dt)
        return self.feed(Tick())

    def wait(self, seconds: float, step: float = TICK) -> list[Action]:
        """Ticks for `seconds` of simulated time; returns every action they produced."""
        out: list[Action] = []
        end = self.lan.now + seconds
        while self.lan.now + step <= end + 1e-9:
            out += self.tick(step)
        return out

    def link(self, up: bool) -> list[Action]:
        self.port.link = up
        return self.feed(LinkChanged(up))

    def command(self, verb: Verb, by: str = "admin") -> list[Action]:
        facts = self.switchover_facts() if verb is Verb.SWITCHOVER else None
        return self.feed(Command(verb, by, facts))

    def switchover_facts(self) -> SwitchoverFacts:
        """What the runtime finds out before a switchover (MonitorRuntime.switchover_facts),
        read off the wire: who answers for the address and for peer_ip, and this node's
        own service."""
        return SwitchoverFacts(
            holder_mac=self.lan.arp_answer(self), peer_mac=self.lan.peer_mac(self),
            own_check_ok=self.service_ok if self.config.isalive.enabled else None,
            own_check_detail="" if self.service_ok else "the simulated service is down")

    def conflict(self, mac: str = INTRUDER_MAC) -> list[Action]:
        return self.feed(ConflictSeen(mac))

    def vanish(self) -> list[Action]:
        """Someone deleted the address from the interface and the runtime noticed."""
        self.bound = False
        return self.feed(AddressVanished())

    def service(self, ok: bool, detail: str = "") -> list[Action]:
        return self.feed(ServiceResult(ok, 0.01 if ok else None, detail or
                                       ("200 OK" if ok else "connection refused")))

    def peer_ping(self, ok: bool | None = None) -> list[Action]:
        if ok is None:
            ok = self.lan.peer_answers(self)
        return self.feed(PeerPingResult(ok, PING_RTT if ok else None))

    def peer_service(self, ok: bool | None = None) -> list[Action]:
        if ok is None:
            ok = self.lan.peer_service(self)
        return self.feed(PeerServiceResult(ok, 0.01 if ok else None))

    # ---------------------------------------------------------------- what came out

    def mark(self) -> int:
        """A position in the notice log, for `kinds(since=...)`."""
        return len(self.notices)

    def kinds(self, since: int = 0) -> list[EventKind]:
        return [n.kind for n in self.notices[since:]]

    def count(self, kind: EventKind) -> int:
        return sum(1 for n in self.notices if n.kind is kind)

    def last(self, kind: EventKind) -> Notice:
        for notice in reversed(self.notices):
            if notice.kind is kind:
                return notice
        raise AssertionError(f"no {kind.value} event; got {[k.value for k in self.kinds()]}")

    def actions(self) -> Iterator[Action]:
        for step in self.trace:
            yield from step.actions

    def bind_count(self) -> int:
        return sum(1 for a in self.actions() if isinstance(a, Bind))

    # ---------------------------------------------------------------- the real runtime

    def runtime(self, clock: Callable[[], float], executor: Executor) -> MonitorRuntime:
        """The daemon's MonitorRuntime on this node's machine and port, built as the daemon
        builds it; every input it feeds is traced (`handled`)."""
        check = self.port.check() if self.config.isalive.enabled else None
        rt = MonitorRuntime(
            self.config, clock=clock, pinger=self.port, neighbours=self.port,
            addresses=self.port, iface=self.port.iface, netlink_executor=executor,
            emit=self.notices.append, check=check, rng=self.rng,
            on_handled=lambda event, actions: self.handled(event, actions, clock()))
        rt.machine = self.machine  # adopt it: the steps before and after use it too
        return rt


class _HostOnWire:
    """A `Host` as the segment sees it: the holder holds the nodes' service addresses,
    the peer host their peer_ip, read at every look (tests change them as they go)."""

    def __init__(self, lan: Lan, host: Host, *, peer: bool) -> None:
        self.lan = lan
        self.host = host
        self.is_peer = peer

    @property
    def mac(self) -> str:
        return self.host.mac

    def _holds(self) -> set[IPAddress]:
        h = self.host
        if not h.up:
            return set()
        if self.is_peer:
            return {n.config.peer_ip for n in self.lan.nodes if n.config.peer_ip is not None}
        return {n.config.ip for n in self.lan.nodes} if h.has_address else set()

    def neighbour(self) -> Neighbour | None:
        if not self.host.up:
            return None
        if self.is_peer:
            return Neighbour(self.mac, self._holds())
        return Neighbour(self.mac, self._holds(), self.host.icmp, self.host.arp)

    def service_ok(self, ip: IPAddress) -> bool:
        return ip in self._holds() and self.host.service


@dataclass
class Lan:
    """The clock and the wire. `holder` holds the address unless a node does; `peer` is the
    primary's physical host when it is not one of the nodes (see `peer_node`)."""

    now: float = START
    holder: Host | None = None
    peer: Host | None = None
    peer_node: Node | None = None
    partitioned: bool = False  # the nodes cannot see each other (each still sees `holder`)
    nodes: list[Node] = field(default_factory=list)
    segment: Segment = field(default_factory=Segment)

    def add(self, config: MonitorConfig, mac: str | None = None, *,
            service: bool = True) -> Node:
        node = Node(self, config, mac or f"02:00:00:00:01:{len(self.nodes):02x}",
                    service=service)
        self.nodes.append(node)
        return node

    def advance(self, dt: float) -> None:
        assert dt >= 0
        self.now += dt

    # ---------------------------------------------------------------- the wire

    def _wire(self) -> None:
        """Bring the segment in line with the attributes tests set: the hosts that do not
        run MiniSFT, the peer node's own address, the partition."""
        seg = self.segment
        # the hosts first: a holder that is not one of the nodes answers before them
        seg.stations = [_HostOnWire(self, host, peer=peer)
                        for host, peer in ((self.holder, False), (self.peer, True))
                        if host is not None]
        seg.stations += [n.port for n in self.nodes]
        for node in self.nodes:
            node.port.local = set()
        if self.peer_node is not None:
            self.peer_node.port.local = {n.config.peer_ip for n in self.nodes
                                         if n.config.peer_ip is not None}
        if self.partitioned:
            seg.split(*([n.port] for n in self.nodes))
        else:
            seg.heal()

    # What a step's result is by default: read off the segment, as the runtime's probes
    # would find it at this moment.

    def ping_answered(self, node: Node) -> bool:
        self._wire()
        return node.port.answering(node.config.ip, arp=False) is not None

    def arp_answer(self, node: Node) -> str | None:
        self._wire()
        holder = node.port.answering(node.config.ip, arp=True)
        return holder.mac if holder is not None else None

    def probe_answer(self, node: Node) -> tuple[str | None, bool]:
        """What `node`'s outstanding probe hears: a holder's answer, else another node
        probing at the same time under the probe's `on_prober` rule (FakeHost's rule:
        RFC 5227 simultaneous probe). (mac, True) for a prober."""
        assert node.probe is not None
        self._wire()
        answer = _at_once(node.port.probe_answer(node.config.ip, 1, 0.0,
                                                 on_prober=node.probe.on_prober.value))
        return (answer.mac, answer.prober) if answer is not None else (None, False)

    def service_answer(self, node: Node) -> bool:
        """What IsAlive against the service address finds, from `node`."""
        self._wire()
        return _at_once(node.port.check().run(str(node.config.ip))).ok

    def peer_answers(self, node: Node) -> bool:
        if node.config.peer_ip is None:
            return False
        self._wire()
        return node.port.answering(node.config.peer_ip, arp=False) is not None

    def peer_mac(self, node: Node) -> str | None:
        """Who answers ARP/NDP for `node`'s peer_ip: in a pair, the other node unless that
        is `peer_node` (whose port has the peer_ip), else the `peer` host."""
        if node.config.peer_ip is None or not node.wire_up:
            return None
        if self.peer_node in (None, node) and len(self.nodes) == 2:
            other = next(o for o in self.nodes if o is not node)
            return other.mac if other.wire_up and not self.partitioned else None
        self._wire()
        holder = node.port.answering(node.config.peer_ip, arp=True)
        return holder.mac if holder is not None else None

    def peer_service(self, node: Node) -> bool:
        if node.config.peer_ip is None:
            return False
        self._wire()
        return _at_once(node.port.check().run(str(node.config.peer_ip))).ok

    def announce(self, node: Node) -> None:
        """Gratuitous ARP from `node` (a step): every other node that has the address bound
        sees a conflict a little later, through its neighbour watch (in the next `run`)."""
        if node.wire_up:
            self._wire()
            self.segment.announce(node.port, node.config.ip, self.now)

    # ---------------------------------------------------------------- world changes

    def set_link(self, node: Node, up: bool) -> None:
        if node.wire_up != up:
            node.link(up)

    def remove_address(self, node: Node) -> None:
        """Someone runs `ip addr del` on `node`: the runtime notices within ADDRESS_POLL."""
        if node.bound:
            node.bound = False
            node.removed_externally = True

    # ---------------------------------------------------------------- the runtime

    def start_all(self) -> None:
        for node in self.nodes:
            if not node.started:
                node.start(node.bound)

    def run(self, seconds: float) -> None:
        """Every node's runtime for `seconds` of virtual time: a MonitorRuntime per node on
        the node's machine, resuming its outstanding probe and bind, the neighbour watch
        the daemon sets up (an announcement heard is a ConflictSeen), and the host's tick
        and link/address loops. When the time is up everything stops where it is; what is
        outstanding stays with the node (and the next `run` resumes it)."""
        assert seconds >= 0
        self._wire()
        end = self.now + seconds
        clock = VirtualClock(self.now)
        run_virtual(self._run(end, clock), clock)
        self.now = end

    async def _run(self, end: float, clock: VirtualClock) -> None:
        executor = InlineExecutor()
        self.segment.resume()
        tasks: list[asyncio.Task[None]] = []  # held until the runner cancels them
        for node in self.nodes:
            rt = node.runtime(clock.now, executor)
            node.port.watch(node.config.ip, _conflict_to(rt))
            if not node.started:
                rt.start(node.bound)
            else:
                for work in (node.probe, node.bind):
                    if work is not None:
                        rt.driver.execute(work)  # the probe starts its rounds again
                rt.resume()
            loops = HostLoops(functools.partial(list, [rt]), clock=clock.now,
                              link_up=_async(node.port.link_up, node.port.iface),
                              iface_name=node.port.iface.name)
            tasks += [asyncio.create_task(loops.tick_loop()),
                      asyncio.create_task(loops.link_loop(node.machine.link_up))]
        await asyncio.sleep(end - clock.now())
        # the runner cancels every task on the way out: loops, probes, pings in flight


def _at_once(coro: Coroutine[Any, Any, T]) -> T:
    """Run a fake's coroutine that never waits for time (a step's answer, read off the
    segment) to its end, outside any event loop."""
    try:
        while True:
            coro.send(None)  # asyncio.sleep(0) yields once, bare
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _conflict_to(rt: MonitorRuntime) -> Callable[[str], None]:
    """The daemon's neighbour watch callback: a frame claiming the address is a conflict."""
    return lambda mac: rt.feed(ConflictSeen(mac))


def _async(fn: Callable[[object], bool], arg: object) -> Callable[[], Awaitable[bool]]:
    async def call() -> bool:
        return fn(arg)
    return call


def single(config: MonitorConfig, *, holder: Host | None = None, peer: Host | None = None,
           bound: bool = False, start: bool = True) -> Node:
    """One machine on a LAN with (optionally) another host holding the address."""
    lan = Lan(holder=holder, peer=peer)
    node = lan.add(config, "02:00:00:00:01:01")
    node.bound = bound
    if start:
        node.start(bound)
    return node
