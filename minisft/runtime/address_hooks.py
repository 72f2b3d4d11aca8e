"""Address hooks (`monitors[].hooks`): commands run around binding and releasing an address.

`up` runs once the address is bound and announced, `down` once it is released (mode
`after`); in mode `instead` they replace bind/announce/release, for networks where an API
moves the address (clouds), and a failed `up` is a failed bind. The argv's {address},
{prefixlen}, {interface} and {monitor} are filled in (validated by the config loader).

They run through the event commands' process runner (`run_bounded`: no shell, cwd /, a
clean environment, its own session so a timeout kills the whole process group), with an
empty stdin and MINISFT_HOOK, MINISFT_MONITOR, MINISFT_ADDRESS, MINISFT_PREFIXLEN and
MINISFT_INTERFACE in the environment. Runs of one monitor's hooks never overlap and keep
their order (a lock): a `down` decided while `up` still runs waits for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from minisft.config.model import AddressHooksConfig, IPInterface
from minisft.core.events import DetailValue
from minisft.sinks.exec_sink import clean_environment, last_line, run_bounded

HookName = Literal["up", "down"]


@dataclass(frozen=True)
class HookFailure:
    """Why a hook failed, for the hook_failed event (and a failed bind in mode instead)."""

    hook: HookName
    exit_code: int | None  # None: it did not start, or ran past its timeout
    stderr: str  # its last line, redacted; "" if none
    reason: str  # one line for people

    @property
    def details(self) -> dict[str, DetailValue]:
        return {"hook": self.hook, "exit_code": self.exit_code, "stderr": self.stderr}


class AddressHooks:
    def __init__(self, config: AddressHooksConfig, *, monitor: str) -> None:
        self.config = config
        self.monitor = monitor
        self._lock = asyncio.Lock()

    def argv(self, hook: HookName, address: IPInterface, interface: str) -> list[str]:
        values = {"address": str(address.ip), "prefixlen": str(address.network.prefixlen),
                  "interface": interface, "monitor": self.monitor}
        template = self.config.up if hook == "up" else self.config.down
        return [item.format_map(values) for item in template]

    async def run(self, hook: HookName, address: IPInterface,
                  interface: str) -> HookFailure | None:
        """Run one hook to its end (bounded by `timeout`); None if it succeeded or is not
        configured."""
        argv = self.argv(hook, address, interface)
        if not argv:
            return None
        env = clean_environment()
        env.update({"MINISFT_HOOK": hook, "MINISFT_MONITOR": self.monitor,
                    "MINISFT_ADDRESS": str(address.ip),
                    "MINISFT_PREFIXLEN": str(address.network.prefixlen),
                    "MINISFT_INTERFACE": interface})
        timeout = self.config.timeout
        async with self._lock:
            try:
                code, stderr = await run_bounded(argv, b"", env, timeout)
            except TimeoutError:  # first: it is an OSError too
                return HookFailure(hook, None, "", f"{hook} hook still running after "
                                   f"{timeout:g} s; killed it")
            except OSError as exc:
                return HookFailure(hook, None, "", f"{hook} hook: cannot start {argv[0]}: "
                                   f"{exc.strerror or type(exc).__name__}")
        if code == 0:
            return None
        tail = last_line(stderr)
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return HookFailure(hook, code, tail, f"{hook} hook {how}" + (f": {tail}" if tail
                                                                       else ""))
