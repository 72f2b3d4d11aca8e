"""Inputs to and actions from the pool machine. Plain data, no behaviour, no I/O.

Same pattern as `minisft.core.io`: results carry the token of the action they answer, so a
stale result is recognised and ignored. `Tick` and `LinkChanged` are the core's own inputs;
probe, bind, release, announce and emit are the shared vocabulary of
`minisft.core.actions`; only `SendHeartbeat` is the pool's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
from minisft.core.io import LinkChanged, Tick

__all__ = [
    "Action", "AddressGone", "Announce", "Bind", "BindDone", "CancelProbe", "Emit",
    "HeartbeatSeen", "LinkChanged", "OnProber", "PoolAction", "PoolInput", "ProbeDone",
    "Rebalance", "RebalanceAnswer", "Release", "SendHeartbeat", "StartProbe", "Started",
    "Tick", "WitnessResult",
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
    """Admin: move addresses to the members the formula gives them (the manual fallback's
    "admin acts"); a one-shot pass, whatever the fallback mode. On the member that should
    get addresses back it takes them make-before-break; on a holder it hands over the
    addresses whose member asks for them."""

    by: str = "cli"


@dataclass(frozen=True)
class RebalanceAnswer:
    """What a `Rebalance` did, for the admin who asked: `ok` False is a refusal (nothing
    changed), `message` is one line saying what moves or why not."""

    ok: bool
    message: str
    taking: tuple[str, ...] = ()  # addresses bound here make-before-break
    handing_over: tuple[str, ...] = ()  # addresses released here to their member

    @classmethod
    def of(cls, taking: Mapping[str, str], handing: Mapping[str, str],
           refused: Sequence[str], *, nothing: str, handing_how: str = "handing over"
           ) -> RebalanceAnswer:
        """The answer of one pass, from what it does: `taking` address -> its holder,
        `handing` address -> the member it goes to, `refused` "address: why" for each
        address left where it is; `nothing` is the line when there is nothing to move.
        Refused addresses alone make a refusal; with moves, they are named beside them."""
        parts = []
        if taking:
            parts.append("taking make-before-break " + ", ".join(
                f"{a} from {h}" for a, h in taking.items()))
        if handing:
            parts.append(f"{handing_how} " + ", ".join(
                f"{a} to {m}" for a, m in handing.items()))
        if refused:
            parts.append("not moving " + "; ".join(refused))
        if not taking and not handing:
            return cls(not refused, "; ".join(parts) if refused else nothing)
        return cls(True, "; ".join(parts), tuple(taking), tuple(handing))


PoolInput = (Started | HeartbeatSeen | WitnessResult | AddressGone | Tick | ProbeDone
             | BindDone | LinkChanged | Rebalance)

# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class SendHeartbeat:
    """Something peers must know changed (bound, released): send a heartbeat now."""


PoolAction = Action | SendHeartbeat
