"""The command check: run a program (no shell), healthy when it exits with an ok code.

The program runs in a session of its own, so the time limit kills the whole process group:
a `sh -c 'curl ...'` that hangs must not leave the curl behind every 10 seconds. Nagios
plugins fit as they are: `warn_codes: [1]` makes WARNING an ok result with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from minisft.probes.isalive.common import CheckFailed, Progress, TimedCheck, Verdict, ms
from minisft.runtime.childenv import child_env

MAX_OUTPUT = 4096  # only the first line is shown; the rest is read and dropped


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _first_line(output: bytes) -> str:
    for line in output.decode("utf-8", "replace").splitlines():
        if line.strip():
            return line.strip()
    return ""


class CommandCheck(TimedCheck):
    def __init__(self, params: dict[str, Any], timeout: float) -> None:
        super().__init__(timeout)
        self.argv: list[str] = list(params["argv"])
        self.ok_codes = frozenset(params["ok_codes"])
        self.warn_codes = frozenset(params["warn_codes"])
        self.env: dict[str, str] = dict(params["env"])

    async def probe(self, address: str, progress: Progress) -> Verdict:
        start = time.monotonic()
        argv = [arg.replace("{address}", address) for arg in self.argv]
        # a clean environment: the daemon's may hold secrets (*_env config keys)
        env = child_env({**self.env, "MINISFT_ADDRESS": address})
        progress.stage = f"running {argv[0]}"
        # our own pipe, not PIPE: asyncio's Process.wait() also waits for its pipes to
        # close, which a background child holding stdout would delay until our timeout
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                env=env, start_new_session=True)
        except FileNotFoundError:
            os.close(read_fd)
            raise CheckFailed(f"command not found: {argv[0]}") from None
        except PermissionError:
            os.close(read_fd)
            raise CheckFailed(f"permission denied: {argv[0]}") from None
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)

        output = bytearray()
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        reader = asyncio.StreamReader()
        try:
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe)
        except BaseException:
            pipe.close()
            _kill_group(proc.pid)
            raise

        async def collect() -> None:
            while chunk := await reader.read(65536):
                output.extend(chunk[: MAX_OUTPUT - len(output)])

        collector = asyncio.create_task(collect())
        collector.add_done_callback(lambda t: t.cancelled() or t.exception())
        clean = False
        try:
            code = await proc.wait()
            # EOF soon after the exit, unless a background child still holds the pipe
            done, _ = await asyncio.wait({collector}, timeout=0.5)
            clean = bool(done)
        finally:
            if not clean:  # timed out, cancelled, or children left behind
                _kill_group(proc.pid)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 2.0)
            collector.cancel()
            transport.close()
        line = _first_line(bytes(output))
        status = f"exit {code}" if code >= 0 else f"killed by signal {-code}"
        detail = f"{status} in {ms(start)}" + (f": {line}" if line else "")
        if code in self.ok_codes:
            return Verdict(True, detail)
        if code in self.warn_codes:
            return Verdict(True, detail, detail)
        return Verdict(False, detail)
