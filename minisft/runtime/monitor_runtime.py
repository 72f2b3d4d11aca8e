"""Runs one MonitorMachine: feeds it probe results and ticks, carries out its actions.

All calls to `machine.handle` happen on the event loop, one at a time, from `feed`; actions
become tasks, so nothing here ever waits inside a decision. Netlink calls go to a single
worker thread (pyroute2's sync API must not run inside the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Literal, Protocol, TypeVar

from minisft.config.model import MonitorConfig
from minisft.core.actions import (
    Action,
    Announce,
    Bind,
    BindDone,
    CancelProbe,
    Emit,
    ProbeDone,
    Release,
    StartProbe,
)
from minisft.core.events import EventKind, Notice
from minisft.core.io import (
    Input,
    LateReply,
    PeerAsked,
    PeerPingResult,
    PeerServiceResult,
    PingResult,
    Reconfigured,
    ServiceResult,
    SwitchoverFacts,
)
from minisft.core.monitor import MonitorMachine
from minisft.net.neighbour import ProbeAnswer
from minisft.probes.looksalive import Pinger
from minisft.runtime.address_hooks import AddressHooks, HookFailure, HookName

log = logging.getLogger("minisft.monitor")
T = TypeVar("T")


class Check(Protocol):
    async def run(self, address: str) -> Any: ...


class Neighbours(Protocol):
    async def probe_answer(self, ip: Any, count: int, interval: float, *,
                           on_prober: Literal["yield", "ignore", "tiebreak"] = "yield",
                           ) -> ProbeAnswer | None: ...
    async def announce(self, ip: Any, count: int, interval: float) -> None: ...


class Addresses(Protocol):
    def bind(self, iface: Any, address: Any) -> None: ...
    def release(self, iface: Any, address: Any) -> None: ...


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


async def _cancel_and_wait(cancel: set[asyncio.Task[Any]],
                           keep: set[asyncio.Task[Any]] | None = None) -> None:
    """Cancel `cancel`, wait until it and `keep` are done. Cancels again while waiting: on
    3.11 asyncio.wait_for (in icmplib, in our pinger) can swallow a cancellation that lands
    as its result arrives, and a loop that survives it would keep a reload waiting."""
    pending = cancel | (keep or set())
    while pending:
        for task in pending & cancel:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)


class MonitorRuntime:
    def __init__(
        self,
        config: MonitorConfig,
        *,
        clock: Callable[[], float],
        pinger: Pinger,
        neighbours: Neighbours,
        addresses: Addresses,
        iface: Any,
        netlink_executor: Executor,
        emit: Callable[[Notice], object],
        check: Check | None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.machine = MonitorMachine(config, now=clock())
        self._pinger = pinger
        self._neighbours = neighbours
        self._addresses = addresses
        self._iface = iface
        self._executor = netlink_executor
        self._emit = emit
        self._check = check
        self.changed = Broadcast()
        self._tasks: set[asyncio.Task[Any]] = set()
        # binds and releases under way: they change the interface, so they are never
        # cancelled half-way (the netlink call would finish anyway, unreported)
        self._interface_changes: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._probe: tuple[int, asyncio.Task[None]] | None = None
        self._last_change_wall: float | None = None
        self._hooks = AddressHooks(config.hooks, monitor=config.name)

    # ------------------------------------------------------------- lifecycle

    def start(self, address_bound: bool) -> None:
        from minisft.core.io import Started

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
        self.feed(Reconfigured(config))
        self.resume()

    async def stop(self) -> None:
        """Stop for good (shutdown, monitor removed): cancel the loops, the probe and the
        announcements; let a bind or release under way finish and report, so that
        `machine.holds` says afterwards whether the address is on the interface."""
        self._stopping = True
        await self._stop_loops()
        self._cancel_probe()
        while self._tasks:  # a finishing bind may start an announcement: cancel it too
            await _cancel_and_wait(self._tasks - self._interface_changes, keep=self._tasks)

    async def _stop_loops(self) -> None:
        await _cancel_and_wait(set(self._loops))
        self._loops.clear()

    async def release_now(self) -> None:
        """Remove the address at shutdown (release_on_stop), then run the down hook."""
        if self.config.hooks.binds_locally:
            await self._netlink(self._addresses.release, self._iface, self.config.address)
        await self._run_hook("down")

    # ------------------------------------------------------------- the one entry point

    def feed(self, event: Input) -> None:
        before = (self.machine.state, self.machine.paused)
        try:
            actions = self.machine.handle(event, self.clock())
        finally:
            if (self.machine.state, self.machine.paused) != before:
                self.changed.fire()
        for action in actions:
            self._execute(action)

    def _execute(self, action: Action) -> None:
        if isinstance(action, Emit):
            self._emit(action.notice)
        elif self._stopping and isinstance(action, StartProbe | Announce):
            return  # stopped: nobody is left to act on a probe or to announce for
        elif isinstance(action, StartProbe):
            self._cancel_probe()
            task = self._spawn(self._run_probe(action), f"probe-{action.token}")
            self._probe = (action.token, task)
        elif isinstance(action, CancelProbe):
            if self._probe and self._probe[0] == action.token:
                self._cancel_probe()
        elif isinstance(action, Bind):
            self._interface_changes.add(self._spawn(self._run_bind(action.token), "bind"))
        elif isinstance(action, Release):
            self._interface_changes.add(self._spawn(self._run_release(), "release"))
        elif isinstance(action, Announce):
            self._spawn(self._announce(), "announce")

    def _spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.config.name}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._interface_changes.discard)
        return task

    def _cancel_probe(self) -> None:
        if self._probe is not None:
            self._probe[1].cancel()
            self._probe = None

    async def _netlink(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def peer_asked(self, sender: Any, mac: str) -> None:
        """A host resolved the address (NeighbourWatch.watch_askers): if it is this
        monitor's peer_ip, the core learns the peer watches the address."""
        if self.config.peer_ip is not None and sender == self.config.peer_ip:
            self.feed(PeerAsked(mac))

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

    # ------------------------------------------------------------- actions

    async def _run_probe(self, action: StartProbe) -> None:
        done: ProbeDone
        try:
            # the core decides what a simultaneous prober counts as (core docstring)
            answer = await self._neighbours.probe_answer(
                self.config.ip, action.count, action.interval,
                on_prober=action.on_prober.value)
            done = ProbeDone(action.token, answer.mac if answer else None,
                             prober=answer.prober if answer else False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe that cannot run must not look like "free"
            log.error("%s: probe failed: %s", self.config.name, exc)
            done = ProbeDone(action.token, "unknown (probe failed)")
        if self._probe and self._probe[0] == action.token:
            self._probe = None
        self.feed(done)

    async def _run_bind(self, token: int) -> None:
        if not self.config.hooks.binds_locally:
            # mode instead: the up hook moves the address (a cloud API); its failure is a
            # failed bind, which the core decides about
            failure = await self._run_hook("up")
            self.feed(BindDone(token, failure.reason if failure else None))
            return
        error: str | None = None
        try:
            await self._netlink(self._addresses.bind, self._iface, self.config.address)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
        announced = None
        if error is None:
            # announce first: routers must learn the new MAC as early as possible
            announced = self._spawn(self._announce(), "announce")
        self.feed(BindDone(token, error))
        if announced is not None:
            # The hook is not on the failover path: the core already holds. A failing hook
            # is reported (hook_failed) and does not undo the takeover.
            await announced
            await self._run_hook("up")

    async def _run_release(self) -> None:
        if self.config.hooks.binds_locally:
            try:
                await self._netlink(self._addresses.release, self._iface, self.config.address)
            except Exception as exc:
                log.error("%s: could not remove %s: %s", self.config.name,
                          self.config.address, exc)
        await self._run_hook("down")

    async def _run_hook(self, hook: HookName) -> HookFailure | None:
        """Run an address hook; on failure emit hook_failed and return the failure."""
        self._hooks.config = self.config.hooks  # a reload may have swapped the config
        iface_name = str(getattr(self._iface, "name", self._iface))
        failure = await self._hooks.run(hook, self.config.address, iface_name)
        if failure is not None:
            log.warning("%s: %s", self.config.name, failure.reason)
            self._emit(Notice(EventKind.HOOK_FAILED, failure.reason, monitor=self.config.name,
                              address=str(self.config.ip), details=failure.details))
        return failure

    async def _announce(self) -> None:
        if not self.config.hooks.binds_locally:
            return  # mode instead: the address is not here to announce
        a = self.config.announce
        try:
            await self._neighbours.announce(self.config.ip, a.count, a.interval)
        except Exception as exc:
            log.error("%s: announcement failed: %s", self.config.name, exc)

    # ------------------------------------------------------------- probe loops

    async def _wait_until(self, wanted: Callable[[], bool]) -> None:
        while not wanted():
            await self.changed.wait(timeout=1.0)

    async def _looksalive_loop(self) -> None:
        la = self.config.looksalive
        await asyncio.sleep(random.uniform(0, min(la.interval, 1.0)))  # spread many monitors
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
        if self._loops and not self._stopping:  # not for a ping of loops since stopped
            self.feed(LateReply(rtt))

    async def _isalive_loop(self) -> None:
        if self._check is None:
            return
        check = self._check
        interval = self.config.isalive.interval
        await asyncio.sleep(random.uniform(0, min(interval, 2.0)))
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
