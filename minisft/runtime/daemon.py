"""The daemon: wires config, network, probes, the pure core and the event bus together.

Start-up either completes or changes nothing on the host: the interface, the state
directory, the lock and the control socket are all checked before the first address is
touched. A reload with a bad file keeps the running config. A slow or dead monitoring sink
never delays the failover path: events are journaled and handed to per-sink queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from minisft import __version__
from minisft.config.model import Config, IPAddress, JournalConfig, MonitorConfig, PoolConfig
from minisft.core.events import Event, EventKind, Notice, Severity
from minisft.core.io import Command, ConflictSeen, LinkChanged, Verb
from minisft.core.monitor import AlreadyDone, CommandRefused
from minisft.pools.backend import PoolBackend
from minisft.pools.runtime import PoolRuntime
from minisft.probes.looksalive import Pinger
from minisft.runtime import systemd
from minisft.runtime.control import ControlError, ControlServer
from minisft.runtime.driver import in_netlink_thread
from minisft.runtime.host_loops import HostLoops
from minisft.runtime.journald import EVENT_ATTR
from minisft.runtime.monitor_runtime import Check, MonitorRuntime
from minisft.runtime.ports import HostPorts
from minisft.runtime.reloader import Reloader
from minisft.runtime.status_file import StatusFile
from minisft.sinks.factory import build_sinks
from minisft.status import (
    STATUS_NAME,
    MonitorStatus,
    PoolStatus,
    StatusDocument,
)

log = logging.getLogger("minisft")
event_log = logging.getLogger("minisft.events")

STATUS_EVERY = 1.0


class StartupError(Exception):
    """The daemon cannot start; nothing on the host was changed."""


def _severity_to_logging(sev: Severity) -> int:
    if sev <= Severity.ERROR:
        return logging.ERROR
    if sev == Severity.WARNING:
        return logging.WARNING
    return logging.INFO


class Daemon:
    def __init__(self, config: Config, *, config_path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, logs_to_journal: bool = False,
                 ports: HostPorts | None = None) -> None:
        self.config = config
        # the log goes natively into journald (minisft.runtime.journald): events are there
        # already, so a syslog sink on journald's own socket would only duplicate them
        self.logs_to_journal = logs_to_journal
        self.config_path = config_path or config.source
        self.clock = clock
        self.wall = wall
        self.started_at = wall()
        self.runtimes: dict[str, MonitorRuntime] = {}
        self.pools: dict[str, PoolBackend] = {}
        self._stop = asyncio.Event()
        self._stop_reason = "stopped"
        self._netlink_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._status_dirty = True
        self._lock_fd: int | None = None
        # state_dir only changes with a restart (reload.needs_restart refuses it)
        self._status_file = StatusFile(config.state_dir / STATUS_NAME, self.emit)
        self._journal_failing = False  # reported the journal's failure episode
        self._journal_recreated = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._link_up: bool | None = None
        self._reloader = Reloader(self)
        self.journal: Any = None
        self.delivery: Any = None
        # the host: given (the unit tests' fakes, which their caller opens and closes) or
        # the real ones, built by _start and closed by _teardown
        self._owns_ports = ports is None
        self.netlink: Any = ports.netlink if ports else None
        self.iface: Any = None
        self.neighbours: Any = ports.neighbours if ports else None
        self.pinger: Any = ports.pinger if ports else Pinger()
        self.control: ControlServer | None = None
        self._metrics_server: asyncio.AbstractServer | None = None

    # ================================================================= start-up

    async def run(self) -> int:
        # The control socket is up, so the daemon looks alive to an admin and to systemd's
        # ExecReload (kill -HUP), well before start-up is done; SIGHUP's default action
        # would end the process then. Catch it from the first moment and reload once up.
        # One handler, never replaced: asyncio runs a signal's handler later, as a queued
        # callback, so a start-up handler swapped for another after `_start` could still
        # run after the check below, and that reload was lost (1 run in 5 under load).
        reload_asked = asyncio.Event()
        up = False
        reloads: set[asyncio.Task[None]] = set()  # referenced until done (not collected)

        def on_sighup() -> None:
            if up:
                task = asyncio.ensure_future(self._reload_on_signal())
                reloads.add(task)
                task.add_done_callback(reloads.discard)
            else:
                reload_asked.set()

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
        try:
            await self._start()
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            await self._teardown()
            return 2
        loop = asyncio.get_running_loop()
        for sig, why in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            loop.add_signal_handler(sig, self.request_stop, why)
        systemd.notify_ready("watching " + ", ".join(self.runtimes) if self.runtimes
                             else "no monitors")
        up = True  # from here on_sighup reloads at once; before, it set reload_asked
        if reload_asked.is_set():  # a SIGHUP that came during start-up
            await self._reload_on_signal()
        await self._stop.wait()
        await self._shutdown()
        return 0

    def request_stop(self, why: str = "stop requested") -> None:
        self._stop_reason = why
        self._stop.set()

    async def _start(self) -> None:
        from minisft.net.link import LinkError, Netlink
        from minisft.net.neighbour import NeighbourWatch
        from minisft.runtime.journal import EventJournal

        cfg = self.config
        try:
            cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
            self._take_lock(cfg.state_dir / "minisft.pid")
        except OSError as exc:
            raise StartupError(f"state_dir {cfg.state_dir}: {exc.strerror or exc}") from None
        if self.netlink is None:
            self.netlink = Netlink()
        try:
            self.iface = await self._in_netlink(self.netlink.interface_for, cfg.node.local_ip)
        except LinkError as exc:
            raise StartupError(str(exc)) from None
        self.journal = EventJournal(cfg.state_dir / "journal", retention=cfg.journal.max_age,
                                    max_bytes=cfg.journal.max_bytes)
        try:
            self.journal.open(floor=_last_seq_in_status(cfg.state_dir / STATUS_NAME))
        except OSError as exc:  # unwritable state_dir: run anyway, say so loudly
            log.error("event journal unavailable (%s): events still reach the sinks but are "
                      "not kept across restarts", exc)
        # known before the sinks start: traps are held while it is down
        self._link_up = await self._in_netlink(self.netlink.link_up, self.iface)
        self.delivery = self._build_delivery(cfg)
        await self.delivery.start()
        self.control = ControlServer(cfg.control_socket, self.handle_request,
                                     max_connections=cfg.control_max_connections)
        try:
            await self.control.start()
        except (ControlError, OSError) as exc:
            raise StartupError(f"control_socket {cfg.control_socket}: {exc}") from None
        if self.neighbours is None:
            self.neighbours = NeighbourWatch(self.iface)
            try:
                await self.neighbours.start()
            except OSError as exc:
                raise StartupError(f"cannot open raw sockets on {self.iface.name} "
                                   f"(CAP_NET_RAW needed): {exc}") from None
        self.emit(Notice(EventKind.DAEMON_STARTED,
                         f"minisft {__version__} started on {self.iface.name} "
                         f"({cfg.node.local_ip}) with {len(cfg.monitors)} monitor(s)",
                         details={"pid": os.getpid(), "interface": self.iface.name}))
        await self.start_monitoring()
        if cfg.alerting.prometheus_listen:
            from minisft.monitoring.prometheus import serve_metrics

            try:
                self._metrics_server = await serve_metrics(
                    cfg.alerting.prometheus_listen, self.status,
                    max_connections=cfg.alerting.prometheus_max_connections)
            except OSError as exc:
                log.error("prometheus listener %s: %s", cfg.alerting.prometheus_listen, exc)
        self._tasks += [
            asyncio.create_task(self._link_loop(), name="link"),
            asyncio.create_task(self._status_loop(), name="status"),
        ]

    async def start_monitoring(self) -> None:
        """Start the monitors, the pools and their tick on the host ports. `_start` does it
        last, after the lock, the journal, the sinks and the control socket; the unit tests
        do only this, on fake ports (`stop_monitoring` ends it)."""
        if self.iface is None:  # `_start` looked it up before its checks; a test did not
            self.iface = await self._in_netlink(self.netlink.interface_for,
                                                self.config.node.local_ip)
            self._link_up = await self._in_netlink(self.netlink.link_up, self.iface)
        for mcfg in self.config.monitors:
            await self.add_monitor(mcfg)
        for pool in self.config.pools:
            await self.add_pool(pool)
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="tick"))

    async def stop_monitoring(self) -> None:
        """Stop what `start_monitoring` started, leaving every address as it is."""
        await self._halt()
        for pool_rt in self.pools.values():
            await pool_rt.stop(release=False)

    async def _halt(self) -> None:
        for task in self._tasks:
            task.cancel()
        for rt in self.runtimes.values():
            await rt.stop()  # lets a bind under way finish: `holds` is then the truth

    def _take_lock(self, path: Path) -> None:
        # The lock is an flock on the state_dir itself, a file nobody removes by accident:
        # a lock on minisft.pid was lost when the pid file was deleted, and a second daemon
        # then ran on the same state_dir. The pid file only says who holds the lock.
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                other = path.read_text(errors="replace").strip()[:32]
            except OSError:
                other = ""
            raise StartupError(f"another minisft daemon (pid {other or '?'}) uses state_dir "
                               f"{path.parent}") from None
        try:
            tmp = path.with_suffix(".pid.tmp")
            tmp.write_text(f"{os.getpid()}\n")
            tmp.chmod(0o644)
            tmp.replace(path)
        except OSError:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _build_delivery(self, cfg: Config, sinks: list[Any] | None = None) -> Any:
        from minisft.runtime.delivery import DeliveryManager

        delivery = DeliveryManager(self.journal,
                                   self.build_sinks(cfg) if sinks is None else sinks,
                                   queue_size=cfg.alerting.queue_size,
                                   max_backlog=cfg.alerting.max_backlog)
        delivery.set_link(self._link_up, self.iface.name)
        return delivery

    def build_sinks(self, cfg: Config) -> list[Any]:
        return build_sinks(cfg, self.status, logs_to_journal=self.logs_to_journal)

    async def rebuild_delivery(self, cfg: Config, sinks: list[Any]) -> None:
        await self.delivery.stop()
        self.delivery = self._build_delivery(cfg, sinks)
        await self.delivery.start()

    def set_journal_limits(self, journal: JournalConfig) -> bool:
        if self.journal is None:
            return False
        self.journal.retention = journal.max_age
        self.journal.max_bytes = journal.max_bytes  # applied at the next rotation
        return True

    async def add_monitor(self, mcfg: MonitorConfig, check: Check | None = None
                          ) -> MonitorRuntime:
        rt = self._make_runtime(mcfg, check if check is not None else self.build_check(mcfg))
        self.runtimes[mcfg.name] = rt
        bound = await self._in_netlink(self.netlink.has_address, self.iface, mcfg.ip)
        self.neighbours.watch(mcfg.ip, lambda mac, rt=rt: rt.feed(ConflictSeen(mac)))
        self.neighbours.watch_askers(mcfg.ip, rt.peer_asked)
        self.watch_peer(rt, None, mcfg.peer_ip)
        rt.start(bound)
        if self._link_up is False:
            rt.feed(LinkChanged(False))
        return rt

    async def remove_monitor(self, name: str) -> MonitorRuntime:
        rt = self.runtimes.pop(name)
        await rt.stop()  # lets a bind under way finish: `holds` is then the truth
        self.neighbours.unwatch(rt.config.ip)
        self.watch_peer(rt, rt.config.peer_ip, None)
        return rt

    def watch_peer(self, rt: MonitorRuntime, old: IPAddress | None,
                   new: IPAddress | None) -> None:
        if old is not None:
            self.neighbours.unwatch_users(old, rt.peer_link_address)
        if new is not None:
            self.neighbours.watch_users(new, rt.peer_link_address)

    async def add_pool(self, pool: PoolConfig, resume: object | None = None) -> None:
        rt: PoolBackend
        if pool.coordination.etcd:
            rt = self._make_etcd_pool(pool, resume)
        else:
            rt = embedded = self.make_embedded_pool(pool)
            try:
                embedded.transport.open()
            except OSError as exc:
                raise StartupError(self.cannot_listen(pool, exc)) from None
        await self.start_pool(pool, rt)

    def make_embedded_pool(self, pool: PoolConfig) -> PoolRuntime:
        return PoolRuntime(pool, node=self.config.node.name, clock=self.clock,
                           neighbours=self.neighbours, addresses=self.netlink,
                           iface=self.iface, netlink_executor=self._netlink_pool,
                           emit=self.emit, wall=self.wall, pinger=self.pinger)

    def _make_etcd_pool(self, pool: PoolConfig, resume: object | None) -> PoolBackend:
        # Imported here: aetcd and grpc load only on nodes with an etcd pool.
        from minisft.pools.etcd_backend import EtcdPoolRuntime, LeaseHandover

        # No listening socket: etcd being down at start is not fatal, the
        # runtime keeps retrying and holds nothing until it has a lease.
        return EtcdPoolRuntime(pool, node=self.config.node.name, clock=self.clock,
                               neighbours=self.neighbours, addresses=self.netlink,
                               iface=self.iface, netlink_executor=self._netlink_pool,
                               emit=self.emit, wall=self.wall, pinger=None,
                               resume=resume if isinstance(resume, LeaseHandover) else None)

    async def start_pool(self, pool: PoolConfig, rt: PoolBackend) -> None:
        """Start a pool runtime (an embedded one has its socket open already), adopting
        the pool's addresses that are on the interface."""
        held = [a for a in pool.addresses
                if await self._in_netlink(self.netlink.has_address, self.iface, a.ip)]
        await rt.start(held)
        self.pools[pool.name] = rt

    def cannot_listen(self, pool: PoolConfig, exc: OSError) -> str:
        return (f"pool {pool.name}: cannot listen on {self.config.node.local_ip}:{pool.port}: "
                f"{exc.strerror or exc}")

    @staticmethod
    def build_check(mcfg: MonitorConfig) -> Check | None:
        if not mcfg.isalive.enabled:
            return None
        from minisft.probes.isalive import build_check

        c = mcfg.isalive.check
        return build_check(c.type, c.params, c.timeout)

    def _make_runtime(self, mcfg: MonitorConfig, check: Check | None) -> MonitorRuntime:
        return MonitorRuntime(
            mcfg, clock=self.clock, pinger=self.pinger, neighbours=self.neighbours,
            addresses=self.netlink, iface=self.iface, netlink_executor=self._netlink_pool,
            emit=self.emit, check=check)

    async def _in_netlink(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await in_netlink_thread(self._netlink_pool, fn, *args)

    # ================================================================= events

    def emit(self, notice: Notice) -> Event:
        """Journal, log and hand an event to the sinks. Never blocks, never raises."""
        now = self.wall()
        node = self.config.node.name
        if self.journal is not None:
            event: Event = self.journal.append(notice, node=node, time=now)
        else:
            event = Event.stamp(notice, seq=0, time=now, node=node)
        event_log.log(_severity_to_logging(event.severity), "%s", event.summary(),
                      extra={EVENT_ATTR: event})
        if self.delivery is not None:
            self.delivery.publish(event)
        self._status_dirty = True
        if self.journal is not None:
            self._check_journal()  # after publishing: sinks get events in seq order
        return event

    def _check_journal(self) -> None:
        """A journal that stops being written, or is deleted under us, is said through the
        sinks (which still work), not only in the log."""
        journal = self.journal
        if not journal.healthy and not self._journal_failing:
            self._journal_failing = True
            self.emit(Notice(EventKind.STATE_DIR_FAILING,
                             f"the event journal in {journal.directory} cannot be written: "
                             "events still reach the sinks but are not kept"))
        elif journal.healthy:
            self._journal_failing = False
        recreated = journal.stats["journal_recreated"]
        if recreated != self._journal_recreated:
            self._journal_recreated = recreated
            self.emit(Notice(EventKind.STATE_DIR_FAILING,
                             f"the event journal in {journal.directory} was deleted under the "
                             "running daemon: the history before this event is gone"))

    # ================================================================= loops

    @functools.cached_property
    def _host_loops(self) -> HostLoops:
        """The tick and link loops, built once the interface is known (both use it)."""
        return HostLoops(lambda: self.runtimes.values(), clock=self.clock,
                         link_up=lambda: self._in_netlink(self.netlink.link_up, self.iface),
                         iface_name=self.iface.name)

    async def _tick_loop(self) -> None:
        watchdog = systemd.watchdog_interval()
        next_watchdog = 0.0

        def on_tick() -> None:
            nonlocal next_watchdog
            if watchdog and self.clock() >= next_watchdog:
                systemd.notify_watchdog()
                next_watchdog = self.clock() + watchdog

        await self._host_loops.tick_loop(on_tick)

    async def _link_loop(self) -> None:
        def on_change(up: bool) -> None:
            self._link_up = up
            if self.delivery is not None:  # first: the link_down events are held too
                self.delivery.set_link(up, self.iface.name)

        await self._host_loops.link_loop(self._link_up, on_change)

    async def _status_loop(self) -> None:
        last = 0.0
        while True:
            await asyncio.sleep(0.1)
            if self._status_dirty or self.clock() - last >= STATUS_EVERY:
                self._status_dirty = False
                last = self.clock()
                self.write_status()

    # ================================================================= status

    def status(self) -> StatusDocument:
        """The live status document: what status.json, the control socket's `status`,
        the Prometheus endpoint and the check-result sinks all show."""
        now_wall = self.wall()
        monitors = []
        for rt in self.runtimes.values():
            snap = rt.snapshot()
            since = snap["seconds_since_change"]
            monitors.append(MonitorStatus.from_dict(
                {**snap, "seconds_since_change": since, "last_change_time": now_wall - since}))
        return StatusDocument(
            node=self.config.node.name,
            pid=os.getpid(),
            software_version=__version__,
            started_at=self.started_at,
            updated_at=now_wall,
            interface=self.iface.name if self.iface else None,
            local_ip=str(self.config.node.local_ip),
            link_up=self._link_up,
            config=str(self.config_path) if self.config_path else None,
            last_event_seq=self.journal.last_seq if self.journal else 0,
            monitors=tuple(monitors),
            sinks=tuple(self.delivery.status() if self.delivery else ()),
            pools=tuple(PoolStatus.from_dict(rt.snapshot()) for rt in self.pools.values()),
        )

    def write_status(self, stopped_at: float | None = None) -> None:
        """status.json for check_minisft, the SNMP helper and admins; `stopped_at` marks
        the last one, written by a cleanly stopping daemon."""
        doc = self.status()
        self._status_file.write(doc if stopped_at is None
                                else replace(doc, stopped_at=stopped_at))

    # ================================================================= control

    async def handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        """One request of the control socket (minisft.runtime.control), answered as data:
        `ok`, and the `error` an admin reads or what changed."""
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status().to_dict()}
        if cmd in ("release", "claim", "pause", "resume", "switchover"):
            return await self._admin(Verb(cmd), str(req.get("monitor", "")),
                                     str(req.get("by") or "cli"))
        if cmd == "rebalance":
            name = str(req.get("pool", ""))
            pool = self.pools.get(name)
            if pool is None:
                known = ", ".join(sorted(self.pools)) or "none"
                return {"ok": False, "error": f"no pool named {name!r} (known: {known})"}
            answer = pool.rebalance(by=str(req.get("by") or "cli"))
            if not answer.ok:
                return {"ok": False, "error": f"{name}: {answer.message}"}
            return {"ok": True, "message": answer.message, "taking": list(answer.taking),
                    "handing_over": list(answer.handing_over), "pool": pool.snapshot()}
        if cmd == "reload":
            ok, message = await self.reload()
            return {"ok": ok, "message": message} if ok else {"ok": False, "error": message}
        if cmd == "test-alert":
            return {"ok": True, "results": await self.test_alert()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def _admin(self, verb: Verb, name: str, by: str) -> dict[str, Any]:
        rt = self.runtimes.get(name)
        if rt is None:
            known = ", ".join(sorted(self.runtimes)) or "none"
            return {"ok": False, "error": f"no monitor named {name!r} (known: {known})"}
        facts = None
        if verb is Verb.SWITCHOVER and not rt.holds:
            facts = await rt.switchover_facts(self.config.node.local_ip)
        try:
            refused = await rt.command(Command(verb, by=by, facts=facts))
        except AlreadyDone as exc:  # the wanted end state holds: success, nothing changed
            return {"ok": True, "already": str(exc), "monitor": rt.snapshot()}
        except CommandRefused as exc:
            return {"ok": False, "error": str(exc)}
        if refused is not None:
            return {"ok": False, "error": f"{name}: {refused}", "monitor": rt.snapshot()}
        return {"ok": True, "monitor": rt.snapshot()}

    async def test_alert(self) -> dict[str, str | None]:
        event = Event.stamp(Notice(EventKind.TEST_ALERT, "test alert from `minisft test-alert`:"
                                   " if you read this, this sink works"),
                            seq=0, time=self.wall(), node=self.config.node.name)
        results: dict[str, str | None] = await self.delivery.test_all(event)
        return results

    # ================================================================= reload

    async def reload(self) -> tuple[bool, str]:
        """Reload the config file (minisft.runtime.reloader): (True, what changed) or
        (False, why the running config stays)."""
        return await self._reloader.reload()

    async def _reload_on_signal(self) -> None:
        try:
            await self.reload()
        except Exception:  # nobody awaits a signal's task: say it here, loudly
            log.exception("reload on SIGHUP failed")

    # ================================================================= shutdown

    async def _shutdown(self) -> None:
        cfg = self.config
        systemd.notify_stopping()
        await self._halt()
        holding = [rt for rt in self.runtimes.values() if rt.holds]
        plan = (f"releasing {len(holding)} address(es)" if cfg.node.release_on_stop and holding
                else "leaving addresses in place" if holding else "holding no address")
        self.emit(Notice(EventKind.DAEMON_STOPPING, f"{self._stop_reason}: {plan}"))
        for pool_rt in self.pools.values():
            try:
                await pool_rt.stop(release=cfg.node.release_on_stop)
            except Exception as exc:
                log.error("pool stop failed: %s", exc)
        if cfg.node.release_on_stop:
            for rt in holding:
                try:
                    await rt.release_now()
                except Exception as exc:
                    log.error("%s: release at stop failed: %s", rt.config.name, exc)
                    continue
                self.emit(Notice(EventKind.RELEASED, "daemon stopping (node.release_on_stop):"
                                 " released the address", monitor=rt.config.name,
                                 address=str(rt.config.ip), state="stopped"))
        self.write_status(stopped_at=self.wall())
        await self._teardown()

    async def _teardown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self.control is not None:
            await self.control.close()
        if self.neighbours is not None and self._owns_ports:
            with contextlib.suppress(Exception):
                await self.neighbours.close()
        if self._owns_ports:
            await self.pinger.close()
        if self.delivery is not None:
            await self.delivery.stop()
        if self.journal is not None:
            with contextlib.suppress(Exception):
                self.journal.sync()
        if self.netlink is not None and self._owns_ports:
            with contextlib.suppress(Exception):
                await self._in_netlink(self.netlink.close)
        self._netlink_pool.shutdown(wait=False)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _last_seq_in_status(path: Path) -> int:
    """The last event seq the previous daemon published: seqs never go back, even when
    the journal directory was deleted. Read leniently, without status.load's format
    check: any seq a file of any version holds is a floor worth keeping."""
    try:
        seq = json.loads(path.read_bytes()).get("last_event_seq")
    except (OSError, ValueError, RecursionError, AttributeError):
        return 0
    return seq if isinstance(seq, int) and seq > 0 else 0
