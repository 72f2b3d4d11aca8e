"""Runs one MonitorMachine: feeds it probe results and ticks; its actions go to the driver.

All calls to `machine.handle` happen on the event loop, one at a time, from `feed`; the
actions go to `minisft.runtime.driver.ActionDriver` (shared with the pools), which makes
them tasks, so nothing here ever waits inside a decision. Netlink calls go to a single
worker thread (pyroute2's sync API must not run inside the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from minisft.config.model import MonitorConfig
from minisft.core.actions import Action
from minisft.core.events import Notice
from minisft.core.io import (
    AddressVanished,
    Command,
    Input,
    LateReply,
    PeerAsked,
    PeerLinkAddress,
    PeerPingResult,
    PeerServiceResult,
    PingResult,
    Reconfigured,
    ServiceResult,
    Started,
    SwitchoverFacts,
    Verb,
)
from minisft.core.monitor import MonitorMachine, Purpose, State
from minisft.runtime.driver import ActionDriver, cancel_and_wait
from minisft.runtime.ports import Neighbours, Netlink, Pinger

log = logging.getLogger("minisft.monitor")


class Check(Protocol):
    async def run(self, address: str) -> Any: ...


class Broadcast:
    """Wake every waiter when something changed (asyncio.Event that re-arms itself)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None = None) -> None:
        event = self._event
        # not asyncio.wait_for: on 3.11 it swallows a cancellation that lands while the
        # event fires, and a loop cancelled by a reload would then wait here for good
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


class MonitorRuntime:
    def __init__(
        self,
        config: MonitorConfig,
        *,
        clock: Callable[[], float],
        pinger: Pinger,
        neighbours: Neighbours,
        addresses: Netlink,
        iface: Any,
        netlink_executor: Executor,
        emit: Callable[[Notice], object],
        check: Check | None,
        rng: random.Random | None = None,
        on_handled: Callable[[Input, list[Action]], object] | None = None,
    ) -> None:
        """`rng`: where the start jitter comes from (the tests pass a seeded one).

        `on_handled(input, actions)`: called after every input the machine handled, once
        its actions went to the driver. It only observes (the daemon passes none): the
        tests trace what the machine did through the daemon's own `feed`, and tracing
        could too, without a copy of `feed` that could drift from it."""
        self.config = config
        self._uniform = rng.uniform if rng is not None else random.uniform
        self.clock = clock
        self.machine = MonitorMachine(config, now=clock())
        self._pinger = pinger
        self._neighbours = neighbours
        self._check = check
        self._on_handled = on_handled
        self.changed = Broadcast()
        self._loops: list[asyncio.Task[None]] = []
        self.driver = ActionDriver(
            owner=config.name, task_prefix=config.name, report=self.feed, emit=emit,
            neighbours=neighbours, netlink=addresses, iface=iface,
            netlink_executor=netlink_executor, hooks=config.hooks, announce=config.announce,
            log=log, replace_probes=True)

    # ------------------------------------------------------------- lifecycle

    def start(self, address_bound: bool) -> None:
        self.feed(Started(address_bound))
        self.resume()

    def resume(self) -> None:
        """Start the probe loops (again, after a reload changed the config)."""
        name = self.config.name
        self._loops = [
            asyncio.create_task(self._looksalive_loop(), name=f"{name}-looksalive"),
            asyncio.create_task(self._isalive_loop(), name=f"{name}-isalive"),
            asyncio.create_task(self._peer_loop(), name=f"{name}-peer"),
        ]

    async def reconfigure(self, config: MonitorConfig, check: Check | None) -> None:
        """A reload's new settings for this monitor (same name and address).

        The machine and the work it has in flight stay: a probe round or a bind under way
        finishes and reports to the machine as before, so no state waits for a result that
        never comes. Only the loops restart, with the new timing and check; a ping or check
        in flight is dropped (the machine never waits for one, it asks again)."""
        await self._stop_loops()
        self.config = config
        self._check = check
        self.driver.hooks = config.hooks
        self.driver.announce_settings = config.announce
        self.feed(Reconfigured(config))
        self.resume()

    async def stop(self) -> None:
        """Stop for good (shutdown, monitor removed): cancel the loops, the probe and the
        announcements; let a bind or release under way finish and report, so that
        `machine.holds` says afterwards whether the address is on the interface."""
        self.driver.stopping = True
        await self._stop_loops()
        await self.driver.stop()

    async def _stop_loops(self) -> None:
        await cancel_and_wait(set(self._loops))
        self._loops.clear()

    async def release_now(self) -> None:
        """Remove the address at shutdown (release_on_stop), then run the down hook."""
        await self.driver.remove(self.machine.address)

    # ------------------------------------------------------------- what the daemon asks

    @property
    def holds(self) -> bool:
        """The machine holds the address (after `stop()`: it is on the interface)."""
        return self.machine.holds

    def snapshot(self) -> dict[str, Any]:
        """The monitor's status, its durations as of now."""
        return self.machine.snapshot(now=self.clock())

    async def command(self, command: Command, outcome_wait: float = 10.0) -> str | None:
        """An admin command (raises AlreadyDone or CommandRefused, see the core). A claim
        or switchover is answered with its outcome, not just "started": wait up to
        `outcome_wait` for it and return why it was refused, or None."""
        self.feed(command)
        if command.verb in (Verb.CLAIM, Verb.SWITCHOVER):
            purpose = Purpose.CLAIM if command.verb is Verb.CLAIM else Purpose.SWITCHOVER
            deadline = self.clock() + outcome_wait
            m = self.machine
            while (m.state in (State.PROBING, State.BINDING) and m.purpose is purpose
                   and self.clock() < deadline):
                await self.changed.wait(timeout=0.5)
            if m.state is not State.HOLDING:
                return f"{command.verb.value} refused: {m.reason}"
        await asyncio.sleep(0)  # let the release/bind task start
        return None

    async def look_for_vanished_address(self) -> None:
        """While holding, check that the address is still on the interface: someone may
        have removed it behind our back (the machine then takes it again or says why
        not). Not in mode instead: the address lives in a cloud API, not on this link."""
        if self.machine.state is not State.HOLDING or not self.config.hooks.binds_locally:
            return
        present = await self.driver.has_address(self.machine.address)
        if not present and self.machine.state is State.HOLDING:
            self.feed(AddressVanished())

    # ------------------------------------------------------------- the one entry point

    def feed(self, event: Input) -> None:
        before = (self.machine.state, self.machine.paused)
        try:
            actions = self.machine.handle(event, self.clock())
        finally:
            if (self.machine.state, self.machine.paused) != before:
                self.changed.fire()
        for action in actions:
            self.driver.execute(action)
        if self._on_handled is not None:
            self._on_handled(event, actions)

    def peer_asked(self, sender: Any, mac: str) -> None:
        """A host resolved the address (NeighbourWatch.watch_askers): if it is this
        monitor's peer_ip, the core learns the peer watches the address. An IPv6 link-local
        sender may be the peer too (PeerAsked.link_local): the core judges it by the MAC."""
        peer = self.config.peer_ip
        if peer is None:
            return
        if sender == peer:
            self.feed(PeerAsked(mac))
        elif peer.version == 6 and sender.version == 6 and sender.is_link_local:
            self.feed(PeerAsked(mac, link_local=True))

    def peer_link_address(self, mac: str) -> None:
        """A frame showed peer_ip's MAC (NeighbourWatch.watch_users)."""
        self.feed(PeerLinkAddress(mac))

    async def switchover_facts(self, local_ip: Any) -> SwitchoverFacts:
        """What a switchover needs to know, found out at once and side by side: who answers
        ARP/NDP for the address and for peer_ip, and whether the IsAlive check passes
        against this node's own local_ip (the check a backup runs on its peer before an
        automatic fallback). The core judges them (MonitorMachine._switchover)."""
        probe = self.config.probe

        async def who_answers(ip: Any) -> str | None:
            if ip is None:
                return None
            try:
                answer = await self._neighbours.probe_answer(ip, probe.count, probe.interval,
                                                             on_prober="ignore")
            except OSError as exc:  # the link is down: the core refuses on that first
                log.warning("%s: switchover: cannot probe %s: %s", self.config.name, ip, exc)
                return None
            return answer.mac if answer is not None else None

        async def own_check() -> tuple[bool | None, str]:
            if self._check is None:
                return None, ""
            result = await self._check.run(str(local_ip))
            return bool(result.ok), str(result.detail)

        holder, peer, (ok, detail) = await asyncio.gather(
            who_answers(self.config.ip), who_answers(self.config.peer_ip), own_check())
        return SwitchoverFacts(holder_mac=holder, peer_mac=peer, own_check_ok=ok,
                               own_check_detail=detail)

    # ------------------------------------------------------------- probe loops

    async def _wait_until(self, wanted: Callable[[], bool]) -> None:
        while not wanted():
            await self.changed.wait(timeout=1.0)

    async def _looksalive_loop(self) -> None:
        la = self.config.looksalive
        await asyncio.sleep(self._uniform(0, min(la.interval, 1.0)))  # spread many monitors
        while True:
            await self._wait_until(lambda: self.machine.wants_looksalive)
            started = self.clock()
            timeout = self.machine.ping_timeout  # the RTO: adapts to the measured RTTs
            # a reply slower than the RTO but within the configured timeout still counts:
            # the miss already started the retries and the probe, the late reply undoes it
            outcome = await self._pinger.ping(self.config.ip, timeout, linger=la.timeout,
                                              on_late=self._late_reply)
            self.feed(PingResult(outcome.ok, outcome.rtt, outcome.detail))
            elapsed = self.clock() - started
            # Retries after a miss go back to back (delay 0) because a lost ping already
            # waited `timeout`. A ping that fails at once did not: when the send itself
            # fails (own link just went down: ENETUNREACH) `ping()` returns without ever
            # suspending, and retrying at once spun this loop without yielding to the
            # event loop, freezing the daemon (link watcher, ticks, control socket) for
            # as long as the link stayed down. So a miss never comes sooner than
            # `timeout` after its ping started, and every round yields.
            delay = self.machine.next_ping_delay(elapsed)
            if not outcome.ok:
                delay = max(delay, timeout - elapsed)
            await asyncio.sleep(max(0.0, delay))

    def _late_reply(self, rtt: float) -> None:
        if self._loops and not self.driver.stopping:  # not for a ping of loops since stopped
            self.feed(LateReply(rtt))

    async def _isalive_loop(self) -> None:
        if self._check is None:
            return
        check = self._check
        interval = self.config.isalive.interval
        await asyncio.sleep(self._uniform(0, min(interval, 2.0)))
        while True:
            await self._wait_until(lambda: self.machine.wants_isalive)
            result = await check.run(str(self.config.ip))
            self.feed(ServiceResult(result.ok, result.latency, result.detail))
            await asyncio.sleep(interval)

    async def _peer_loop(self) -> None:
        peer = self.config.peer_ip
        if peer is None:
            return
        la = self.config.looksalive
        next_service = 0.0
        while True:
            await self._wait_until(lambda: self.machine.wants_peer_watch)
            started = self.clock()
            outcome = await self._pinger.ping(peer, la.timeout)
            self.feed(PeerPingResult(outcome.ok, outcome.rtt, outcome.detail))
            if self._check is not None and self.machine.wants_peer_isalive and \
                    self.clock() >= next_service:
                next_service = self.clock() + self.config.isalive.interval
                result = await self._check.run(str(peer))
                self.feed(PeerServiceResult(result.ok, result.latency, result.detail))
            await asyncio.sleep(max(0.0, la.interval - (self.clock() - started)))
