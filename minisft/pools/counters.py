"""What every pool member counts, whichever backend coordinates the pool.

Both machines (`minisft.pools.machine`, embedded; `minisft.pools.etcd_machine`, etcd)
move addresses the same ways, so they count those moves under the same names: the status
file, check_minisft's long output and the dashboards then read one vocabulary. Each
backend adds what only it has (heartbeats; leases, sessions and fences)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AddressCounters:
    takeovers: int = 0  # bound an address another member held
    claims: int = 0  # bound an address nobody held
    handovers: int = 0  # released to the member the formula gives it
    yields: int = 0  # released a duplicate
    conflicts: int = 0  # a probe found someone answering
    bind_failures: int = 0
    switchovers: int = 0  # moved make-before-break by a rebalance (taken or yielded)
