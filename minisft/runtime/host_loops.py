"""The loops one host runs for all its monitors: the tick, and the link and address watch.

Out of the daemon so that the core tests run these very loops on a simulated segment
(tests/unit/core_driver.py) instead of a copy of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from minisft.core.io import LinkChanged, Tick
from minisft.runtime.monitor_runtime import MonitorRuntime

log = logging.getLogger("minisft")

TICK = 0.25
LINK_POLL = 0.2
ADDRESS_POLL = 1.0


class HostLoops:
    """`runtimes()` gives the monitors as they are now (a reload adds and removes some)."""

    def __init__(self, runtimes: Callable[[], Iterable[MonitorRuntime]], *,
                 clock: Callable[[], float], link_up: Callable[[], Awaitable[bool]],
                 iface_name: str) -> None:
        self._runtimes = runtimes
        self._clock = clock
        self._link_up = link_up
        self._iface_name = iface_name

    async def tick_loop(self, on_tick: Callable[[], object] | None = None) -> None:
        """Every TICK, a Tick to every monitor; then `on_tick` (the systemd watchdog)."""
        while True:
            await asyncio.sleep(TICK)
            for rt in list(self._runtimes()):
                rt.feed(Tick())
            if on_tick is not None:
                on_tick()

    async def link_loop(self, known: bool | None,
                        on_change: Callable[[bool], object] | None = None) -> None:
        """Poll the link every LINK_POLL: a change goes to `on_change` first (the sinks hold
        link_down events too), then to every monitor as LinkChanged. `known` is the state
        the monitors were started with. While the link is up, look for an address removed
        behind the monitors' back every ADDRESS_POLL."""
        next_address_check = 0.0
        while True:
            await asyncio.sleep(LINK_POLL)
            try:
                up = await self._link_up()
            except Exception as exc:
                log.warning("link state of %s unknown: %s", self._iface_name, exc)
                continue
            if up != known:
                known = up
                if on_change is not None:
                    on_change(up)
                for rt in list(self._runtimes()):
                    rt.feed(LinkChanged(up))
            if up and self._clock() >= next_address_check:
                next_address_check = self._clock() + ADDRESS_POLL
                for rt in list(self._runtimes()):
                    await rt.look_for_vanished_address()
