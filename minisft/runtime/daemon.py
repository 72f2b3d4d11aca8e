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
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from minisft import __version__
from minisft.config.model import Config, MonitorConfig, PoolConfig
from minisft.core.events import Event, EventKind, Notice, Severity
from minisft.core.io import AddressVanished, Command, ConflictSeen, LinkChanged, Tick, Verb
from minisft.core.monitor import AlreadyDone, CommandRefused, Purpose, State
from minisft.probes.looksalive import Pinger
from minisft.runtime.control import ControlError, ControlServer
from minisft.runtime.monitor_runtime import MonitorRuntime

log = logging.getLogger("minisft")
event_log = logging.getLogger("minisft.events")

TICK = 0.25
LINK_POLL = 0.2
ADDRESS_POLL = 1.0
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
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.config_path = config_path or config.source
        self.clock = clock
        self.wall = wall
        self.started_at = wall()
        self.runtimes: dict[str, MonitorRuntime] = {}
        self.pools: dict[str, Any] = {}  # name -> PoolRuntime (same interface per backend)
        self._stop = asyncio.Event()
        self._stop_reason = "stopped"
        self._netlink_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._status_dirty = True
        self._lock_fd: int | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._link_up: bool | None = None
        self._reloading = asyncio.Lock()
        self.journal: Any = None
        self.delivery: Any = None
        self.netlink: Any = None
        self.iface: Any = None
        self.neighbours: Any = None
        self.pinger = Pinger()
        self.control: ControlServer | None = None
        self._metrics_server: asyncio.AbstractServer | None = None

    # ================================================================= start-up

    async def run(self) -> int:
        try:
            await self._start()
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            await self._teardown()
            return 2
        loop = asyncio.get_running_loop()
        for sig, why in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            loop.add_signal_handler(sig, self.request_stop, why)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        _sd_notify("READY=1\nSTATUS=watching " + ", ".join(self.runtimes) or "no monitors")
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
        self.netlink = Netlink()
        try:
            self.iface = await self._in_netlink(self.netlink.interface_for, cfg.node.local_ip)
        except LinkError as exc:
            raise StartupError(str(exc)) from None
        self.journal = EventJournal(cfg.state_dir / "journal")
        try:
            self.journal.open()
        except OSError as exc:  # unwritable state_dir: run anyway, say so loudly
            log.error("event journal unavailable (%s): events still reach the sinks but are "
                      "not kept across restarts", exc)
        self.delivery = self._build_delivery(cfg)
        await self.delivery.start()
        self.control = ControlServer(cfg.control_socket, self._handle_request)
        try:
            await self.control.start()
        except (ControlError, OSError) as exc:
            raise StartupError(f"control_socket {cfg.control_socket}: {exc}") from None
        self.neighbours = NeighbourWatch(self.iface)
        try:
            await self.neighbours.start()
        except OSError as exc:
            raise StartupError(f"cannot open raw sockets on {self.iface.name} "
                               f"(CAP_NET_RAW needed): {exc}") from None
        self._link_up = await self._in_netlink(self.netlink.link_up, self.iface)
        self.emit(Notice(EventKind.DAEMON_STARTED,
                         f"minisft {__version__} started on {self.iface.name} "
                         f"({cfg.node.local_ip}) with {len(cfg.monitors)} monitor(s)",
                         details={"pid": os.getpid(), "interface": self.iface.name}))
        for mcfg in cfg.monitors:
            await self._add_monitor(mcfg)
        for pool in cfg.pools:
            await self._add_pool(pool)
        if cfg.alerting.prometheus_listen:
            from minisft.monitoring.prometheus import serve_metrics

            try:
                self._metrics_server = await serve_metrics(cfg.alerting.prometheus_listen,
                                                           self.status)
            except OSError as exc:
                log.error("prometheus listener %s: %s", cfg.alerting.prometheus_listen, exc)
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="tick"),
            asyncio.create_task(self._link_loop(), name="link"),
            asyncio.create_task(self._status_loop(), name="status"),
        ]

    def _take_lock(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise StartupError(f"another minisft daemon (pid {other or '?'}) uses state_dir "
                               f"{path.parent}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _build_delivery(self, cfg: Config) -> Any:
        from minisft.runtime.delivery import DeliveryManager

        return DeliveryManager(self.journal, build_sinks(cfg, self.status),
                               queue_size=cfg.alerting.queue_size,
                               max_backlog=cfg.alerting.max_backlog)

    async def _add_monitor(self, mcfg: MonitorConfig) -> MonitorRuntime:
        rt = self._make_runtime(mcfg)
        self.runtimes[mcfg.name] = rt
        bound = await self._in_netlink(self.netlink.has_address, self.iface, mcfg.ip)
        self.neighbours.watch(mcfg.ip, lambda mac, rt=rt: rt.feed(ConflictSeen(mac)))
        rt.start(bound)
        if self._link_up is False:
            rt.feed(LinkChanged(False))
        return rt

    async def _add_pool(self, pool: PoolConfig, resume: Any = None) -> None:
        held = [a for a in pool.addresses
                if await self._in_netlink(self.netlink.has_address, self.iface, a.ip)]
        common: dict[str, Any] = dict(
            node=self.config.node.name, clock=self.clock, neighbours=self.neighbours,
            addresses=self.netlink, iface=self.iface, netlink_executor=self._netlink_pool,
            emit=self.emit, wall=self.wall)
        rt: Any
        if pool.coordination.etcd:
            # Imported here: aetcd and grpc load only on nodes with an etcd pool.
            from minisft.pools.etcd_backend import EtcdPoolRuntime

            rt = EtcdPoolRuntime(pool, pinger=None, resume=resume, **common)
            # No listening socket: etcd being down at start is not fatal, the
            # runtime keeps retrying and holds nothing until it has a lease.
            await rt.start(held)
        else:
            from minisft.pools.runtime import PoolRuntime

            rt = PoolRuntime(pool, pinger=self.pinger, **common)
            try:
                await rt.start(held)
            except OSError as exc:
                raise StartupError(f"pool {pool.name}: cannot listen on "
                                   f"{self.config.node.local_ip}:{pool.port}: {exc}") from None
        self.pools[pool.name] = rt

    def _make_runtime(self, mcfg: MonitorConfig) -> MonitorRuntime:
        check = None
        if mcfg.isalive.enabled:
            from minisft.probes.isalive import build_check

            c = mcfg.isalive.check
            check = build_check(c.type, c.params, c.timeout)
        return MonitorRuntime(
            mcfg, clock=self.clock, pinger=self.pinger, neighbours=self.neighbours,
            addresses=self.netlink, iface=self.iface, netlink_executor=self._netlink_pool,
            emit=self.emit, check=check)

    async def _in_netlink(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._netlink_pool, fn, *args)

    # ================================================================= events

    def emit(self, notice: Notice) -> Event:
        """Journal, log and hand an event to the sinks. Never blocks, never raises."""
        now = self.wall()
        node = self.config.node.name
        if self.journal is not None:
            event: Event = self.journal.append(notice, node=node, time=now)
        else:
            event = Event.stamp(notice, seq=0, time=now, node=node)
        event_log.log(_severity_to_logging(event.severity), "%s", event.summary())
        if self.delivery is not None:
            self.delivery.publish(event)
        self._status_dirty = True
        return event

    # ================================================================= loops

    async def _tick_loop(self) -> None:
        watchdog = _watchdog_interval()
        next_watchdog = 0.0
        while True:
            await asyncio.sleep(TICK)
            for rt in list(self.runtimes.values()):
                rt.feed(Tick())
            if watchdog and self.clock() >= next_watchdog:
                _sd_notify("WATCHDOG=1")
                next_watchdog = self.clock() + watchdog

    async def _link_loop(self) -> None:
        next_address_check = 0.0
        while True:
            await asyncio.sleep(LINK_POLL)
            try:
                up = await self._in_netlink(self.netlink.link_up, self.iface)
            except Exception as exc:
                log.warning("link state of %s unknown: %s", self.iface.name, exc)
                continue
            if up != self._link_up:
                self._link_up = up
                for rt in list(self.runtimes.values()):
                    rt.feed(LinkChanged(up))
            if up and self.clock() >= next_address_check:
                next_address_check = self.clock() + ADDRESS_POLL
                for rt in list(self.runtimes.values()):
                    # mode instead: the address lives in a cloud API, not on this link
                    if rt.machine.state is State.HOLDING and rt.config.hooks.binds_locally:
                        present = await self._in_netlink(self.netlink.has_address, self.iface,
                                                         rt.config.ip)
                        if not present and rt.machine.state is State.HOLDING:
                            rt.feed(AddressVanished())

    async def _status_loop(self) -> None:
        last = 0.0
        while True:
            await asyncio.sleep(0.1)
            if self._status_dirty or self.clock() - last >= STATUS_EVERY:
                self._status_dirty = False
                last = self.clock()
                self.write_status()

    # ================================================================= status

    def status(self) -> dict[str, Any]:
        now_wall = self.wall()
        monitors = []
        for rt in self.runtimes.values():
            snap = rt.machine.snapshot()
            rt.machine.now = self.clock()
            snap["seconds_since_change"] = round(max(0.0, self.clock() -
                                                     rt.machine.last_change), 3)
            snap["last_change_time"] = now_wall - snap["seconds_since_change"]
            monitors.append(snap)
        return {
            "version": 1,
            "node": self.config.node.name,
            "pid": os.getpid(),
            "software_version": __version__,
            "started_at": self.started_at,
            "updated_at": now_wall,
            "interface": self.iface.name if self.iface else None,
            "local_ip": str(self.config.node.local_ip),
            "link_up": self._link_up,
            "config": str(self.config_path) if self.config_path else None,
            "last_event_seq": self.journal.last_seq if self.journal else 0,
            "monitors": monitors,
            "sinks": self.delivery.status() if self.delivery else [],
            "pools": [rt.snapshot() for rt in self.pools.values()],
        }

    def write_status(self, extra: dict[str, Any] | None = None) -> None:
        path = self.config.state_dir / "status.json"
        doc = self.status()
        if extra:
            doc.update(extra)
        tmp = path.with_suffix(".json.tmp")
        try:
            # one write of one string: json.dump makes a write() call per token (~1% CPU
            # at 500 monitors, once a second)
            text = json.dumps(doc, default=str)
            with open(tmp, "w") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)  # readable by monitoring users: holds no secrets
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("cannot write %s: %s", path, exc)

    # ================================================================= control

    async def _handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd in ("release", "claim", "pause", "resume"):
            return await self._admin(Verb(cmd), str(req.get("monitor", "")),
                                     str(req.get("by") or "cli"))
        if cmd == "rebalance":
            name = str(req.get("pool", ""))
            pool = self.pools.get(name)
            if pool is None:
                known = ", ".join(sorted(self.pools)) or "none"
                return {"ok": False, "error": f"no pool named {name!r} (known: {known})"}
            pool.rebalance(by=str(req.get("by") or "cli"))
            return {"ok": True, "pool": pool.snapshot()}
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
        try:
            rt.feed(Command(verb, by=by))
        except AlreadyDone as exc:  # the wanted end state holds: success, nothing changed
            return {"ok": True, "already": str(exc), "monitor": rt.machine.snapshot()}
        except CommandRefused as exc:
            return {"ok": False, "error": str(exc)}
        if verb is Verb.CLAIM:  # answer with the outcome, not just "started"
            deadline = self.clock() + 10.0
            while (rt.machine.state in (State.PROBING, State.BINDING)
                   and rt.machine.purpose is Purpose.CLAIM and self.clock() < deadline):
                await rt.changed.wait(timeout=0.5)
            if rt.machine.state is not State.HOLDING:
                return {"ok": False, "error": f"{name}: claim refused: {rt.machine.reason}",
                        "monitor": rt.machine.snapshot()}
        await asyncio.sleep(0)  # let the release/bind task start
        return {"ok": True, "monitor": rt.machine.snapshot()}

    async def test_alert(self) -> dict[str, str | None]:
        event = Event.stamp(Notice(EventKind.TEST_ALERT, "test alert from `minisft test-alert`:"
                                   " if you read this, this sink works"),
                            seq=0, time=self.wall(), node=self.config.node.name)
        results: dict[str, str | None] = await self.delivery.test_all(event)
        return results

    # ================================================================= reload

    async def reload(self) -> tuple[bool, str]:
        from minisft.config.loader import ConfigError, load_config

        async with self._reloading:
            if self.config_path is None:
                return False, "no config file to reload"
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                msg = f"reload refused, the running config stays: {exc}"
                self.emit(Notice(EventKind.CONFIG_REJECTED, msg))
                return False, msg
            fixed = [("node.name", new.node.name, self.config.node.name),
                     ("node.local_ip", new.node.local_ip, self.config.node.local_ip),
                     ("state_dir", new.state_dir, self.config.state_dir),
                     ("control_socket", new.control_socket, self.config.control_socket)]
            for key, a, b in fixed:
                if a != b:
                    msg = (f"reload refused, the running config stays: {key} changed "
                           f"({b} -> {a}); that needs a restart")
                    self.emit(Notice(EventKind.CONFIG_REJECTED, msg))
                    return False, msg
            changes = await self._apply(new)
            msg = "config reloaded: " + ("; ".join(changes) if changes else "no changes")
            self.emit(Notice(EventKind.CONFIG_RELOADED, msg))
            return True, msg

    async def _apply(self, new: Config) -> list[str]:
        old = self.config
        changes: list[str] = []
        old_by_name = {m.name: m for m in old.monitors}
        new_by_name = {m.name: m for m in new.monitors}
        for name, mcfg in old_by_name.items():
            gone = name not in new_by_name
            # a new hooks.mode changes where the address lives (bound here or moved by
            # API): release it the old way, then start over the new way
            moved = not gone and (new_by_name[name].address != mcfg.address
                                  or new_by_name[name].hooks.mode != mcfg.hooks.mode)
            if gone or moved:
                rt = self.runtimes.pop(name)
                await rt.stop()
                self.neighbours.unwatch(mcfg.ip)
                if rt.machine.holds:
                    await rt.release_now()
                    self.emit(Notice(EventKind.RELEASED, "monitor removed from the config: "
                                     "released its address", monitor=name,
                                     address=str(mcfg.ip)))
                changes.append(f"removed {name}" if gone else f"replaced {name}")
        self.config = replace(new, source=new.source)
        for name, mcfg in new_by_name.items():
            if name not in self.runtimes:
                await self._add_monitor(mcfg)
                changes.append(f"added {name}")
            elif old_by_name[name] != mcfg:
                rt = self.runtimes[name]
                await rt.stop()
                new_rt = self._make_runtime(mcfg)
                new_rt.machine = rt.machine  # keep what we know: state, counters, holder
                new_rt.machine.config = mcfg
                self.runtimes[name] = new_rt
                self.neighbours.unwatch(mcfg.ip)
                self.neighbours.watch(mcfg.ip, lambda mac, r=new_rt: r.feed(ConflictSeen(mac)))
                new_rt.resume()
                changes.append(f"updated {name}")
        old_pools = {p.name: p for p in old.pools}
        for pool in new.pools:
            if old_pools.get(pool.name) == pool:
                continue
            resume = None
            if pool.name in self.pools:  # no hot swap: restart it, keeping its addresses
                old_rt = self.pools.pop(pool.name)
                await old_rt.stop(release=False)
                resume = getattr(old_rt, "handover", lambda: None)()  # etcd: its lease
            await self._add_pool(pool, resume=resume)
            changes.append(f"pool {pool.name} " + ("restarted" if pool.name in old_pools
                                                   else "added"))
        for name in set(old_pools) - {p.name for p in new.pools}:
            await self.pools.pop(name).stop(release=True)
            changes.append(f"pool {name} removed (its addresses released)")
        if old.alerting != new.alerting or old.logging != new.logging:
            await self.delivery.stop()
            self.delivery = self._build_delivery(new)
            await self.delivery.start()
            changes.append("alerting sinks rebuilt")
        return changes

    # ================================================================= shutdown

    async def _shutdown(self) -> None:
        cfg = self.config
        # BINDING counts: stopping the runtime cancels the bind task, not the netlink call
        # already in the worker thread, which binds the address after we looked. The
        # release below queues behind it on the same single worker, so it removes it.
        holding = [rt for rt in self.runtimes.values()
                   if rt.machine.holds or rt.machine.state is State.BINDING]
        plan = (f"releasing {len(holding)} address(es)" if cfg.node.release_on_stop and holding
                else "leaving addresses in place" if holding else "holding no address")
        _sd_notify("STOPPING=1")
        self.emit(Notice(EventKind.DAEMON_STOPPING, f"{self._stop_reason}: {plan}"))
        for task in self._tasks:
            task.cancel()
        for rt in self.runtimes.values():
            await rt.stop()
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
        self.write_status({"stopped_at": self.wall()})
        await self._teardown()

    async def _teardown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self.control is not None:
            await self.control.close()
        if self.neighbours is not None:
            with contextlib.suppress(Exception):
                await self.neighbours.close()
        await self.pinger.close()
        if self.delivery is not None:
            await self.delivery.stop()
        if self.journal is not None:
            with contextlib.suppress(Exception):
                self.journal.sync()
        if self.netlink is not None:
            with contextlib.suppress(Exception):
                await self._in_netlink(self.netlink.close)
        self._netlink_pool.shutdown(wait=False)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def build_sinks(cfg: Config, status: Callable[[], dict[str, Any]] | None = None) -> list[Any]:
    """One sink per destination; heavy libraries load only for configured sinks. `status`
    gives the live status document to the sinks that push check results."""
    sinks: list[Any] = []
    if cfg.logging.syslog:
        from minisft.sinks.syslog import SyslogSink

        sinks.append(SyslogSink(cfg.logging))
    for target in cfg.alerting.snmp_targets:
        from minisft.sinks.snmp import SnmpSink

        sinks.append(SnmpSink(target, state_dir=cfg.state_dir, node=cfg.node.name))
    if cfg.alerting.apprise is not None:
        from minisft.sinks.apprise_sink import AppriseSink

        sinks.append(AppriseSink(cfg.alerting.apprise))
    for hook in cfg.alerting.exec_hooks:
        from minisft.sinks.exec_sink import ExecSink

        sinks.append(ExecSink(hook))
    if cfg.alerting.nagios is not None and status is not None:
        from minisft.sinks.nagios_cmd import NagiosCommandSink

        sinks.append(NagiosCommandSink(cfg.alerting.nagios, node=cfg.node.name, status=status))
    if cfg.alerting.icinga2 is not None and status is not None:
        from minisft.sinks.icinga2 import Icinga2Sink

        sinks.append(Icinga2Sink(cfg.alerting.icinga2, node=cfg.node.name, status=status))
    if cfg.alerting.nsca is not None and status is not None:
        from minisft.sinks.nsca import NscaSink

        sinks.append(NscaSink(cfg.alerting.nsca, node=cfg.node.name, status=status))
    # each sink's name keys its spool cursor: two targets must never share one
    seen: dict[str, int] = {}
    for sink in sinks:
        n = seen.get(sink.name, 0)
        seen[sink.name] = n + 1
        if n:
            sink.name = f"{sink.name}-{n + 1}"
    return sinks


def _sd_notify(message: str) -> None:
    """systemd's notify protocol: one datagram to $NOTIFY_SOCKET (no-op outside systemd)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), addr)


def _watchdog_interval() -> float:
    usec = os.environ.get("WATCHDOG_USEC")
    try:
        return int(usec) / 2e6 if usec else 0.0
    except ValueError:
        return 0.0
