"""The one action vocabulary of the pure machines, and the results that answer it.

A monitor (`minisft.core.monitor`) and a pool (`minisft.pools.machine`) ask the world for
the same things: probe an address with ARP/NDP, bind it, release it, announce it, emit an
event. They ask with these classes, and one driver (`minisft.runtime.driver`) carries them
out for both. Every action names its address (as `str(ip_interface)`, e.g.
"192.0.2.10/24"): a pool manages many, and the driver needs nothing else to act.

Plain data: no behaviour, no I/O. A result carries the `token` of the action it answers,
so a result that arrives after the machine moved on is recognised as stale and ignored
rather than misapplied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from minisft.core.events import Notice


class IllegalInput(RuntimeError):
    """An input arrived that the machine's current state cannot receive: a bug in the
    caller (the machines' `TRANSITIONS` tables list what each state accepts)."""


class OnProber(StrEnum):
    """What a probe makes of another host probing for the same address at the same time
    (RFC 5227 2.1.1 "simultaneous probe"); the machine picks one per probe."""

    YIELD = "yield"  # it counts as an answer: this node backs off
    IGNORE = "ignore"  # only a real holder counts: this node goes ahead
    TIEBREAK = "tiebreak"  # it counts only if its MAC is lower: exactly one goes ahead


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class StartProbe:
    """Send `count` probes for `address` `interval` apart; report ProbeDone(token, ...) at
    the first answer or `interval` after the last probe. A monitor's new probe replaces any
    of its probes still running; a pool's probes run side by side, one per address."""

    token: int
    address: str
    count: int
    interval: float
    on_prober: OnProber


@dataclass(frozen=True)
class CancelProbe:
    token: int
    address: str


@dataclass(frozen=True)
class Bind:
    """Add the address with its prefix on the local interface, announce it, report
    BindDone(token, error)."""

    token: int
    address: str


@dataclass(frozen=True)
class Release:
    """Remove the address from the local interface (no error if it is already gone)."""

    address: str


@dataclass(frozen=True)
class Announce:
    """Gratuitous ARP / unsolicited NA for the address (the count and spacing are the
    owner's: a monitor's `announce` settings, a pool's defaults)."""

    address: str


@dataclass(frozen=True)
class Emit:
    notice: Notice


Action = StartProbe | CancelProbe | Bind | Release | Announce | Emit

# ---------------------------------------------------------------- results


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
