"""`alerting.nagios` on REAL daemons with Debian's REAL nagios4 (run as the nagios user,
check_external_commands=1, the shipped minisft.cfg templates and minisft-passive.cfg):
a takeover shows in status.dat as check_minisft would report it, pushed by the daemon, and
the current state gets through again after a Nagios outage spanning a daemon restart.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from minisft.core.events import Event
from tests.integration.cluster import Cluster, Node, wait_until
from tests.integration.test_monitoring_e2e import (
    CLIENT_IP,
    lab,
    start_pair,
    stop_daemons,
    take_over,
)
from tests.support.nagios import NAGIOS4, NSCA, NSCA_PASSWORD, NagiosServer, NscaServer

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not Path(NAGIOS4).exists(), reason="nagios4 not installed")]

WEB = ("lb-beta", "MiniSFT web")
DAEMON = ("lb-beta", "MiniSFT daemon")


def check_minisft(node: Node, *args: str) -> tuple[int, str]:
    proc = node.host.run(sys.executable, "-m", "minisft.nagios.plugin", "--status",
                         str(node.state_dir / "status.json"), *args, check=False)
    return proc.returncode, proc.stdout.strip()


def restart_backup_alone(c: Cluster, after: int) -> Event:
    """alpha gone for good, beta restarted (SIGTERM: release; start: takeover again).
    Returns the new takeover."""
    beta = c.nodes["beta"]
    c.nodes["alpha"].host.link_up()
    c.nodes["alpha"].stop()
    assert beta.stop(signal.SIGTERM) == 0
    released = beta.wait_event("released", "web", after=after, timeout=5)
    beta.start()
    return beta.wait_event("takeover", "web", after=released.seq, timeout=30)


def retrying(node: Node, sink: str) -> dict[str, Any]:
    """The sink's status once it is retrying."""
    found: dict[str, Any] = wait_until(f"{sink} to be retrying", lambda: next(
        (s for s in node.status()["sinks"] if s["name"] == sink
         and s["state"] == "retrying"), None), timeout=45)
    return found


def labels(perfdata: str) -> list[str]:
    return re.findall(r"(\S+?)=", perfdata)


def test_a_takeover_reaches_nagios_status_from_the_daemon(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        nagios = stack.enter_context(NagiosServer())
        alerting = {"nagios": {"command_file": str(nagios.command_file), "host": "lb-beta"}}
        c = stack.enter_context(lab(tmp_path, alerting=alerting))
        beta = c.nodes["beta"]

        def svc(key: tuple[str, str] = WEB) -> dict[str, str]:
            return nagios.services().get(key, {})

        start_pair(c)
        wait_until("beta watching, in Nagios", lambda: svc().get("current_state") == "0"
                   and "(web watching)" in svc().get("plugin_output", ""), timeout=30)
        assert svc(DAEMON).get("current_state") == "0", svc(DAEMON)

        # 1. The takeover: WARNING at once (HARD: a pushed result is a fact).
        first = take_over(c)
        seen = wait_until("the failover in status.dat",
                          lambda: time.time() if svc().get("current_state") == "1" else None,
                          timeout=10, step=0.01)
        pushed = svc()
        code, cli = check_minisft(beta, "--no-sinks", "--monitor", "web")
        text, _, perf = cli.partition(" | ")
        assert code == 1
        assert pushed["plugin_output"] == text  # the same words as check_minisft
        assert labels(pushed["performance_data"]) == labels(perf)  # and the same metrics
        assert pushed["state_type"] == "1" and pushed["has_been_checked"] == "1"
        assert "web: 192.0.2.10 runs on this backup node" in text
        latencies = [seen - first.time]

        # 2. Nagios is down while beta restarts (release, then a takeover again).
        nagios.stop()
        second = restart_backup_alone(c, after=first.seq)
        nagios_sink = retrying(beta, "nagios")
        assert "nobody reads" in nagios_sink["last_error"], nagios_sink

        # 3. Nagios is back: the backlog delivers the current state, and the daemon's own
        # service is OK (its push works again), not stuck on "retrying".
        back = time.time()
        nagios.start()
        wait_until("the state after the outage", lambda: svc().get("current_state") == "1"
                   and float(svc().get("last_check", 0)) >= int(back), timeout=90)
        wait_until("the daemon's service", lambda: svc(DAEMON).get("current_state") == "0"
                   and float(svc(DAEMON).get("last_check", 0)) >= int(back), timeout=10)
        wait_until("every event handled", lambda: next(
            s for s in beta.status()["sinks"] if s["name"] == "nagios")["pending"] == 0)
        assert beta.last_seq() >= second.seq

        # 4. One more live change, for the latency: alpha back, fallback is manual, so
        # beta keeps holding; a `minisft pause` is an event that changes the output.
        after = beta.last_seq()
        assert beta.cli("pause", "web").returncode == 0
        paused = beta.wait_event("paused", "web", after=after, timeout=10)
        seen = wait_until("the pause in status.dat", lambda: time.time()
                          if "paused" in svc().get("plugin_output", "") else None,
                          timeout=10, step=0.01)
        latencies.append(seen - paused.time)
        stop_daemons(c)
    print(f"\nnagios push latency, journal -> status.dat: "
          f"{', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")


# ---------------------------------------------------------------------- NSCA


@pytest.mark.skipif(not Path(NSCA).exists() or not Path("/usr/sbin/send_nsca").exists(),
                    reason="nsca / nsca-client not installed")
def test_a_takeover_reaches_a_remote_nagios_through_nsca(tmp_path: Path) -> None:
    """send_nsca on beta -> Debian's nsca daemon on the client (192.0.2.100:5667) ->
    that Nagios' command pipe -> status.dat."""
    with contextlib.ExitStack() as stack:
        alerting: dict[str, Any] = {}
        c = stack.enter_context(lab(tmp_path, alerting=alerting))
        nagios = stack.enter_context(NagiosServer())
        nsca = stack.enter_context(NscaServer(nagios, c.client, CLIENT_IP))
        beta = c.nodes["beta"]
        alerting["nsca"] = {"server": CLIENT_IP, "host": "lb-beta", "timeout": "3s",
                            "config_file": str(nsca.client_config(tmp_path / "send_nsca.cfg"))}
        beta.configure(beta.config["monitors"], alerting=alerting)

        def svc(key: tuple[str, str] = WEB) -> dict[str, str]:
            return nagios.services().get(key, {})

        start_pair(c)
        wait_until("beta watching, in Nagios", lambda: svc().get("current_state") == "0"
                   and "(web watching)" in svc().get("plugin_output", ""), timeout=30)

        first = take_over(c)
        seen = wait_until("the failover in status.dat",
                          lambda: time.time() if svc().get("current_state") == "1" else None,
                          timeout=10, step=0.01)
        code, cli = check_minisft(beta, "--no-sinks", "--monitor", "web")
        assert code == 1 and svc()["plugin_output"] == cli.partition(" | ")[0]
        latency = seen - first.time

        # NSCA down across a daemon restart: retried until it is back.
        nsca.stop()
        restart_backup_alone(c, after=first.seq)
        sink = retrying(beta, "nsca")
        assert "Could not connect to host" in sink["last_error"], sink
        back = time.time()
        nsca.start()
        wait_until("the state after the outage", lambda: svc().get("current_state") == "1"
                   and float(svc().get("last_check", 0)) >= int(back), timeout=90)
        assert NSCA_PASSWORD not in beta.log()
        stop_daemons(c)
    print(f"\nnsca push latency, journal -> status.dat: {latency * 1000:.0f} ms")
