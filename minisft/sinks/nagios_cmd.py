"""Passive check results into a Nagios 4 / Icinga 1 external command file (`alerting.nagios`).

A failover is known to the daemon within milliseconds, but an active check_minisft sees it
only at its next run (a minute later, then retries to a HARD state). This sink writes, for
every event, what check_minisft would print at that moment:

* `PROCESS_SERVICE_CHECK_RESULT;<host>;<prefix><monitor>;<code>;<output>` for the event's
  monitor (every monitor for an event without one: daemon start, reload, pools), as
  `check_minisft --no-sinks --monitor <monitor>` judges it;
* `PROCESS_SERVICE_CHECK_RESULT;<host>;<prefix>daemon;<code>;<output>`, as
  `check_minisft --no-monitors` judges it (the daemon and its sinks).

The text, state and perfdata come from `minisft.nagios.plugin.check_output` over the live
status document, the one the daemon writes to status.json: one evaluation, shared with the
plugin. The result is the state NOW, not at the event's time: when events are delivered
late (Nagios was down), each pushes the current state again, which is what Nagios should
show. Services are passive with freshness checks that fall back to the active check
(alerting/nagios4/minisft-passive.cfg), so a daemon that stops pushing is still noticed.

The command file is Nagios' named pipe. It is opened non-blocking for each delivery: no
reader (Nagios stopped) is ENXIO, a full pipe is EAGAIN; both are a DeliveryError and the
runtime retries with backoff. Each line is one write() of less than PIPE_BUF bytes, so
lines from other writers never interleave with ours.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import stat
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Generic, Protocol, TypeVar

from minisft.config.model import NagiosConfig
from minisft.core.events import Event
from minisft.nagios.plugin import State, check_output
from minisft.sinks.base import DeliveryError, Sink
from minisft.status import StatusDocument

StatusSource = Callable[[], StatusDocument]


class PushTarget(Protocol):
    """What every check-result push config names: the host and the service prefix."""

    @property
    def host(self) -> str | None: ...

    @property
    def service_prefix(self) -> str: ...


PushConfig = TypeVar("PushConfig", bound=PushTarget)
LINE_LIMIT = select.PIPE_BUF - 1  # bytes, with the newline: one atomic write


def check_results(doc: StatusDocument, event: Event, prefix: str, now: float,
                  sender: str) -> list[tuple[str, State, str]]:
    """(service, state, plugin output) to push for `event`: its monitor's, or every
    monitor's, and always the daemon's. The sending sink (`sender`) is left out of the
    daemon's result: this very delivery proves it works, while its status may still say
    "retrying" from before Nagios came back, a WARNING nothing would clear."""
    doc = replace(doc, sinks=tuple(s for s in doc.sinks if s.get("name") != sender))
    names = [str(m.name) for m in doc.monitors]
    chosen = [event.monitor] if event.monitor in names else names
    out = []
    for name in chosen:
        assert name is not None
        state, text = check_output(doc, ["--no-sinks", "--monitor", name], now)
        out.append((f"{prefix}{name}", state, text))
    state, text = check_output(doc, ["--no-monitors"], now)
    out.append((f"{prefix}daemon", state, text))
    return out


def command_line(host: str, service: str, state: State, output: str, now: float) -> bytes:
    head = f"[{int(now)}] PROCESS_SERVICE_CHECK_RESULT;{host};{service};{state.code};"
    # a multi-line output goes as Nagios' escaped \n; trimmed to fit one atomic write
    body = output.replace("\\", "\\\\").replace("\n", "\\n").encode()
    room = LINE_LIMIT - len(head.encode())
    if len(body) > room:
        body = body[:room].decode("utf-8", "ignore").encode()
    return head.encode() + body + b"\n"


class CheckResultSink(Sink, Generic[PushConfig]):
    """What the Nagios, NSCA and Icinga 2 pushes share: their config, who they speak for
    (`host`, the node by default) and the results to push for an event."""

    def __init__(self, config: PushConfig, *, node: str, status: StatusSource) -> None:
        self.config = config
        self.node = node
        self.host = config.host or node
        self.service_prefix = config.service_prefix
        self.status = status
        self.stats: dict[str, int] = {"results": 0}

    async def results(self, event: Event, now: float) -> list[tuple[str, State, str]]:
        """The live status is taken on the event loop (the daemon's state is not
        thread-safe; the document is a frozen copy of it); judging it, which grows with
        the square of the number of monitors for an event that concerns them all, runs in
        a thread so a burst of events does not hold the loop the failover uses."""
        doc = self.status()
        return await asyncio.to_thread(check_results, doc, event, self.service_prefix, now,
                                       self.name)


class NagiosCommandSink(CheckResultSink[NagiosConfig]):
    name = "nagios"

    async def deliver(self, event: Event) -> None:
        now = time.time()
        lines = [command_line(self.host, service, state, text, now)
                 for service, state, text in await self.results(event, now)]
        self._write(lines)
        self.stats["results"] += len(lines)

    def _write(self, lines: list[bytes]) -> None:
        path = self.config.command_file
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise DeliveryError(f"nagios: nobody reads {path} (is Nagios running?)"
                                    ) from None
            raise DeliveryError(f"nagios: cannot open {path}: {exc.strerror}") from None
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise DeliveryError(f"nagios: {path} is not a named pipe (check "
                                    "command_file and check_external_commands=1)")
            for line in lines:
                os.write(fd, line)
        except OSError as exc:
            raise DeliveryError(f"nagios: cannot write to {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
