"""Passive check results to a remote Nagios through send_nsca (`alerting.nsca`).

The same results as the local Nagios push (minisft.sinks.nagios_cmd.check_results), sent
with Debian's send_nsca (nsca-client) to an NSCA daemon, which writes them into that
Nagios' command pipe. One send_nsca run per event carries every result of it (entries
separated by ETB, send_nsca's set delimiter). The password and encryption method stay in
send_nsca's own config file (config_file, mode 0600): never on a command line, never in
the environment. send_nsca runs through the event commands' bounded runner (no shell,
clean environment, its process group killed past `timeout`); a non-zero exit, such as
"Could not connect to host", is a DeliveryError and the runtime retries with backoff.

send_nsca has no acknowledgement: exit 0 means the NSCA daemon took the packets, not that
Nagios applied them (an NSCA daemon whose Nagios is down drops them). The passive services'
freshness check (alerting/nagios4/minisft-passive.cfg) covers that gap.
"""

from __future__ import annotations

import time

from minisft.config.model import HOOK_PATH, NscaConfig
from minisft.core.events import Event
from minisft.nagios.plugin import State
from minisft.sinks.base import DeliveryError
from minisft.sinks.exec_sink import last_line, run_bounded
from minisft.sinks.nagios_cmd import CheckResultSink

SET_DELIMITER = "\x17"  # send_nsca's default between entries
GRACE = 2.0  # s beyond send_nsca's own connect timeout before it is killed


def nsca_entry(host: str, service: str, state: State, output: str) -> str:
    first = output.split("\n", 1)[0]
    fields = [host, service, str(state.code), first]
    return "\t".join(f.replace("\t", " ") for f in fields) + "\n"


class NscaSink(CheckResultSink[NscaConfig]):
    name = "nsca"

    async def deliver(self, event: Event) -> None:
        entries = [nsca_entry(self.host, service, state, text)
                   for service, state, text in await self.results(event, time.time())]
        c = self.config
        argv = [c.send_nsca, "-H", c.server, "-p", str(c.port),
                "-to", str(max(1, round(c.timeout))), "-c", str(c.config_file)]
        try:
            code, stderr = await run_bounded(argv, SET_DELIMITER.join(entries).encode(),
                                             {"PATH": HOOK_PATH, "LANG": "C"},
                                             c.timeout + GRACE)
        except TimeoutError:  # first: it is an OSError too
            raise DeliveryError(f"nsca: send_nsca still running after "
                                f"{c.timeout + GRACE:g} s; killed it") from None
        except OSError as exc:
            raise DeliveryError(f"nsca: cannot start {c.send_nsca}: "
                                f"{exc.strerror or type(exc).__name__}") from None
        if code != 0:
            tail = last_line(stderr)
            raise DeliveryError(f"nsca: send_nsca exited with code {code}"
                                + (f": {tail}" if tail else ""))
        self.stats["results"] += len(entries)
