"""Inputs to the failover core. Plain data: no behaviour, no I/O.

The runtime turns the world into inputs (probe results, admin commands, clock ticks) and
carries out the actions (probe, bind, release, announce, emit: `minisft.core.actions`, the
vocabulary the pool machine shares). Results of actions carry the `token` of the action
they answer, so a result that arrives after the machine moved on is recognised as stale
and ignored rather than misapplied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from minisft.config.model import MonitorConfig
from minisft.core.actions import BindDone, ProbeDone

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
class ConflictSeen:
    """While holding: another host announced or answered for our address."""

    mac: str


@dataclass(frozen=True)
class PeerAsked:
    """`peer_ip` asked who has the address (an ARP request or IPv6 neighbour solicitation
    for it, sent from peer_ip): the peer resolves the address, so it watches it and does
    not hold it. `mac` is the peer's link-layer address, the one its announcements carry.

    `link_local`: the solicitation came from an IPv6 link-local address, not from peer_ip.
    Linux sends its neighbour-unreachability probes (every re-check of an address it
    already resolved) from its link-local address, so a watching IPv6 peer mostly asks
    that way; the core counts it as the peer's only when `mac` is the peer's
    (`PeerLinkAddress`)."""

    mac: str
    link_local: bool = False


@dataclass(frozen=True)
class PeerLinkAddress:
    """A frame showed which link-layer address `peer_ip` has (an ARP or a neighbour
    solicitation sent from peer_ip, a neighbour advertisement for it): how the core tells
    the peer's IPv6 link-local solicitations from anybody else's."""

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
    | ProbeDone | BindDone | ConflictSeen | PeerAsked | PeerLinkAddress | LinkChanged
    | AddressVanished | Tick | Command | Reconfigured
)
