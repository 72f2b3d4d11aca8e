"""The one interface the daemon uses for a pool, whatever coordinates it.

Two backends implement it: the embedded one (`minisft.pools.runtime.PoolRuntime`,
authenticated heartbeats between the members) and etcd (`minisft.pools.etcd_backend`,
leases). The daemon holds them as `PoolBackend` and never asks which one it has.

Timing contract (what the daemon, the docs and the tests may rely on):

- `start(held)` returns once the backend runs; it takes no address before it knows who
  else is there (embedded: one listening period; etcd: its first read, and at a cold start
  one lease TTL so members booted together are placed by the formula over all of them).
- Losing the coordination stops the taking, and on etcd the holding too: an embedded
  member that hears fewer than half of the configured members (exactly half without the
  witness answering) is isolated: it takes nothing over but *keeps* what it holds (a
  service address is stateless; releasing would turn a switch failure into an outage,
  see `minisft.pools.machine`). An etcd member that could not renew its lease for two
  thirds of the TTL releases every address it holds (fenced) before the lease can expire
  and another member take them, since etcd hands them out again at expiry.
- `stop(release=True)` removes the held addresses and tells the others at once; with
  `release=False` (a reload that restarts the pool) the addresses stay on the interface
  and the replacement adopts them through `start(held)`.
- `handover()` after `stop(release=False)` gives what the replacement needs to keep the
  pool's identity (etcd: its lease, so no other member sees it leave), or None.
- `rebalance(by)` is an admin request; it returns at once with a `RebalanceAnswer` (a
  refusal changes nothing), the moves follow as events.
- `snapshot()` is cheap and never blocks: it is read every status interval.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from minisft.pools.actions import RebalanceAnswer


class PoolBackend(Protocol):
    async def start(self, held: Iterable[Any] = ()) -> None: ...

    async def stop(self, release: bool) -> None: ...

    def handover(self) -> object | None: ...

    def rebalance(self, by: str = "cli") -> RebalanceAnswer: ...

    def snapshot(self) -> dict[str, Any]: ...
