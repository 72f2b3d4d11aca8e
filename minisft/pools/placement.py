"""Where each pool address is, for the monitoring: one rule for both pool backends.

A pool member knows, for every address, who holds it (itself, or the members whose
heartbeats or etcd owner keys say so), and where the formula puts it when every member
is up (its home, the preferred owner). Monitoring wants both side by side: an address
held by nobody is an outage, one held away from home is a pool that has not fallen back
yet (manual fallback, or a member still in hold-down).

`HolderHistory` remembers the last holder seen for each address and counts moves (one
holder to a different one), fed at the points where a backend learns of a new holder,
so a move between two status writes is still counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from minisft.status import PoolAddressStatus


class HolderHistory:
    """The last holder seen for each address, and how often it changed hands."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}
        self.moves: Counter[str] = Counter()

    def get(self, address: str) -> str | None:
        return self._last.get(address)

    def saw(self, address: str, member: str) -> None:
        """`member` holds `address` now (a heartbeat, an owner key, our own bind)."""
        before = self._last.get(address)
        if before is not None and before != member:
            self.moves[address] += 1
        self._last[address] = member


def placement(addresses: Iterable[str], holders: Mapping[str, Iterable[str]],
              home: Mapping[str, str], taking: Mapping[str, str],
              moves: Mapping[str, int]) -> tuple[PoolAddressStatus, ...]:
    """Every address with its owner, preferred owner and state (see PoolAddressStatus).

    `holders`: who holds each address, this member first if it does; `taking`: the
    addresses this member is probing or binding, with which of the two."""
    out = []
    for address in addresses:
        held_by = tuple(holders.get(address, ()))
        if len(held_by) > 1:
            state = "duplicate"
        elif held_by:
            state = "held"
        else:
            state = taking.get(address, "free")
        out.append(PoolAddressStatus(
            address=address, owner=held_by[0] if held_by else None,
            preferred=home.get(address), state=state, holders=held_by,
            moves=moves.get(address, 0)))
    return tuple(out)
