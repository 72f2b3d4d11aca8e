"""The one executor of the machines' shared actions (`minisft.core.actions`).

A monitor runtime and a pool runtime both turn StartProbe, CancelProbe, Bind, Release,
Announce and Emit into probes, netlink calls, announcements and address hooks, and report
ProbeDone/BindDone back to their machine. This class does it for both, so the rules below
exist once:

- Every action becomes a task: nothing waits inside a machine's decision.
- A probe that cannot run reports an answer ("unknown (probe failed)"): a probe that did
  not go out must not look like "address free".
- A bind announces before it reports BindDone: routers must learn the new MAC as early
  as possible. The `up` hook runs after the announcement, off the failover path: a
  failing hook is reported (hook_failed) and does not undo the bind.
- Binds and releases change the interface, so `stop()` never cancels one half-way (the
  netlink call would finish anyway, unreported): it lets them finish and report, so the
  machine says afterwards whether the address is on the interface.
- Hooks in mode `instead` replace the netlink calls and the announcement (the address
  lives in a cloud API); a failed `up` is a failed bind, which the machine decides about.
- The `down` hook runs once the address has left the interface; when the removal failed
  the address is still here, so it does not.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from minisft.config.model import AddressHooksConfig, AnnounceConfig, IPInterface
from minisft.core.actions import (
    Action,
    Announce,
    Bind,
    BindDone,
    CancelProbe,
    Emit,
    OnProber,
    ProbeDone,
    Release,
    StartProbe,
)
from minisft.core.events import EventKind, Notice
from minisft.net.neighbour import ProbeAnswer
from minisft.runtime.address_hooks import AddressHooks, HookFailure, HookName
from minisft.runtime.ports import Neighbours, Netlink

T = TypeVar("T")

# what a probe that could not run reports as the answer: it must not look like "free"
PROBE_FAILED = "unknown (probe failed)"


async def cancel_and_wait(cancel: set[asyncio.Task[Any]],
                          keep: set[asyncio.Task[Any]] | None = None) -> None:
    """Cancel `cancel`, wait until it and `keep` are done. Cancels again while waiting: on
    3.11 asyncio.wait_for (in icmplib, in our pinger) can swallow a cancellation that lands
    as its result arrives, and a loop that survives it would keep a reload waiting."""
    pending = cancel | (keep or set())
    while pending:
        for task in pending & cancel:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)


async def in_netlink_thread(executor: Executor, fn: Callable[..., T], *args: Any) -> T:
    """Run a synchronous netlink call in `executor`, the daemon's single netlink worker
    thread: pyroute2's sync API must not run inside the event loop, and one thread keeps
    the calls in order."""
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


class ActionDriver:
    """Carries out one machine's shared actions on the local interface."""

    def __init__(
        self,
        *,
        owner: str,
        label: str | None = None,
        task_prefix: str,
        report: Callable[[ProbeDone | BindDone], object],
        emit: Callable[[Notice], object],
        neighbours: Neighbours,
        netlink: Netlink,
        iface: Any,
        netlink_executor: Executor,
        hooks: AddressHooksConfig,
        announce: AnnounceConfig,
        log: logging.Logger,
        replace_probes: bool,
    ) -> None:
        """`owner`: the monitor or pool name, in events and hook arguments (`{monitor}`), so
        it stays the bare name an admin configured. `label`: how log lines name it ("pool
        front"); the owner when not given. `report`: feeds
        a result back to the machine. `replace_probes`: a new probe of an address cancels
        one still running for it (a monitor has one probe at a time; a pool's machine
        cancels its own)."""
        self.owner = owner
        self.label = label if label is not None else owner
        self.hooks = hooks  # a reload may swap them (monitors)
        self.announce_settings = announce
        self._task_prefix = task_prefix
        self.report = report  # where results go: the machine's feed
        self._emit = emit
        self._neighbours = neighbours
        self._netlink_port = netlink
        self._iface = iface
        self._executor = netlink_executor
        self._log = log
        self._replace_probes = replace_probes
        self._tasks: set[asyncio.Task[Any]] = set()
        self._interface_changes: set[asyncio.Task[Any]] = set()
        self._probes: dict[int, tuple[str, asyncio.Task[None]]] = {}
        # announcements under way, by address: a release stops them (_start_announcement)
        self._announcements: dict[str, set[asyncio.Task[None]]] = {}
        # one per address: each address's up/down keep their order, addresses run apart
        self._address_hooks: dict[str, AddressHooks] = {}
        self.stopping = False

    # ------------------------------------------------------------- the entry point

    def execute(self, action: Action) -> None:
        if isinstance(action, Emit):
            self._emit(action.notice)
        elif self.stopping and isinstance(action, StartProbe | Announce):
            return  # stopped: nobody is left to act on a probe or to announce for
        elif isinstance(action, StartProbe):
            if self._replace_probes:
                for token, (address, _) in list(self._probes.items()):
                    if address == action.address:
                        self._cancel_probe(token)
            task = self.spawn(self._run_probe(action), f"probe-{action.address}")
            self._probes[action.token] = (action.address, task)
        elif isinstance(action, CancelProbe):
            self._cancel_probe(action.token)
        elif isinstance(action, Bind):
            self._interface_changes.add(self.spawn(self._run_bind(action),
                                                   f"bind-{action.address}"))
        elif isinstance(action, Release):
            self._stop_announcements(action.address)
            self._interface_changes.add(self.spawn(self._run_release(action.address),
                                                   f"release-{action.address}"))
        elif isinstance(action, Announce):
            self._start_announcement(action.address)

    def spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self._task_prefix}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._interface_changes.discard)
        return task

    async def stop(self) -> None:
        """Cancel probes and announcements; let binds and releases under way finish and
        report (a finishing bind may start an announcement: that is cancelled too)."""
        self.stopping = True
        for token in list(self._probes):
            self._cancel_probe(token)
        while self._tasks:
            await cancel_and_wait(self._tasks - self._interface_changes, keep=self._tasks)

    async def netlink(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a synchronous netlink call in the netlink worker thread."""
        return await in_netlink_thread(self._executor, fn, *args)

    async def has_address(self, address_text: str) -> bool:
        """Is the address on the interface (whoever put it there)?"""
        ip = ipaddress.ip_interface(address_text).ip
        return await self.netlink(self._netlink_port.has_address, self._iface, ip)

    async def link_up(self) -> bool:
        return await self.netlink(self._netlink_port.link_up, self._iface)

    # ------------------------------------------------------------- the actions

    def _start_announcement(self, address_text: str) -> asyncio.Task[None]:
        """Announce the address, tracked until done. Several may run at once (the bind's
        and a refresh, say): each frame only repeats where the address is."""
        task = self.spawn(self.announce(address_text), f"announce-{address_text}")
        running = self._announcements.setdefault(address_text, set())
        running.add(task)

        def done(_: asyncio.Task[None]) -> None:
            running.discard(task)
            if not running and self._announcements.get(address_text) is running:
                del self._announcements[address_text]

        task.add_done_callback(done)
        return task

    def _stop_announcements(self, address_text: str) -> None:
        """An address being released is announced no more: a frame sent after it left
        (the tail of a burst started just before) would point the neighbours back at this
        node, whose address is gone, after the new holder's announcement had moved them."""
        for task in self._announcements.pop(address_text, set()):
            task.cancel()

    def _cancel_probe(self, token: int) -> None:
        probe = self._probes.pop(token, None)
        if probe is not None:
            probe[1].cancel()

    async def probe(self, address_text: str, count: int, interval: float,
                    on_prober: OnProber) -> ProbeAnswer | None:
        """Probe the address (RFC 5227); who answered, or None. A probe that cannot run
        answers "unknown (probe failed)": one that did not go out proves nothing."""
        ip = ipaddress.ip_interface(address_text).ip
        try:
            # the machine decides what a simultaneous prober counts as
            return await self._neighbours.probe_answer(ip, count, interval,
                                                       on_prober=on_prober.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log.error("%s: probe of %s failed: %s", self.label, ip, exc)
            return ProbeAnswer(PROBE_FAILED, prober=False)

    async def _run_probe(self, action: StartProbe) -> None:
        answer = await self.probe(action.address, action.count, action.interval,
                                  action.on_prober)
        probe = self._probes.get(action.token)
        if probe is not None and probe[1] is asyncio.current_task():
            del self._probes[action.token]
        self.report(ProbeDone(action.token, answer.mac if answer else None,
                               prober=answer.prober if answer else False))

    async def _run_bind(self, action: Bind) -> None:
        address = ipaddress.ip_interface(action.address)
        if not self.hooks.binds_locally:
            # mode instead: the up hook moves the address (a cloud API); its failure is a
            # failed bind, which the machine decides about
            failure = await self.run_hook("up", address)
            self.report(BindDone(action.token, failure.reason if failure else None))
            return
        error: str | None = None
        try:
            await self.netlink(self._netlink_port.bind, self._iface, address)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
        announced = None
        if error is None:
            # announce first: routers must learn the new MAC as early as possible
            announced = self._start_announcement(action.address)
        self.report(BindDone(action.token, error))
        if announced is not None:
            # off the failover path (the machine already holds); a failure does not undo it
            await asyncio.wait({announced})
            if announced.cancelled():
                return  # released (or stopping) before the burst ended: not up here
            await self.run_hook("up", address)

    async def _run_release(self, address_text: str) -> None:
        try:
            await self.remove(address_text)
        except Exception as exc:
            self._log.error("%s: could not remove %s: %s", self.label, address_text, exc)

    async def remove(self, address_text: str) -> None:
        """Remove the address from the interface (hooks in mode `instead`: nothing to
        remove here), then run the `down` hook. Raises when the removal fails: the address
        is still here, so the hook does not run."""
        address = ipaddress.ip_interface(address_text)
        if self.hooks.binds_locally:
            await self.netlink(self._netlink_port.release, self._iface, address)
        await self.run_hook("down", address)

    async def run_hook(self, hook: HookName, address: IPInterface) -> HookFailure | None:
        """Run an address hook; on failure emit hook_failed and return the failure."""
        key = str(address)
        runner = self._address_hooks.get(key)
        if runner is None:
            runner = self._address_hooks[key] = AddressHooks(self.hooks, monitor=self.owner)
        runner.config = self.hooks  # a reload may have swapped the config
        failure = await runner.run(hook, address, str(getattr(self._iface, "name",
                                                              self._iface)))
        if failure is not None:
            self._log.warning("%s: %s: %s", self.label, key, failure.reason)
            self._emit(Notice(EventKind.HOOK_FAILED, failure.reason, monitor=self.owner,
                              address=str(address.ip), details=failure.details))
        return failure

    async def announce(self, address_text: str) -> None:
        if not self.hooks.binds_locally:
            return  # mode instead: the address is not here to announce
        ip = ipaddress.ip_interface(address_text).ip
        a = self.announce_settings
        try:
            await self._neighbours.announce(ip, a.count, a.interval)
        except Exception as exc:
            self._log.error("%s: announcement of %s failed: %s", self.label, ip, exc)
