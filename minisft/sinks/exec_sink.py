"""Event commands (`alerting.exec`): keepalived's `notify` scripts, done as a sink.

Each configured command is its own sink, so it gets what every sink gets from
`minisft.runtime.delivery`: a durable cursor in the journal, strict journal order, retries
of the SAME event with backoff while the command fails, and no place on the failover path
(the daemon only appends to the journal; this runs in the sink's own task).

One run per matching event:

* argv exactly as configured (no shell), working directory `/`, its own session (so a
  timeout kills the whole process group, children included);
* stdin: the event as one JSON object and a newline (`Event.to_json()`, as the journal
  stores it), then EOF;
* environment: a clean one, never the daemon's (which may hold secrets such as an
  `auth_key_env` variable): PATH (HOOK_PATH), the locale and time zone variables, HOME, and
  MINISFT_EVENT, MINISFT_MONITOR, MINISFT_ADDRESS, MINISFT_STATE, MINISFT_NODE,
  MINISFT_SEQ, MINISFT_SEVERITY, MINISFT_HOOK (empty when the event has no such field);
* stdout is discarded; the last line of stderr names a failure in `minisft status`.

Exit code 0 is delivered. A non-zero exit, a failure to start or running past `timeout`
(the process group is then killed and reaped first) raises DeliveryError: the runtime runs
the command again for the same event later, and later events wait behind it. Runs of one
command never overlap (the runtime delivers one event at a time per sink, and a lock here
also covers `minisft test-alert`). Different commands run independently of each other.

At least once: a daemon crash (or a stop that has to cancel a run) between the command's
exit and the cursor being saved runs that command again for that event at the next start.
A hook that must not act twice can check MINISFT_SEQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence

from minisft.config.model import HOOK_PATH, ExecHookConfig
from minisft.core.events import Event, Severity
from minisft.runtime.delivery import redact
from minisft.sinks.base import DeliveryError, EventFilter, Sink

log = logging.getLogger("minisft.sinks.exec")

STDERR_TAIL = 4096  # bytes of stderr kept, for the last line
STDERR_LINE = 200  # characters of that line shown in errors
REAP_GRACE = 2.0  # s to wait for a killed process group, and for stderr after the exit
# Passed on from the daemon's environment: harmless and what scripts expect to find.
_PASSED = ("LANG", "LANGUAGE", "TZ", "HOME")


def clean_environment() -> dict[str, str]:
    """What every command the daemon runs starts from: HOOK_PATH, the locale, the time
    zone and HOME; nothing else of the daemon's environment (it may hold secrets)."""
    env = {"PATH": HOOK_PATH}
    for key, value in os.environ.items():
        if key in _PASSED or key.startswith("LC_"):
            env[key] = value
    env.setdefault("LANG", "C.UTF-8")
    return env


def hook_environment(event: Event, hook: str) -> dict[str, str]:
    env = clean_environment()
    env.update({
        "MINISFT_EVENT": event.kind.value,
        "MINISFT_MONITOR": event.monitor or "",
        "MINISFT_ADDRESS": event.address or "",
        "MINISFT_STATE": event.state or "",
        "MINISFT_NODE": event.node,
        "MINISFT_SEQ": str(event.seq),
        "MINISFT_SEVERITY": event.severity.label,
        "MINISFT_HOOK": hook,
    })
    return env


def last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return redact(line if len(line) <= STDERR_LINE else line[:STDERR_LINE] + "...")


class ExecSink(Sink):
    """Runs one configured command per matching event."""

    def __init__(self, config: ExecHookConfig) -> None:
        self.name = f"exec-{config.name}"
        self.config = config
        self.filter = EventFilter(kinds=frozenset(config.kinds),
                                  min_severity=Severity.parse(config.min_severity))
        self.stats: dict[str, int] = {"runs": 0, "failed": 0}
        self._lock = asyncio.Lock()

    async def deliver(self, event: Event) -> None:
        async with self._lock:
            code, stderr = await self._run(event)
        if code != 0:
            self.stats["failed"] += 1
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            tail = last_line(stderr)
            raise DeliveryError(f"exec {self.config.name}: {how}" + (f": {tail}" if tail else ""))

    async def _run(self, event: Event) -> tuple[int, bytes]:
        argv = self.config.command
        try:
            result = await run_bounded(argv, event.to_json().encode() + b"\n",
                                       hook_environment(event, self.config.name),
                                       self.config.timeout)
        except TimeoutError:  # first: it is an OSError too
            self.stats["runs"] += 1
            self.stats["failed"] += 1
            raise DeliveryError(f"exec {self.config.name}: still running after "
                                f"{self.config.timeout:g} s; killed it") from None
        except OSError as exc:
            self.stats["failed"] += 1
            raise DeliveryError(f"exec {self.config.name}: cannot start {argv[0]}: "
                                f"{exc.strerror or type(exc).__name__}") from None
        self.stats["runs"] += 1
        return result


async def run_bounded(argv: Sequence[str], payload: bytes, env: dict[str, str],
                      timeout: float) -> tuple[int, bytes]:
    """Run argv (no shell, cwd /, its own session) with `payload` on stdin; return its exit
    code (negative: killed by that signal) and the tail of its stderr. Past `timeout`, or
    when cancelled, its whole process group is killed and reaped first, then TimeoutError
    (or the cancellation) is raised. OSError when it cannot start."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env, cwd="/", start_new_session=True)
    tail = bytearray()
    reader = asyncio.create_task(_read_stderr(proc, tail))
    try:
        await asyncio.wait_for(_feed_and_wait(proc, payload), timeout)
    except BaseException:  # a timeout, or cancelled by a stop: leave nothing running
        await _kill(proc, reader)
        raise
    # A background child may hold stderr open: do not wait for it past a grace.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(reader), REAP_GRACE)
    reader.cancel()
    assert proc.returncode is not None
    return proc.returncode, bytes(tail)


async def _feed_and_wait(proc: asyncio.subprocess.Process, payload: bytes) -> None:
    assert proc.stdin is not None
    # a command that does not read stdin may exit first: not an error
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(payload)
        await proc.stdin.drain()
    proc.stdin.close()
    await proc.wait()


async def _read_stderr(proc: asyncio.subprocess.Process, tail: bytearray) -> None:
    assert proc.stderr is not None
    while chunk := await proc.stderr.read(STDERR_TAIL):
        tail += chunk
        del tail[:-STDERR_TAIL]


async def _kill(proc: asyncio.subprocess.Process, reader: asyncio.Task[None]) -> None:
    """Kill the command's whole process group and reap it, bounded."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), REAP_GRACE)
    reader.cancel()
