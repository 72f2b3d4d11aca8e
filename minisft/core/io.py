"""Inputs to and actions from the failover core. Plain data: no behaviour, no I/O.

The runtime turns the world into inputs (probe results, admin commands, clock ticks) and
carries out the actions (probe, bind, release, announce, emit). Results of actions carry
the `token` of the action they answer, so a result that arrives after the machine moved on
is recognised as stale and ignored rather than misapplied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from minisft.config.model import MonitorConfig
from minisft.core.events import Notice

# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Started:
    """The runtime looked at the interface: is the address already bound here?"""

    address_bound: bool


@dataclass(frozen=True)
class PingResult:
    """LooksAlive: one ICMP echo to the service address."""

    ok: bool
    rtt: float | None = None  # seconds
    detail: str = ""


@dataclass(frozen=True)
class LateReply:
    """LooksAlive: the reply to a ping already reported missed came after all, within the
    configured `timeout` (the ping itself waited only the RTO, so that retries and the
    ARP/NDP probe start early): the holder is alive, only slower than estimated."""

    rtt: float  # seconds


@dataclass(frozen=True)
class ServiceResult:
    """IsAlive: one service check against the service address."""

    ok: bool
    latency: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class PeerPingResult:
    """LooksAlive against `peer_ip`, the primary's own host, watched for fallback."""

    ok: bool
    rtt: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class PeerServiceResult:
    ok: bool
    latency: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class ProbeDone:
    """An ARP probe (IPv4) or DAD-style neighbour solicitation (IPv6) finished.

    `answered_by` is the link-layer address that answered for the address, or None when
    nobody did. A probe that gets an answer reports at once, without waiting out its rounds.
    `prober`: the answer was another host probing for the address at the same time (it
    does not hold it yet), counted as an answer under the probe's `OnProber` rule.
    """

    token: int
    answered_by: str | None
    prober: bool = False


@dataclass(frozen=True)
class BindDone:
    token: int
    error: str | None = None


@dataclass(frozen=True)
class ConflictSeen:
    """While holding: another host announced or answered for our address."""

    mac: str


@dataclass(frozen=True)
class PeerAsked:
    """`peer_ip` asked who has the address (an ARP request or IPv6 neighbour solicitation
    for it, sent from peer_ip): the peer resolves the address, so it watches it and does
    not hold it. `mac` is the peer's link-layer address, the one its announcements carry.
    """

    mac: str


@dataclass(frozen=True)
class LinkChanged:
    up: bool


@dataclass(frozen=True)
class AddressVanished:
    """While holding: the address is no longer on the interface (removed by someone)."""


@dataclass(frozen=True)
class Tick:
    """Time passed. Timers (hold-down, refresh, grace) are evaluated on ticks."""


@dataclass(frozen=True)
class Reconfigured:
    """A reload changed this monitor's settings; its name and address stay the same (a
    monitor whose address changes is removed and added anew). Work in flight (a probe
    round, a bind) goes on and still reports to this machine, so no state is left waiting
    for a result that never comes."""

    config: MonitorConfig


class Verb(StrEnum):
    RELEASE = "release"
    CLAIM = "claim"
    PAUSE = "pause"
    RESUME = "resume"
    SWITCHOVER = "switchover"


@dataclass(frozen=True)
class SwitchoverFacts:
    """What the runtime found out just before a switchover, for the core to judge: who
    answers ARP/NDP for the address and for `peer_ip` now, and this node's own health."""

    holder_mac: str | None  # who answers for the address; None: nobody
    peer_mac: str | None  # who answers for peer_ip; None: nobody (or no peer_ip)
    # the IsAlive check run against this node's own local_ip; None: no check configured
    own_check_ok: bool | None = None
    own_check_detail: str = ""


@dataclass(frozen=True)
class Command:
    verb: Verb
    by: str = "cli"
    facts: SwitchoverFacts | None = None  # Verb.SWITCHOVER only, and required there


Input = (
    Started | PingResult | LateReply | ServiceResult | PeerPingResult | PeerServiceResult
    | ProbeDone | BindDone | ConflictSeen | PeerAsked | LinkChanged | AddressVanished | Tick
    | Command | Reconfigured
)

# ---------------------------------------------------------------- actions


class OnProber(StrEnum):
    """What a probe makes of another host probing for the same address at the same time
    (RFC 5227 2.1.1 "simultaneous probe"); the core picks one per probe (see monitor.py)."""

    YIELD = "yield"  # it counts as an answer: this node backs off
    IGNORE = "ignore"  # only a real holder counts: this node goes ahead
    TIEBREAK = "tiebreak"  # it counts only if its MAC is lower: exactly one goes ahead


@dataclass(frozen=True)
class StartProbe:
    """Send `count` probes `interval` apart; report ProbeDone(token, ...) at the first
    answer or `interval` after the last probe. Replaces any probe still running."""

    token: int
    count: int
    interval: float
    on_prober: OnProber = OnProber.TIEBREAK


@dataclass(frozen=True)
class CancelProbe:
    token: int


@dataclass(frozen=True)
class Bind:
    """Add the address with its prefix on the local interface, then announce it."""

    token: int


@dataclass(frozen=True)
class Release:
    """Remove the address from the local interface (no error if it is already gone)."""


@dataclass(frozen=True)
class Announce:
    """Gratuitous ARP / unsolicited NA for the address, `announce.count` times."""


@dataclass(frozen=True)
class Emit:
    notice: Notice


Action = StartProbe | CancelProbe | Bind | Release | Announce | Emit
