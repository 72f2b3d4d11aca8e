"""Inputs to and actions from the pool machine. Plain data, no behaviour, no I/O.

Same pattern as `minisft.core.io`: results carry the token of the action they answer, so a
stale result is recognised and ignored. `Tick`, `ProbeDone`, `BindDone`, `LinkChanged` and
`Emit` are the core's own classes; the pool's probe/bind/release/announce carry the address
(as `str(ip_interface)`, e.g. "192.0.2.101/24") because one machine manages many.
"""

from __future__ import annotations

from dataclasses import dataclass

from minisft.core.io import BindDone, Emit, LinkChanged, ProbeDone, Tick

__all__ = [
    "Action", "AddressGone", "Announce", "Bind", "BindDone", "CancelProbe", "Emit",
    "HeartbeatSeen", "LinkChanged", "PoolInput", "ProbeDone", "Rebalance", "Release",
    "SendHeartbeat",
    "StartProbe", "Started", "Tick", "WitnessResult",
]

# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Started:
    """The runtime looked at the interface: which pool addresses are already bound here."""

    held: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HeartbeatSeen:
    """A valid (authenticated, fresh) heartbeat from another member."""

    member: str
    holds: frozenset[str]
    digest: str
    state: str = "alive"  # "isolated", or "leaving": stopping, count it lost at once
    wants: frozenset[str] = frozenset()
    lost: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WitnessResult:
    ok: bool


@dataclass(frozen=True)
class AddressGone:
    """An address this node holds is no longer on the interface (removed, or IPv6 flushed
    with the link)."""

    address: str


@dataclass(frozen=True)
class Rebalance:
    """Admin: hand addresses over to the members the formula gives them (the manual
    fallback's "admin acts"); a one-shot pass, whatever the fallback mode."""

    by: str = "cli"


PoolInput = (Started | HeartbeatSeen | WitnessResult | AddressGone | Tick | ProbeDone
             | BindDone | LinkChanged | Rebalance)

# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class StartProbe:
    """ARP/NDP probe for `address`; report ProbeDone(token, mac or None)."""

    token: int
    address: str
    count: int
    interval: float


@dataclass(frozen=True)
class CancelProbe:
    token: int
    address: str


@dataclass(frozen=True)
class Bind:
    """Add the address on the interface, announce it, report BindDone(token, error)."""

    token: int
    address: str


@dataclass(frozen=True)
class Release:
    address: str


@dataclass(frozen=True)
class Announce:
    address: str


@dataclass(frozen=True)
class SendHeartbeat:
    """Something peers must know changed (bound, released): send a heartbeat now."""


Action = StartProbe | CancelProbe | Bind | Release | Announce | SendHeartbeat | Emit
