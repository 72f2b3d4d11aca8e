"""Runs one PoolMachine: heartbeats in and out, probes, binds, releases, the witness.

Mirrors `minisft.runtime.monitor_runtime`: every call to `machine.handle` happens on the
event loop, one at a time, from `feed`; actions become tasks, so nothing waits inside a
decision. Netlink calls go to the daemon's single netlink worker thread.

Loops: heartbeat (every ``looksalive.interval``, and at once when the machine asks),
tick (timers: liveness, hold-down, announcements), witness (ICMP echo, when configured),
housekeeping (own link state and whether held addresses are still on the interface:
IPv6 addresses go away with the link).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from minisft.config.model import IPAddress, IPInterface, PoolConfig
from minisft.core.events import EventKind, Notice
from minisft.pools.actions import (
    AddressGone,
    Announce,
    Bind,
    BindDone,
    CancelProbe,
    Emit,
    HeartbeatSeen,
    LinkChanged,
    PoolAction,
    PoolInput,
    ProbeDone,
    Rebalance,
    Release,
    SendHeartbeat,
    Started,
    StartProbe,
    Tick,
    WitnessResult,
)
from minisft.pools.machine import ANNOUNCE, PoolMachine
from minisft.pools.protocol import Heartbeat
from minisft.pools.transport import PoolTransport
from minisft.runtime.address_hooks import AddressHooks, HookName

log = logging.getLogger("minisft.pools")
T = TypeVar("T")

HOUSEKEEPING = 1.0


class Neighbours(Protocol):
    async def probe(self, ip: Any, count: int, interval: float) -> str | None: ...
    async def announce(self, ip: Any, count: int, interval: float) -> None: ...


class Addresses(Protocol):
    def bind(self, iface: Any, address: Any) -> None: ...
    def release(self, iface: Any, address: Any) -> None: ...
    def has_address(self, iface: Any, ip: Any) -> bool: ...
    def link_up(self, iface: Any) -> bool: ...


class Pinger(Protocol):
    async def ping(self, address: IPAddress, timeout: float) -> Any: ...


class PoolRuntime:
    def __init__(
        self,
        pool: PoolConfig,
        *,
        node: str,
        clock: Callable[[], float],
        neighbours: Neighbours,
        addresses: Addresses,
        iface: Any,
        netlink_executor: Executor,
        emit: Callable[[Notice], object],
        pinger: Pinger | None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.node = node
        self.clock = clock
        self.machine = PoolMachine(pool, node, now=clock())
        self.transport = PoolTransport(pool, node, on_heartbeat=self._on_heartbeat, wall=wall)
        self._neighbours = neighbours
        self._addresses = addresses
        self._iface = iface
        self._executor = netlink_executor
        self._emit = emit
        self._pinger = pinger
        self._by_key: dict[str, IPInterface] = {str(a): a for a in pool.addresses}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._probes: dict[int, asyncio.Task[None]] = {}
        self._hb_soon = False
        self._started = False
        # one per address: each address's up/down keep their order, addresses run apart
        self._hooks = {key: AddressHooks(pool.hooks, monitor=pool.name)
                       for key in self._by_key}

    # ------------------------------------------------------------- lifecycle

    async def start(self, held: Iterable[Any] = ()) -> None:
        """`held`: addresses already on the interface (interfaces, IPs or strings)."""
        ips = {ipaddress.ip_interface(x).ip for x in held}
        keys = frozenset(k for k, a in self._by_key.items() if a.ip in ips)
        self.feed(Started(keys))
        await self.transport.start()
        self._started = True
        name = self.pool.name
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name=f"pool-{name}-heartbeat"),
            asyncio.create_task(self._tick_loop(), name=f"pool-{name}-tick"),
            asyncio.create_task(self._housekeeping_loop(), name=f"pool-{name}-housekeeping"),
        ]
        if self.pool.witness is not None and self._pinger is not None:
            self._loops.append(asyncio.create_task(self._witness_loop(),
                                                   name=f"pool-{name}-witness"))

    async def stop(self, release: bool) -> None:
        """Stop the loops; with `release`, remove the held addresses and tell the others
        (a `leaving` heartbeat) so they take them over at once."""
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops.clear()
        self._tasks.clear()
        if release:
            for key in self.machine.held:
                with contextlib.suppress(Exception):
                    await self._netlink(self._addresses.release, self._iface,
                                        self._by_key[key])
                    await self._run_hook("down", key)
        if self._started:
            self.transport.send(self.machine.heartbeat_fields(leaving=release))
            await asyncio.sleep(0)  # let the datagram go out before the socket closes
        self.transport.close()
        self._started = False

    def rebalance(self, by: str = "cli") -> None:
        """Admin: hand addresses to the members the formula gives them (manual fallback)."""
        self.feed(Rebalance(by))

    def snapshot(self) -> dict[str, Any]:
        snap = self.machine.snapshot()
        snap["port"] = self.pool.port
        snap["transport"] = self.transport.status()
        return snap

    # ------------------------------------------------------------- the one entry point

    def feed(self, event: PoolInput) -> None:
        for action in self.machine.handle(event, self.clock()):
            self._execute(action)

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        self.feed(HeartbeatSeen(msg.member, frozenset(msg.holds), msg.digest, msg.state,
                                frozenset(msg.wants), frozenset(msg.lost)))

    def _execute(self, action: PoolAction) -> None:
        if isinstance(action, Emit):
            self._emit(action.notice)
        elif isinstance(action, StartProbe):
            self._probes[action.token] = self._spawn(self._run_probe(action),
                                                     f"probe-{action.address}")
        elif isinstance(action, CancelProbe):
            task = self._probes.pop(action.token, None)
            if task is not None:
                task.cancel()
        elif isinstance(action, Bind):
            self._spawn(self._run_bind(action), f"bind-{action.address}")
        elif isinstance(action, Release):
            self._spawn(self._run_release(action.address), f"release-{action.address}")
        elif isinstance(action, Announce):
            self._spawn(self._announce(action.address), f"announce-{action.address}")
        elif isinstance(action, SendHeartbeat) and not self._hb_soon and self._started:
            # several changes in one decision make one heartbeat
            self._hb_soon = True
            asyncio.get_running_loop().call_soon(self._send_now)

    def _send_now(self) -> None:
        self._hb_soon = False
        if self._started:
            self.transport.send(self.machine.heartbeat_fields())

    def _spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"pool-{self.pool.name}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _netlink(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------- actions

    async def _run_probe(self, action: StartProbe) -> None:
        ip = self._by_key[action.address].ip
        try:
            mac = await self._neighbours.probe(ip, action.count, action.interval)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe that cannot run must not look like "free"
            log.error("pool %s: probe of %s failed: %s", self.pool.name, ip, exc)
            mac = "unknown (probe failed)"
        self._probes.pop(action.token, None)
        self.feed(ProbeDone(action.token, mac))

    async def _run_bind(self, action: Bind) -> None:
        error: str | None = None
        try:
            await self._netlink(self._addresses.bind, self._iface,
                                self._by_key[action.address])
        except Exception as exc:
            error = str(exc) or type(exc).__name__
        announced = None
        if error is None:
            # announce first: routers must learn the new MAC as early as possible
            announced = self._spawn(self._announce(action.address),
                                    f"announce-{action.address}")
        self.feed(BindDone(action.token, error))
        if announced is not None:
            # off the failover path (the machine already holds); a failure does not undo it
            await announced
            await self._run_hook("up", action.address)

    async def _run_release(self, key: str) -> None:
        try:
            await self._netlink(self._addresses.release, self._iface, self._by_key[key])
        except Exception as exc:
            log.error("pool %s: could not remove %s: %s", self.pool.name, key, exc)
            return
        await self._run_hook("down", key)

    async def _run_hook(self, hook: HookName, key: str) -> None:
        address = self._by_key[key]
        failure = await self._hooks[key].run(hook, address,
                                             str(getattr(self._iface, "name", self._iface)))
        if failure is not None:
            log.warning("pool %s: %s: %s", self.pool.name, key, failure.reason)
            self._emit(Notice(EventKind.HOOK_FAILED, failure.reason, monitor=self.pool.name,
                              address=str(address.ip), details=failure.details))

    async def _announce(self, key: str) -> None:
        try:
            await self._neighbours.announce(self._by_key[key].ip, ANNOUNCE.count,
                                            ANNOUNCE.interval)
        except Exception as exc:
            log.error("pool %s: announcement of %s failed: %s", self.pool.name, key, exc)

    # ------------------------------------------------------------- loops

    async def _heartbeat_loop(self) -> None:
        interval = self.pool.looksalive.interval
        while True:
            self.transport.send(self.machine.heartbeat_fields())
            await asyncio.sleep(interval)

    async def _tick_loop(self) -> None:
        step = min(0.1, self.pool.looksalive.interval / 4)
        while True:
            await asyncio.sleep(step)
            self.feed(Tick())

    async def _witness_loop(self) -> None:
        assert self._pinger is not None and self.pool.witness is not None
        la = self.pool.looksalive
        while True:
            started = self.clock()
            try:
                outcome = await self._pinger.ping(self.pool.witness, la.timeout)
                ok = bool(outcome.ok)
            except Exception as exc:
                log.warning("pool %s: witness ping failed: %s", self.pool.name, exc)
                ok = False
            self.feed(WitnessResult(ok))
            await asyncio.sleep(max(0.0, la.interval - (self.clock() - started)))

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                up = await self._netlink(self._addresses.link_up, self._iface)
                if up != self.machine.link_up:
                    self.feed(LinkChanged(up))
                for key in self.machine.held:
                    present = await self._netlink(self._addresses.has_address, self._iface,
                                                  self._by_key[key].ip)
                    if not present:
                        self.feed(AddressGone(key))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pool %s: housekeeping: %s", self.pool.name, exc)
            await asyncio.sleep(HOUSEKEEPING)
