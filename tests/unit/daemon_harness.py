"""The real Daemon on a FakeHost (`minisft.testing.fakes`), for the tests that drive a
whole daemon in-process (admin commands, reloads): the daemon built as `minisft run`
builds it, but on the fake host's ports, and every event it emits recorded in order.

Not in `minisft.testing`: that holds the fakes of the ports; this only wires the daemon
to one of them for the unit tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from minisft.config.loader import load_config
from minisft.core.events import EventKind, Notice
from minisft.runtime.daemon import Daemon
from minisft.runtime.monitor_runtime import MonitorRuntime
from minisft.testing.fakes import FakeHost, fake_host_ports

H = TypeVar("H", bound=FakeHost)  # a test's own FakeHost (with its switches) stays typed


class DaemonOnFakeHost(Generic[H]):
    """One daemon of the config at `path` on `host`; `events` are the notices it emitted,
    in order. Its monitor "web" is the one the tests drive."""

    def __init__(self, path: Path, host: H) -> None:
        self.host = host
        self.daemon = Daemon(load_config(path), config_path=path,
                             ports=fake_host_ports(host))
        self.events: list[Notice] = []
        emit = self.daemon.emit

        def record(notice: Notice) -> Any:
            self.events.append(notice)
            return emit(notice)

        # the monitors and pools are built at start_monitoring, after this, and are
        # handed `daemon.emit`: their events come through `record`
        self.daemon.emit = record  # type: ignore[method-assign]

    @property
    def web(self) -> MonitorRuntime:
        return self.daemon.runtimes["web"]

    def kinds(self) -> list[EventKind]:
        return [n.kind for n in self.events]

    async def ask(self, cmd: str, **fields: str) -> dict[str, Any]:
        """A control-socket request, answered as the CLI receives it."""
        return await self.daemon.handle_request({"cmd": cmd, **fields})

    async def until(self, what: str, predicate: Callable[[], bool], timeout: float = 5.0
                    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            web = self.daemon.runtimes.get("web")  # a reload may have removed it
            seen = f"web: {web.machine.state.value} {web.machine.reason!r}" if web else "no web"
            assert time.monotonic() < deadline, f"not within {timeout:g}s: {what} ({seen})"
            await asyncio.sleep(0.01)


def run_daemon(path: Path, host: H, scenario: Callable[[DaemonOnFakeHost[H]], Awaitable[None]],
        timeout: float = 20.0) -> None:
    """Start the daemon of `path` on `host`, play `scenario`, stop it. A hang (a task that
    ignores cancel) fails after `timeout`, with every task's stack printed."""
    async def main() -> None:
        node = DaemonOnFakeHost(path, host)
        await node.daemon.start_monitoring()
        try:
            await scenario(node)
        finally:
            await node.daemon.stop_monitoring()

    async def bounded() -> None:
        task = asyncio.create_task(main())
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            for t in asyncio.all_tasks():
                t.print_stack()
            task.cancel()
        await task

    asyncio.run(bounded())
