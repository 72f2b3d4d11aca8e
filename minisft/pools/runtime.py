"""Runs one PoolMachine: heartbeats in and out, probes, binds, releases, the witness.

Mirrors `minisft.runtime.monitor_runtime`: every call to `machine.handle` happens on the
event loop, one at a time, from `feed`; probe, bind, release, announce and emit go to the
shared `minisft.runtime.driver.ActionDriver`, which makes them tasks, so nothing waits
inside a decision. Netlink calls go to the daemon's single netlink worker thread.

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
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

from minisft.config.model import IPInterface, PoolConfig
from minisft.core.actions import IllegalInput
from minisft.core.events import Notice
from minisft.pools.actions import (
    AddressGone,
    HeartbeatSeen,
    LinkChanged,
    PoolAction,
    PoolInput,
    Rebalance,
    RebalanceAnswer,
    SendHeartbeat,
    Started,
    Tick,
    WitnessResult,
)
from minisft.pools.machine import ANNOUNCE, PoolMachine
from minisft.pools.protocol import Heartbeat
from minisft.pools.transport import PoolTransport
from minisft.runtime.driver import ActionDriver
from minisft.runtime.ports import Neighbours, Netlink, Pinger

log = logging.getLogger("minisft.pools")

HOUSEKEEPING = 1.0


class PoolRuntime:
    def __init__(
        self,
        pool: PoolConfig,
        *,
        node: str,
        clock: Callable[[], float],
        neighbours: Neighbours,
        addresses: Netlink,
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
        self._pinger = pinger
        self._by_key: dict[str, IPInterface] = {str(a): a for a in pool.addresses}
        self._loops: list[asyncio.Task[None]] = []
        self._hb_soon = False
        self._started = False
        self.driver = ActionDriver(
            owner=pool.name, label=f"pool {pool.name}", task_prefix=f"pool-{pool.name}",
            report=self.feed,
            emit=emit, neighbours=neighbours, netlink=addresses, iface=iface,
            netlink_executor=netlink_executor, hooks=pool.hooks, announce=ANNOUNCE, log=log,
            replace_probes=False)

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
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops.clear()
        await self.driver.stop()
        if release:
            for key in self.machine.held:
                with contextlib.suppress(Exception):
                    await self.driver.remove(key)
        if self._started:
            self.transport.send(self.machine.heartbeat_fields(leaving=release))
            await asyncio.sleep(0)  # let the datagram go out before the socket closes
        self.transport.close()
        self._started = False

    def handover(self) -> None:
        """Nothing to hand to a replacement: an embedded pool's identity is its config."""
        return None

    def rebalance(self, by: str = "cli") -> RebalanceAnswer:
        """Admin: take this member's formula addresses back make-before-break and hand
        over those another member asks for (manual fallback); the machine's answer."""
        self.machine.last_rebalance = None
        try:
            self.feed(Rebalance(by))
        except IllegalInput:
            return RebalanceAnswer(False, "this member is still starting: try again")
        answer = self.machine.last_rebalance
        assert answer is not None  # every Rebalance input leaves its answer
        return answer

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
        if not isinstance(action, SendHeartbeat):
            self.driver.execute(action)
        elif not self._hb_soon and self._started:
            # several changes in one decision make one heartbeat
            self._hb_soon = True
            asyncio.get_running_loop().call_soon(self._send_now)

    def _send_now(self) -> None:
        self._hb_soon = False
        if self._started:
            self.transport.send(self.machine.heartbeat_fields())

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
                up = await self.driver.link_up()
                if up != self.machine.link_up:
                    self.feed(LinkChanged(up))
                for key in self.machine.held:
                    present = await self.driver.has_address(key)
                    if not present:
                        self.feed(AddressGone(key))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pool %s: housekeeping: %s", self.pool.name, exc)
            await asyncio.sleep(HOUSEKEEPING)
