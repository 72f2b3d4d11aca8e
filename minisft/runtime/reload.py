"""What a reload changes, decided from the old and the new config alone.

A reload runs in three steps (`minisft.runtime.reloader.Reloader`): refuse what needs a restart
(`needs_restart`), prepare everything that can fail while the old config still runs
(`ReloadPlan`: the IsAlive checks, the pools' sockets, the sinks; a failure refuses the
reload and changes nothing), then commit the `ReloadDiff` to the running daemon. The
decisions -- which monitor is removed, replaced, added or updated, which pool restarts --
are plain data here, so they are unit-tested without a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from minisft.config.model import Config, MonitorConfig, PoolConfig

if TYPE_CHECKING:
    from minisft.pools.runtime import PoolRuntime
    from minisft.runtime.monitor_runtime import Check


class ReloadRefused(Exception):
    """A reload cannot be applied; nothing running was changed."""


def needs_restart(old: Config, new: Config) -> str | None:
    """Why the new config cannot be reloaded into the running daemon (a key only a
    restart can change), or None."""
    fixed = [("node.name", new.node.name, old.node.name),
             ("node.local_ip", new.node.local_ip, old.node.local_ip),
             ("state_dir", new.state_dir, old.state_dir),
             ("control_socket", new.control_socket, old.control_socket)]
    for key, a, b in fixed:
        if a != b:
            return f"{key} changed ({b} -> {a}); that needs a restart"
    return None


class Change(StrEnum):
    REMOVED = "removed"  # gone from the file: stopped, its address released
    # address or hooks.mode changed (where the address lives: bound here or moved by an
    # API): released the old way, then started anew
    REPLACED = "replaced"
    ADDED = "added"
    UPDATED = "updated"  # same name and address, other settings: reconfigured in place


@dataclass(frozen=True)
class MonitorChange:
    change: Change
    config: MonitorConfig  # the old one for REMOVED/REPLACED, else the new one


@dataclass(frozen=True)
class ReloadDiff:
    """The changes from `old` to `new`, in the order the daemon applies them: monitors
    leaving (old order), then monitors entering or updated (new order), then pools."""

    monitors: tuple[MonitorChange, ...]
    pools_started: tuple[PoolConfig, ...]  # new pools, and changed ones (restarted)
    pools_restarted: frozenset[str]  # of those, the ones that ran before
    pools_removed: tuple[str, ...]
    journal_changed: bool
    sinks_changed: bool  # alerting or logging: the sinks are rebuilt

    @classmethod
    def between(cls, old: Config, new: Config) -> ReloadDiff:
        old_monitors = {m.name: m for m in old.monitors}
        new_monitors = {m.name: m for m in new.monitors}
        changes: list[MonitorChange] = []
        for name, mcfg in old_monitors.items():
            now = new_monitors.get(name)
            if now is None:
                changes.append(MonitorChange(Change.REMOVED, mcfg))
            elif now.address != mcfg.address or now.hooks.mode != mcfg.hooks.mode:
                changes.append(MonitorChange(Change.REPLACED, mcfg))
        leaving = {c.config.name for c in changes}
        for name, mcfg in new_monitors.items():
            if name not in old_monitors or name in leaving:
                changes.append(MonitorChange(Change.ADDED, mcfg))
            elif old_monitors[name] != mcfg:
                changes.append(MonitorChange(Change.UPDATED, mcfg))
        old_pools = {p.name: p for p in old.pools}
        started = tuple(p for p in new.pools if old_pools.get(p.name) != p)
        new_pool_names = {p.name for p in new.pools}
        return cls(
            monitors=tuple(changes), pools_started=started,
            pools_restarted=frozenset(p.name for p in started if p.name in old_pools),
            pools_removed=tuple(n for n in old_pools if n not in new_pool_names),
            journal_changed=old.journal != new.journal,
            sinks_changed=old.alerting != new.alerting or old.logging != new.logging)

    @property
    def monitors_needing_checks(self) -> tuple[MonitorConfig, ...]:
        """Monitors that get a new IsAlive check built before the commit."""
        return tuple(c.config for c in self.monitors
                     if c.change in (Change.ADDED, Change.UPDATED))

    @property
    def pools_needing_sockets(self) -> tuple[PoolConfig, ...]:
        """Embedded pools whose socket is opened before the commit (a port in use refuses
        the reload while the old pool still runs); etcd pools have none."""
        return tuple(p for p in self.pools_started if not p.coordination.etcd)


@dataclass
class ReloadPlan:
    """What a reload prepared before touching anything running (see Reloader.prepare)."""

    config: Config
    diff: ReloadDiff
    checks: dict[str, Check | None] = field(default_factory=dict)  # added/updated monitors
    pools: dict[str, PoolRuntime] = field(default_factory=dict)  # embedded, socket open
    sinks: list[Any] | None = None  # None: alerting unchanged

    def discard(self) -> None:
        for rt in self.pools.values():
            rt.transport.close()
        self.pools.clear()
