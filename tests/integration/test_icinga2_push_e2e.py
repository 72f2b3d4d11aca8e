"""`alerting.icinga2` on REAL daemons with Debian's REAL icinga2 (API feature, TLS with its
own CA, run as nagios in the lab's client namespace, the shipped minisft.conf and
minisft-passive.conf): a takeover shows in the object's state through the API as
check_minisft would report it, and the current state gets through again after an Icinga
outage spanning a daemon restart.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import wait_until
from tests.integration.test_monitoring_e2e import (
    CLIENT_IP,
    lab,
    private_file,
    start_pair,
    stop_daemons,
    take_over,
)
from tests.integration.test_nagios_push_e2e import (
    check_minisft,
    restart_backup_alone,
    retrying,
)
from tests.support.icinga2 import ICINGA2, PUSH_PASSWORD, PUSH_USER, IcingaServer

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not Path(ICINGA2).exists(), reason="icinga2 not installed")]

WEB, DAEMON = "lb-beta!minisft-web", "lb-beta!minisft-daemon"


def output(attrs: dict[str, Any] | None) -> str:
    return str(((attrs or {}).get("last_check_result") or {}).get("output", ""))


def test_a_takeover_reaches_icinga2_through_its_api(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        # the lab first: icinga2 listens in its client namespace
        alerting: dict[str, Any] = {}
        c = stack.enter_context(lab(tmp_path, alerting=alerting))
        icinga = stack.enter_context(IcingaServer(c.client, CLIENT_IP))
        beta = c.nodes["beta"]
        alerting["icinga2"] = {
            "url": icinga.url, "user": PUSH_USER, "host": "lb-beta", "timeout": "3s",
            "password_file": private_file(tmp_path / "secrets" / "icinga2", PUSH_PASSWORD),
            "ca_file": str(icinga.ca_file)}
        beta.configure(beta.config["monitors"], alerting=alerting)
        start_pair(c)

        def web() -> dict[str, Any]:
            return icinga.service(WEB) or {}

        wait_until("beta watching, in Icinga", lambda: web().get("state") == 0
                   and "(web watching)" in output(web()), timeout=30)
        assert (icinga.service(DAEMON) or {}).get("state") == 0, icinga.service(DAEMON)

        # 1. The takeover: WARNING, HARD at once, the same words as check_minisft.
        first = take_over(c)
        seen = wait_until("the failover in Icinga", lambda: time.time()
                          if web().get("state") == 1 else None, timeout=10, step=0.02)
        attrs = web()
        code, cli = check_minisft(beta, "--no-sinks", "--monitor", "web")
        text, _, perf = cli.partition(" | ")
        assert code == 1 and output(attrs) == text
        result = attrs["last_check_result"]
        assert [p.split("=")[0] for p in result["performance_data"]] == \
            [p.split("=")[0] for p in perf.split()]
        assert attrs["state_type"] == 1 and result["active"] is False
        assert result["check_source"] == "beta"
        # the pushed result postpones the fallback active check by check_interval (5 min)
        assert attrs["next_check"] - attrs["last_check"] == pytest.approx(300, abs=5)
        latencies = [seen - first.time]

        # 2. Icinga is down while beta restarts (release, then a takeover again).
        icinga.stop()
        restart_backup_alone(c, after=first.seq)
        sink = retrying(beta, "icinga2")
        assert sink["last_error"].startswith(f"icinga2: {icinga.url}: ConnectionError"), sink
        assert PUSH_PASSWORD not in beta.log()

        # 3. Icinga is back: the current state, and the daemon's service OK again.
        back = time.time()
        icinga.start()
        wait_until("the state after the outage", lambda: web().get("state") == 1
                   and web().get("last_check", 0) >= back, timeout=90)
        wait_until("the daemon's service", lambda: (icinga.service(DAEMON) or {})
                   .get("last_check", 0) >= back, timeout=10)
        assert (icinga.service(DAEMON) or {}).get("state") == 0

        # 4. One more live change for the latency: a pause.
        after = beta.last_seq()
        assert beta.cli("pause", "web").returncode == 0
        paused = beta.wait_event("paused", "web", after=after, timeout=10)
        seen = wait_until("the pause in Icinga", lambda: time.time()
                          if "paused" in output(web()) else None, timeout=10, step=0.02)
        latencies.append(seen - paused.time)
        stop_daemons(c)
    print(f"\nicinga2 push latency, journal -> API state: "
          f"{', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
