"""A reload carried out on the running daemon.

`minisft.runtime.reload` decides, from the two configs alone, what a reload changes; the
`Reloader` here applies it, in its three steps: refuse what needs a restart, prepare
everything that can fail while the old config still runs (a failure refuses the reload
and changes nothing), then commit. It sees the daemon only through `RunningDaemon`, the
few things a reload does to it, so the unit tests drive it on the fake host ports.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from minisft.config.model import Config, IPAddress, JournalConfig, MonitorConfig, PoolConfig
from minisft.core.events import EventKind, Notice
from minisft.pools.backend import PoolBackend
from minisft.pools.runtime import PoolRuntime
from minisft.runtime.monitor_runtime import Check, MonitorRuntime
from minisft.runtime.reload import Change, ReloadDiff, ReloadPlan, ReloadRefused, needs_restart

REFUSED = "reload refused, the running config stays: "


class RunningDaemon(Protocol):
    """What a reload needs from the running daemon (`minisft.runtime.daemon.Daemon`)."""

    config: Config  # replaced by the commit
    config_path: Path | None
    runtimes: dict[str, MonitorRuntime]  # by monitor name
    pools: dict[str, PoolBackend]  # by pool name

    def emit(self, notice: Notice) -> object: ...

    def build_check(self, mcfg: MonitorConfig) -> Check | None: ...

    def make_embedded_pool(self, pool: PoolConfig) -> PoolRuntime: ...

    def cannot_listen(self, pool: PoolConfig, exc: OSError) -> str: ...

    def build_sinks(self, config: Config) -> list[Any]: ...

    async def add_monitor(self, mcfg: MonitorConfig, check: Check | None) -> MonitorRuntime:
        ...

    async def remove_monitor(self, name: str) -> MonitorRuntime:
        """Take the monitor out of `runtimes` and stop it (its address stays as it is)."""
        ...

    def watch_peer(self, rt: MonitorRuntime, old: IPAddress | None,
                   new: IPAddress | None) -> None:
        """Learn the MAC of peer `new` for rt, no longer that of `old`."""
        ...

    async def add_pool(self, pool: PoolConfig, resume: object | None) -> None: ...

    async def start_pool(self, pool: PoolConfig, rt: PoolBackend) -> None: ...

    def set_journal_limits(self, journal: JournalConfig) -> bool:
        """False: the daemon runs without a journal."""
        ...

    async def rebuild_delivery(self, config: Config, sinks: list[Any]) -> None: ...


class Reloader:
    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon
        self._reloading = asyncio.Lock()  # one reload at a time: SIGHUP and the socket

    async def reload(self) -> tuple[bool, str]:
        """Reload the config file: (True, what changed) or (False, why nothing did)."""
        from minisft.config.loader import ConfigError, load_config

        d = self.daemon
        async with self._reloading:
            if d.config_path is None:
                return False, "no config file to reload"
            try:
                new = await asyncio.to_thread(load_config, d.config_path)
            except ConfigError as exc:
                return self._refuse(str(exc))
            restart = needs_restart(d.config, new)
            if restart is not None:
                return self._refuse(restart)
            try:
                plan = await self.prepare(new)
            except ReloadRefused as exc:
                return self._refuse(str(exc))
            changes = await self.commit(plan)
            msg = "config reloaded: " + ("; ".join(changes) if changes else "no changes")
            d.emit(Notice(EventKind.CONFIG_RELOADED, msg))
            return True, msg

    def _refuse(self, why: str) -> tuple[bool, str]:
        msg = REFUSED + why
        self.daemon.emit(Notice(EventKind.CONFIG_REJECTED, msg))
        return False, msg

    async def prepare(self, new: Config) -> ReloadPlan:
        """Everything of a reload that can fail, done before anything running changes: the
        new IsAlive checks, the new pools' sockets (bound now, so a port in use refuses
        the reload while the old pool still runs) and the new sinks."""
        d = self.daemon
        plan = ReloadPlan(new, ReloadDiff.between(d.config, new))
        try:
            for mcfg in plan.diff.monitors_needing_checks:
                try:
                    plan.checks[mcfg.name] = d.build_check(mcfg)
                except Exception as exc:
                    raise ReloadRefused(f"monitor {mcfg.name}: cannot build its IsAlive "
                                        f"check: {exc}") from None
            for pool in plan.diff.pools_needing_sockets:
                rt = d.make_embedded_pool(pool)
                plan.pools[pool.name] = rt
                try:
                    rt.transport.open()
                except OSError as exc:
                    raise ReloadRefused(d.cannot_listen(pool, exc)) from None
            if plan.diff.sinks_changed:
                try:
                    plan.sinks = d.build_sinks(new)
                except Exception as exc:
                    raise ReloadRefused(f"alerting: {exc}") from None
        except BaseException:
            plan.discard()
            raise
        return plan

    async def commit(self, plan: ReloadPlan) -> list[str]:
        """Swap to the prepared config; what changed, for the admin. A monitor whose
        settings changed keeps its runtime and machine, with its work in flight (see
        MonitorRuntime.reconfigure)."""
        d = self.daemon
        new, diff = plan.config, plan.diff
        changes: list[str] = []
        leaving = (Change.REMOVED, Change.REPLACED)
        for change in diff.monitors:
            mcfg, name = change.config, change.config.name
            if change.change in leaving:
                rt = await d.remove_monitor(name)  # a bind under way finished: `holds` is true
                if rt.holds:
                    await rt.release_now()
                    d.emit(Notice(EventKind.RELEASED, "monitor removed from the config: "
                                  "released its address", monitor=name, address=str(mcfg.ip)))
                changes.append(f"{change.change.value} {name}")
        d.config = replace(new, source=new.source)
        for change in diff.monitors:
            mcfg, name = change.config, change.config.name
            if change.change is Change.ADDED:
                await d.add_monitor(mcfg, plan.checks[name])
            elif change.change is Change.UPDATED:
                rt = d.runtimes[name]
                old_peer = rt.config.peer_ip
                await rt.reconfigure(mcfg, plan.checks[name])
                if old_peer != mcfg.peer_ip:  # learn the new peer's MAC, not the old one's
                    d.watch_peer(rt, old_peer, mcfg.peer_ip)
            else:
                continue
            changes.append(f"{change.change.value} {name}")
        for pool in diff.pools_started:
            resume = None
            if pool.name in d.pools:  # no hot swap: restart it, keeping its addresses
                old_rt = d.pools.pop(pool.name)
                await old_rt.stop(release=False)
                resume = old_rt.handover()  # etcd: its lease
            if pool.name in plan.pools:
                await d.start_pool(pool, plan.pools.pop(pool.name))
            else:
                await d.add_pool(pool, resume)
            changes.append(f"pool {pool.name} " + ("restarted" if pool.name in
                                                   diff.pools_restarted else "added"))
        for name in diff.pools_removed:
            await d.pools.pop(name).stop(release=True)
            changes.append(f"pool {name} removed (its addresses released)")
        if diff.journal_changed and d.set_journal_limits(new.journal):
            changes.append("journal limits updated")
        if plan.sinks is not None:
            await d.rebuild_delivery(new, plan.sinks)
            changes.append("alerting sinks rebuilt")
        return changes
