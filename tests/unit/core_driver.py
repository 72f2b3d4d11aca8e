"""The fakes of the core tests, in one place: a simulated LAN that drives real MonitorMachines.

Nothing here decides anything: it only turns a simulated world into the machine's inputs and
carries out the machine's actions the way `minisft.runtime.monitor_runtime` does, so the
tests exercise the very object the daemon runs.

* `Host` -- a host on the segment that does not run MiniSFT: the current holder of the
  service address (answers ping and/or ARP, or not) or the primary's physical host
  (`peer_ip`, watched for automatic fallback).
* `Node` -- one MonitorMachine plus what its runtime knows: the local interface (is the
  address bound here?), the outstanding probe and bind, and a trace of every input, the
  actions it produced and the state around it. Its step methods (`ping`, `probe_done`,
  `bind_done`, `tick`, ...) feed one input each, for tests that control every step.
* `Lan` -- the clock, the nodes, the other hosts and the wire between them (links and
  partitions). `Lan.run(seconds)` is the runtime's loops in simulated time: pings paced by
  `next_ping_delay`, probes that report at the first answer or after their last round,
  binds that complete after a short latency, announcements that other holders see as
  `ConflictSeen`, ticks, IsAlive checks and the peer loop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from minisft.config.model import (
    AnnounceConfig,
    CheckConfig,
    FallbackConfig,
    FallbackMode,
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
    OnProber,
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

TICK = 0.25  # the daemon's tick period
ADDRESS_POLL = 1.0  # the daemon looks for a vanished address this often
POLL = 0.25  # a loop waiting for `wants_*` re-checks this often (the runtime: on change)
PING_RTT = 0.002
BIND_LATENCY = 0.01
WIRE_LATENCY = 0.001  # an announcement reaches the other hosts after this long
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


@dataclass
class _Timers:
    """The runtime loops of one node, in simulated time (used by `Lan.run`)."""

    ping_at: float = 0.0
    ping_inflight: tuple[float, float, bool] | None = None  # (started, result at, ok)
    tick_at: float = 0.0
    service_at: float = 0.0
    peer_at: float = 0.0
    peer_service_at: float = 0.0
    address_at: float = 0.0
    probe_check_at: float | None = None
    probe_round: int = 0
    bind_at: float | None = None


class Node:
    """One MonitorMachine and the runtime around it."""

    def __init__(self, lan: Lan, config: MonitorConfig, mac: str, *, service: bool = True):
        self.lan = lan
        self.config = config
        self.mac = mac
        self.machine = MonitorMachine(config, now=lan.now)
        self.wire_up = True
        self.bound = False
        self.started = False
        self.service_ok = service  # this node's own service, for IsAlive on the holder
        self.probe: StartProbe | None = None
        self.bind_token: int | None = None
        self.issued_probes: list[int] = []
        self.issued_binds: list[int] = []
        self.trace: list[Step] = []
        self.notices: list[Notice] = []
        self.announces = 0
        self.releases = 0
        self.removed_externally = False  # address deleted behind MiniSFT's back
        self.timers = _Timers()

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        m = self.machine
        return (f"<Node {self.mac} {self.config.role.value} {m.state.value}"
                f"{'/' + m.purpose.value if m.purpose else ''} bound={self.bound} "
                f"link={self.wire_up}>")

    # ---------------------------------------------------------------- the one entry point

    def feed(self, event: Input) -> list[Action]:
        before = View.of(self.machine)
        current = self.probe.token if self.probe else None
        actions = self.machine.handle(event, self.lan.now)
        for action in actions:
            self._execute(action)
        if not self.machine.holds and self.machine.state is not State.BINDING:
            self.removed_externally = False  # the machine caught up with the interface
        self.trace.append(Step(self.lan.now, event, tuple(actions), before,
                               View.of(self.machine), self.bound, self.removed_externally,
                               current))
        return actions

    def _execute(self, action: Action) -> None:
        if isinstance(action, Emit):
            self.notices.append(action.notice)
        elif isinstance(action, StartProbe):
            self.probe = action  # replaces any probe still running
            self.issued_probes.append(action.token)
            self.timers.probe_check_at = self.lan.now
            self.timers.probe_round = 0
        elif isinstance(action, CancelProbe):
            if self.probe is not None and self.probe.token == action.token:
                self.probe = None
                self.timers.probe_check_at = None
        elif isinstance(action, Bind):
            assert self.bind_token is None, "a second Bind before the first one finished"
            self.bind_token = action.token
            self.issued_binds.append(action.token)
            self.timers.bind_at = self.lan.now + BIND_LATENCY
        elif isinstance(action, Release):
            self.releases += 1
            self.bound = False
            self.removed_externally = False
        elif isinstance(action, Announce):
            self.announces += 1
            self.lan.announce(self)
        else:  # pragma: no cover - a new action type needs a line here
            raise AssertionError(f"unknown action {action!r}")

    # ---------------------------------------------------------------- one input each

    def start(self, bound: bool = False) -> list[Action]:
        self.bound = bound
        self.started = True
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
        token = self.probe.token
        self.probe = None
        self.timers.probe_check_at = None
        return self.feed(ProbeDone(token, mac, prober))

    def bind_done(self, error: str | None = None) -> list[Action]:
        """The outstanding bind finishes (announcing first, as the runtime does)."""
        assert self.bind_token is not None, f"no bind outstanding ({self!r})"
        token, self.bind_token = self.bind_token, None
        self.timers.bind_at = None
        if error is None:
            self.bound = True
            self.removed_externally = False
            self.lan.announce(self)
        return self.feed(BindDone(token, error))

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
        self.wire_up = up
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

    # ---------------------------------------------------------------- runtime loops

    def _next_due(self) -> float:
        t = self.timers
        times = [t.ping_at if t.ping_inflight is None else t.ping_inflight[1], t.tick_at,
                 t.address_at]
        if self.config.isalive.enabled:
            times.append(t.service_at)
        if self.config.peer_ip is not None:
            times.append(t.peer_at)
        if t.probe_check_at is not None:
            times.append(t.probe_check_at)
        if t.bind_at is not None:
            times.append(t.bind_at)
        return min(times)

    def _fire(self) -> None:
        """Run every loop that is due now (one pass; `Lan.run` calls again while due)."""
        now, t, m = self.lan.now, self.timers, self.machine
        if t.bind_at is not None and t.bind_at <= now:
            self.bind_done()
        if t.probe_check_at is not None and t.probe_check_at <= now and self.probe:
            mac, prober = self.lan.probe_answer(self)
            if mac is not None or t.probe_round >= self.probe.count:
                self.probe_done(mac, prober=prober)
            else:
                t.probe_round += 1
                t.probe_check_at = now + self.probe.interval
        if t.ping_inflight is not None and t.ping_inflight[1] <= now:
            started, _, ok = t.ping_inflight
            t.ping_inflight = None
            self.ping(ok)
            t.ping_at = now + m.next_ping_delay(now - started)
        elif t.ping_inflight is None and t.ping_at <= now:
            if m.wants_looksalive:
                ok = self.lan.ping_answered(self)
                # a lost ping waits the machine's current RTO, as in the runtime
                t.ping_inflight = (now, now + (PING_RTT if ok else m.ping_timeout), ok)
            else:
                t.ping_at = now + POLL
        if t.tick_at <= now:
            t.tick_at = now + TICK
            self.feed(Tick())
        if t.address_at <= now:
            t.address_at = now + ADDRESS_POLL
            if self.wire_up and m.state is State.HOLDING and not self.bound:
                self.feed(AddressVanished())
        if self.config.isalive.enabled and t.service_at <= now:
            if m.wants_isalive:
                self.service(self.lan.service_answer(self))
                t.service_at = now + self.config.isalive.interval
            else:
                t.service_at = now + POLL
        if self.config.peer_ip is not None and t.peer_at <= now:
            if m.wants_peer_watch:
                self.peer_ping()
                if m.wants_peer_isalive and now >= t.peer_service_at:
                    t.peer_service_at = now + self.config.isalive.interval
                    self.peer_service()
                t.peer_at = now + self.config.looksalive.interval
            else:
                t.peer_at = now + POLL


@dataclass
class _Delivery:
    at: float
    seq: int
    to: Node
    mac: str

    def __lt__(self, other: _Delivery) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)


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
    _deliveries: list[_Delivery] = field(default_factory=list)
    _seq: int = 0

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

    def connected(self, a: Node, b: Node) -> bool:
        return a is not b and a.wire_up and b.wire_up and not self.partitioned

    def _other_holders(self, node: Node) -> list[Node]:
        return [o for o in self.nodes if o.bound and self.connected(node, o)]

    def ping_answered(self, node: Node) -> bool:
        if not node.wire_up:
            return False
        if self.holder is not None and self.holder.answers_ping:
            return True
        return bool(self._other_holders(node))

    def arp_answer(self, node: Node) -> str | None:
        if not node.wire_up:
            return None
        if self.holder is not None and self.holder.answers_arp:
            return self.holder.mac
        others = self._other_holders(node)
        return others[0].mac if others else None

    def probe_answer(self, node: Node) -> tuple[str | None, bool]:
        """What `node`'s running probe hears: a holder's answer, else another node probing
        at the same time, counted under the probe's `on_prober` rule as the neighbour
        watch does (RFC 5227 simultaneous probe). (mac, True) for a prober."""
        mac = self.arp_answer(node)
        if mac is not None or node.probe is None:
            return mac, False
        rule = node.probe.on_prober
        for other in self.nodes:
            if other.probe is None or not self.connected(node, other):
                continue
            if rule is OnProber.IGNORE or (rule is OnProber.TIEBREAK and other.mac >= node.mac):
                continue
            return other.mac, True
        return None, False

    def service_answer(self, node: Node) -> bool:
        """What IsAlive against the service address finds, from `node`."""
        if node.bound:
            return node.service_ok
        if self.holder is not None and self.holder.answers_ping:
            return self.holder.service
        others = self._other_holders(node)
        return others[0].service_ok if others else False

    def peer_answers(self, node: Node) -> bool:
        if not node.wire_up:
            return False
        if self.peer_node is not None:
            return self.connected(node, self.peer_node)
        return self.peer is not None and self.peer.up

    def peer_mac(self, node: Node) -> str | None:
        """Who answers ARP/NDP for `node`'s peer_ip: the other node of a pair, else `peer`."""
        if node.config.peer_ip is None or not node.wire_up:
            return None
        others = [o for o in self.nodes if self.connected(node, o)]
        if self.peer_node is not None and self.peer_node is not node:
            return self.peer_node.mac if self.peer_node in others else None
        if len(self.nodes) == 2:
            return others[0].mac if others else None
        return self.peer.mac if self.peer is not None and self.peer.up else None

    def peer_service(self, node: Node) -> bool:
        if self.peer_node is not None:
            return self.connected(node, self.peer_node) and self.peer_node.service_ok
        return self.peer is not None and self.peer.up and self.peer.service

    def announce(self, node: Node) -> None:
        """Gratuitous ARP from `node`: every other node that has the address bound sees a
        conflict (a little later, through its neighbour watch)."""
        if not node.wire_up:
            return
        for other in self.nodes:
            if other.bound and self.connected(node, other):
                self._seq += 1
                self._deliveries.append(
                    _Delivery(self.now + WIRE_LATENCY, self._seq, other, node.mac))

    # ---------------------------------------------------------------- world changes

    def set_link(self, node: Node, up: bool) -> None:
        if node.wire_up != up:
            node.link(up)

    def remove_address(self, node: Node) -> None:
        """Someone runs `ip addr del` on `node`: the runtime notices within ADDRESS_POLL."""
        if node.bound:
            node.bound = False
            node.removed_externally = True

    # ---------------------------------------------------------------- the runtime loops

    def start_all(self) -> None:
        for node in self.nodes:
            if not node.started:
                node.start(node.bound)
                t = node.timers
                t.ping_at = t.tick_at = t.service_at = t.peer_at = self.now
                t.address_at = self.now + ADDRESS_POLL

    def run(self, seconds: float) -> None:
        """Every node's runtime loops for `seconds` of simulated time."""
        self.start_all()
        end = self.now + seconds
        for _ in range(10_000_000):
            due = [n._next_due() for n in self.nodes]
            if self._deliveries:
                due.append(min(self._deliveries).at)
            t = min(due)
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            pending = [d for d in self._deliveries if d.at <= self.now]
            if pending:
                self._deliveries = [d for d in self._deliveries if d.at > self.now]
                for d in sorted(pending):
                    if d.to.bound and d.to.machine.state is not State.STARTING:
                        d.to.feed(ConflictSeen(d.mac))
            for node in self.nodes:
                if node._next_due() <= self.now:
                    node._fire()
        raise AssertionError("simulation did not advance")  # pragma: no cover


def single(config: MonitorConfig, *, holder: Host | None = None, peer: Host | None = None,
           bound: bool = False, start: bool = True) -> Node:
    """One machine on a LAN with (optionally) another host holding the address."""
    lan = Lan(holder=holder, peer=peer)
    node = lan.add(config, "02:00:00:00:01:01")
    node.bound = bound
    if start:
        node.start(bound)
        t = node.timers
        t.ping_at = t.tick_at = t.service_at = t.peer_at = lan.now
        t.address_at = lan.now + ADDRESS_POLL
    return node
